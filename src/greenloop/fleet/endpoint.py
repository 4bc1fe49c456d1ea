"""The serve socket: one JSON request line in, JSON lines out.

Requests (``worktree`` is the real path of a worktree's top folder)::

    {"op": "check", "worktree": W}   -> {"result": CheckResult} | {"setup_error": text}
    {"op": "status", "worktree": W}  -> {"watcher": {...}, "serve": {...}}
    {"op": "watch", "worktree": W}   -> {"serving": pid}, then W's messages, until the end
    {"op": "events"}                 -> {"serving": pid}, then every worktree's messages
    {"op": "dev", "worktree": W, "dev": flags}
                                     -> {"serving": pid, "url": U}, then W's messages
                                        (with its builds), until the reader hangs up
                                        | {"setup_error": text}

A worktree the fleet does not serve gets ``{"unserved": why}``: the client
then does the work itself, as without a server. Only the server's own user
may connect (the folder is private, and the peer's uid is checked).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import socketserver
import struct
import threading
from pathlib import Path
from typing import Any

from greenloop.devloop.status import watcher_section
from greenloop.fleet.events import Message, Subscriber
from greenloop.fleet.fleet import Fleet
from greenloop.fleet.hosted_dev import DevOpener
from greenloop.fleet.member import Member
from greenloop.fleet.messages import encode
from greenloop.protocol import SetupError

MAX_REQUEST = 64 << 10
"""A request line longer than this is refused."""

_STREAM_POLL_S = 1.0
"""How often an idle stream looks whether its reader hung up."""


class Endpoint(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The fleet's Unix socket server: a thread per connection."""

    daemon_threads = True

    def __init__(self, path: Path, fleet: Fleet, dev: DevOpener | None = None) -> None:
        """Listen on ``path`` (a stale socket file there is replaced: the caller holds the lock).

        ``dev`` opens the sessions ``dev`` requests ask for (None: they are refused).
        """
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.fleet = fleet
        self.dev = dev
        self.path = path
        super().__init__(str(path), _Handler)
        os.chmod(path, 0o600)
        self._thread = threading.Thread(target=self.serve_forever, name="greenloop-serve-socket")

    def start(self) -> None:
        """Answer connections from a thread of its own."""
        self._thread.start()

    def close(self) -> None:
        """Stop answering and remove the socket file."""
        self.shutdown()
        self._thread.join()
        self.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class _Handler(socketserver.StreamRequestHandler):
    server: Endpoint

    def handle(self) -> None:
        if not _same_user(self.request):
            return
        line = self.rfile.readline(MAX_REQUEST)
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError as e:
            self._send({"error": f"a serve request must be one JSON object a line: {e}"})
            return
        op = request.get("op")
        worktree = str(request.get("worktree", ""))
        fleet = self.server.fleet
        if op == "events":
            self._stream(fleet.follow(None))
            return
        if op not in ("check", "status", "watch", "dev"):
            self._send({"error": f"unknown serve request {op!r}"})
            return
        if op == "watch":
            self._stream(fleet.follow(worktree))
            return
        member = fleet.member(worktree)
        if member is None:
            self._send({"unserved": fleet.unserved(worktree)})
            return
        if op == "status":
            self._send(
                {
                    "watcher": watcher_section(member.root),
                    "serve": fleet.describe(self.server.path),
                }
            )
        elif op == "dev":
            self._dev(member, request.get("dev"))
        else:
            try:
                result = member.check()
            except SetupError as e:
                self._send({"setup_error": str(e)})
                return
            if result is None:
                self._send({"unserved": f"{worktree} stopped being served"})
            else:
                self._send({"result": result.model_dump(mode="json")})

    def _dev(self, member: Member, flags: object) -> None:
        opener = self.server.dev
        if opener is None or not isinstance(flags, dict):
            self._send({"error": "this greenloop serve hosts no dev sessions"})
            return
        # Subscribed first, so not one of the session's first builds goes untold.
        subscriber = member.subscribe()
        try:
            session = member.host_dev(opener, flags)
        except SetupError as e:
            self.server.fleet.hub.unsubscribe(subscriber)
            self._send({"setup_error": str(e)})
            return
        try:
            self._stream(subscriber, url=session.url)
        finally:
            member.unhost_dev(session)

    def _stream(self, subscriber: Subscriber | str, **first: Any) -> None:
        if isinstance(subscriber, str):
            self._send({"unserved": subscriber})
            return
        hub = self.server.fleet.hub
        try:
            self._send({"serving": os.getpid(), **first})
            while True:
                try:
                    message = subscriber.next(_STREAM_POLL_S)
                except queue.Empty:
                    if _hung_up(self.request):
                        return
                    continue
                if message is None:
                    return
                self._send(message)
        except OSError:
            return  # the reader went away
        finally:
            hub.unsubscribe(subscriber)

    def _send(self, message: Message | dict[str, Any]) -> None:
        self.wfile.write(encode(message))
        self.wfile.flush()


def _same_user(conn: socket.socket) -> bool:
    if not hasattr(socket, "SO_PEERCRED"):  # not Linux: the private folder guards alone
        return True
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.getuid())


def _hung_up(conn: socket.socket) -> bool:
    """Whether the peer closed its end (it never sends after its request)."""
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
