"""``greenloop serve --port``: the fleet's event stream and status over HTTP.

Routes (``worktree`` is the real path of a worktree's top folder)::

    GET /__greenloop/events[?worktree=W]   JSON lines (application/x-ndjson), until the end
    WS  /__greenloop/events[?worktree=W]   one JSON text frame per message
    GET /__greenloop/status                {"serve": {...}, "worktrees": {...}}

A stream carries exactly what the serve socket's ``{"op": "events"}`` (or, with
``worktree``, ``{"op": "watch"}``) sends: ``{"serving": pid}``, the replay, then
live messages. A worktree the fleet does not serve gets ``{"unserved": why}``
(HTTP 404; a WebSocket then closes with :data:`UNSERVED`). Every request must
name one of our hosts (:class:`~greenloop.server.hosts.HostGuard`), a WebSocket
must come from no page or our own (:func:`~greenloop.server.websocket.same_origin`).

Subscribing goes through :meth:`Fleet.follow`; the hub's threaded queue is read
in a worker thread, one blocking ``next`` at a time, so nothing polls while a
stream is idle but the once a :data:`_WAIT_S` timeout that lets a cancelled
stream (its reader hung up) give its thread back. Each stream has a thread
limit of its own: idle streams never starve each other or the app's other work.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from greenloop.fleet.events import Message, Subscriber
from greenloop.fleet.fleet import Fleet
from greenloop.fleet.messages import encode
from greenloop.server.background import DevServer, serve_app
from greenloop.server.hosts import HostGuard, HostPolicy
from greenloop.server.websocket import same_origin

EVENTS_PATH = "/__greenloop/events"
STATUS_PATH = "/__greenloop/status"

UNSERVED = 4404
"""The close code of a WebSocket asking for a worktree the fleet does not serve."""

_WAIT_S = 1.0
"""How long one blocking read of the hub's queue waits before it looks again."""

_GOING_AWAY = 1001  # the server stops
_LAGGED = 1013  # "try again later": the reader fell too far behind, as dev's socket says
_POLICY_VIOLATION = 1008
_NDJSON = "application/x-ndjson"
_COMMAND = "greenloop serve"
# How a send to a reader that went away fails (RuntimeError: starlette's send after close).
_GONE = (WebSocketDisconnect, OSError, RuntimeError)


def create_fleet_app(fleet: Fleet, socket: Path, hosts: HostPolicy | None = None) -> Starlette:
    """The app serving ``fleet`` (whose serve socket is ``socket``); see the module docstring."""

    async def status(request: Request) -> Response:
        document = {"serve": fleet.describe(socket), "worktrees": fleet.listing()}
        return JSONResponse(document, headers={"cache-control": "no-store"})

    async def events_ws(websocket: WebSocket) -> None:
        if not same_origin(websocket):
            await websocket.close(code=_POLICY_VIOLATION)  # before accept: an HTTP 403
            return
        await websocket.accept()
        subscriber = await _follow(fleet, websocket.query_params.get("worktree"))
        if isinstance(subscriber, str):
            with contextlib.suppress(*_GONE):
                await _send_frame(websocket, {"unserved": subscriber})
            await _close(websocket, UNSERVED, subscriber)
            return

        async def gone() -> None:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass

        async def send(message: Message) -> None:
            await _send_frame(websocket, message)

        ended = await _pump(fleet, subscriber, send, gone)
        if ended:
            code = _GOING_AWAY if fleet.hub.closed else _LAGGED
            await _close(websocket, code, "greenloop serve stopped" if fleet.hub.closed else "")

    async def events_http(scope: Scope, receive: Receive, send: Send) -> None:
        worktree = Request(scope).query_params.get("worktree")
        subscriber = await _follow(fleet, worktree)
        if isinstance(subscriber, str):
            await _start(send, 404)
            await send({"type": "http.response.body", "body": encode({"unserved": subscriber})})
            return
        await _start(send, 200)

        async def gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        async def body(message: Message) -> None:
            await send({"type": "http.response.body", "body": encode(message), "more_body": True})

        if await _pump(fleet, subscriber, body, gone):
            await send({"type": "http.response.body", "body": b""})

    return Starlette(
        routes=[
            Route(STATUS_PATH, status),
            # An ASGI callable (not a function) as endpoint: it writes its response itself.
            Route(EVENTS_PATH, _AsgiEndpoint(events_http), methods=["GET"]),
            WebSocketRoute(EVENTS_PATH, events_ws),
        ],
        middleware=[Middleware(HostGuard, policy=hosts or HostPolicy(), command=_COMMAND)],
    )


def serve_fleet(
    fleet: Fleet, socket: Path, host: str, port: int, allowed_hosts: Iterable[str] = ()
) -> DevServer:
    """Serve ``fleet``'s app on ``host``:``port`` (0 picks a free port) from a thread.

    Raises ``ValueError`` for a malformed allowed host, ``OSError`` when the
    address cannot be bound, ``RuntimeError`` when the server does not start.
    """
    policy = HostPolicy.of(host, allowed_hosts)
    return serve_app(create_fleet_app(fleet, socket, policy), host, port, name="serve")


class _AsgiEndpoint:
    """Wraps an ASGI function so starlette's ``Route`` hands it the raw request."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


async def _follow(fleet: Fleet, worktree: str | None) -> Subscriber | str:
    # Finding an unknown worktree reads git's list again: off the event loop.
    return await anyio.to_thread.run_sync(fleet.follow, worktree)


async def _pump(
    fleet: Fleet,
    subscriber: Subscriber,
    send: Callable[[Message], Awaitable[None]],
    gone: Callable[[], Awaitable[None]],
) -> bool:
    """Send ``{"serving": pid}`` then every message of ``subscriber`` until its stream
    ends (True) or the reader hangs up (False); it is unsubscribed either way."""
    hung_up = False
    try:
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                nonlocal hung_up
                await gone()
                hung_up = True
                group.cancel_scope.cancel()

            group.start_soon(watch)
            try:
                await send({"serving": os.getpid()})
                async for message in _messages(subscriber):
                    await send(message)
            except _GONE:
                hung_up = True  # gone between our last look and this send
            group.cancel_scope.cancel()
    finally:
        fleet.hub.unsubscribe(subscriber)
    return not hung_up


async def _messages(subscriber: Subscriber) -> AsyncIterator[Message]:
    limiter = anyio.CapacityLimiter(1)
    while True:
        try:
            message = await anyio.to_thread.run_sync(subscriber.next, _WAIT_S, limiter=limiter)
        except queue.Empty:
            continue  # a reader that hung up meanwhile has cancelled us by now
        if message is None:
            return
        yield message


async def _start(send: Send, status: int) -> None:
    headers = [(b"content-type", _NDJSON.encode()), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _send_frame(websocket: WebSocket, message: dict[str, Any]) -> None:
    await websocket.send_text(json.dumps(message, separators=(",", ":")))


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(*_GONE):
        # A close reason is at most 123 bytes.
        await websocket.close(code=code, reason=reason.encode()[:123].decode(errors="ignore"))
