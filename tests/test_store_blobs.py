"""Blobs, store lifecycle (open/clean) and the object layout."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenloop.store import CacheEntry, Store, StoreError, clean, default_root
from greenloop.store.exceptions import CorruptObject
from greenloop.store.hashing import CHUNK_SIZE


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "store") as s:
        yield s


def _object_files(root: Path) -> list[Path]:
    return [p for p in (root / "objects").rglob("*") if p.is_file()]


def test_put_bytes_round_trip(store: Store) -> None:
    data = b"hello, store"
    digest = store.put_bytes(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.has(digest)
    assert store.read_bytes(digest) == data
    with store.open_blob(digest) as fh:
        assert fh.read() == data
    assert store.blob_path(digest) == store.root / "objects" / digest[:2] / digest[2:]


def test_empty_blob(store: Store) -> None:
    digest = store.put_bytes(b"")
    assert store.read_bytes(digest) == b""


def test_puts_are_idempotent_and_leave_no_temp_files(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(b"same bytes")
    digests = {
        store.put_bytes(b"same bytes"),
        store.put_bytes(b"same bytes"),
        store.put_file(src),
        store.put_stream(io.BytesIO(b"same bytes")),
    }
    assert len(digests) == 1
    files = _object_files(store.root)
    assert len(files) == 1
    assert not any(p.name.startswith(".tmp-") for p in store.root.rglob("*"))


def test_objects_are_read_only(store: Store) -> None:
    digest = store.put_bytes(b"x")
    assert stat.S_IMODE(store.blob_path(digest).stat().st_mode) & 0o222 == 0


def test_put_file_streams_large_files(store: Store, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    block = os.urandom(1 << 16)
    expected = hashlib.sha256()
    with open(big, "wb") as fh:
        for _ in range(512):  # 32 MiB
            fh.write(block)
            expected.update(block)
    tracemalloc.start()
    try:
        digest = store.put_file(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest == expected.hexdigest()
    assert peak < 4 * CHUNK_SIZE, f"put_file held {peak} bytes at once"
    assert store.blob_path(digest).stat().st_size == big.stat().st_size


class _Generated(io.RawIOBase):
    """A long stream produced on the fly, never present in memory as a whole."""

    def __init__(self, total: int) -> None:
        self._left = total

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._left)
        buffer[:n] = b"z" * n
        self._left -= n
        return n


def test_put_stream_streams(store: Store) -> None:
    total = 16 * CHUNK_SIZE
    tracemalloc.start()
    try:
        digest = store.put_stream(io.BufferedReader(_Generated(total)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest == hashlib.sha256(b"z" * total).hexdigest()
    assert peak < 6 * CHUNK_SIZE
    assert store.blob_path(digest).stat().st_size == total


def test_missing_and_malformed_digests(store: Store) -> None:
    unknown = "0" * 64
    assert not store.has(unknown)
    assert not store.is_tree(unknown)
    with pytest.raises(StoreError, match="not in the store"):
        store.blob_path(unknown)
    with pytest.raises(StoreError):
        store.read_bytes(unknown)
    with pytest.raises(StoreError, match="not a store digest"):
        store.has("../../etc/passwd")
    with pytest.raises(StoreError, match="not a store digest"):
        store.has("A" * 64)


def test_put_file_of_missing_path_is_a_store_error(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="could not store"):
        store.put_file(tmp_path / "nope")


def test_open_creates_store_with_marker(tmp_path: Path) -> None:
    root = tmp_path / "new" / "store"
    with Store.open(root) as s:
        assert s.root == root
    marker = root / "GREENLOOP_STORE"
    assert json.loads(marker.read_text()) == {"greenloop_store": 1}
    assert (root / "objects").is_dir()
    assert (root / "index.sqlite").is_file()
    # Reopening an existing store works and keeps content.
    with Store.open(root) as s:
        digest = s.put_bytes(b"kept")
    with Store.open(root) as s:
        assert s.read_bytes(digest) == b"kept"


def test_open_adopts_an_empty_directory(tmp_path: Path) -> None:
    with Store.open(tmp_path):
        pass
    assert (tmp_path / "GREENLOOP_STORE").is_file()


def test_open_refuses_a_non_empty_foreign_directory(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("do not touch")
    with pytest.raises(StoreError, match="is not a greenloop store"):
        Store.open(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]
    assert precious.read_text() == "do not touch"


def test_open_refuses_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        Store.open(path)


def test_open_refuses_a_newer_format(tmp_path: Path) -> None:
    (tmp_path / "GREENLOOP_STORE").write_text('{"greenloop_store": 99}')
    with pytest.raises(StoreError, match="format 99"):
        Store.open(tmp_path)


def test_default_root_honours_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GREENLOOP_CACHE_DIR", str(tmp_path / "cache"))
    assert default_root() == tmp_path / "cache"
    with Store.open() as s:
        assert s.root == tmp_path / "cache"
    monkeypatch.delenv("GREENLOOP_CACHE_DIR")
    assert default_root().name.lower() == "greenloop"


def test_clean_removes_a_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root) as s:
        s.put_bytes(b"a")
    clean(root)
    assert not root.exists()
    clean(root)  # already clean: nothing to do


def test_clean_refuses_a_foreign_directory_and_leaves_it_intact(tmp_path: Path) -> None:
    victim = tmp_path / "home"
    (victim / "docs").mkdir(parents=True)
    (victim / "docs" / "thesis.tex").write_text("years of work")
    (victim / "objects").mkdir()  # looks a bit like a store, but has no marker
    with pytest.raises(StoreError, match="not a greenloop store"):
        clean(victim)
    assert (victim / "docs" / "thesis.tex").read_text() == "years of work"
    assert (victim / "objects").is_dir()


def test_clean_refuses_a_symlink(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root):
        pass
    link = tmp_path / "link"
    link.symlink_to(root)
    with pytest.raises(StoreError, match="symlink"):
        clean(link)
    assert (root / "GREENLOOP_STORE").is_file()


def test_a_damaged_object_fails_its_read_is_removed_and_takes_its_entries(
    store: Store, tmp_path: Path
) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.txt").write_bytes(b"sound bytes")
    tree = store.put_tree(tmp_path / "tree")
    blob = store.put_bytes(b"sound bytes")
    other = store.put_bytes(b"another")
    for key, snapshot in (("needs-it", tree), ("does-not", other)):
        store.index.put_entry(CacheEntry(key, snapshot, "local", None, [], 1.0, 1.0, "{}"))
    path = store.blob_path(blob)
    path.chmod(0o644)
    path.write_bytes(b"wrong bytes")  # same size: only the hash tells

    with store.open_blob(blob) as fh:
        assert fh.read(5) == b"wrong"  # a partial read cannot be checked yet
    with pytest.raises(CorruptObject, match="does not match its hash") as caught:
        store.read_bytes(blob)
    assert caught.value.digest == blob and "dropped the cache entry" in str(caught.value)
    assert not store.has(blob)
    assert [e.key for e in store.index.entries()] == ["does-not"]
    assert store.verify() == []
    # A later reader of the removed object hears why it is gone.
    with pytest.raises(CorruptObject):
        store.materialize(tree, tmp_path / "out")
    assert store.put_bytes(b"sound bytes") == blob and store.read_bytes(blob) == b"sound bytes"


def test_storing_with_verify_existing_replaces_a_damaged_copy(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "archive.tar"
    source.write_bytes(b"the archive")
    digest = store.put_file(source)
    path = store.blob_path(digest)
    path.chmod(0o644)
    path.write_bytes(b"the ARCHIVE")
    assert store.put_file(source) == digest and path.read_bytes() == b"the ARCHIVE"
    assert store.put_file(source, verify_existing=True) == digest
    assert path.read_bytes() == b"the archive"


def _files(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for i in range(40):
        path = folder / f"f{i}"
        path.write_bytes(b"same\n" if i % 10 == 0 else os.urandom(100 + i))  # duplicates too
        if i % 3 == 0:
            path.chmod(0o755)
        paths.append(path)
    return paths


def test_a_finished_steps_files_are_linked_in_read_only_keeping_their_exec_bits(
    tmp_path: Path,
) -> None:
    paths = _files(tmp_path / "upper")
    with Store.open(tmp_path / "one") as single, Store.open(tmp_path / "many") as batch:
        expected = [single.put_file(p) for p in paths]
        assert batch.adopt_files(paths) == expected
        assert batch.adopt_files(paths) == expected  # idempotent: all stored already
        for path, digest in zip(paths, expected, strict=True):
            stored = batch.blob_path(digest)
            assert batch.read_bytes(digest) == path.read_bytes()
            mode = stat.S_IMODE(os.stat(stored).st_mode)
            assert not mode & 0o222
            if path.read_bytes() == b"same\n" and path != paths[0]:
                continue  # a duplicate: the first of them was linked
            assert os.stat(stored).st_ino == os.stat(path).st_ino  # no copy was made
            assert bool(mode & 0o111) == bool(stat.S_IMODE(os.stat(path).st_mode) & 0o111)
        # No temp file is left behind for the next gc to find.
        leftovers = [p for p in (tmp_path / "many").rglob("*") if p.name.startswith(".tmp")]
        assert leftovers == []


def test_files_on_another_filesystem_are_copied_in_one_batch(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a filesystem of its own")
    upper = Path(tempfile.mkdtemp(dir=shm))
    try:
        paths = _files(upper / "tree")
        with Store.open(tmp_path / "one") as single, Store.open(tmp_path / "many") as batch:
            expected = [single.put_file(p) for p in paths]
            assert batch.adopt_files(paths) == expected
            for path, digest in zip(paths, expected, strict=True):
                stored = batch.blob_path(digest)
                assert stored.read_bytes() == path.read_bytes()
                assert os.stat(stored).st_dev != os.stat(path).st_dev  # a copy
                assert stat.S_IMODE(os.stat(stored).st_mode) == stat.S_IMODE(
                    os.stat(single.blob_path(digest)).st_mode
                )
            leftovers = [p for p in (tmp_path / "many").rglob("*") if p.name.startswith(".tmp")]
            assert leftovers == []
    finally:
        shutil.rmtree(upper)
