"""Running a checker as its own process group, so cancelling or stopping kills all of it.

Checkers spawn helpers (cargo runs rustc, npx runs node); killing only the
direct child would leave those running, so every checker starts in a new
session and is stopped with ``killpg``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_GRACE_S = 2.0
"""How long a checker gets to exit after SIGTERM before SIGKILL."""

_live: set[subprocess.Popen[bytes]] = set()
_live_lock = threading.Lock()


@dataclass(frozen=True)
class Completed:
    """A checker that ran to the end: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    cwd: Path,
    cancel: threading.Event,
    env: Mapping[str, str] | None = None,
) -> Completed | None:
    """Run ``argv`` in ``cwd``; None when ``cancel`` was set first (the group is then killed).

    Raises ``OSError`` when the program cannot be started.
    """
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    with _live_lock:
        _live.add(proc)
    try:
        while True:
            if cancel.is_set():
                _kill_group(proc)
                _drain(proc)
                return None
            try:
                out, err = proc.communicate(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        with _live_lock:
            _live.discard(proc)
    if cancel.is_set():
        # Killed from elsewhere (kill_all) while stopping: its output is not a verdict.
        return None
    return Completed(
        proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    )


def kill_all() -> None:
    """Kill every checker process group still running (used when the loop stops)."""
    with _live_lock:
        running = list(_live)
    for proc in running:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    _signal_group(proc, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=_GRACE_S)
    # Helpers may outlive (or ignore) the SIGTERM their leader got: finish the group off.
    _signal_group(proc, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=_GRACE_S)


def _drain(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.communicate(timeout=_GRACE_S)
    except (subprocess.TimeoutExpired, ValueError):
        # A helper that escaped the group still holds the pipes; stop reading them.
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
