"""Child processes run as their own process group: watching them end, and stopping all of a group.

Checkers, plugins, language servers and steps spawn helpers (cargo runs
rustc, npx runs node); killing only the direct child would leave those
running, so each is started in a new session (``start_new_session=True``)
and stopped here, group and all.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time


def stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Stop ``proc`` and its whole group: SIGTERM, up to ``grace`` seconds for the group
    to end (a server's workers finish shutting down), then SIGKILL; the leader is reaped."""
    signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    wait_exit(proc, grace)
    if exit_status(proc) is None:
        # The leader is alive or an unreaped zombie, so its group id cannot have been
        # reused: this reaches exactly what the child left running.
        signal_group(proc.pid, signal.SIGKILL)
    else:
        # Reaped, the leader's id stays reserved while any of its group lives on.
        proc.wait()
        while group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def group_alive(pgid: int) -> bool:
    """Whether any process is left in group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to process group ``pgid``; a group that is gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def exit_status(proc: subprocess.Popen[bytes]) -> str | None:
    """How the process ended, or ``None`` while it runs -- without reaping it."""
    if proc.returncode is not None:
        return _describe(proc.returncode)
    if not hasattr(os, "waitid"):  # e.g. macOS: fall back to reaping
        code = proc.poll()
        return None if code is None else _describe(code)
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return "exited"
    if info is None:
        return None
    if info.si_code == os.CLD_EXITED:
        return f"exited with code {info.si_status}"
    return f"was killed by {_signal_name(info.si_status)}"


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``proc`` to end, without reaping it; whether it did.

    Woken the moment it ends where the kernel has pidfds (Linux 5.3): polling,
    even backing off as ``Popen.wait`` does, adds up to its interval to every
    short step.
    """
    if exit_status(proc) is not None:
        return True
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        try:
            select.select([pidfd], [], [], timeout)
        finally:
            os.close(pidfd)
        return exit_status(proc) is not None
    deadline = time.monotonic() + timeout
    while exit_status(proc) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _describe(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {_signal_name(-returncode)}"
    return f"exited with code {returncode}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


_MAX_FD = os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536


def close_all_but(keep: int, *more: int) -> None:
    """Close every descriptor of this process except ``keep`` (and ``more``): a forked
    child about to answer its parent, so nothing of it then holds a pipe, lock or file open."""
    low = 0
    for fd in sorted({keep, *more}):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _MAX_FD)
