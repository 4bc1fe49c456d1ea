"""The daemon's side of a connection: who is calling, what it asks, the answers."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
from collections.abc import Iterator
from typing import Any

from greenloop.daemon.wire import frame, unframe


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of ``conn``."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The first request on ``conn`` and the descriptors sent with it."""
    buffer, fds = b"", []
    try:
        while True:
            chunk, got, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
            fds += got
            if not chunk:
                raise ValueError("connection closed before the request ended")
            messages, buffer = unframe(buffer + chunk)
            if messages:
                return messages[0], fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def each(conn: socket.socket) -> Iterator[tuple[dict[str, Any], list[int]]]:
    """The messages on ``conn`` as they come, each with the descriptors that came since
    the one before; ends when the other end hangs up."""
    buffer, fds = b"", []
    while True:
        chunk, got, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
        fds += got
        if not chunk:
            return
        messages, buffer = unframe(buffer + chunk)
        for message in messages:
            yield message, fds
            fds = []


def readable(conn: socket.socket) -> bool:
    """Whether something waits to be read on ``conn`` (or it is closed), without waiting."""
    return bool(select.select([conn], [], [], 0)[0])


def send(conn: socket.socket, message: dict[str, Any]) -> None:
    """Send ``message`` on ``conn``, framed."""
    conn.sendall(frame(message))


def decline(conn: socket.socket, reason: str) -> None:
    """Tell the client to run the command itself, and hang up."""
    with contextlib.suppress(OSError):
        send(conn, {"fallback": reason})
    conn.close()


def unlink(path: str) -> None:
    """Remove ``path``; already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
