"""The watcher, the watch loop, ``greenloop watch`` as a process, and ``greenloop status``."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenloop.devloop.file_digests import DigestCache
from greenloop.devloop.ignores import Ignores
from greenloop.devloop.inotify_source import available as inotify_available
from greenloop.devloop.loop import Verdict
from greenloop.devloop.status import (
    AlreadyWatching,
    WatchLock,
    WatchStatus,
    liveness,
    lock_path,
    pid_alive,
    read_status,
    status_path,
    write_status,
)
from greenloop.devloop.treestate import state_dir, tree_key
from greenloop.devloop.watcher import WATCHER_ENV, ChangeFilter, Watcher
from greenloop.protocol import BecameRed, TreeState
from tests.conftest import wait_until
from tests.test_devloop_helpers import GATED_CHECKER as GATED_AUTHORITATIVE
from tests.test_devloop_helpers import (
    PY_GREEN,
    PY_RED,
    TIMEOUT,
    Background,
    Recorder,
    cli,
    custom_checker,
    event_kind,
    looping,
    python_env,
    python_project,
    write,
)

# --- the change filter (no file watching involved) --------------------------------


def _filter(root: Path) -> ChangeFilter:
    changes = ChangeFilter(Ignores(root), DigestCache())
    changes.prime()
    return changes


def test_same_content_ignored_paths_and_real_changes(tmp_path: Path) -> None:
    write(tmp_path, {"a.py": "x = 1\n", ".gitignore": "*.log\n", "sub/.gitignore": "out/\n"})
    changes = _filter(tmp_path)
    a = str(tmp_path / "a.py")
    (tmp_path / "a.py").write_text("x = 1\n")  # saved, same content
    assert changes.changed([a]) == frozenset()
    write(tmp_path, {"x.log": "1", "sub/out/gen.py": "1", "target/debug/t": "1"})
    assert changes.changed([str(tmp_path / p) for p in ("x.log", "sub/out/gen.py")]) == set()
    assert not changes.relevant(str(tmp_path / "target/debug/t"))
    assert not changes.relevant(str(tmp_path / ".git/index"))
    assert changes.relevant(a)
    (tmp_path / "a.py").write_text("x = 2\n")
    assert changes.changed([a]) == {"a.py"}
    assert changes.changed([a]) == frozenset()  # already seen


def test_new_and_removed_folders_count_their_files(tmp_path: Path) -> None:
    write(tmp_path, {"keep.py": ""})
    changes = _filter(tmp_path)
    write(tmp_path, {"pkg/one.py": "1", "pkg/two.py": "2"})
    assert changes.changed([str(tmp_path / "pkg")]) == {"pkg/one.py", "pkg/two.py"}
    for name in ("one.py", "two.py"):
        (tmp_path / "pkg" / name).unlink()
    (tmp_path / "pkg").rmdir()
    assert changes.changed([str(tmp_path / "pkg")]) == {"pkg/one.py", "pkg/two.py"}


# --- the watcher on real file events ------------------------------------------------


@pytest.fixture(params=["inotify", "watchfiles"])
def watcher(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Watcher]:
    """A watcher on each event source: inotify where Linux has it, watchfiles elsewhere."""
    if request.param == "inotify" and not inotify_available():
        pytest.skip("no inotify here")
    monkeypatch.setenv(WATCHER_ENV, request.param)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    write(tmp_path, {"a.py": "0\n", "b.py": "0\n", ".gitignore": "*.log\nbuild-out/\n"})
    stop = threading.Event()
    # A long debounce window so a burst can never straddle two batches on a slow machine.
    the_watcher = Watcher(_filter(tmp_path), debounce_ms=600, stop=stop)
    the_watcher.start()
    yield the_watcher
    stop.set()


def _next_real_batch(watcher: Watcher) -> frozenset[str]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        batch = watcher.next_batch(0.2)
        if batch:
            return batch
    raise AssertionError("no batch arrived")


def test_a_burst_of_writes_is_one_batch(tmp_path: Path, watcher: Watcher) -> None:
    for i in range(30):
        (tmp_path / "a.py").write_text(f"{i}\n")
    assert _next_real_batch(watcher) == {"a.py"}
    # Then a same-content save, a gitignored write and a build output: none is a change,
    # so the next batch is exactly the sentinel that follows them.
    (tmp_path / "a.py").write_text("29\n")
    (tmp_path / "debug.log").write_text("noise")
    (tmp_path / "build-out").mkdir()
    (tmp_path / "build-out/x.py").write_text("noise")
    (tmp_path / "target").mkdir()
    (tmp_path / "target/x").write_text("noise")
    (tmp_path / "b.py").write_text("sentinel\n")
    assert _next_real_batch(watcher) == {"b.py"}


def test_files_in_a_folder_made_while_watching_are_seen(tmp_path: Path, watcher: Watcher) -> None:
    # The files land before a watch on the new folders can: the scan finds them.
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "mod.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "__init__.py").write_text("")
    seen: set[str] = set()
    while seen != {"pkg/sub/mod.py", "pkg/__init__.py"}:
        seen |= _next_real_batch(watcher)
    (tmp_path / "pkg" / "sub" / "mod.py").write_text("x = 2\n")  # and watched from then on
    assert _next_real_batch(watcher) == {"pkg/sub/mod.py"}


# --- the loop: one check per batch, none for non-changes ----------------------------


BAD_CHECKER = """
import pathlib
for path in sorted(pathlib.Path(".").glob("*.txt")):
    if "BAD" in path.read_text():
        print(f"{path}:1: error: bad")
"""


def test_loop_checks_once_per_burst_and_never_for_a_same_content_save(tmp_path: Path) -> None:
    # A real, fast checker: fails (gnu format) while any .txt file says BAD.
    write(
        tmp_path,
        {
            "bad_check.py": BAD_CHECKER,
            "greenloop.toml": custom_checker("bad", "bad_check.py"),
            "a.txt": "ok\n",
            "b.txt": "ok\n",
        },
    )
    recorder = Recorder()
    with looping(tmp_path, recorder, 600):
        wait_until(lambda: len(recorder.verdicts) == 1, what="the first verdict")
        assert recorder.verdicts[0].tree is TreeState.GREEN
        for i in range(20):
            (tmp_path / "a.txt").write_text(f"line {i}\n" + ("BAD\n" if i == 19 else ""))
        wait_until(lambda: len(recorder.verdicts) == 2, what="the burst's verdict")
        assert recorder.verdicts[1].tree is TreeState.RED
        (tmp_path / "a.txt").write_text((tmp_path / "a.txt").read_text())  # same content
        (tmp_path / "b.txt").write_text("sentinel\n")
        wait_until(lambda: len(recorder.verdicts) == 3, what="the sentinel's verdict")
        assert recorder.rounds == [frozenset(), {"a.txt"}, {"b.txt"}]
        kinds = [e.kind for e in recorder.seen if e.kind != "file_verdict"]
        assert kinds == ["became_green", "became_red"]


STAMPED_CHECKER = (
    BAD_CHECKER
    + """
import time
with open("runs.log", "a") as log:
    log.write(f"{time.monotonic()}\\n")
"""
)
"""BAD_CHECKER that also logs when each run started (monotonic clocks are system-wide)."""

WINDOW_S = 4.0
"""Long, so that "within the window" never depends on how loaded the machine is."""


class _Stamped(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.verdict_at: list[float] = []

    def verdict(self, verdict: Verdict) -> None:
        self.verdict_at.append(time.monotonic())
        super().verdict(verdict)


@pytest.fixture
def stamped(tmp_path: Path) -> Iterator[tuple[Path, _Stamped]]:
    write(
        tmp_path,
        {
            ".gitignore": "*.log\n",
            "bad_check.py": STAMPED_CHECKER,
            "greenloop.toml": custom_checker("bad", "bad_check.py"),
            "a.txt": "ok\n",
        },
    )
    recorder = _Stamped()
    with looping(tmp_path, recorder, int(WINDOW_S * 1000)):
        wait_until(lambda: len(recorder.verdicts) == 1, what="the first verdict")
        yield tmp_path, recorder


def _runs(root: Path) -> list[float]:
    log = root / "runs.log"
    return [float(line) for line in log.read_text().split()] if log.exists() else []


def test_checking_starts_inside_the_window_and_the_verdict_waits_for_its_end(
    stamped: tuple[Path, _Stamped],
) -> None:
    root, recorder = stamped
    written = time.monotonic()
    (root / "a.txt").write_text("BAD\n")
    wait_until(lambda: len(recorder.verdicts) == 2, what="the edit's verdict")
    started = _runs(root)[1]
    assert written + WINDOW_S / 4 <= started < written + WINDOW_S  # settled, then checked early
    assert recorder.verdict_at[1] >= written + WINDOW_S  # yet the verdict waited out the window
    assert recorder.verdicts[1].tree is TreeState.RED


def test_a_change_inside_the_window_supersedes_the_early_check(
    stamped: tuple[Path, _Stamped],
) -> None:
    root, recorder = stamped
    written = time.monotonic()
    (root / "a.txt").write_text("BAD\n")
    wait_until(lambda: len(_runs(root)) == 2, what="the early check")
    (root / "a.txt").write_text("ok again\n")
    assert time.monotonic() < written + WINDOW_S, "the test itself came too late"
    wait_until(lambda: len(recorder.verdicts) == 2, what="the verdict for the last write")
    assert len(_runs(root)) == 3
    assert recorder.rounds == [frozenset(), {"a.txt"}, {"a.txt"}]
    assert recorder.verdicts[1].tree is TreeState.GREEN
    assert "became_red" not in recorder.edges()  # the red tree in between was never reported


# --- greenloop watch as a process ----------------------------------------------------


@pytest.fixture
def watching(tmp_path: Path) -> Iterator[tuple[Path, Background]]:
    root = python_project(tmp_path / "proj")
    proc = Background("watch", "--json", cwd=root, env=python_env())
    try:
        yield root, proc
    finally:
        proc.close()


def test_watch_json_streams_red_then_green_and_status_sees_it(
    watching: tuple[Path, Background],
) -> None:
    root, proc = watching
    first = proc.wait_event("became_green")
    assert set(first["identity"]) >= {"source_tree", "lockfiles", "toolchain", "target"}
    status = json.loads(cli("status", "--json", cwd=root).stdout)["watcher"]
    assert status["live"] is True
    assert status["pid"] == proc.proc.pid
    assert status["verdict"] == "green"

    (root / "demo/calc.py").write_text(PY_RED)
    red = proc.wait_event("became_red")
    ((line, col, source),) = {(d["line"], d["col"], d["source"]) for d in red["diagnostics"]}
    assert (line, col, source) == (2, 12, "mypy")
    assert red["diagnostics"][0]["path"] == str(root / "demo" / "calc.py")

    (root / "demo/calc.py").write_text(PY_GREEN)
    second = proc.wait_event("became_green")
    assert second["identity"]["source_tree"] == first["identity"]["source_tree"]
    verdicts = [json.loads(s) for s in proc.seen if json.loads(s)["kind"] == "file_verdict"]
    calc = [v["state"] for v in verdicts if v["path"].endswith("calc.py")]
    assert calc == ["green", "red", "green"]

    wait_until(
        lambda: (read_status(root) or WatchStatus.model_construct()).verdict == TreeState.GREEN,
        what="the status file to say green",
    )
    text = cli("status", cwd=root)
    assert text.stdout.startswith(f"watcher: live (pid {proc.proc.pid}")
    assert proc.stop() == 130
    stopped = json.loads(cli("status", "--json", cwd=root).stdout)["watcher"]
    assert (stopped["state"], stopped["live"], stopped["verdict"]) == ("stopped", False, "green")


def tree_listing(root: Path) -> set[str]:
    """Every path in the tree, folders and hidden files included."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_check_and_watch_leave_only_the_users_files_in_the_tree(tmp_path: Path) -> None:
    # A project's own linter (biome, eslint) lints what it finds: runtime state, locks,
    # heartbeats and checker caches must live outside the tree, not in `.greenloop/`.
    root = python_project(tmp_path / "proj")
    (root / ".greenloop").mkdir(exist_ok=True)
    (root / ".greenloop" / "pipeline.py").write_text('"""No pipelines yet."""\n')
    before = tree_listing(root)
    assert cli("check", cwd=root, env=python_env()).returncode == 0
    assert tree_listing(root) == before
    proc = Background("watch", "--json", cwd=root, env=python_env())
    try:
        proc.wait_event("became_green")
        (root / "demo/calc.py").write_text(PY_RED)
        proc.wait_event("became_red")
        (root / "demo/calc.py").write_text(PY_GREEN)
        proc.wait_event("became_green")
        assert tree_listing(root) == before
        status = json.loads(cli("status", "--json", cwd=root).stdout)["watcher"]
        assert status["live"] is True and status["pid"] == proc.proc.pid
    finally:
        assert proc.stop() == 130
    assert tree_listing(root) == before
    stopped = json.loads(cli("status", "--json", cwd=root).stdout)["watcher"]
    assert (stopped["state"], stopped["verdict"]) == ("stopped", "green")


@pytest.mark.parametrize("command", ["check", "watch"])
def test_a_state_folder_that_cannot_be_made_is_one_line_and_exit_2(
    tmp_path: Path, command: str
) -> None:
    root = python_project(tmp_path / "proj")
    done = cli(command, cwd=root, env={**python_env(), "GREENLOOP_STATE_DIR": "/proc/greenloop"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "error: cannot make greenloop's state folder for this tree, "
        f"/proc/greenloop/{tree_key(root)}: No such file or directory; "
        "set GREENLOOP_STATE_DIR to a writable folder"
    ]


def test_a_trees_state_folder_is_keyed_by_its_real_path(tmp_path: Path) -> None:
    (tmp_path / "a" / "app").mkdir(parents=True)
    (tmp_path / "b" / "app").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "app")
    a, b = state_dir(tmp_path / "a" / "app"), state_dir(tmp_path / "b" / "app")
    assert a != b and a.name.startswith("app-") and b.name.startswith("app-")
    assert state_dir(tmp_path / "link") == a  # the same tree, however it is reached
    assert a.parent == tmp_path / "tree-state"  # GREENLOOP_STATE_DIR, set for every test


def test_a_second_watcher_is_refused_while_the_first_lives(
    watching: tuple[Path, Background],
) -> None:
    root, proc = watching
    proc.wait_event("became_green")
    second = cli("watch", cwd=root, env=python_env())
    assert second.returncode == 2
    assert f"a watcher (pid {proc.proc.pid}) is already running" in second.stderr
    assert proc.proc.poll() is None


SLOW_CHECKER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    helper = subprocess.Popen(["sleep", "300"])
    with open("pids.tmp", "w") as f:
        f.write(f"{os.getpid()} {helper.pid}")
    os.replace("pids.tmp", "pids.txt")
    time.sleep(300)
    """
)


def test_sigterm_stops_the_watcher_and_kills_every_checker_process(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            ".gitignore": "pids.*\n",
            "slow.py": SLOW_CHECKER,
            "greenloop.toml": custom_checker("slow", "slow.py"),
        },
    )
    proc = Background("watch", cwd=tmp_path)
    try:
        wait_until(lambda: (tmp_path / "pids.txt").exists(), what="the checker to start")
        pids = [int(p) for p in (tmp_path / "pids.txt").read_text().split()]
        assert all(pid_alive(pid) for pid in pids)
        assert proc.stop() == 130
        wait_until(lambda: not any(pid_alive(pid) for pid in pids), what="the checkers to die")
        status = read_status(tmp_path)
        assert status is not None and status.stopped_at is not None
    finally:
        proc.close()


# --- the single-watcher lock --------------------------------------------------------


def _status(root: Path, pid: int, heartbeat_age: float, token: str = "other") -> None:
    now = time.time()
    write_status(
        root,
        WatchStatus(
            pid=pid, token=token, root=str(root), started_at=now, heartbeat_at=now - heartbeat_age
        ),
    )
    # The file's mtime is a heartbeat too (a beat only touches it): age it the same.
    os.utime(status_path(root), (now - heartbeat_age, now - heartbeat_age))


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_dead_watcher_is_taken_over(tmp_path: Path) -> None:
    _status(tmp_path, _dead_pid(), heartbeat_age=0.0)
    assert liveness(read_status(tmp_path)) == "stale"
    lock = WatchLock.acquire(tmp_path)
    lock.release()


def test_a_held_lock_with_a_fresh_heartbeat_refuses(tmp_path: Path) -> None:
    held = _hold_lock(tmp_path)
    try:
        _status(tmp_path, os.getpid(), heartbeat_age=0.0)
        with pytest.raises(AlreadyWatching, match=f"pid {os.getpid()}"):
            WatchLock.acquire(tmp_path)
    finally:
        os.close(held)


def test_a_hung_watcher_with_a_stale_heartbeat_is_taken_over(tmp_path: Path) -> None:
    old = WatchLock.acquire(tmp_path)
    _status(tmp_path, os.getpid(), heartbeat_age=3600.0, token=old.token)
    assert old.owns()
    new = WatchLock.acquire(tmp_path)
    _status(tmp_path, os.getpid(), heartbeat_age=0.0, token=new.token)
    assert new.owns()
    assert not old.owns()  # the hung one notices it lost the slot when it wakes
    new.release()
    old.release()


def _hold_lock(root: Path) -> int:
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_status_without_any_watcher(tmp_path: Path) -> None:
    done = cli("status", "--json", cwd=tmp_path)
    assert done.returncode == 0
    assert json.loads(done.stdout) == {
        "watcher": {"state": "none", "live": False},
        "latest_green": {"state": "none"},
    }
    assert cli("status", cwd=tmp_path).stdout.splitlines() == [
        "watcher: none has run on this tree",
        "latest_green: no green build published yet",
    ]


GATED_CHECKER = """
import os, pathlib, time
pathlib.Path(f"pid-{os.getpid()}.run").write_text("")
if "slow" in pathlib.Path("gate.txt").read_text():
    time.sleep(300)
"""


def test_a_change_during_a_check_cancels_it_and_the_verdict_is_for_the_new_tree(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        {
            ".gitignore": "*.run\n",
            "gate.py": GATED_CHECKER,
            "gate.txt": "slow\n",
            "greenloop.toml": custom_checker("gate", "gate.py"),
        },
    )
    recorder = Recorder()
    with looping(tmp_path, recorder, 100):
        wait_until(lambda: list(tmp_path.glob("pid-*.run")), what="the slow check to start")
        (slow_pid,) = [int(p.stem.split("-")[1]) for p in tmp_path.glob("pid-*.run")]
        (tmp_path / "gate.txt").write_text("fast\n")
        wait_until(lambda: recorder.verdicts, what="a verdict")
        assert not pid_alive(slow_pid)
        assert recorder.rounds == [frozenset(), {"gate.txt"}]
        (verdict,) = recorder.verdicts
        assert verdict.tree is TreeState.GREEN
        assert verdict.changed == {"gate.txt"}


def test_watch_text_mode_prints_timestamped_verdicts(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "bad_check.py": BAD_CHECKER,
            "a.txt": "BAD\n",
            "greenloop.toml": custom_checker("bad", "bad_check.py"),
        },
    )
    proc = Background("watch", "--debounce-ms", "50", cwd=tmp_path)
    try:
        red = proc.wait_line(lambda line: "RED" in line)
        assert re.fullmatch(
            r"\[\+ *\d+\.\d{3}s\] RED — 1 error, 0 warnings \(bad; \d+\.\d\ds\)", red
        )
        detail = proc.wait_line(lambda line: line.startswith("  "))
        assert detail == f"  error[bad]: {tmp_path / 'a.txt'}:1:1: bad"
        (tmp_path / "a.txt").write_text("good\n")
        green = proc.wait_line(lambda line: "GREEN" in line)
        assert re.fullmatch(r"\[\+ *\d+\.\d{3}s\] GREEN — 0 errors, 0 warnings .*", green)
    finally:
        assert proc.stop() == 130
        proc.close()


# --- early red from advisory checkers -------------------------------------------------


def _early_red_project(tmp_path: Path) -> tuple[Path, Path]:
    # The checkers keep their markers outside the tree, so writing them is no change.
    root, state = tmp_path / "proj", tmp_path / "state"
    state.mkdir()
    write(
        root,
        {
            "bad_check.py": BAD_CHECKER,
            "gated.py": GATED_AUTHORITATIVE,
            "a.txt": "BAD\n",
            "greenloop.toml": f"""\
                kinds = []
                [checkers.lint]
                command = ["{sys.executable}", "bad_check.py"]
                role = "advisory"
                [checkers.types]
                command = ["{sys.executable}", "gated.py", "{state}"]
                """,
        },
    )
    return root, state


def _authoritative_running(state: Path, run: int) -> bool:
    started = state / f"started-{run}"
    return (
        started.exists()
        and pid_alive(int(started.read_text()))
        and not (state / f"finished-{run}").exists()
    )


def test_advisory_errors_turn_the_tree_red_before_the_authoritative_checker_ends(
    tmp_path: Path,
) -> None:
    root, state = _early_red_project(tmp_path)
    recorder = Recorder()
    with looping(root, recorder, 100) as (loop, _):
        try:
            wait_until(lambda: any(e.kind == "became_red" for e in recorder.seen), what="early red")
            # The gate is still shut: the authoritative checker is running (it may start a
            # moment after the advisory one has finished), no round has ended.
            wait_until(lambda: _authoritative_running(state, 0), what="the authoritative checker")
            assert recorder.verdicts == []
            with recorder.lock:
                early = list(recorder.seen)
            assert [(e.kind, getattr(e, "path", None)) for e in early] == [
                ("file_verdict", str(root / "a.txt")),
                ("became_red", None),
            ]
            red = early[-1]
            assert isinstance(red, BecameRed)
            assert [(d.source, d.line) for d in red.diagnostics] == [("lint", 1)]

            (state / "gate").write_text("")
            wait_until(lambda: recorder.verdicts, what="the round's verdict")
            (verdict,) = recorder.verdicts
            # The advisory error stands, so the completed round keeps the tree red: no new edge.
            assert verdict.tree is TreeState.RED
            assert [e.kind for e in recorder.seen if e.kind != "file_verdict"] == ["became_red"]

            # Fixed: the advisory checker is clean at once; green waits for the authoritative one.
            (state / "gate").unlink()
            (root / "a.txt").write_text("good\n")
            wait_until(lambda: _authoritative_running(state, 1), what="the second round")
            assert loop.model.tree is TreeState.RED
            assert [e.kind for e in recorder.seen if e.kind != "file_verdict"] == ["became_red"]
            (state / "gate").write_text("")
            wait_until(lambda: len(recorder.verdicts) == 2, what="the second verdict")
            assert recorder.verdicts[1].tree is TreeState.GREEN
            kinds = [e.kind for e in recorder.seen if e.kind != "file_verdict"]
            assert kinds == ["became_red", "became_green"]
        finally:
            (state / "gate").write_text("")


def test_watch_json_prints_became_red_while_the_authoritative_checker_runs(
    tmp_path: Path,
) -> None:
    root, state = _early_red_project(tmp_path)
    proc = Background("watch", "--json", cwd=root)
    try:
        red = proc.wait_event("became_red")
        # It may start a moment after the advisory checker has finished; it cannot end.
        wait_until(lambda: _authoritative_running(state, 0), what="the authoritative checker")
        assert [d["source"] for d in red["diagnostics"]] == ["lint"]
        (state / "gate").write_text("")
        wait_until(
            lambda: (read_status(root) or WatchStatus.model_construct()).checks == 1,
            what="the round to end",
        )
        assert (state / "finished-0").exists()
        status = read_status(root)
        assert status is not None and status.verdict == TreeState.RED
        assert proc.stop() == 130
        kinds = [event_kind(line) for line in [*proc.seen, *proc.rest()]]
        assert [k for k in kinds if k != "file_verdict"] == ["became_red"]
    finally:
        (state / "gate").write_text("")
        proc.close()
