"""A forked command's side: become the process the client would have started, run the CLI."""

from __future__ import annotations

import io
import os
import signal
import sys
import tempfile
import time
from typing import Any


def become(run: dict[str, Any]) -> None:
    """Turn the forked child into the process the client would have started."""
    os.chdir(run["cwd"])
    os.umask(int(run["umask"]))
    os.environ.clear()
    os.environ.update(run["env"])
    time.tzset()
    tempfile.tempdir = None  # cached from the daemon's own environment
    sys.argv = list(run["argv"])
    sys.path[0] = run["path0"]
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.stdin = _stream(0, "r", sys.__stdin__)
    sys.stdout = _stream(1, "w", sys.__stdout__)
    sys.stderr = _stream(2, "w", sys.__stderr__)


def _stream(fd: int, mode: str, like: io.TextIOWrapper | None) -> io.TextIOWrapper:
    """A standard stream on ``fd`` buffered as CPython would set it up at start-up."""
    # The daemon's own stream says whether Python started with -u / PYTHONUNBUFFERED.
    unbuffered = mode == "w" and like is not None and like.write_through
    raw = open(fd, mode + "b", buffering=0 if unbuffered else -1, closefd=False)  # noqa: SIM115
    return io.TextIOWrapper(
        raw,
        encoding=like.encoding if like else None,
        errors=like.errors if like else None,
        line_buffering=mode == "w" and (fd == 2 or os.isatty(fd)),
        write_through=unbuffered,
    )


def run_cli(ahead: tuple[int, int, int] | None = None) -> int:
    """Run the CLI as ``greenloop`` with the argv :func:`become` set; its exit code.
    ``ahead``: the spare loader forked before the command came, when it loads."""
    from greenloop.cli import main
    from greenloop.daemon import spare
    from greenloop.sdk.loader import hand_over

    if ahead is not None:
        hand_over(ahead)
    elif spare.wanted(sys.argv):
        hand_over(spare.start())  # forked now: while the arguments are parsed
    try:
        # Named outright: click would otherwise name the daemon's own module.
        main(prog_name="greenloop")
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    return 0
