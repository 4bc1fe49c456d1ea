"""The dev server's ASGI app: the served artifact, the status, the live-reload socket.

Everything under ``/__greenloop/`` belongs to the server; every other path is
looked up in the artifact directory the state holds at the moment the request
arrives (or answered with the holding page before the first green build) — or,
for an app, relayed by the :class:`~greenloop.server.proxy.Proxy` to the app
process currently serving.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from html import escape
from pathlib import Path
from urllib.parse import quote

import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from greenloop.server.hosts import HostGuard, HostPolicy
from greenloop.server.inject import (
    CLIENT_PATH,
    client_script,
    client_version,
    holding_page,
    inject,
)
from greenloop.server.messages import status_document
from greenloop.server.proxy import Proxy
from greenloop.server.safe_paths import Found, NeedsSlash, content_type, is_html, lookup, open_file
from greenloop.server.state import LiveState
from greenloop.server.websocket import events_endpoint

_CHUNK = 64 * 1024
# The type we send is the type: a browser must not sniff a build file into HTML.
_FILE_HEADERS = {"x-content-type-options": "nosniff"}


def create_app(
    state: LiveState, hosts: HostPolicy | None = None, proxy: Proxy | None = None
) -> Starlette:
    """The Starlette app serving ``state``; see ``docs/dev-server.md`` for the endpoints.

    Only requests whose ``Host`` ``hosts`` allows are answered (default: loopback).
    With ``proxy``, every path outside ``/__greenloop/`` (any method, and
    WebSockets) goes to the app behind it instead of the artifact directory.
    """

    async def status(request: Request) -> Response:
        return JSONResponse(status_document(state.snapshot()))

    async def client(request: Request) -> Response:
        return Response(client_script(), media_type="text/javascript; charset=utf-8")

    def cacheable(scope: Scope) -> bool:
        # Only the script under its own content hash: the same URL can never name
        # different bytes, so the browser keeping it can never show a stale script.
        return scope["path"] == CLIENT_PATH and scope.get("query_string") == (
            b"v=" + client_version().encode()
        )

    async def reserved(request: Request) -> Response:
        return Response("not found\n", status_code=404, media_type="text/plain")

    async def artifact(request: Request) -> Response:
        snapshot = state.snapshot()  # one snapshot per request: it never mixes two artifacts
        if snapshot.directory is None:
            return HTMLResponse(holding_page())
        # Resolving and reading touch the disk; keep them off the event loop.
        return await anyio.to_thread.run_sync(
            _file_response, request, snapshot.directory, snapshot.artifact_id
        )

    # An ASGI object (not a function) as endpoint: the route passes every method to it.
    rest = (
        [Route("/{path:path}", artifact)]
        if proxy is None
        else [Route("/{path:path}", proxy), WebSocketRoute("/{path:path}", proxy)]
    )
    return Starlette(
        routes=[
            Route("/__greenloop/status", status),
            Route(CLIENT_PATH, client),
            WebSocketRoute("/__greenloop/events", events_endpoint(state)),
            Route("/__greenloop/{rest:path}", reserved),
            *rest,
        ],
        # Outermost first: a refused Host gets its 403 with no-store too.
        middleware=[
            Middleware(_NoStore, cacheable=cacheable),
            Middleware(HostGuard, policy=hosts or HostPolicy()),
        ],
        # The 500 page is sent outside every middleware, so it says no-store itself.
        exception_handlers={500: _internal_error},
    )


def _file_response(request: Request, directory: Path, artifact_id: str) -> Response:
    url_path: str = request.scope["path"]
    found = lookup(directory, url_path)
    if isinstance(found, NeedsSlash):
        # Rebuilt from segments, so "//host" can never become an off-site redirect.
        segments = [quote(s) for s in url_path.split("/") if s]
        location = "/" + "/".join(segments) + "/"
        if request.url.query:
            location += "?" + request.url.query
        return RedirectResponse(location, status_code=307)
    if not isinstance(found, Found) or (fd := open_file(found)) is None:
        return _not_found(url_path, artifact_id)
    media_type = content_type(found.path)
    if is_html(found.path):
        with os.fdopen(fd, "rb") as fh:
            body = inject(fh.read(), artifact_id)
        return Response(body, media_type=media_type, headers=_FILE_HEADERS)
    size = os.fstat(fd).st_size
    headers = {**_FILE_HEADERS, "content-length": str(size)}
    if request.method == "HEAD":
        os.close(fd)
        return Response(b"", media_type=media_type, headers=headers)
    return StreamingResponse(_chunks(fd), media_type=media_type, headers=headers)


def _chunks(fd: int) -> Iterator[bytes]:
    # A generator over the descriptor opened before the response started: the
    # file stays readable even if a newer artifact replaces its directory.
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


def _not_found(url_path: str, artifact_id: str) -> Response:
    # HTML with the live-reload script: a page that is missing now reloads by
    # itself when a later build adds it.
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>404 Not Found</title>"
        f"</head><body><h1>404 Not Found</h1><p>{escape(url_path)} is not in the current "
        f"green build ({escape(artifact_id[:12])}).</p></body></html>"
    ).encode()
    return HTMLResponse(inject(page, artifact_id), status_code=404)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return Response(
        "internal server error\n",
        status_code=500,
        media_type="text/plain",
        headers={"cache-control": "no-store"},
    )


_IMMUTABLE = b"public, max-age=31536000, immutable"


class _NoStore:
    """Adds ``Cache-Control: no-store`` to every HTTP response, errors included.

    A cached page or script could outlive the build it came from; the browser
    must ask again every time. The one exception is what ``cacheable`` says
    can never change under its URL (the content-hashed live-reload script).
    """

    def __init__(self, app: ASGIApp, cacheable: Callable[[Scope], bool]) -> None:
        self.app = app
        self._cacheable = cacheable

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = _IMMUTABLE if self._cacheable(scope) else b"no-store"

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"
                ]
                headers.append((b"cache-control", policy))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_no_store)
