"""Running a checker as its own process group, so cancelling or stopping kills all of it.

Checkers spawn helpers (cargo runs rustc, npx runs node); killing only the
direct child would leave those running, so every checker starts in a new
session and is stopped with ``killpg`` — when the round is cancelled, when the
loop stops, and when the checker outlives its timeout. What it prints is
spooled to temporary files and read back as a stream (:class:`Output`).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from greenloop._procs import stop_group, wait_exit

_GRACE_S = 2.0
"""How long a checker gets to exit after SIGTERM before SIGKILL."""

_POLL_S = 0.05
"""How often a running checker is looked at for cancellation and its deadline."""

_MAX_LINE = 16 << 20
"""Longer lines are read in pieces of this many bytes (a parser then sees several)."""

_TAIL_BYTES = 64 << 10
"""How much of the end of an output :meth:`Output.tail` looks at."""

_live: set[subprocess.Popen[bytes]] = set()
_live_lock = threading.Lock()


class Output:
    """What one stream of a checker printed, spooled to an anonymous temporary file.

    A checker may print a hundred megabytes; held in memory (let alone as one
    string, then a list of lines) that costs gigabytes. On disk it costs
    nothing until it is read back, a line at a time.
    """

    def __init__(self) -> None:
        # Closed by close(): the output outlives this call, so no `with` here.
        self.file: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115

    def lines(self) -> Iterator[str]:
        """Every line from the start, decoded (invalid UTF-8 replaced), line ends kept."""
        self.file.seek(0)
        while raw := self.file.readline(_MAX_LINE):
            yield raw.decode("utf-8", "replace")

    def tail(self) -> str:
        """The last few kilobytes, decoded (a first partial line included)."""
        size = self.file.seek(0, os.SEEK_END)
        self.file.seek(max(0, size - _TAIL_BYTES))
        return self.file.read().decode("utf-8", "replace")

    def close(self) -> None:
        """Delete the file."""
        self.file.close()


@dataclass(frozen=True)
class Completed:
    """A checker that ran to the end: its exit status and what it printed.

    The caller closes it (:meth:`close`), which deletes the spooled output.
    """

    returncode: int
    stdout: Output
    stderr: Output

    def close(self) -> None:
        """Delete the spooled output."""
        self.stdout.close()
        self.stderr.close()


@dataclass(frozen=True)
class TimedOut:
    """A checker still running after ``timeout_s``: its group was killed; what it had printed.

    The caller closes it (:meth:`close`), which deletes the spooled output.
    """

    timeout_s: float
    stdout: Output
    stderr: Output

    def close(self) -> None:
        """Delete the spooled output."""
        self.stdout.close()
        self.stderr.close()


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
    cannot be started. Output goes to temporary files, not pipes: nothing
    here reads it while the checker runs, and a helper that escaped the group
    holding the stream open cannot keep us waiting for its end.
    """
    started = time.monotonic()
    out, err = Output(), Output()
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=out.file,
            stderr=err.file,
            start_new_session=True,
        )
    except BaseException:
        out.close()
        err.close()
        raise
    with _live_lock:
        _live.add(proc)
    outcome: Completed | TimedOut | None = None
    try:
        while True:
            if cancel.is_set():
                stop_group(proc, _GRACE_S)
                break
            wait = _POLL_S
            if timeout_s is not None:
                left = started + timeout_s - time.monotonic()
                if left <= 0:
                    stop_group(proc, _GRACE_S)
                    outcome = TimedOut(timeout_s, out, err)
                    break
                wait = min(wait, left)
            # Woken as it ends (a pidfd), not at the next step of Popen.wait's backoff.
            if not wait_exit(proc, wait):
                continue
            proc.wait()
            # Killed from elsewhere (kill_all) while stopping: its output is not a verdict.
            if not cancel.is_set():
                outcome = Completed(proc.returncode, out, err)
            break
    finally:
        with _live_lock:
            _live.discard(proc)
        if outcome is None:
            out.close()
            err.close()
    return outcome


def kill_all() -> None:
    """Kill every checker process group still running (used when the loop stops)."""
    with _live_lock:
        running = list(_live)
    for proc in running:
        stop_group(proc, _GRACE_S)
