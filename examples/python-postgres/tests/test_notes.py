from collections.abc import Iterator

import pg8000.native
import pytest

import notes


@pytest.fixture
def db() -> Iterator[pg8000.native.Connection]:
    connection = notes.connect()
    notes.create(connection)
    connection.run("TRUNCATE notes")
    yield connection
    connection.close()


def test_a_note_is_found_by_a_word_in_it(db: pg8000.native.Connection) -> None:
    notes.add(db, "Buy oat milk")
    notes.add(db, "Call the plumber")
    assert notes.search(db, "MILK") == ["Buy oat milk"]


def test_ids_grow(db: pg8000.native.Connection) -> None:
    assert notes.add(db, "one") < notes.add(db, "two")
