"""Notes kept in a PostgreSQL table."""

from __future__ import annotations

import os

import pg8000.native


def connect() -> pg8000.native.Connection:
    """A connection to the database the environment names (``DB_HOST``, ``DB_PORT``)."""
    return pg8000.native.Connection(
        user=os.environ.get("DB_USER", "postgres"),
        host=os.environ["DB_HOST"],
        port=int(os.environ["DB_PORT"]),
        database=os.environ.get("DB_NAME", "postgres"),
    )


def create(db: pg8000.native.Connection) -> None:
    """Make the notes table if it is not there."""
    db.run("CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text NOT NULL)")


def add(db: pg8000.native.Connection, body: str) -> int:
    """Store a note; its id."""
    ((note_id,),) = db.run("INSERT INTO notes (body) VALUES (:body) RETURNING id", body=body)
    return int(note_id)


def search(db: pg8000.native.Connection, word: str) -> list[str]:
    """The notes containing ``word``, oldest first."""
    rows = db.run("SELECT body FROM notes WHERE body ILIKE :p ORDER BY id", p=f"%{word}%")
    return [str(body) for (body,) in rows]
