"""Lazy remote hits: snapshot blobs travel only when a step boots from the snapshot."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from greenloop.engine.run import RunResult
from greenloop.store import CacheEntry, Store
from tests.conftest import write_pipeline
from tests.test_remote import Remote, logs, run, statuses, tree_bytes
from tests.test_remote_server import NginxServer, require_nginx

# b's snapshot holds a's files and its own; only the leaf's report is an artifact.
LAZY = """
@gl.pipeline("ci")
def ci():
    a = gl.sh("mkdir -p a && head -c 300000 /dev/urandom > a/big.bin && echo from-a > a/stamp",
              label="a", cache=gl.forever())
    b = a.sh("mkdir -p b && head -c 300000 /dev/urandom > b/big.bin",
             label="b", cache=gl.forever())
    b.sh("mkdir -p out && cat a/stamp leaf.txt > out/report.txt && wc -c < b/big.bin",
         label="leaf", cache=gl.on_change("leaf.txt"), artifacts=["out"])
"""


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxServer]:
    with NginxServer(tmp_path / "nginx", binary=require_nginx()) as server:
        yield server


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    with Store.open(tmp_path / "machine-a") as a, Store.open(tmp_path / "machine-b") as b:
        yield a, b


@pytest.fixture
def lazy(project: Path) -> Path:
    write_pipeline(project, LAZY)
    (project / "leaf.txt").write_text("one\n")
    return project


def snapshot_blobs(store: Store, result: RunResult, step: str) -> set[str]:
    snapshot = result.steps[step].snapshot
    assert snapshot is not None
    tree = store.get_ref(snapshot)
    assert tree is not None
    return {e.blob for e in store.get_tree(tree) if e.blob is not None}


def blob_at(store: Store, result: RunResult, step: str, path: str) -> str:
    snapshot = result.steps[step].snapshot
    assert snapshot is not None
    tree = store.get_ref(snapshot)
    assert tree is not None
    # Paths are relative to the step's root, which holds the workdir.
    [blob] = [e.blob for e in store.get_tree(tree) if f"/{e.path}".endswith(f"/{path}")]
    assert blob is not None
    return blob


def entry_of(store: Store, result: RunResult, step: str) -> CacheEntry:
    [entry] = [e for e in store.index.entries() if e.snapshot == result.steps[step].snapshot]
    return entry


def cas_requests(nginx: NginxServer, method: str, since: int) -> list[str]:
    return [
        path.rsplit("/", 1)[1]
        for m, path, _ in nginx.requests()[since:]
        if m == method and "/cas/" in path
    ]


def test_a_fully_cached_chain_downloads_no_snapshot_blob(
    nginx: NginxServer, stores: tuple[Store, Store], lazy: Path, tmp_path: Path
) -> None:
    store_a, store_b = stores
    first, _ = run(store_a, lazy, Remote(store_a, nginx.url))
    assert set(statuses(first).values()) == {"passed"}
    [artifact] = first.steps["leaf"].artifacts
    in_artifact = {e.blob for e in store_a.get_tree(artifact.key) if e.blob is not None}
    lazy_only = set().union(*(snapshot_blobs(store_a, first, s) for s in ("a", "b", "leaf")))
    lazy_only -= in_artifact
    assert sum(store_a.blob_path(d).stat().st_size for d in lazy_only) > 600_000

    seen = len(nginx.requests())
    remote_b = Remote(store_b, nginx.url)
    second, _ = run(store_b, lazy, remote_b)
    assert set(statuses(second).values()) == {"cached"} and remote_b.warnings == []
    # No snapshot blob came over the wire; the server was only asked, once each,
    # that it still has them.
    assert not any(store_b.has(d) for d in lazy_only)
    assert not set(cas_requests(nginx, "GET", seen)) & lazy_only
    assert sorted(cas_requests(nginx, "HEAD", seen)) == sorted(lazy_only)
    down = remote_b.cache.stats
    assert down.hits == 3 and down.bytes_downloaded < 20_000
    # Every snapshot is a stored tree under the publisher's ref, ready to boot from.
    for step in ("a", "b", "leaf"):
        snapshot = second.steps[step].snapshot
        assert snapshot is not None and snapshot == first.steps[step].snapshot
        tree = store_b.get_ref(snapshot)
        assert tree is not None and tree == store_a.get_ref(snapshot) and store_b.is_tree(tree)
    # The artifact came whole: byte-identical, readable after the client closed.
    assert store_b.fetcher is None
    assert second.steps["leaf"].artifacts == [artifact]
    assert tree_bytes(store_b, artifact.key, tmp_path / "b") == tree_bytes(
        store_a, artifact.key, tmp_path / "a"
    )
    assert store_b.verify() == []


def test_a_step_that_runs_fetches_its_parents_snapshot_on_demand(
    nginx: NginxServer,
    stores: tuple[Store, Store],
    lazy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store_a, store_b = stores
    first, _ = run(store_a, lazy, Remote(store_a, nginx.url))
    parent = snapshot_blobs(store_a, first, "b")
    (lazy / "leaf.txt").write_text("two\n")

    remote_b = Remote(store_b, nginx.url)
    lookup = remote_b.cache.lookup
    absent_after_lookup: list[bool] = []

    def watched(key: str) -> CacheEntry | None:
        entry = lookup(key)
        absent_after_lookup.append(not any(store_b.has(d) for d in parent))
        return entry

    monkeypatch.setattr(remote_b.cache, "lookup", watched)
    seen = len(nginx.requests())
    second, events = run(store_b, lazy, remote_b)
    assert statuses(second) == {"a": "cached", "b": "cached", "leaf": "passed"}
    assert absent_after_lookup == [True, True, True]  # a, b hit; the leaf missed
    # The leaf booted from b's snapshot, fetched when it started: a's and b's files.
    assert logs(events, "leaf") == ["300000"]
    [artifact] = second.steps["leaf"].artifacts
    assert tree_bytes(store_b, artifact.key, tmp_path / "out") == {"report.txt": b"from-a\ntwo\n"}
    assert all(store_b.has(d) for d in parent)
    # The lookups fetched a's and b's manifests; the leaf, every blob once.
    manifests = {m for s in ("a", "b") if (m := store_a.get_ref(first.steps[s].snapshot or ""))}
    assert sorted(cas_requests(nginx, "GET", seen)) == sorted(parent | manifests)
    assert remote_b.warnings == []
    assert remote_b.cache.stats.blobs_downloaded == len(parent | manifests)
    tree = store_b.get_ref(first.steps["b"].snapshot or "")
    assert tree is not None
    assert tree_bytes(store_b, tree, tmp_path / "b") == tree_bytes(store_a, tree, tmp_path / "a")
    assert store_b.verify() == []


def test_a_corrupt_blob_fetched_on_demand_is_refused_and_its_steps_rebuilt(
    nginx: NginxServer, stores: tuple[Store, Store], lazy: Path, tmp_path: Path
) -> None:
    store_a, store_b = stores
    first, _ = run(store_a, lazy, Remote(store_a, nginx.url))
    bad = blob_at(store_a, first, "b", "b/big.bin")
    b_entry = entry_of(store_a, first, "b")
    (nginx.root / "cas" / bad).write_bytes(b"not what it was\n")
    (lazy / "leaf.txt").write_text("two\n")

    remote_b = Remote(store_b, nginx.url)
    second, events = run(store_b, lazy, remote_b)
    # The hit on b was reported before anyone read its snapshot; the step that
    # boots from it cannot have it, so b runs again, and then the leaf on it.
    assert statuses(second) == {"a": "cached", "b": "passed", "leaf": "passed"}
    assert logs(events, "leaf") == ["300000"]
    [warning] = remote_b.warnings
    assert "does not match its hash" in warning and "those steps run again" in warning
    [rerun] = logs(events, "greenloop")
    assert bad in rerun and "dropped the cache entry that needs it" in rerun
    assert "running 'b' again" in rerun
    # Nothing unverified was stored; b's imported entry was dropped, and its
    # rebuild (whose upload rewrites the blob without trusting HEAD) replaced it.
    assert store_b.verify() == []
    rebuilt = store_b.index.get_entry(b_entry.key)
    assert rebuilt is not None and rebuilt.snapshot != b_entry.snapshot
    assert remote_b.cache.stats.published == 2  # b and the leaf
    # The server is healed: a fresh machine is fully cached and can build on it.
    with Store.open(tmp_path / "machine-c") as store_c:
        remote_c = Remote(store_c, nginx.url)
        third, _ = run(store_c, lazy, remote_c)
        assert set(statuses(third).values()) == {"cached"} and remote_c.warnings == []


def test_a_server_killed_after_a_hit_rebuilds_what_the_step_booting_from_it_needs(
    nginx: NginxServer,
    stores: tuple[Store, Store],
    lazy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store_a, store_b = stores
    first, _ = run(store_a, lazy, Remote(store_a, nginx.url))
    (lazy / "leaf.txt").write_text("two\n")

    remote_b = Remote(store_b, nginx.url)
    lookup = remote_b.cache.lookup

    def then_die(key: str) -> CacheEntry | None:
        entry = lookup(key)
        if entry is not None and entry.snapshot == first.steps["b"].snapshot:
            nginx.stop()  # between b's hit and the leaf's boot
        return entry

    monkeypatch.setattr(remote_b.cache, "lookup", then_die)
    second, events = run(store_b, lazy, remote_b)
    # a's snapshot is lazy too and lies under b's: both entries go at once, and
    # both steps run again before the leaf does, on files that are all here.
    assert statuses(second) == {"a": "passed", "b": "passed", "leaf": "passed"}
    assert logs(events, "leaf") == ["300000"]
    [rerun] = logs(events, "greenloop")
    assert "is unavailable" in rerun and "ConnectError" in rerun, rerun
    assert "dropped 2 cache entries that need it" in rerun and "running 'a', 'b' again" in rerun
    [warning] = remote_b.warnings
    assert "ConnectError" in warning and "using the local cache only" in warning
    assert store_b.verify() == []


def test_remote_backed_entries_survive_gc_and_later_runs(
    nginx: NginxServer, stores: tuple[Store, Store], lazy: Path
) -> None:
    store_a, store_b = stores
    first, _ = run(store_a, lazy, Remote(store_a, nginx.url))
    parent = snapshot_blobs(store_a, first, "b")
    second, _ = run(store_b, lazy, Remote(store_b, nginx.url))
    assert set(statuses(second).values()) == {"cached"}

    # gc keeps the entries and their manifests, and skips the absent blobs.
    store_b.gc(grace=timedelta(0))
    assert len(store_b.index.entries()) == 3 and store_b.verify() == []

    # A later run with the remote: local hits, and the step that runs fetches.
    (lazy / "leaf.txt").write_text("two\n")
    remote = Remote(store_b, nginx.url)
    third, events = run(store_b, lazy, remote)
    assert statuses(third) == {"a": "cached", "b": "cached", "leaf": "passed"}
    assert logs(events, "leaf") == ["300000"] and remote.warnings == []
    assert remote.cache.stats.lookups == 1  # only the leaf asked; a and b were local
    assert all(store_b.has(d) for d in parent)


def test_without_the_remote_a_lazy_snapshot_is_rebuilt(
    nginx: NginxServer, stores: tuple[Store, Store], lazy: Path
) -> None:
    store_a, store_b = stores
    run(store_a, lazy, Remote(store_a, nginx.url))
    run(store_b, lazy, Remote(store_b, nginx.url))
    (lazy / "leaf.txt").write_text("two\n")
    offline, events = run(store_b, lazy, None)
    assert statuses(offline) == {"a": "passed", "b": "passed", "leaf": "passed"}
    assert logs(events, "leaf") == ["300000"]
    [rerun] = logs(events, "greenloop")
    # a, b and the old leaf entry all list a's and b's absent blobs.
    assert "no remote cache is configured" in rerun and "dropped 3 cache entries" in rerun
    again, _ = run(store_b, lazy, None)
    assert set(statuses(again).values()) == {"cached"}


def test_children_booting_from_one_lazy_snapshot_download_it_once(
    nginx: NginxServer, stores: tuple[Store, Store], project: Path
) -> None:
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            a = gl.sh("mkdir -p a && head -c 2000000 /dev/urandom > a/big.bin",
                      label="a", cache=gl.forever())
            for name in ("x", "y", "z", "w"):
                a.fork(name).sh(f"wc -c < a/big.bin; cat leaf.txt # {name}", label="run",
                                cache=gl.on_change("leaf.txt"))
        """,
    )
    (project / "leaf.txt").write_text("one\n")
    store_a, store_b = stores
    run(store_a, project, Remote(store_a, nginx.url))
    (project / "leaf.txt").write_text("two\n")
    seen = len(nginx.requests())
    remote = Remote(store_b, nginx.url)
    result, events = run(store_b, project, remote)
    assert result.status == "passed" and remote.warnings == []
    assert list(statuses(result).values()).count("passed") == 4
    fetched = cas_requests(nginx, "GET", seen)
    assert len(fetched) == len(set(fetched))  # however the four raced, one GET per blob
    assert remote.cache.stats.blobs_downloaded == len(fetched)
    assert all(logs(events, k) == ["2000000", "two"] for k in statuses(result) if k != "a")
