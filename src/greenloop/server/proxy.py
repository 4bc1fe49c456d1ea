"""The reverse proxy in front of an app: every request goes to the current app process.

``greenloop dev`` for an app keeps the public port and hands each request to
one :class:`Upstream` (an app process on a loopback port). :meth:`Proxy.swap`
replaces that target atomically: one reference, swapped under a lock. Each
HTTP request takes a lease on the target it started with and keeps it until
its response is fully sent, so a request in flight during a swap finishes on
the old app; :meth:`Proxy.wait_drained` tells the caller when the old app has
no request left and may be stopped. WebSockets are relayed to the app too,
but hold no lease: they would keep an old app alive forever; they close when
that app stops, and the browser's page reloads onto the new build anyway.

HTML responses get the live-reload script (the overlay), tagged with the build
of the app that answered. Requests the app answers with a 5xx, or cannot
answer at all, are reported to ``on_failure`` so the dev layer can show the
app's error; the proxy never decides anything about the app itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from html import escape

import anyio
import httpx
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.types import Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from greenloop.server.inject import holding_page, inject

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# What the WebSocket client library sets itself for the handshake to the app.
_HANDSHAKE = frozenset(
    {
        b"host",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
    }
)
_FORWARDED = frozenset({b"x-forwarded-host", b"x-forwarded-proto"})
_RESERVED = "/__greenloop/"
_TRY_AGAIN_LATER = 1013
_SERVICE_RESTART = 1012
# Close codes a peer may not send itself (RFC 6455 §7.4.1): they only describe a close.
_NOT_SENDABLE = {1005, 1006, 1015}


@dataclass(frozen=True, eq=False)
class Upstream:
    """One app process the proxy can send requests to.

    Compared by identity: two processes of the same build on a reused port
    are still two targets with their own in-flight counts.
    """

    port: int
    """Its loopback port."""
    artifact_id: str
    """The artifact tree it runs from; the pages it serves carry it."""
    host: str = "127.0.0.1"
    """The address it listens on."""


@dataclass(frozen=True)
class UpstreamFailure:
    """A request the app answered with a 5xx, or could not answer at all."""

    method: str
    path: str
    status: int | None
    """The status the app answered with; None when it could not be reached."""
    reason: str = ""
    """Why it could not be reached."""

    def describe(self) -> str:
        """One line: ``GET /x answered 500``, or why the app could not be reached."""
        if self.status is None:
            return f"{self.method} {self.path} could not reach the app ({self.reason})"
        return f"{self.method} {self.path} answered {self.status}"


OnFailure = Callable[[Upstream, UpstreamFailure], None]
"""Told of each failed request; called on the server's event loop, so it must not block."""


class Proxy:
    """An ASGI app that relays HTTP and WebSocket requests to the current :class:`Upstream`.

    :meth:`swap`, :meth:`current`, :meth:`in_flight` and :meth:`wait_drained`
    may be called from any thread.
    """

    def __init__(self, on_failure: OnFailure | None = None, *, connect_timeout: float = 10.0):
        """A proxy with no target yet (it answers with the holding page until :meth:`swap`)."""
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._current: Upstream | None = None
        self._in_flight: dict[Upstream, int] = {}
        self._on_failure = on_failure or (lambda upstream, failure: None)
        self._connect_timeout = connect_timeout
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    # -- the target -------------------------------------------------------------

    def swap(self, upstream: Upstream | None) -> Upstream | None:
        """Send every request that starts from now on to ``upstream``; return the old target.

        Requests already holding the old target keep it until they finish.
        """
        with self._lock:
            old, self._current = self._current, upstream
            return old

    def current(self) -> Upstream | None:
        """The target new requests go to."""
        with self._lock:
            return self._current

    def in_flight(self, upstream: Upstream) -> int:
        """How many HTTP requests are still being answered by ``upstream``."""
        with self._lock:
            return self._in_flight.get(upstream, 0)

    def wait_drained(self, upstream: Upstream, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until ``upstream`` has no request left; whether it has."""
        deadline = time.monotonic() + timeout
        with self._drained:
            while self._in_flight.get(upstream, 0) > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._drained.wait(remaining)
            return True

    def _lease(self) -> Upstream | None:
        with self._lock:
            upstream = self._current
            if upstream is not None:
                self._in_flight[upstream] = self._in_flight.get(upstream, 0) + 1
            return upstream

    def _release(self, upstream: Upstream) -> None:
        with self._lock:
            left = self._in_flight[upstream] - 1
            if left:
                self._in_flight[upstream] = left
            else:
                del self._in_flight[upstream]
                self._drained.notify_all()

    # -- ASGI ---------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Relay one HTTP request or WebSocket session to the current app."""
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        upstream = self._lease()
        if upstream is None:
            await _waiting(scope["method"])(scope, receive, send)
            return
        try:
            await self._forward(upstream, scope, receive, send)
        finally:
            self._release(upstream)

    async def _forward(
        self, upstream: Upstream, scope: Scope, receive: Receive, send: Send
    ) -> None:
        method: str = scope["method"]
        client = self._http_client()
        request = client.build_request(
            method,
            f"http://{_netloc(upstream)}{_target(scope)}",
            headers=_request_headers(scope),
            content=_request_body(receive) if _has_body(scope) else None,
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as e:
            failure = UpstreamFailure(method, scope["path"], None, _reason(e))
            self._on_failure(upstream, failure)
            await _bad_gateway(upstream, failure)(scope, receive, send)
            return
        try:
            if response.status_code >= 500:
                self._on_failure(
                    upstream, UpstreamFailure(method, scope["path"], response.status_code)
                )
            await self._respond(upstream, scope, response, receive, send)
        finally:
            await response.aclose()

    async def _respond(
        self,
        upstream: Upstream,
        scope: Scope,
        response: httpx.Response,
        receive: Receive,
        send: Send,
    ) -> None:
        method: str = scope["method"]
        headers = _response_headers(response.headers.raw)
        status = response.status_code
        if status >= 500 and not _is_html(response) and _is_navigation(scope):
            # A page the browser navigates to, failing as plain text, would have no
            # overlay: it gets a page around the app's own body that carries one.
            try:
                text = (await response.aread()).decode("utf-8", "replace")
            except httpx.HTTPError:
                text = ""
            failure = UpstreamFailure(method, scope["path"], status)
            await _error_page(upstream, failure, text)(scope, receive, send)
            return
        if _is_html(response) and status not in (204, 304):
            if method == "HEAD":
                # The page we would send is longer than the app's: its length is unknown here.
                headers = [(k, v) for k, v in headers if k != b"content-length"]
            else:
                try:
                    body = await response.aread()  # decoded: the script goes into the text
                except httpx.HTTPError as e:
                    failure = UpstreamFailure(method, scope["path"], None, _reason(e))
                    self._on_failure(upstream, failure)
                    await _bad_gateway(upstream, failure)(scope, receive, send)
                    return
                body = inject(body, upstream.artifact_id)
                headers = [
                    (k, v) for k, v in headers if k not in (b"content-length", b"content-encoding")
                ]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if method != "HEAD":
            try:
                async for chunk in response.aiter_raw():
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError as e:
                # The app went away mid-response. Ending without the last message
                # makes the server drop the connection: the client sees a cut
                # response, never a short one passed off as complete.
                failure = UpstreamFailure(method, scope["path"], None, _reason(e))
                self._on_failure(upstream, failure)
                return
        await send({"type": "http.response.body", "body": b""})

    def _http_client(self) -> httpx.AsyncClient:
        # One pooled client per event loop (a server restarted in the same process runs a
        # new loop, and an httpx client belongs to the loop it first ran on).
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(
                # Loopback only: no proxy from the environment may sit in between.
                trust_env=False,
                # No read limit: an app may stream or long-poll as long as it likes.
                timeout=httpx.Timeout(None, connect=self._connect_timeout),
                # Shorter than the app server's own keep-alive (uvicorn: 5 s), so the pool
                # never reuses a connection the app is just closing.
                limits=httpx.Limits(max_connections=None, keepalive_expiry=2.0),
                follow_redirects=False,
            )
            self._client_loop = loop
        return self._client

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        upstream = self.current()
        if upstream is None or scope["path"].startswith(_RESERVED):
            # Closing before accepting is an HTTP 403 for the client.
            await send({"type": "websocket.close", "code": _TRY_AGAIN_LATER})
            return
        subprotocols = [Subprotocol(p) for p in scope.get("subprotocols", [])]
        try:
            app = await connect(
                f"ws://{_netloc(upstream)}{_target(scope)}",
                subprotocols=subprotocols or None,
                additional_headers=_websocket_headers(scope),
                user_agent_header=None,
                open_timeout=self._connect_timeout,
                ping_interval=None,  # the app and the browser keep their own pings
                max_size=None,
            )
        except (OSError, InvalidHandshake, TimeoutError) as e:
            status = e.response.status_code if isinstance(e, InvalidStatus) else None
            if status is None or status >= 500:
                self._on_failure(
                    upstream, UpstreamFailure("GET", scope["path"], status, _reason(e))
                )
            await send({"type": "websocket.close", "code": _TRY_AGAIN_LATER})
            return
        async with app:
            message = await receive()
            if message["type"] != "websocket.connect":
                return
            await send({"type": "websocket.accept", "subprotocol": app.subprotocol})
            async with anyio.create_task_group() as group:
                group.start_soon(_browser_to_app, receive, app, group.cancel_scope)
                await _app_to_browser(app, send)
                group.cancel_scope.cancel()


async def _browser_to_app(
    receive: Receive, app: ClientConnection, scope: anyio.CancelScope
) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            code = message.get("code", 1000)
            await app.close(code if code not in _NOT_SENDABLE else 1000)
            scope.cancel()
            return
        if message["type"] == "websocket.receive":
            text = message.get("text")
            try:
                await app.send(text if text is not None else message.get("bytes") or b"")
            except ConnectionClosed:
                return  # _app_to_browser sees the close too and ends the session


async def _app_to_browser(app: ClientConnection, send: Send) -> None:
    try:
        async for data in app:
            key = "text" if isinstance(data, str) else "bytes"
            await send({"type": "websocket.send", key: data})
    except ConnectionClosed:
        pass
    received = app.close_code
    # An app that vanished without a close frame was stopped (or crashed): "service restart".
    code = _SERVICE_RESTART if received is None or received in _NOT_SENDABLE else received
    with contextlib.suppress(OSError, RuntimeError):  # the browser may be gone already
        await send({"type": "websocket.close", "code": code, "reason": app.close_reason or ""})


def _netloc(upstream: Upstream) -> str:
    host = f"[{upstream.host}]" if ":" in upstream.host else upstream.host
    return f"{host}:{upstream.port}"


def _target(scope: Scope) -> str:
    # The path as the client sent it (still percent-encoded), so the app sees it unchanged.
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return (raw + (b"?" + query if query else b"")).decode("latin-1")


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    # Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
    return {
        token.strip().lower()
        for name, value in headers
        if name == b"connection"
        for token in value.split(b",")
    }


def _request_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    raw: list[tuple[bytes, bytes]] = list(scope["headers"])
    drop = _HOP_BY_HOP | _FORWARDED | _connection_tokens(raw)
    headers = [(k, v) for k, v in raw if k not in drop and k != b"x-forwarded-for"]
    if not any(k == b"accept-encoding" for k, _ in headers):
        # Otherwise the client library asks for gzip on the browser's behalf, and
        # the app's compressed bytes would reach a client that never asked for them.
        headers.append((b"accept-encoding", b"identity"))
    return headers + _forwarded_for(scope, raw)


def _websocket_headers(scope: Scope) -> list[tuple[str, str]]:
    raw: list[tuple[bytes, bytes]] = list(scope["headers"])
    drop = _HOP_BY_HOP | _HANDSHAKE | _FORWARDED | _connection_tokens(raw)
    headers = [(k, v) for k, v in raw if k not in drop and k != b"x-forwarded-for"]
    return [
        (k.decode("latin-1"), v.decode("latin-1")) for k, v in headers + _forwarded_for(scope, raw)
    ]


def _forwarded_for(scope: Scope, raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    chain = [v for k, v in raw if k == b"x-forwarded-for"]
    client = scope.get("client")
    if client:
        chain.append(str(client[0]).encode())
    scheme = b"https" if scope.get("scheme") in ("https", "wss") else b"http"
    forwarded = [(b"x-forwarded-proto", scheme)]
    host = next((v for k, v in raw if k == b"host"), None)
    if host is not None:
        forwarded.append((b"x-forwarded-host", host))
    if chain:
        forwarded.append((b"x-forwarded-for", b", ".join(chain)))
    return forwarded


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":
            return  # the client went away; the app sees a short body and gives up
        body: bytes = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


def _response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    drop = _HOP_BY_HOP | _connection_tokens(raw)
    return [(k.lower(), v) for k, v in raw if k.lower() not in drop]


def _is_html(response: httpx.Response) -> bool:
    media: str = response.headers.get("content-type", "")
    return media.lower().startswith("text/html")


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _waiting(method: str) -> Response:
    # Before the first app is ready: the holding page, which reloads itself once it is.
    if method in ("GET", "HEAD"):
        return HTMLResponse(holding_page())
    return PlainTextResponse("greenloop dev: no app is serving yet\n", status_code=503)


def _is_navigation(scope: Scope) -> bool:
    """Whether the browser is loading a page (not a script's fetch or an image)."""
    headers = dict(scope["headers"])
    destination = headers.get(b"sec-fetch-dest")
    if destination is not None:
        return destination in (b"document", b"iframe")
    return b"text/html" in headers.get(b"accept", b"")


def _error_page(upstream: Upstream, failure: UpstreamFailure, body: str) -> Response:
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{failure.status} from the app</title></head><body>"
        f"<h1>{escape(failure.describe())}</h1><pre id='greenloop-app-body'>{escape(body)}</pre>"
        "</body></html>"
    ).encode()
    return HTMLResponse(inject(page, upstream.artifact_id), status_code=failure.status or 502)


def _bad_gateway(upstream: Upstream, failure: UpstreamFailure) -> Response:
    # An HTML page with the live-reload script: its overlay says what happened to the
    # app, and the page reloads by itself when a new build's app takes over.
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>502 Bad Gateway</title>"
        f"</head><body><h1>502 Bad Gateway</h1><p>{escape(failure.describe())}</p></body></html>"
    ).encode()
    return HTMLResponse(inject(page, upstream.artifact_id), status_code=502)
