"""Garbage collection, size accounting and verification."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from greenloop.protocol import ArtifactMeta, ArtifactRef, BuildIdentity, Profile
from greenloop.store import CacheEntry, GcReport, Store
from tests.conftest import cli, wait_until

NO_GRACE = timedelta(0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "store") as s:
        yield s


def _entry(
    key: str,
    *,
    tree: str | None = None,
    artifacts: tuple[str, ...] = (),
    last_used: float | None = None,
    snapshot: str = "opaque-tag",
) -> CacheEntry:
    now = time.time() if last_used is None else last_used
    return CacheEntry(
        key=key,
        snapshot=snapshot,
        executor="local",
        tree=tree,
        artifacts=[
            ArtifactRef(key=a, mime="application/octet-stream", size_bytes=0) for a in artifacts
        ],
        created_at=now,
        last_used=now,
        policy="{}",
    )


def _artifact(tree: str) -> ArtifactMeta:
    identity = BuildIdentity(
        source_tree="1" * 64,
        lockfiles="2" * 64,
        toolchain="3" * 64,
        config="4" * 64,
        pipeline="5" * 64,
        target="web",
        profile=Profile.RELEASE,
    )
    return ArtifactMeta(
        input_hash=identity.input_hash(),
        identity=identity,
        tree=tree,
        size_bytes=1,
        built_at=0,
        build_duration_ms=0,
    )


def _tree_of(store: Store, root: Path, files: dict[str, bytes]) -> str:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return store.put_tree(root)


def _age(store: Store, digest: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(store.blob_path(digest), (then, then))


def test_gc_keeps_referenced_and_removes_unreferenced(store: Store, tmp_path: Path) -> None:
    step_tree = _tree_of(store, tmp_path / "step", {"out/a.txt": b"step-a", "b.txt": b"step-b"})
    artifact_blob = store.put_bytes(b"artifact bytes")
    artifact_tree = _tree_of(store, tmp_path / "art", {"index.html": b"<html>"})
    snapshot_tree = _tree_of(store, tmp_path / "snap", {"rootfs": b"snapshot"})
    store.index.put_entry(
        _entry("step", tree=step_tree, artifacts=(artifact_blob,), snapshot=snapshot_tree)
    )
    store.index.put_artifact(_artifact(artifact_tree))
    garbage = store.put_bytes(b"nobody wants me")
    garbage_tree = _tree_of(store, tmp_path / "junk", {"junk.txt": b"junk"})
    stray = store.root / "objects" / "ab" / ".tmp-crashed"
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"half an object")

    assert store.gc() == GcReport(0, 0, 0, 0)  # all young: the default grace protects them

    garbage_size = sum(
        store.blob_path(d).stat().st_size
        for d in (garbage, garbage_tree, *(e.blob for e in store.get_tree(garbage_tree) if e.blob))
    )
    report = store.gc(grace=NO_GRACE)
    assert report == GcReport(
        entries_removed=0, objects_removed=3, bytes_freed=garbage_size, temp_files_removed=1
    )
    assert not store.has(garbage) and not store.has(garbage_tree) and not stray.exists()
    for tree in (step_tree, artifact_tree, snapshot_tree):
        assert store.is_tree(tree)
        for entry in store.get_tree(tree):
            assert entry.blob is None or store.has(entry.blob)
    assert store.has(artifact_blob)
    assert store.verify() == []


def test_grace_period_protects_recent_unreferenced_objects(store: Store) -> None:
    old = store.put_bytes(b"old")
    young = store.put_bytes(b"young")
    _age(store, old, 7200)
    report = store.gc(grace=timedelta(hours=1))
    assert report.objects_removed == 1
    assert not store.has(old) and store.has(young)


def test_reputting_an_object_refreshes_its_grace(store: Store) -> None:
    digest = store.put_bytes(b"reused")
    _age(store, digest, 7200)
    assert store.put_bytes(b"reused") == digest
    assert store.gc(grace=timedelta(hours=1)).objects_removed == 0
    assert store.has(digest)


def test_max_age_expires_entries_and_their_objects(store: Store) -> None:
    stale_blob, fresh_blob = store.put_bytes(b"stale"), store.put_bytes(b"fresh")
    store.index.put_entry(
        _entry("stale", artifacts=(stale_blob,), last_used=time.time() - 86400 * 30)
    )
    store.index.put_entry(_entry("fresh", artifacts=(fresh_blob,)))
    report = store.gc(max_age=timedelta(days=7), grace=NO_GRACE)
    assert report.entries_removed == 1 and report.objects_removed == 1
    assert [e.key for e in store.index.entries()] == ["fresh"]
    assert store.has(fresh_blob) and not store.has(stale_blob)


def test_max_bytes_evicts_least_recently_used_first(store: Store) -> None:
    shared = store.put_bytes(b"s" * 500)
    blobs = {name: store.put_bytes(name.encode() * 1000) for name in ("old", "mid", "new")}
    for when, name in enumerate(("old", "mid", "new")):
        store.index.put_entry(_entry(name, artifacts=(blobs[name], shared), last_used=100.0 + when))
    # 3 x 3000-byte blobs + one shared 500-byte blob, counted once.
    assert store.size_bytes() == 9500
    report = store.gc(max_bytes=7000, grace=NO_GRACE)
    assert report.entries_removed == 1
    assert [e.key for e in store.index.entries()] == ["mid", "new"]
    assert not store.has(blobs["old"])
    assert store.has(shared) and store.has(blobs["mid"]) and store.has(blobs["new"])
    assert store.size_bytes() <= 7000


def test_max_bytes_is_a_no_op_when_the_store_fits(store: Store) -> None:
    blob = store.put_bytes(b"tiny")
    store.index.put_entry(_entry("k", artifacts=(blob,)))
    assert store.gc(max_bytes=10_000, grace=NO_GRACE) == GcReport(0, 0, 0, 0)


def test_size_bytes_counts_objects(store: Store) -> None:
    assert store.size_bytes() == 0
    store.put_bytes(b"12345")
    store.put_bytes(b"12345")
    store.put_bytes(b"123")
    assert store.size_bytes() == 8


def test_verify_reports_corruption_and_strays(store: Store) -> None:
    good = store.put_bytes(b"good")
    bad = store.put_bytes(b"bad")
    assert store.verify() == []
    path = store.blob_path(bad)
    path.chmod(0o644)
    path.write_bytes(b"flipped bits")
    stray = store.root / "objects" / "not-a-digest"
    stray.write_bytes(b"")
    leftover = store.root / "objects" / ".tmp-leftover"
    leftover.write_bytes(b"")
    assert store.verify() == sorted([bad, "objects/not-a-digest"])
    assert [x.path for x in store.leftovers()] == ["objects/.tmp-leftover"]
    assert store.read_bytes(good) == b"good"


# A writer that streams an object from its stdin until it is killed mid-write.
_WRITER = """
import sys
from pathlib import Path
from greenloop.store import Store
with Store.open(Path(sys.argv[1])) as store:
    store.put_stream(sys.stdin.buffer)
"""


def test_a_killed_writers_temp_file_is_a_leftover_not_corruption(tmp_path: Path) -> None:
    root = tmp_path / "cache"  # the store the CLI opens (GREENLOOP_CACHE_DIR)
    with Store.open(root) as store:
        kept = store.put_bytes(b"kept")
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(root)], stdin=subprocess.PIPE)
    assert writer.stdin is not None
    writer.stdin.write(b"x" * 3_000_000)
    writer.stdin.flush()
    temps = lambda: [p for p in (root / "objects").rglob(".tmp-*") if p.stat().st_size > 0]  # noqa: E731
    wait_until(lambda: bool(temps()), what="the writer's temp file")
    writer.kill()
    writer.wait()
    writer.stdin.close()
    assert len(temps()) == 1

    verify = cli("cache", "verify", "--json", cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    report = json.loads(verify.stdout)
    assert report["corrupt"] == []
    assert [x["in_progress"] for x in report["leftovers"]] == [False]
    text = cli("cache", "verify", cwd=tmp_path)
    assert text.returncode == 0 and "left by a killed write" in text.stdout, text.stdout

    # No grace is due to a write whose writer is gone: the default gc removes it now.
    gc = cli("cache", "gc", "--json", cwd=tmp_path)
    assert gc.returncode == 0, gc.stderr
    assert json.loads(gc.stdout)["temp_files_removed"] == 1
    assert temps() == []
    with Store.open(root) as store:
        assert store.read_bytes(kept) == b"kept" and store.leftovers() == []


def test_gc_keeps_the_temp_file_of_a_live_writer(store: Store) -> None:
    # Our own pid: a write in progress, which only the grace period ends.
    with store.scratch_file() as scratch:
        scratch.write(b"in progress")
        scratch.flush()
        assert [x.in_progress for x in store.leftovers()] == [True]
        assert store.gc().temp_files_removed == 0
        assert Path(scratch.name).exists()
