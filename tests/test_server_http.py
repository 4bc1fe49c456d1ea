"""The dev server over real HTTP on loopback: what is served, and what never is."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from greenloop.protocol.devloop import BecameRed
from greenloop.server import DevServer, LiveState, serve
from greenloop.server.inject import client_script, client_url, client_version
from tests.test_server_support import (
    diagnostic,
    failed_result,
    green_result,
    page,
    running,
    write_site,
)


@pytest.fixture
def state() -> LiveState:
    return LiveState()


@pytest.fixture
def server(state: LiveState) -> Iterator[DevServer]:
    with running(state) as server:
        yield server


@pytest.fixture
def site(tmp_path: Path, state: LiveState) -> Path:
    """A published artifact with pages, assets and two symlinks pointing out of it."""
    outside = write_site(tmp_path / "outside", {"secret.txt": "top secret"})
    root = write_site(
        tmp_path / "site",
        {
            "index.html": page("home"),
            "about/index.html": page("about"),
            "style.css": "h1 { color: green }",
            "app.js": "console.log('hi')",
            "data.bin": bytes(range(256)),
            "module.wasm": b"\0asm\1\0\0\0",
            "fragment.html": "<p>no body tag</p>",
        },
    )
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "outside").symlink_to(outside)
    state.set_artifact(root, green_result("site"))
    return root


def raw_get(server: DevServer, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written: no client-side normalisation of ``..``."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_binds_to_loopback_on_a_free_port(server: DevServer) -> None:
    assert server.host == "127.0.0.1"
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/"


def test_holding_page_before_the_first_green(server: DevServer, state: LiveState) -> None:
    state.push_state(BecameRed(diagnostics=[diagnostic()]))
    for path in ("", "some/page.html"):
        response = httpx.get(server.url + path)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        assert "Waiting for the first green build" in response.text
        assert 'data-greenloop-artifact=""></script>' in response.text


def test_serves_the_artifact_with_content_types(server: DevServer, site: Path) -> None:
    cases = {
        "style.css": "text/css; charset=utf-8",
        "app.js": "text/javascript; charset=utf-8",
        "data.bin": "application/octet-stream",
        "module.wasm": "application/wasm",
    }
    for name, media in cases.items():
        response = httpx.get(server.url + name)
        assert response.status_code == 200, name
        assert response.headers["content-type"] == media
        assert response.content == (site / name).read_bytes()
        assert response.headers["content-length"] == str(len(response.content))


def test_directories_map_to_index_html_with_the_script(
    server: DevServer, site: Path, state: LiveState
) -> None:
    tree = state.snapshot().artifact_id
    for path, title in (("", "home"), ("about/", "about")):
        response = httpx.get(server.url + path)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        tag = f'<script src="{client_url()}" data-greenloop-artifact="{tree}"></script>'
        assert response.text == page(title).replace("</body>", tag + "</body>")


def test_a_directory_without_slash_redirects(server: DevServer, site: Path) -> None:
    response = httpx.get(server.url + "about?x=1")
    assert response.status_code == 307
    assert response.headers["location"] == "/about/?x=1"
    assert response.headers["cache-control"] == "no-store"


def test_html_without_body_gets_the_script_appended(server: DevServer, site: Path) -> None:
    text = httpx.get(server.url + "fragment.html").text
    assert text.startswith('<p>no body tag</p><script src="/__greenloop/client.js?v=')


def test_no_store_on_every_kind_of_response(server: DevServer, site: Path) -> None:
    responses = [
        httpx.get(server.url),
        httpx.get(server.url + "style.css"),
        httpx.head(server.url + "data.bin"),
        httpx.get(server.url + "missing.html"),
        httpx.post(server.url + "index.html"),
        httpx.get(server.url + "__greenloop/status"),
        httpx.get(server.url + "__greenloop/client.js"),
        httpx.get(server.url + "__greenloop/nope"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 405, 200, 200, 404]
    for response in responses:
        assert response.headers["cache-control"] == "no-store", response.url


def test_the_script_may_be_kept_only_under_its_own_content_hash(server: DevServer) -> None:
    versioned = httpx.get(server.url.rstrip("/") + client_url())
    assert versioned.content == client_script()
    assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert client_version() == hashlib.sha256(client_script()).hexdigest()[:16]
    # Another version (an old page's tag) still gets today's script, but not to keep.
    stale = httpx.get(server.url + "__greenloop/client.js?v=0000000000000000")
    assert stale.content == client_script()
    assert stale.headers["cache-control"] == "no-store"


def test_head_sends_headers_only(server: DevServer, site: Path) -> None:
    response = httpx.head(server.url + "data.bin")
    assert response.status_code == 200
    assert response.headers["content-length"] == "256"
    assert response.content == b""


@pytest.mark.parametrize(
    "target",
    [
        "/../outside/secret.txt",
        "/../../../../etc/passwd",
        "/about/../../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/about/..%2f..%2foutside%2fsecret.txt",
        "/escape.txt",
        "/outside/secret.txt",
        "/outside/",
        "/missing",
        "/%00",
    ],
)
def test_nothing_outside_the_artifact_is_served(server: DevServer, site: Path, target: str) -> None:
    status, body = raw_get(server, target)
    assert status == 404
    assert b"top secret" not in body


def test_a_missing_page_is_404_html_that_reloads_itself(
    server: DevServer, site: Path, state: LiveState
) -> None:
    response = httpx.get(server.url + "later.html")
    assert response.status_code == 404
    assert f'data-greenloop-artifact="{state.snapshot().artifact_id}"' in response.text


def test_status_reports_verdict_artifact_and_last_build(
    server: DevServer, site: Path, state: LiveState
) -> None:
    state.push_state(BecameRed(diagnostics=[diagnostic(), diagnostic(line=20)]))
    state.push_build(failed_result("broken", reason="step build exited 2"))
    response = httpx.get(server.url + "__greenloop/status")
    assert response.headers["content-type"] == "application/json"
    status = response.json()
    meta = green_result("site").artifact
    assert meta is not None
    assert status["verdict"] == "red"
    assert status["artifact"]["input_hash"] == meta.input_hash
    assert status["artifact"]["tree"] == meta.tree
    assert status["artifact"]["built_at"] == meta.built_at
    assert status["last_build"]["outcome"] == {"kind": "failed", "reason": "step build exited 2"}
    assert status["diagnostics_count"] == 2
    assert [d["line"] for d in status["diagnostics"]] == [12, 20]


def test_status_before_anything(server: DevServer) -> None:
    assert httpx.get(server.url + "__greenloop/status").json() == {
        "verdict": "unknown",
        "artifact": None,
        "last_build": None,
        "diagnostics_count": 0,
        "diagnostics": [],
        "app": None,  # a site: no app behind a proxy
    }


def test_a_switch_is_atomic_for_requests_in_flight(
    tmp_path: Path, server: DevServer, state: LiveState
) -> None:
    # Larger than loopback socket buffers, so the response is still streaming
    # from the old directory when it is replaced and deleted.
    big = os.urandom(24 * 1024 * 1024)
    v1 = write_site(tmp_path / "v1", {"big.bin": big, "index.html": page("v1")})
    v2 = write_site(tmp_path / "v2", {"big.bin": b"v2", "index.html": page("v2")})
    state.set_artifact(v1, green_result("v1"))
    digest = hashlib.sha256()
    with httpx.stream("GET", server.url + "big.bin") as response:
        chunks = response.iter_bytes()
        digest.update(next(chunks))
        state.set_artifact(v2, green_result("v2"))
        shutil.rmtree(v1)
        assert "v2" in httpx.get(server.url).text
        for chunk in chunks:
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(big).hexdigest()
    assert httpx.get(server.url + "big.bin").content == b"v2"


def test_a_second_server_on_a_taken_port_fails_in_the_caller(server: DevServer) -> None:
    with pytest.raises(OSError):
        serve(LiveState(), port=server.port)


def test_stop_closes_the_port_even_with_a_socket_open(state: LiveState) -> None:
    from websockets.sync.client import connect

    server = serve(state)
    with connect(f"ws://127.0.0.1:{server.port}/__greenloop/events") as ws:
        ws.recv(timeout=30)
        server.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=5):
        pass


def test_connections_are_tcp_with_nodelay(server: DevServer) -> None:
    # asyncio sets TCP_NODELAY on accepted connections only when the listening socket
    # says IPPROTO_TCP; without it each keep-alive response waited on a delayed ACK.
    listening = server._socket
    assert listening.proto == socket.IPPROTO_TCP
    assert listening.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


# -- DNS rebinding: only our own names may be in Host --------------------------------


def get_as(server: DevServer, path: str, host: str) -> httpx.Response:
    """GET ``path`` from the real server with ``Host: host``, as a rebound browser sends it."""
    return httpx.get(server.url.rstrip("/") + path, headers={"host": host})


@pytest.mark.parametrize("path", ["/__greenloop/status", "/", "/style.css", "/__greenloop/x"])
def test_a_foreign_host_is_refused(server: DevServer, site: Path, path: str) -> None:
    # evil.example made its name resolve to 127.0.0.1: the browser sends its own name.
    response = get_as(server, path, f"evil.example:{server.port}")
    assert response.status_code == 403
    assert "evil.example" in response.text and "--allowed-host" in response.text
    assert response.headers["cache-control"] == "no-store"
    assert "verdict" not in response.text and "home" not in response.text


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:{port}",
        "localhost:{port}",
        "LOCALHOST",
        "127.9.8.7",
        "app.localhost:{port}",
        "localhost.",
        "[::1]:{port}",
        "[::1]",
    ],
)
def test_loopback_hosts_are_served(server: DevServer, site: Path, host: str) -> None:
    response = get_as(server, "/__greenloop/status", host.format(port=server.port))
    assert response.status_code == 200, response.text
    assert response.json()["artifact"] is not None


@pytest.mark.parametrize(
    "host",
    [
        "",
        "evil.example",
        "localhost.evil.example",
        "127.0.0.1.evil.example",
        "10.0.0.1",
        "[::1",
        "::1",
        "local host",
        "localhost:port",
        "[fe80::1]",
    ],
)
def test_hosts_that_are_not_ours_are_refused(server: DevServer, host: str) -> None:
    assert get_as(server, "/__greenloop/status", host).status_code == 403


def test_a_request_without_host_is_refused(server: DevServer) -> None:
    # HTTP/1.0 lets a client leave Host out; no browser does, and we cannot tell it is ours.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /__greenloop/status HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 403 ")


def test_names_the_user_allows_are_served(state: LiveState) -> None:
    server = serve(state, allowed_hosts=["my-tunnel.example", ".dev.example"])
    try:
        for allowed in (
            "my-tunnel.example",
            "My-Tunnel.example:443",
            "dev.example",
            "a.b.dev.example",
        ):
            assert get_as(server, "/__greenloop/status", allowed).status_code == 200, allowed
        for refused in ("other.example", "tunnel.example", "xdev.example", "dev.example.evil"):
            assert get_as(server, "/__greenloop/status", refused).status_code == 403, refused
    finally:
        server.stop()


def test_the_bound_host_is_allowed(state: LiveState) -> None:
    server = serve(state, host="127.0.0.2")
    try:
        assert get_as(server, "/__greenloop/status", "127.0.0.2:1").status_code == 200
    finally:
        server.stop()
