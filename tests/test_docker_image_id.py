"""An image's id, asked of the engine with one hand-written HTTP/1.1 GET on its unix socket.

Against the real engine (``DOCKER_HOST``, as in tests/test_docker.py) the answer
is the Docker SDK's; against a small server on a unix socket, each shape of
answer an HTTP/1.1 server may give (a length, chunks, the end of the stream)
reads the same body, and a broken one is a setup error, never an id.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from greenloop.executors.docker_image_id import image_id, unix_get
from greenloop.protocol import SetupError
from tests.docker_image import IMAGE
from tests.test_docker import client  # noqa: F401 - the engine's fixture

BODY = b'{"Id": "sha256:' + b"ab" * 32 + b'", "RepoTags": ["x:latest"]}'


def test_the_id_is_the_engines(client: Any) -> None:  # noqa: F811
    if not os.environ.get("DOCKER_HOST", "unix://").startswith("unix://"):
        pytest.skip("the engine is not on a unix socket")
    assert image_id(IMAGE, lambda: client) == client.images.get(IMAGE).id
    assert image_id("greenloop-test/never-built:nope", lambda: client) is None


@pytest.fixture
def engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[bytes], list[bytes]]]:
    """Start a server on a socket ``DOCKER_HOST`` names, answering every connection with
    the given bytes and closing it; the requests it was sent."""
    servers: list[socket.socket] = []

    def start(answer: bytes) -> list[bytes]:
        path = tmp_path / f"engine-{len(servers)}.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen()
        servers.append(server)
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        requests: list[bytes] = []

        def serve() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return  # closed: the test is over
                with conn:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(4096)
                    requests.append(data)
                    conn.sendall(answer)

        threading.Thread(target=serve, daemon=True).start()
        return requests

    yield start
    for server in servers:
        server.close()


def _no_sdk() -> Any:
    raise AssertionError("a unix socket is asked directly, never through the SDK")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(BODY), BODY),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n"
        % (BODY[:16], len(BODY) - 16, BODY[16:]),
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n%s" % BODY,
    ],
    ids=["content-length", "chunked", "until-closed"],
)
def test_every_shape_of_answer_reads_the_same_id(
    engine: Callable[[bytes], list[bytes]], answer: bytes
) -> None:
    requests = engine(answer)
    assert image_id("app:latest", _no_sdk) == "sha256:" + "ab" * 32
    assert requests[0].startswith(b"GET /images/app:latest/json HTTP/1.1\r\nHost: localhost\r\n")


def test_a_name_is_quoted_in_the_path(engine: Callable[[bytes], list[bytes]]) -> None:
    requests = engine(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}")
    assert image_id("reg.example:5000/team/app @x", _no_sdk) is None
    assert requests[0].startswith(b"GET /images/reg.example:5000/team/app%20@x/json HTTP/1.1")


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 6\r\n\r\nbroken", "answered 500"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", "answered 200"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{}", "2 of its 99 bytes"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{}", "cut short"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer"),
        (b"", "not an HTTP answer"),
    ],
    ids=["server-error", "no-id", "short", "short-chunk", "not-http", "nothing"],
)
def test_a_broken_answer_is_a_setup_error(
    engine: Callable[[bytes], list[bytes]], answer: bytes, says: str
) -> None:
    engine(answer)
    with pytest.raises(SetupError, match=says):
        image_id("app:latest", _no_sdk)


def test_no_engine_is_a_setup_error_naming_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'none.sock'}")
    with pytest.raises(SetupError, match="cannot ask the Docker engine at unix://"):
        image_id("app:latest", _no_sdk)


def test_the_get_returns_the_status_and_body(
    engine: Callable[[bytes], list[bytes]], tmp_path: Path
) -> None:
    engine(b"HTTP/1.0 204 No Content\r\n\r\n")
    assert unix_get(str(tmp_path / "engine-0.sock"), "/_ping") == (204, b"")
