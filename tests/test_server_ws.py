"""The /__greenloop/events WebSocket over a real server: sync on connect, then broadcast."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.sync.connection import Connection
from websockets.typing import Origin

from greenloop.protocol.devloop import BecameGreen, BecameRed, FileState, FileVerdict
from greenloop.server import DevServer, LiveState, serve
from tests.test_server_support import (
    diagnostic,
    failed_result,
    green_result,
    identity,
    page,
    running,
    write_site,
)

# A failure guard only: every message here arrives in milliseconds.
_TIMEOUT_S = 30


@pytest.fixture
def state() -> LiveState:
    return LiveState()


@pytest.fixture
def server(state: LiveState) -> Iterator[DevServer]:
    with running(state) as server:
        yield server


def client(server: DevServer) -> ClientConnection:
    """A WebSocket client connected to the events endpoint."""
    return connect(f"ws://127.0.0.1:{server.port}/__greenloop/events", open_timeout=_TIMEOUT_S)


def receive(ws: Connection) -> dict[str, Any]:
    """The next message, decoded."""
    message: dict[str, Any] = json.loads(ws.recv(timeout=_TIMEOUT_S))
    return message


def test_first_message_is_the_current_state(
    tmp_path: Path, server: DevServer, state: LiveState
) -> None:
    site = write_site(tmp_path / "site", {"index.html": page("x")})
    result = green_result("x")
    state.set_artifact(site, result)
    state.push_state(BecameRed(diagnostics=[diagnostic(message="undefined name 'foo'")]))
    with client(server) as ws:
        sync = receive(ws)
    assert sync["type"] == "sync"
    status = sync["status"]
    assert status["verdict"] == "red"
    assert status["artifact"] == result.artifact.model_dump(mode="json")  # type: ignore[union-attr]
    assert status["last_build"] == result.model_dump(mode="json")
    assert status["diagnostics_count"] == 1
    assert status["diagnostics"][0]["message"] == "undefined name 'foo'"


def test_every_change_reaches_every_client_wrapped_by_type(
    tmp_path: Path, server: DevServer, state: LiveState
) -> None:
    site = write_site(tmp_path / "site", {"index.html": page("x")})
    red = BecameRed(diagnostics=[diagnostic()])
    file_green = FileVerdict(path="/project/src/app.py", state=FileState.GREEN)
    green = BecameGreen(identity=identity("x"))
    failed = failed_result("y", reason="exit 1")
    built = green_result("x")
    with client(server) as first, client(server) as second:
        for ws in (first, second):
            assert receive(ws)["type"] == "sync"

        def feed() -> None:  # from a plain thread, as the dev loop does
            state.push_state(red)
            state.push_state(file_green)
            state.push_build(failed)
            state.push_state(green)
            state.push_build(built)
            state.set_artifact(site, built)

        feeder = threading.Thread(target=feed)
        feeder.start()
        feeder.join()
        for ws in (first, second):
            got = [receive(ws) for _ in range(6)]
            assert [m["type"] for m in got] == [
                "state",
                "state",
                "build",
                "state",
                "build",
                "artifact",
            ]
            assert got[0]["event"] == red.model_dump(mode="json")
            assert got[0]["status"]["verdict"] == "red"
            assert got[0]["status"]["diagnostics_count"] == 1
            assert got[1]["event"] == file_green.model_dump(mode="json")
            assert got[1]["status"]["diagnostics_count"] == 0
            assert got[2]["result"] == failed.model_dump(mode="json")
            assert got[2]["status"]["artifact"] is None  # a failed build serves nothing
            assert got[3]["event"]["kind"] == "became_green"
            assert got[4]["result"] == built.model_dump(mode="json")
            assert got[4]["status"]["artifact"] is None  # built is not yet published
            assert got[5]["result"] == built.model_dump(mode="json")
            assert got[5]["status"]["artifact"]["tree"] == built.artifact.tree  # type: ignore[union-attr]


def test_a_late_client_is_in_sync_with_an_early_one(
    tmp_path: Path, server: DevServer, state: LiveState
) -> None:
    site = write_site(tmp_path / "site", {"index.html": page("x")})
    with client(server) as early:
        receive(early)
        state.push_state(BecameRed(diagnostics=[diagnostic()]))
        state.set_artifact(site, green_result("x"))
        last_seen = [receive(early) for _ in range(2)][-1]["status"]
        with client(server) as late:
            assert receive(late)["status"] == last_seen


def test_a_closed_client_is_forgotten(server: DevServer, state: LiveState) -> None:
    with client(server) as ws:
        receive(ws)
        assert state.subscriber_count() == 1
    deadline = time.monotonic() + _TIMEOUT_S  # a failure guard, not a measurement
    while state.subscriber_count() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert state.subscriber_count() == 0
    state.push_build(failed_result("after"))  # nobody left to send to; must not raise


def test_pages_of_other_sites_are_refused(server: DevServer, state: LiveState) -> None:
    url = f"ws://127.0.0.1:{server.port}/__greenloop/events"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin=Origin("http://evil.example"), open_timeout=_TIMEOUT_S)
    assert refused.value.response.status_code == 403
    own = Origin(f"http://127.0.0.1:{server.port}")
    with connect(url, origin=own, open_timeout=_TIMEOUT_S) as ws:
        assert receive(ws)["type"] == "sync"


def rebound(server: DevServer, host: str, origin: str | None = None) -> ClientConnection:
    """A real WebSocket client that believes it talks to ``host`` (DNS rebound to us)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=_TIMEOUT_S)
    return connect(
        f"ws://{host}/__greenloop/events",
        sock=sock,
        origin=Origin(origin) if origin is not None else None,
        open_timeout=_TIMEOUT_S,
    )


@pytest.mark.parametrize("origin", [None, "http://evil.example:{port}"])
def test_a_foreign_host_is_refused_even_with_a_matching_origin(
    server: DevServer, origin: str | None
) -> None:
    host = f"evil.example:{server.port}"
    with pytest.raises(InvalidStatus) as refused:
        rebound(server, host, origin.format(port=server.port) if origin else None)
    assert refused.value.response.status_code == 403


def test_a_cross_origin_page_is_refused_on_a_loopback_host(server: DevServer) -> None:
    host = f"localhost:{server.port}"
    with pytest.raises(InvalidStatus) as refused:
        rebound(server, host, "http://evil.example")
    assert refused.value.response.status_code == 403
    with rebound(server, host, f"http://{host}") as ws:
        assert receive(ws)["type"] == "sync"


def test_an_allowed_host_may_open_the_socket(state: LiveState) -> None:
    server = serve(state, allowed_hosts=["my-tunnel.example"])
    try:
        host = f"my-tunnel.example:{server.port}"
        with rebound(server, host, f"http://{host}") as ws:
            assert receive(ws)["type"] == "sync"
        with pytest.raises(InvalidStatus):
            rebound(server, f"other.example:{server.port}")
    finally:
        server.stop()
