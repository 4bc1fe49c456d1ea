"""Asking a repository's ``greenloop serve`` from ``check``, ``watch`` and ``status``.

Each function returns None when no server answers for the worktree (none
runs, the worktree is not one it serves, or ``$GREENLOOP_NO_SERVE`` is set):
the command then does the work itself, exactly as without a server. A server
that goes away halfway through a ``check`` also gives None (the check is then
run locally); a stream just ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from greenloop.fleet.events import Message
from greenloop.fleet.place import ServePlace, common_dir
from greenloop.protocol import CheckResult, SetupError

NO_SERVE_ENV = "GREENLOOP_NO_SERVE"
"""Set (to anything but empty or 0) to make every command work on its own."""

_POLL_S = 0.25
"""How often a client waiting for an answer looks at its cancel event."""


class Stream:
    """The lines a server sends on one connection, as messages."""

    def __init__(self, conn: socket.socket, cancel: threading.Event) -> None:
        self._conn = conn
        self._cancel = cancel
        self._buffer = b""

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        while b"\n" not in self._buffer:
            if self._cancel.is_set():
                raise StopIteration
            try:
                chunk = self._conn.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                raise StopIteration from None
            if not chunk:
                raise StopIteration
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: Message = json.loads(line)
        return message

    def close(self) -> None:
        """Hang up."""
        self._conn.close()


def place_of(worktree: Path) -> ServePlace | None:
    """Where the server of ``worktree``'s repository would listen; None outside git."""
    common = common_dir(worktree)
    return None if common is None else ServePlace.of(common)


def ask(
    worktree: Path, op: str, cancel: threading.Event | None = None, **extra: Any
) -> tuple[Message, Stream] | None:
    """Send ``op`` about ``worktree`` (a real path); the first reply and the rest of the
    stream, or None when no server serves it."""
    if os.environ.get(NO_SERVE_ENV, "") not in ("", "0"):
        return None
    place = place_of(worktree)
    if place is None:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(place.socket))
        request = {"op": op, "worktree": str(worktree), **extra}
        conn.sendall(json.dumps(request).encode() + b"\n")
    except OSError:
        conn.close()
        return None
    conn.settimeout(_POLL_S)
    stream = Stream(conn, cancel or threading.Event())
    first = next(stream, None)
    if first is None or "unserved" in first:
        stream.close()
        return None
    if "error" in first:
        stream.close()
        raise SetupError(f"greenloop serve refused the request: {first['error']}")
    return first, stream


def served_check(worktree: Path, cancel: threading.Event) -> CheckResult | None:
    """The server's verdict on ``worktree`` now; raises ``SetupError`` as a local check would."""
    answer = ask(worktree, "check", cancel)
    if answer is None:
        return None
    first, stream = answer
    stream.close()
    if "setup_error" in first:
        raise SetupError(first["setup_error"])
    return CheckResult.model_validate(first["result"])


def served_status(worktree: Path) -> dict[str, Any] | None:
    """The server's ``watcher`` and ``serve`` sections for ``worktree``."""
    answer = ask(worktree, "status")
    if answer is None:
        return None
    first, stream = answer
    stream.close()
    return first


def follow(worktree: Path, op: str, cancel: threading.Event) -> tuple[int, Stream] | None:
    """Subscribe to ``worktree``'s messages (``watch``) or every worktree's (``events``);
    the server's pid and the stream."""
    answer = ask(worktree, op, cancel)
    if answer is None:
        return None
    first, stream = answer
    with contextlib.suppress(KeyError, TypeError, ValueError):
        return int(first["serving"]), stream
    stream.close()
    raise SetupError(f"greenloop serve answered {op} with {first!r}")
