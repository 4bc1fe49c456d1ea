"""The client side: hand one command to the daemon and relay its exit status.

The wire is framed messages (:mod:`greenloop.daemon.wire`) over the daemon's
Unix socket. The client
sends one request line, and with a ``run`` request its stdin, stdout and stderr
(``SCM_RIGHTS``), so the command writes straight to the caller's terminal or
pipe. The daemon answers ``{"started": pid}`` then ``{"exit": code}``, or
``{"fallback": reason}`` when it will not run the command (the client then runs
it in-process). While the command runs the client forwards the signals it gets
(``{"signal": n}``); if the client dies, the daemon stops the command.

When no daemon answers, the command runs in-process and, unless the user's
settings, ``$GREENLOOP_NO_DAEMON`` or CI say otherwise, first starts one in the
background for the next command (:mod:`greenloop.daemon.spawn`).

Imports only the standard library, and of it the C modules ``_socket`` and
``_signal`` rather than ``socket`` and ``signal`` (their enums cost a command
several milliseconds; so would ``array``'s import of ``collections``): this
runs before every command.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # (typeshed has no stub for it)
import _socket
import os
import sys

from greenloop._config import load as load_config
from greenloop.daemon import NO_DAEMON_ENV, DaemonPaths, may_start_itself
from greenloop.daemon.wire import frame, unframe

TYPE_CHECKING = False  # not typing's: this module must import fast
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

# Signals a terminal or a supervisor sends to stop a command.
FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT)
# stdin, stdout and stderr as SCM_RIGHTS data: an array of C ints.
_STDIO_FDS = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2))


class DaemonGone(Exception):
    """The daemon closed the connection before saying how the command ended."""


def connect(where: DaemonPaths, timeout: float | None = None) -> _socket.socket | None:
    """A connection to the daemon at ``where``, or None when none is listening."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
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
    try:
        sock.sendall(frame(request))
        return next(_replies(sock), None)
    except (OSError, DaemonGone):
        return None
    finally:
        sock.close()


def forward(argv: list[str]) -> int | None:
    """Run ``argv`` in the daemon; its exit status, or None to run it in-process.

    None when no daemon serves this interpreter (one is then started in the
    background for the next command, when that is allowed), it declines (its
    code changed on disk), ``$GREENLOOP_NO_DAEMON`` is set or the user's
    settings say ``daemon = false``. A settings file that cannot be read raises
    :class:`~greenloop._config.ConfigError`.
    """
    if os.environ.get(NO_DAEMON_ENV) or argv[1:2] == ["daemon"] or not hasattr(os, "getuid"):
        return None  # (no getuid: not a POSIX system, so no daemon either)
    config = load_config()
    if config.daemon is False:
        return None
    where = DaemonPaths()
    sock = connect(where)
    if sock is None:
        if may_start_itself(config.daemon) and _linux_enough():
            from greenloop.daemon.spawn import spawn

            spawn(where, _command_name(argv), automatic=True)
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
    try:
        data = frame(request)
        sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _STDIO_FDS)])
        if sent < len(data):
            sock.sendall(data[sent:])
    except OSError:
        # The daemon has not all of the request (or a standard stream is closed: nothing
        # to pass), so it runs nothing: run here. Once it has all, nothing more is sent:
        # the command may have run and ended and the daemon hung up already, so even
        # sending nothing would fail, and running it here too would run it twice.
        sock.close()
        return None
    try:
        return _relay(sock)
    finally:
        sock.close()


def _linux_enough() -> bool:
    """Whether this kernel and Python have what a daemon needs (Linux 5.3: ``pidfd_open``)."""
    return hasattr(os, "pidfd_open") and hasattr(_socket.socket, "sendmsg")


def _command_name(argv: list[str]) -> str:
    """How ``daemon status`` names the command that started a daemon: its subcommand,
    never its arguments (they may hold values the daemon's own command line would show)."""
    words = [a for a in argv[1:2] if not a.startswith("-")]
    return " ".join(["greenloop", *words])


def _relay(sock: _socket.socket) -> int | None:
    def forward_signal(signum: int, _frame: object) -> None:
        try:  # noqa: SIM105 (contextlib would cost every command its import)
            sock.sendall(frame({"signal": signum}))
        except OSError:
            pass

    previous = {s: _signal.signal(s, forward_signal) for s in FORWARDED}
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
            _signal.signal(s, handler)


def _replies(sock: _socket.socket) -> Iterator[dict[str, Any]]:
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
