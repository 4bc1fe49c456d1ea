"""Running a checker as its own process group, so cancelling or stopping kills all of it.

Checkers spawn helpers (cargo runs rustc, npx runs node); killing only the
direct child would leave those running, so every checker starts in a new
session and is stopped with ``killpg`` — when the round is cancelled, when the
loop stops, and when the checker outlives its timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_GRACE_S = 2.0
"""How long a checker gets to exit after SIGTERM before SIGKILL."""

_POLL_S = 0.05
"""How often a running checker is looked at for cancellation and its deadline."""

_live: set[subprocess.Popen[bytes]] = set()
_live_lock = threading.Lock()


@dataclass(frozen=True)
class Completed:
    """A checker that ran to the end: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class TimedOut:
    """A checker still running after ``timeout_s``: its group was killed; what it had printed."""

    timeout_s: float
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    cwd: Path,
    cancel: threading.Event,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
) -> Completed | TimedOut | None:
    """Run ``argv`` in ``cwd``; None when ``cancel`` was set first (the group is then killed).

    After ``timeout_s`` seconds (None: no limit) the whole process group is
    killed and :class:`TimedOut` returned. Raises ``OSError`` when the program
    cannot be started.
    """
    started = time.monotonic()
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
            wait = _POLL_S
            if timeout_s is not None:
                left = started + timeout_s - time.monotonic()
                if left <= 0:
                    _kill_group(proc)
                    out, err = _drain(proc)
                    return TimedOut(timeout_s, _text(out), _text(err))
                wait = min(wait, left)
            try:
                out, err = proc.communicate(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        with _live_lock:
            _live.discard(proc)
    if cancel.is_set():
        # Killed from elsewhere (kill_all) while stopping: its output is not a verdict.
        return None
    return Completed(proc.returncode, _text(out), _text(err))


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


def _drain(proc: subprocess.Popen[bytes]) -> tuple[bytes | None, bytes | None]:
    # communicate() keeps what earlier timed-out calls already read, so this is all of it.
    try:
        return proc.communicate(timeout=_GRACE_S)
    except (subprocess.TimeoutExpired, ValueError):
        # A helper that escaped the group still holds the pipes; stop reading them.
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        return None, None


def _text(data: bytes | None) -> str:
    return data.decode("utf-8", "replace") if data else ""


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
