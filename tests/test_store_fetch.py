"""Lazy objects: the store's read paths fetch what is absent; everything else stays local."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from greenloop.protocol import ArtifactRef
from greenloop.store import CacheEntry, Store, StoreError


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _entry(key: str, snapshot: str, artifacts: tuple[str, ...] = ()) -> CacheEntry:
    now = time.time()
    return CacheEntry(
        key=key,
        snapshot=snapshot,
        executor="local",
        tree=None,
        artifacts=[ArtifactRef(key=a, mime="inode/directory", size_bytes=0) for a in artifacts],
        created_at=now,
        last_used=now,
        policy="{}",
    )


class Donor:
    """A fetcher serving objects from another store, verified, recording every call."""

    def __init__(self, source: Store, target: Store) -> None:
        self.source, self.target = source, target
        self.calls: list[list[str]] = []

    def __call__(self, digests: list[str]) -> None:
        self.calls.append(list(digests))
        for digest in digests:
            data = self.source.read_bytes(digest)
            assert hashlib.sha256(data).hexdigest() == digest
            self.target.put_bytes(data)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    with Store.open(tmp_path / "source") as source, Store.open(tmp_path / "target") as target:
        yield source, target


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    root = tmp_path / "sample"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "a.txt").write_text("alpha\n")
    (root / "lib" / "b.bin").write_bytes(bytes(range(256)) * 100)
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "link").symlink_to("lib/a.txt")
    return root


def _lazy_copy(source: Store, target: Store, tree: str) -> list[str]:
    """Put only ``tree``'s manifest into ``target``; return the blobs left behind."""
    target.put_bytes(source.read_bytes(tree))
    blobs = sorted({e.blob for e in source.get_tree(tree) if e.blob is not None})
    assert not any(target.has(b) for b in blobs)
    return blobs


def test_materialize_fetches_every_absent_blob_in_one_call(
    pair: tuple[Store, Store], sample: Path, tmp_path: Path
) -> None:
    source, target = pair
    tree = source.put_tree(sample)
    blobs = _lazy_copy(source, target, tree)
    donor = Donor(source, target)
    target.set_fetcher(donor)
    assert target.fetcher is donor
    target.set_ref("snap", tree)  # a ref needs the manifest, not the blobs

    target.materialize(tree, tmp_path / "out")
    assert _files(tmp_path / "out") == _files(sample)
    assert (tmp_path / "out" / "link").readlink() == Path("lib/a.txt")
    assert [sorted(call) for call in donor.calls] == [blobs]
    assert all(target.has(b) for b in blobs) and target.verify() == []
    # Now local: nothing more to fetch.
    target.materialize(tree, tmp_path / "again")
    assert len(donor.calls) == 1


def test_each_read_path_fetches_and_has_never_does(pair: tuple[Store, Store], sample: Path) -> None:
    source, target = pair
    tree = source.put_tree(sample)
    blobs = _lazy_copy(source, target, tree)
    manifest_only = source.put_bytes(b"only in the source")
    donor = Donor(source, target)
    target.set_fetcher(donor)

    # Local checks: no fetching, whatever is absent.
    assert not target.has(manifest_only) and not target.is_tree(manifest_only)
    assert target.size_bytes() > 0 and target.verify() == []
    assert donor.calls == []

    assert target.read_bytes(manifest_only) == b"only in the source"
    with target.open_blob(blobs[0]) as fh:
        assert fh.read() == source.read_bytes(blobs[0])
    assert target.blob_path(blobs[1]).read_bytes() == source.read_bytes(blobs[1])
    assert donor.calls == [[manifest_only], [blobs[0]], [blobs[1]]]

    # get_tree fetches a manifest, not the blobs it lists.
    other = source.put_tree(sample / "lib")
    assert [e.path for e in target.get_tree(other)] == ["a.txt", "b.bin"]
    assert donor.calls[-1] == [other]


def test_an_object_that_cannot_be_had_fails_clearly_before_writing_anything(
    pair: tuple[Store, Store], sample: Path, tmp_path: Path
) -> None:
    source, target = pair
    tree = source.put_tree(sample)
    _lazy_copy(source, target, tree)

    def refuse(digests: list[str]) -> None:
        raise StoreError("remote cache http://cache: blob abc does not match its hash")

    target.set_fetcher(refuse)
    dest = tmp_path / "dest"
    with pytest.raises(StoreError, match=r"not in the store .*: remote cache http://cache: blob"):
        target.materialize(tree, dest)
    assert not dest.exists()  # everything is fetched before the first file is written

    def forget(digests: list[str]) -> None:
        pass

    target.set_fetcher(forget)
    with pytest.raises(StoreError, match="returned without storing it"):
        target.materialize(tree, dest)

    target.set_fetcher(None)
    with pytest.raises(StoreError, match=r"not in the store .*no remote cache is configured"):
        target.materialize(tree, dest)
    assert not dest.exists()
    with pytest.raises(StoreError, match="not in the store"):
        target.read_bytes("0" * 64)
    with pytest.raises(StoreError, match="not a store digest"):
        target.read_bytes("../../etc/passwd")


def test_entries_that_need_an_unobtainable_object_are_dropped(store: Store, tmp_path: Path) -> None:
    (tmp_path / "parent").mkdir()
    (tmp_path / "parent" / "base.txt").write_text("base\n")
    (tmp_path / "child").mkdir()
    (tmp_path / "child" / "base.txt").write_text("base\n")
    (tmp_path / "child" / "more.txt").write_text("more\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("unrelated\n")
    parent = store.put_tree(tmp_path / "parent")
    child = store.put_tree(tmp_path / "child")
    other = store.put_tree(tmp_path / "other")
    store.set_ref("snap-parent", parent)
    store.set_ref("snap-child", child)
    store.set_ref("snap-other", other)
    store.index.put_entry(_entry("1" * 64, "snap-parent"))
    store.index.put_entry(_entry("2" * 64, "snap-child"))
    store.index.put_entry(_entry("3" * 64, "snap-other"))
    store.index.put_entry(_entry("4" * 64, "snap-other", artifacts=(parent,)))
    [base] = [e.blob for e in store.get_tree(parent) if e.blob is not None]
    assert base is not None
    store.blob_path(base).unlink()  # as if it were lazy and its fetch failed

    with pytest.raises(StoreError, match="dropped 3 cache entries that need it"):
        store.materialize(child, tmp_path / "out")
    # The child, its parent (whose snapshot lists the same blob) and the entry
    # whose artifact does are gone; the unrelated entry stays a hit.
    assert {e.key for e in store.index.entries()} == {"3" * 64}
    store.materialize(other, tmp_path / "fine")
    assert _files(tmp_path / "fine") == {"x.txt": b"unrelated\n"}


def test_gc_copes_with_entries_whose_objects_are_absent(
    pair: tuple[Store, Store], sample: Path, tmp_path: Path
) -> None:
    source, target = pair
    tree = source.put_tree(sample)
    blobs = _lazy_copy(source, target, tree)
    missing_artifact = source.put_bytes(b"an artifact never fetched")
    target.set_ref("snap", tree)
    target.index.put_entry(_entry("5" * 64, "snap", artifacts=(missing_artifact,)))
    stray = target.put_bytes(b"garbage")

    report = target.gc(grace=timedelta(0), max_bytes=1)
    assert report.entries_removed == 1  # over budget: the entry goes, without a crash
    target.index.put_entry(_entry("5" * 64, "snap", artifacts=(missing_artifact,)))
    target.set_ref("snap", target.put_bytes(source.read_bytes(tree)))
    target.gc(grace=timedelta(0))
    assert target.has(tree) and not target.has(stray)
    assert target.index.get_entry("5" * 64) is not None
    # What gc kept is still enough to fetch the rest on demand.
    target.set_fetcher(Donor(source, target))
    target.materialize(tree, tmp_path / "out")
    assert _files(tmp_path / "out") == _files(sample)
    assert all(target.has(b) for b in blobs)
