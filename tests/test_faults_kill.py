"""The fault suite: ``greenloop run`` SIGKILLed at random moments, again and again.

However a run dies -- packing, mid-write of an object, mid-commit, recording --
the store must verify clean (a killed write's temp files are leftovers, never
corruption), no failed step may ever be cached, and every run must read as
passed, failed or interrupted. The moments are drawn from a seeded generator:
the seed is printed, and ``GREENLOOP_FAULT_SEED=N`` replays a failure;
``GREENLOOP_FAULT_KILLS`` sets how many kills (30 by default).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from greenloop.store import Store
from tests.conftest import cli, wait_until, write_pipeline
from tests.test_sandbox import require_bwrap

PIPELINE = """
@gl.pipeline("ci")
def ci():
    deps = gl.sh(
        "mkdir -p lib && head -c 3000000 /dev/urandom > lib/blob && sha256sum lib/blob > lib/sum",
        label="deps", cache=gl.on_change("src.txt"),
    )
    # Runs on deps' snapshot: a torn or wrong snapshot fails the checksum.
    deps.sh("sha256sum -c lib/sum && cat src.txt > out.txt", label="build",
            cache=gl.on_change("src.txt"), artifacts=["out.txt"])
    # Never cached, so every run, hits and all, lasts a moment to be killed in.
    deps.sh("cat src.txt; sleep 0.4; exit 1", label="broken", cache=gl.forever())
    gl.sh("head -c 2000000 /dev/urandom > noise && cat src.txt", label="solo",
          cache=gl.on_change("src.txt"))
"""

SHOWN = {"passed", "failed", "interrupted"}


def _start(project: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "greenloop", "run", "--format", "plain", "-j", "2"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "GREENLOOP_NO_DAEMON": "1"},
    )


def _json(*args: str, cwd: Path) -> object:
    done = cli(*args, "--json", cwd=cwd, env={"GREENLOOP_NO_DAEMON": "1"})
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def _run_ids(store: Store) -> set[str]:
    return {r.run_id for r in store.index.runs(limit=10_000)}


def _until_recorded(store: Store, proc: subprocess.Popen[bytes], known: set[str]) -> None:
    """Wait until ``proc``'s run is in the history (or ``proc`` has ended)."""
    while proc.poll() is None and _run_ids(store) <= known:
        time.sleep(0.002)


def test_sigkill_at_random_moments_never_corrupts_never_caches_a_failure(project: Path) -> None:
    seed = int(os.environ.get("GREENLOOP_FAULT_SEED") or time.time_ns() % 1_000_000)
    kills = int(os.environ.get("GREENLOOP_FAULT_KILLS") or 30)
    print(f"fault suite: seed {seed}, {kills} kills (GREENLOOP_FAULT_SEED={seed} replays it)")
    rng = random.Random(seed)
    write_pipeline(project, PIPELINE)
    (project / "src.txt").write_text("version 0\n")

    with Store.open() as store:
        # One whole uncached run measures the two windows the kills are drawn from:
        # start-up (loading, packing the workspace) and the run itself.
        began = time.monotonic()
        whole = _start(project)
        _until_recorded(store, whole, set())
        startup = time.monotonic() - began
        assert whole.wait() == 1  # 'broken' fails, by design
        [first] = store.index.runs()
        assert first.finished_at is not None
        work = first.finished_at - first.started_at

        for n in range(kills):
            # A new source half the time: misses write snapshots; hits only read them.
            if rng.random() < 0.5:
                (project / "src.txt").write_text(f"version {rng.randrange(4)}\n")
            known = _run_ids(store)
            proc = _start(project)
            if rng.random() < 0.2:
                time.sleep(rng.uniform(0, startup))
            else:
                _until_recorded(store, proc, known)
                time.sleep(rng.uniform(0, work))
            proc.kill()
            proc.wait()
            assert store.verify() == [], f"seed {seed}, kill {n}: {store.verify()}"

    verify = _json("cache", "verify", cwd=project)
    assert isinstance(verify, dict) and verify["corrupt"] == [], f"seed {seed}: {verify}"
    runs = _json("runs", "-n", "1000", cwd=project)
    assert isinstance(runs, list)
    assert {r["status"] for r in runs} <= SHOWN, f"seed {seed}: {[r['status'] for r in runs]}"
    shown = Counter(r["status"] for r in runs)
    print(f"fault suite: {kills + 1} runs, of which recorded: {dict(shown)}")
    # Enough kills landed mid-run for the suite to mean something.
    assert shown["interrupted"] >= kills // 3, f"seed {seed}: {runs}"

    # Runs to the end on what the kills left, one per source the kills saw: the
    # failed step is run (never a hit), and the steps that boot from cached
    # snapshots find them whole.
    for version in range(4):
        (project / "src.txt").write_text(f"version {version}\n")
        done = cli("run", "--json", cwd=project, env={"GREENLOOP_NO_DAEMON": "1"})
        events = [json.loads(line) for line in done.stdout.splitlines()]
        finished = {e["label"]: e["status"] for e in events if e["type"] == "step_finished"}
        assert finished["broken"] == "failed", f"seed {seed}: {finished}"
        assert {finished[s] for s in ("deps", "build", "solo")} <= {"passed", "cached"}, finished
        assert done.returncode == 1, done.stderr

    # gc removes every leftover the kills made (their writers are all gone).
    assert cli("cache", "gc", cwd=project).returncode == 0
    final = _json("cache", "verify", cwd=project)
    assert final == {"corrupt": [], "leftovers": []}, f"seed {seed}: {final}"


# `exec`: unsandboxed, only the step's own first process is bound to the run (its
# background children are not: docs/sandbox.md); under bwrap the shell's child too.
ORPHAN = """
@gl.pipeline("ci", sandbox="{sandbox}")
def ci():
    gl.sh("echo started; {exec}sleep {marker}", label="long", cache=gl.forever())
"""


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if marker.encode() in argv:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_a_killed_run_takes_its_running_step_with_it(project: Path, sandbox: str) -> None:
    if sandbox == "bwrap":
        require_bwrap(project.parent)
    # A duration no other process on the machine sleeps for: the step's fingerprint.
    marker = f"{300 + random.random():.6f}"
    exec_ = "" if sandbox == "bwrap" else "exec "
    write_pipeline(project, ORPHAN.format(sandbox=sandbox, marker=marker, exec=exec_))
    proc = subprocess.Popen(
        [sys.executable, "-m", "greenloop", "run", "--format", "plain"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "GREENLOOP_NO_DAEMON": "1"},
    )
    try:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            if b"started" in line:
                break
        wait_until(lambda: bool(_processes_with(marker)))
        proc.kill()
        proc.wait()
        # No step outlives the run that started it: nobody would ever stop it.
        wait_until(lambda: not _processes_with(marker))
    finally:
        proc.kill()
        for pid in _processes_with(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
