"""The dev server as a reverse proxy: real HTTP and WebSocket traffic to real upstream servers.

Each upstream is a Starlette app under uvicorn in a thread on its own loopback
port; the proxy is greenloop's dev server with a :class:`Proxy`. The swap
tests drive :meth:`Proxy.swap` directly, as the app supervisor does.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from greenloop.server import DevServer, LiveState, Proxy, Upstream, UpstreamFailure, serve
from greenloop.server.inject import client_url
from tests.conftest import wait_until

# Guards against a hang, never measurements.
GUARD_S = 30.0


def upstream_app(name: str, release: threading.Event | None = None) -> Starlette:
    """An app that says ``name`` on every route, and a few routes to exercise the proxy."""

    async def page(request: Request) -> Response:
        return HTMLResponse(f"<!doctype html><html><body><h1>{name}</h1></body></html>")

    async def echo(request: Request) -> Response:
        body = await request.body()
        return JSONResponse(
            {
                "name": name,
                "method": request.method,
                "raw_path": request.scope["raw_path"].decode(),
                "query": request.url.query,
                "body": body.decode(),
                "host": request.headers.get("host"),
                "forwarded_for": request.headers.get("x-forwarded-for"),
                "forwarded_host": request.headers.get("x-forwarded-host"),
                "accept_encoding": request.headers.get("accept-encoding"),
            },
            headers={"x-upstream": name},
        )

    async def cookies(request: Request) -> Response:
        response = PlainTextResponse("two cookies")
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    async def big(request: Request) -> Response:
        return PlainTextResponse("x" * 200_000)

    async def slow(request: Request) -> Response:
        assert release is not None
        await asyncio.to_thread(release.wait, GUARD_S)
        return PlainTextResponse(f"slow answer from {name}")

    async def boom(request: Request) -> Response:
        return PlainTextResponse("it broke", status_code=500)

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept(
            subprotocol="chat" if "chat" in websocket.scope["subprotocols"] else None
        )
        async for message in websocket.iter_text():
            if message == "bye":
                await websocket.close(code=4001, reason="asked to")
                return
            await websocket.send_text(f"{name}: {message}")

    return Starlette(
        routes=[
            Route("/", page),
            Route("/echo/{rest:path}", echo, methods=["GET", "POST", "PUT"]),
            Route("/cookies", cookies),
            Route("/big", big),
            Route("/slow", slow),
            Route("/boom", boom),
            WebSocketRoute("/ws", ws),
        ],
        middleware=[Middleware(GZipMiddleware, minimum_size=10)],
    )


@contextmanager
def running_upstream(app: Starlette) -> Iterator[Upstream]:
    """``app`` under uvicorn on a free loopback port, as an :class:`Upstream` named for it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_config=None, ws="websockets-sansio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, GUARD_S, "the upstream to start")
    try:
        yield Upstream(port=port, artifact_id=f"tree-of-{port}")
    finally:
        server.should_exit = True
        thread.join(GUARD_S)
        sock.close()


class Failures:
    """Collects what the proxy reports."""

    def __init__(self) -> None:
        self.seen: list[tuple[Upstream, UpstreamFailure]] = []

    def __call__(self, upstream: Upstream, failure: UpstreamFailure) -> None:
        self.seen.append((upstream, failure))


@pytest.fixture
def failures() -> Failures:
    return Failures()


@pytest.fixture
def proxy(failures: Failures) -> Proxy:
    return Proxy(failures)


@pytest.fixture
def front(proxy: Proxy) -> Iterator[DevServer]:
    server = serve(LiveState(), proxy=proxy)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def release() -> threading.Event:
    return threading.Event()


@pytest.fixture
def app_a(release: threading.Event) -> Iterator[Upstream]:
    with running_upstream(upstream_app("A", release)) as upstream:
        yield upstream


@pytest.fixture
def app_b() -> Iterator[Upstream]:
    with running_upstream(upstream_app("B")) as upstream:
        yield upstream


def test_before_any_app_the_holding_page_and_nothing_else(front: DevServer) -> None:
    page = httpx.get(front.url)
    assert page.status_code == 200
    assert "first green build" in page.text
    assert client_url() in page.text
    assert httpx.post(front.url + "form", content=b"x").status_code == 503
    with pytest.raises(InvalidStatus):
        connect(front.url.replace("http", "ws") + "ws", open_timeout=GUARD_S)


def test_html_gets_the_script_of_the_build_that_answered(
    front: DevServer, proxy: Proxy, app_a: Upstream
) -> None:
    proxy.swap(app_a)
    # The browser asks for gzip; the page must come back as text with the script in it.
    page = httpx.get(front.url, headers={"accept-encoding": "gzip"})
    assert page.status_code == 200
    assert "content-encoding" not in page.headers
    assert int(page.headers["content-length"]) == len(page.content)
    assert page.text.startswith("<!doctype html><html><body><h1>A</h1>")
    assert f'data-greenloop-artifact="{app_a.artifact_id}"' in page.text
    assert page.headers["cache-control"] == "no-store"
    # Anything else passes through as the app sent it, compressed included.
    raw = httpx.get(front.url + "big", headers={"accept-encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.text == "x" * 200_000
    with httpx.stream("GET", front.url + "big", headers={"accept-encoding": "gzip"}) as stream:
        assert gzip.decompress(b"".join(stream.iter_raw())) == b"x" * 200_000


def test_requests_reach_the_app_as_sent(front: DevServer, proxy: Proxy, app_a: Upstream) -> None:
    proxy.swap(app_a)
    answer = httpx.post(
        front.url + "echo/a%2Fb/c?x=1&y=%20", content=b"payload", headers={"host": "localhost"}
    )
    assert answer.status_code == 200
    assert answer.headers["x-upstream"] == "A"
    got = answer.json()
    assert got["method"] == "POST"
    assert got["raw_path"] == "/echo/a%2Fb/c"  # still percent-encoded, as the client sent it
    assert got["query"] == "x=1&y=%20"
    assert got["body"] == "payload"
    assert got["host"] == "localhost"  # the browser's Host, not the app's port
    assert got["forwarded_for"] == "127.0.0.1"
    assert got["forwarded_host"] == "localhost"
    # A client that asks for no encoding gets none, whatever the proxy's own client would.
    plain = httpx.get(front.url + "echo/x", headers={"accept-encoding": ""}).json()
    assert plain["accept_encoding"] in ("", "identity")
    streamed = httpx.put(front.url + "echo/s", content=iter([b"one ", b"two"])).json()
    assert streamed["body"] == "one two"
    both = httpx.get(front.url + "cookies").headers.get_list("set-cookie")
    assert [c.split(";")[0] for c in both] == ["a=1", "b=2"]
    assert httpx.head(front.url).status_code == 200


def test_a_swap_leaves_requests_in_flight_on_the_old_app(
    front: DevServer, proxy: Proxy, app_a: Upstream, app_b: Upstream, release: threading.Event
) -> None:
    proxy.swap(app_a)
    answers: list[httpx.Response] = []
    slow = threading.Thread(
        target=lambda: answers.append(httpx.get(front.url + "slow", timeout=GUARD_S))
    )
    slow.start()
    wait_until(lambda: proxy.in_flight(app_a) == 1, GUARD_S, "the slow request to reach A")
    assert proxy.swap(app_b) is app_a
    # Every request from now on goes to B, while A still owes its answer.
    assert httpx.get(front.url + "echo/now").json()["name"] == "B"
    assert proxy.in_flight(app_a) == 1
    assert proxy.wait_drained(app_a, 0.05) is False
    release.set()
    assert proxy.wait_drained(app_a, GUARD_S) is True
    slow.join(GUARD_S)
    assert [a.text for a in answers] == ["slow answer from A"]
    assert proxy.in_flight(app_b) == 0


def test_a_5xx_is_reported_and_a_page_load_gets_the_overlay(
    front: DevServer, proxy: Proxy, app_a: Upstream, failures: Failures
) -> None:
    proxy.swap(app_a)
    fetched = httpx.get(front.url + "boom")
    assert (fetched.status_code, fetched.text) == (500, "it broke")  # a script's fetch: as is
    page = httpx.get(front.url + "boom", headers={"sec-fetch-dest": "document"})
    assert page.status_code == 500
    assert "GET /boom answered 500" in page.text and "it broke" in page.text
    assert f'data-greenloop-artifact="{app_a.artifact_id}"' in page.text
    assert [(u, f.status, f.path) for u, f in failures.seen] == [(app_a, 500, "/boom")] * 2


def test_an_app_that_is_gone_is_a_502_page_with_the_overlay(
    front: DevServer, proxy: Proxy, failures: Failures
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        gone = Upstream(port=sock.getsockname()[1], artifact_id="gone-tree")
    proxy.swap(gone)
    page = httpx.get(front.url + "anything")
    assert page.status_code == 502
    assert 'data-greenloop-artifact="gone-tree"' in page.text
    assert [(u, f.status) for u, f in failures.seen] == [(gone, None)]
    assert "could not reach the app" in failures.seen[0][1].describe()


def test_websockets_are_relayed_both_ways(
    front: DevServer, proxy: Proxy, app_a: Upstream, app_b: Upstream
) -> None:
    proxy.swap(app_a)
    url = front.url.replace("http", "ws") + "ws"
    with connect(url, subprotocols=["chat"], open_timeout=GUARD_S) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat"
        ws.send("hello")
        assert ws.recv(GUARD_S) == "A: hello"
        # A swap does not cut a socket that is open: it lives on with the app it reached.
        proxy.swap(app_b)
        ws.send("still")
        assert ws.recv(GUARD_S) == "A: still"
        ws.send("bye")
        with pytest.raises(Exception):  # noqa: B017 - the close is what ends recv
            ws.recv(GUARD_S)
        assert ws.close_code == 4001
    with connect(url, open_timeout=GUARD_S) as ws:
        ws.send("new")
        assert ws.recv(GUARD_S) == "B: new"


def test_a_websocket_to_a_stopped_app_closes_as_a_restart(proxy: Proxy, front: DevServer) -> None:
    with running_upstream(upstream_app("C")) as app_c:
        proxy.swap(app_c)
        ws = connect(front.url.replace("http", "ws") + "ws", open_timeout=GUARD_S)
        ws.send("hi")
        assert ws.recv(GUARD_S) == "C: hi"
    # uvicorn closes its sockets with 1012 on shutdown; either way the browser hears "restart".
    deadline = time.monotonic() + GUARD_S
    with pytest.raises(Exception):  # noqa: B017
        while time.monotonic() < deadline:
            ws.recv(GUARD_S)
    assert ws.close_code in (1001, 1012)
    ws.close()
