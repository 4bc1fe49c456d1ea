"""The ``/__greenloop/events`` WebSocket: the state's broadcast, one socket per client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect

from greenloop.server.state import LiveState, Subscription

# "Try again later": sent to a client that lagged too far; it reconnects and resyncs.
_LAGGED = 1013
_POLICY_VIOLATION = 1008


def events_endpoint(state: LiveState) -> Callable[[WebSocket], Awaitable[None]]:
    """The endpoint that streams ``state``'s messages to each connected client."""

    async def endpoint(websocket: WebSocket) -> None:
        if not same_origin(websocket):
            await websocket.close(code=_POLICY_VIOLATION)  # before accept: an HTTP 403
            return
        await websocket.accept()
        subscription = state.subscribe(asyncio.get_running_loop())
        try:
            async with anyio.create_task_group() as group:
                # The client never has to say anything, but its disconnect must end the stream.
                group.start_soon(_until_disconnect, websocket, group.cancel_scope)
                await _forward(websocket, subscription)
                group.cancel_scope.cancel()
        finally:
            state.unsubscribe(subscription)

    return endpoint


def same_origin(websocket: WebSocket) -> bool:
    """False for a browser page of another site; WebSockets are exempt from CORS.

    Without this, any web page the developer visits could open the socket
    and read the diagnostics (paths, messages) of the tree. Clients that send
    no ``Origin`` (tools, tests) are not browsers and are let in.
    """
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == websocket.headers.get("host", "").lower()


async def _until_disconnect(websocket: WebSocket, scope: anyio.CancelScope) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            scope.cancel()
            return


async def _forward(websocket: WebSocket, subscription: Subscription) -> None:
    while True:
        text = await subscription.get()
        try:
            if text is None:
                await websocket.close(code=_LAGGED)
                return
            await websocket.send_text(text)
        except (WebSocketDisconnect, OSError, RuntimeError):
            # Gone between our last look and this send (RuntimeError is how
            # starlette reports a send after the close handshake).
            return
