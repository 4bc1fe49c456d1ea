"""The client side: hand one command to the daemon and relay its exit status.

The wire is framed messages (:mod:`greenloop.daemon.wire`) over the daemon's
Unix socket. The client
sends one request line, and with a ``run`` request its stdin, stdout and stderr
(``SCM_RIGHTS``), so the command writes straight to the caller's terminal or
pipe. The daemon answers ``{"started": pid}`` then ``{"exit": code}``, or
``{"fallback": reason}`` when it will not run the command (the client then runs
it in-process). While the command runs the client forwards the signals it gets
(``{"signal": n}``); if the client dies, the daemon stops the command.

Imports only the standard library: this runs before every command.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

from greenloop.daemon import NO_DAEMON_ENV, DaemonPaths
from greenloop.daemon.wire import frame, unframe

TYPE_CHECKING = False  # not typing's: this module must import fast
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

# Signals a terminal or a supervisor sends to stop a command.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class DaemonGone(Exception):
    """The daemon closed the connection before saying how the command ended."""


def connect(where: DaemonPaths, timeout: float | None = None) -> socket.socket | None:
    """A connection to the daemon at ``where``, or None when none is listening."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(where.socket)
    except OSError:
        sock.close()
        return None
    return sock


def ask(request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any] | None:
    """Send a control request (``status``, ``stop``); the daemon's answer, or None."""
    sock = connect(DaemonPaths(), timeout)
    if sock is None:
        return None
    with sock:
        try:
            sock.sendall(frame(request))
            return next(_replies(sock), None)
        except (OSError, DaemonGone):
            return None


def forward(argv: list[str]) -> int | None:
    """Run ``argv`` in the daemon; its exit status, or None to run it in-process.

    None when no daemon serves this interpreter, it declines (its code changed on
    disk), or ``$GREENLOOP_NO_DAEMON`` is set.
    """
    if os.environ.get(NO_DAEMON_ENV) or argv[1:2] == ["daemon"] or not hasattr(os, "getuid"):
        return None  # (no getuid: not a POSIX system, so no daemon either)
    where = DaemonPaths()
    sock = connect(where)
    if sock is None:
        return None
    request = {
        "run": {
            "argv": argv,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "umask": _umask(),
            "path0": sys.path[0],
            "identity": where.identity,
        }
    }
    with sock:
        try:
            data = frame(request)
            sent = socket.send_fds(sock, [data], [0, 1, 2])
            sock.sendall(data[sent:])
        except OSError:
            return None  # e.g. a closed stdin: nothing to pass, so run here
        return _relay(sock)


def _relay(sock: socket.socket) -> int | None:
    def forward_signal(signum: int, _frame: object) -> None:
        try:  # noqa: SIM105 (contextlib would cost every command its import)
            sock.sendall(frame({"signal": signum}))
        except OSError:
            pass

    previous = {s: signal.signal(s, forward_signal) for s in FORWARDED}
    try:
        for reply in _replies(sock):
            if "exit" in reply:
                return int(reply["exit"])
            if "fallback" in reply:
                return None
        raise DaemonGone
    except (DaemonGone, OSError):
        print("greenloop: the daemon stopped before the command finished", file=sys.stderr)
        return 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _replies(sock: socket.socket) -> Iterator[dict[str, Any]]:
    buffer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise DaemonGone
        messages, buffer = unframe(buffer + chunk)
        yield from messages


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
