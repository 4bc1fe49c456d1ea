"""Several processes writing one store at once must never corrupt it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from greenloop.store import Store

WORKERS = 4

# Each worker opens the (not yet existing) store itself, so store creation and
# index schema creation race too. Every worker writes the same shared blobs,
# the same shared tree and the same shared index keys, plus some of its own.
_WORKER = textwrap.dedent(
    """
    import io, json, sys, time
    from pathlib import Path
    from greenloop.protocol import ArtifactRef
    from greenloop.store import CacheEntry, RunRecord, StepRecord, Store

    root, me, go, work = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    (work / f"ready-{me}").touch()
    while not go.exists():
        time.sleep(0.002)

    def build(directory, files):
        for rel, data in files.items():
            (directory / rel).parent.mkdir(parents=True, exist_ok=True)
            (directory / rel).write_bytes(data)
        return directory

    with Store.open(root) as store:
        shared = [store.put_bytes(b"shared-%d " % n * 200) for n in range(40)]
        own = [store.put_stream(io.BytesIO(b"own-%d-%d" % (me, n))) for n in range(20)]
        files = {f"pkg/mod{n}.py": b"x = %d\\n" % n for n in range(15)}
        files["bin/tool"] = b"#!/bin/sh\\n"
        shared_dir = build(work / f"shared-{me}", files)
        (shared_dir / "bin/tool").chmod(0o755)
        own_dir = build(work / f"own-{me}", {**files, "who.txt": b"%d" % me})
        trees = [store.put_tree(shared_dir) for _ in range(3)]
        own_tree = store.put_tree(own_dir)
        for n in range(20):
            ref = ArtifactRef(key=shared[n], mime="text/plain", size_bytes=1)
            for key, tree in ((f"shared-{n % 5}", trees[0]), (f"own-{me}-{n}", own_tree)):
                store.index.put_entry(CacheEntry(
                    key=key, snapshot="tag", executor="local", tree=tree, artifacts=[ref],
                    created_at=time.time(), last_used=time.time(), policy="{}",
                ))
        store.index.record_run(RunRecord(f"run-{me}", "ci", "passed", 1.0, 2.0, 1, 0))
        store.index.record_step(StepRecord(f"run-{me}", "s", "S", "passed", 0, 0.1, False))
    print(json.dumps({"shared": shared, "own": own, "trees": trees, "own_tree": own_tree}))
    """
)


def test_concurrent_processes_share_one_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    go = tmp_path / "go"
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(root), str(n), str(go), str(work)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for n in range(WORKERS)
    ]
    # Release every worker at once, after all of them have started up, so
    # their writes really overlap.
    while not all((work / f"ready-{n}").exists() for n in range(WORKERS)):
        assert all(p.poll() is None for p in procs), "a worker died during start-up"
        time.sleep(0.005)
    go.touch()
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr.decode()
        results.append(json.loads(stdout))

    # Same content gave the same names in every process.
    assert len({tuple(r["shared"]) for r in results}) == 1
    assert len({t for r in results for t in r["trees"]}) == 1
    assert len({r["own_tree"] for r in results}) == WORKERS

    leftovers = [p for p in root.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []
    with Store.open(root) as store:
        assert store.verify() == []
        for n, result in enumerate(results):
            for digest in result["own"]:
                assert store.read_bytes(digest).startswith(b"own-%d-" % n)
            assert store.is_tree(result["own_tree"])
        shared_tree = results[0]["trees"][0]
        out = tmp_path / "out"
        store.materialize(shared_tree, out)
        assert store.put_tree(out) == shared_tree
        keys = {e.key for e in store.index.entries()}
        assert keys == {f"shared-{n}" for n in range(5)} | {
            f"own-{w}-{n}" for w in range(WORKERS) for n in range(20)
        }
        assert {r.run_id for r in store.index.runs()} == {f"run-{w}" for w in range(WORKERS)}
