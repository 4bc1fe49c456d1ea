"""A checker killed with SIGKILL mid-check: the watcher survives, says red, then recovers.

The checker is a real process that records its pid outside the watched tree
(so recording it is no change) and then waits on a gate file, also outside the
tree, giving the test a window in which it is certainly running. Killing it
from outside must never read as a clean run: the round is red with a
``greenloop`` ``checker-failed`` diagnostic, and the watcher checks again by
itself, after a delay that doubles while the checker keeps crashing, until a
run completes (once the gate is open) and turns the tree green.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenloop._fs import pid_alive
from greenloop.devloop.loop import CRASH_RETRY_S
from greenloop.protocol import TreeState
from tests.conftest import wait_until
from tests.test_devloop_helpers import (
    GATED_CHECKER,
    Background,
    Recorder,
    event_kind,
    looping,
    write,
)


def _project(tmp_path: Path) -> tuple[Path, Path]:
    # The state folder sits beside the tree: pid files and the gate are never a change.
    root, state = tmp_path / "proj", tmp_path / "state"
    state.mkdir()
    write(
        root,
        {
            "gated.py": GATED_CHECKER,
            "a.txt": "one\n",
            "greenloop.toml": f"""\
                kinds = []
                [checkers.gated]
                command = ["{sys.executable}", "gated.py", "{state}"]
                """,
        },
    )
    return root, state


def _running_pid(state: Path, run: int) -> int | None:
    """The pid of checker run ``run`` while it is alive and has not finished, else None."""
    started = state / f"started-{run}"
    if not started.exists() or (state / f"finished-{run}").exists():
        return None
    pid = int(started.read_text())
    return pid if pid_alive(pid) else None


def _kill_running_checker(state: Path, run: int) -> int:
    """SIGKILL checker run ``run`` once it is certainly running; its pid."""
    wait_until(lambda: _running_pid(state, run) is not None, what=f"checker run {run} to start")
    pid = _running_pid(state, run)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    # Waited on by the runner's own Popen, so it soon stops existing even as a zombie.
    wait_until(lambda: not pid_alive(pid), what="the killed checker to be gone")
    return pid


def _started_at(state: Path, run: int) -> float:
    return (state / f"started-{run}").stat().st_mtime


@pytest.fixture
def watching(tmp_path: Path) -> Iterator[tuple[Path, Path, Recorder, threading.Thread]]:
    """A watch loop on the gated project, already green (the gate is then closed)."""
    root, state = _project(tmp_path)
    recorder = Recorder()
    with looping(root, recorder, 100) as (_, thread):
        try:
            (state / "gate").write_text("")
            wait_until(lambda: len(recorder.verdicts) == 1, what="the first verdict")
            assert recorder.verdicts[0].tree is TreeState.GREEN
            (state / "gate").unlink()
            yield root, state, recorder, thread
        finally:
            (state / "gate").write_text("")


def test_a_killed_checker_makes_the_round_red_and_retries_back_off_until_green(
    watching: tuple[Path, Path, Recorder, threading.Thread],
) -> None:
    root, state, recorder, thread = watching
    (root / "a.txt").write_text("two\n")
    _kill_running_checker(state, 1)
    wait_until(lambda: len(recorder.verdicts) == 2, what="the killed round's verdict")
    killed = recorder.verdicts[1]
    assert killed.tree is TreeState.RED
    (failure,) = killed.diagnostics
    assert (failure.source, failure.code) == ("greenloop", "checker-failed")
    assert "gated was killed by signal 9" in failure.message
    assert thread.is_alive()
    assert recorder.edges() == ["became_green", "became_red"]
    # No change comes: the loop retries by itself, and the retry is killed too.
    _kill_running_checker(state, 2)
    wait_until(lambda: len(recorder.verdicts) == 3, what="the killed retry's verdict")
    assert recorder.verdicts[2].tree is TreeState.RED
    (state / "gate").write_text("")
    wait_until(lambda: len(recorder.verdicts) == 4, what="the second retry's verdict")
    assert recorder.verdicts[3].tree is TreeState.GREEN
    assert recorder.verdicts[3].diagnostics == []
    assert recorder.rounds == [frozenset(), {"a.txt"}, frozenset(), frozenset()]
    assert recorder.edges() == ["became_green", "became_red", "became_green"]
    # Each retry waited at least its delay after the crash before it, and the delay doubled.
    first, _ = CRASH_RETRY_S
    assert _started_at(state, 2) - _started_at(state, 1) >= first
    assert _started_at(state, 3) - _started_at(state, 2) >= 2 * first


def test_a_hung_checker_is_stopped_at_its_timeout_and_retried(
    watching: tuple[Path, Path, Recorder, threading.Thread],
) -> None:
    root, state, recorder, _ = watching
    config = root / "greenloop.toml"
    config.write_text(config.read_text() + "timeout_s = 0.5\n")
    wait_until(lambda: len(recorder.verdicts) == 2, what="the hung round's verdict")
    (failure,) = recorder.verdicts[1].diagnostics
    assert (failure.source, failure.code) == ("greenloop", "checker-timeout")
    (state / "gate").write_text("")
    wait_until(lambda: len(recorder.verdicts) == 3, what="the retry's verdict")
    assert recorder.verdicts[2].tree is TreeState.GREEN
    assert recorder.rounds == [frozenset(), {"greenloop.toml"}, frozenset()]


def test_watch_json_survives_a_killed_checker_and_turns_green_again(tmp_path: Path) -> None:
    root, state = _project(tmp_path)
    proc = Background("watch", "--json", "--debounce-ms", "100", cwd=root)
    try:
        # The very first round is the one killed: never green before or for it.
        pid = _kill_running_checker(state, 0)
        red = proc.wait_event("became_red")
        assert [(d["source"], d["code"]) for d in red["diagnostics"]] == [
            ("greenloop", "checker-failed")
        ]
        assert f"killed by signal {int(signal.SIGKILL)}" in red["diagnostics"][0]["message"]
        assert proc.proc.poll() is None, "the watcher died with its checker"
        assert not pid_alive(pid)
        (state / "gate").write_text("")  # no change needed: the retry turns it green
        green = proc.wait_event("became_green")
        assert green["identity"]["source_tree"]
        assert (state / "finished-1").exists()
        assert proc.stop() == 130
        kinds = [event_kind(line) for line in [*proc.seen, *proc.rest()]]
        assert [k for k in kinds if k != "file_verdict"] == ["became_red", "became_green"]
    finally:
        (state / "gate").write_text("")
        proc.close()
