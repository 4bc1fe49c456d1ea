"""The SQLite index: cache entries, artifacts, run history, schema versioning."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenloop._fs import process_start
from greenloop.protocol import ArtifactMeta, ArtifactRef, BuildIdentity, Profile
from greenloop.store import CacheEntry, Index, RunRecord, StepRecord, Store, StoreError
from greenloop.store.migrations import SCHEMA_V1 as _SCHEMA_V1
from greenloop.store.migrations import SCHEMA_VERSION


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    with Index(tmp_path / "index.sqlite") as idx:
        yield idx


def _entry(key: str, *, last_used: float = 2.0, tree: str | None = "a" * 64) -> CacheEntry:
    return CacheEntry(
        key=key,
        snapshot=f"greenloop/{key}:latest",
        executor="local",
        tree=tree,
        artifacts=[ArtifactRef(key="b" * 64, mime="application/x-tar", size_bytes=12)],
        created_at=1.0,
        last_used=last_used,
        policy='{"kind":"forever"}',
    )


def _artifact(input_hash: str, tree: str = "c" * 64) -> ArtifactMeta:
    identity = BuildIdentity(
        source_tree="1" * 64,
        lockfiles="2" * 64,
        toolchain="3" * 64,
        config="4" * 64,
        pipeline="5" * 64,
        target="web",
        profile=Profile.DEV,
    )
    return ArtifactMeta(
        input_hash=input_hash,
        identity=identity,
        tree=tree,
        size_bytes=99,
        built_at=1_700_000_000,
        build_duration_ms=1500,
    )


def test_cache_entry_round_trip_and_upsert(index: Index) -> None:
    entry = _entry("build")
    index.put_entry(entry)
    assert index.get_entry("build") == entry
    assert index.get_entry("missing") is None

    replaced = _entry("build", tree=None, last_used=5.0)
    index.put_entry(replaced)
    assert index.get_entry("build") == replaced
    assert index.entries() == [replaced]


def test_touch_and_delete_entries(index: Index) -> None:
    index.put_entry(_entry("b"))
    index.put_entry(_entry("a"))
    index.touch_entry("a", 42.5)
    index.touch_entry("nope", 1.0)  # absent: no error
    got = index.get_entry("a")
    assert got is not None and got.last_used == 42.5
    assert [e.key for e in index.entries()] == ["a", "b"]
    index.delete_entry("a")
    index.delete_entry("a")
    assert [e.key for e in index.entries()] == ["b"]


def test_expire_entries_by_last_used(index: Index) -> None:
    for key, used in (("old", 1.0), ("edge", 5.0), ("new", 9.0)):
        index.put_entry(_entry(key, last_used=used))
    assert index.expire_entries(before=5.0) == 1
    assert [e.key for e in index.entries()] == ["edge", "new"]


def test_artifacts_round_trip(index: Index) -> None:
    one, two = _artifact("e" * 64), _artifact("d" * 64, tree="f" * 64)
    index.put_artifact(one)
    index.put_artifact(two)
    assert index.get_artifact("e" * 64) == one
    assert index.get_artifact("0" * 64) is None
    assert index.artifacts() == [two, one]
    index.put_artifact(_artifact("e" * 64, tree="9" * 64))
    updated = index.get_artifact("e" * 64)
    assert updated is not None and updated.tree == "9" * 64
    index.delete_artifact("e" * 64)
    assert index.artifacts() == [two]


def test_run_history_round_trip(index: Index) -> None:
    for n in range(5):
        index.record_run(RunRecord(f"run-{n}", "ci", "running", float(n), None, 0, 0))
    finished = RunRecord("run-3", "ci", "passed", 3.0, 9.5, 4, 1)
    index.record_run(finished)
    runs = index.runs(limit=3)
    assert [r.run_id for r in runs] == ["run-4", "run-3", "run-2"]
    assert runs[1] == finished
    assert len(index.runs()) == 5

    index.record_step(StepRecord("run-3", "install", "Install", "running", None, 0.0, False))
    index.record_step(StepRecord("run-3", "test", "Test", "failed", 1, 2.5, False))
    index.record_step(StepRecord("run-3", "install", "Install", "passed", 0, 1.25, True))
    assert index.steps("run-3") == [
        StepRecord("run-3", "install", "Install", "passed", 0, 1.25, True),
        StepRecord("run-3", "test", "Test", "failed", 1, 2.5, False),
    ]
    assert index.steps("run-0") == []


def test_newest_run_of_a_pipeline_and_newest_step_by_key_and_status(index: Index) -> None:
    for n, pipeline, status in [(1, "ci", "failed"), (2, "ci", "passed"), (3, "docs", "failed")]:
        index.record_run(RunRecord(f"run-{n}", pipeline, status, float(n), float(n) + 1, 1, 0))
        index.record_step(
            StepRecord(f"run-{n}", "test", "Test", status, int(status != "passed"), 1.0, False)
        )
    assert [r.run_id for r in index.runs(pipeline="ci")] == ["run-2", "run-1"]
    assert index.runs(pipeline="nope") == []
    newest = index.latest_step("test")
    assert newest is not None and newest[0].run_id == "run-3" and newest[1].status == "failed"
    in_ci = index.latest_step("test", pipeline="ci", status="failed")
    assert in_ci is not None and in_ci[0].run_id == "run-1" and in_ci[1].key == "test"
    assert index.latest_step("test", pipeline="ci", status="cancelled") is None
    assert index.latest_step("lint") is None


def test_a_running_run_whose_process_is_gone_reads_as_interrupted(index: Index) -> None:
    me = os.getpid()
    gone = subprocess.Popen(["true"])
    gone.wait()
    index.record_run(RunRecord("live", "ci", "running", 1.0, None, 0, 0, me, process_start(me)))
    index.record_run(RunRecord("dead", "ci", "running", 2.0, None, 0, 0, gone.pid, None))
    # The pid runs, but it is another process now: it started at another time.
    index.record_run(RunRecord("reused", "ci", "running", 3.0, None, 0, 0, me, "other-boot:1"))
    index.record_run(RunRecord("ended", "ci", "passed", 4.0, 5.0, 0, 0, gone.pid, None))
    index.record_run(RunRecord("unknown", "ci", "running", 5.0, None, 0, 0))
    assert {r.run_id: r.status for r in index.runs()} == {
        "live": "running",
        "dead": "interrupted",
        "reused": "interrupted",
        "ended": "passed",
        "unknown": "running",  # recorded by a greenloop that kept no pid: cannot tell
    }


def test_a_version_1_index_migrates_keeping_its_history(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(_SCHEMA_V1)
    conn.execute("INSERT INTO runs VALUES ('old', 'ci', 'passed', 1.0, 2.0, 3, 1)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with Index(path) as idx:
        assert idx.runs() == [RunRecord("old", "ci", "passed", 1.0, 2.0, 3, 1)]


def test_index_persists_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    with Index(path) as idx:
        idx.put_entry(_entry("k"))
    with Index(path) as idx:
        assert idx.get_entry("k") == _entry("k")
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Index(path)


def test_store_exposes_its_index(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as store:
        store.index.put_entry(_entry("k"))
    with Store.open(tmp_path / "s") as store:
        assert store.index.get_entry("k") == _entry("k")
        assert store.index.path == tmp_path / "s" / "index.sqlite"
