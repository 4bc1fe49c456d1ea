"""``greenloop serve --port``: the fleet's events and status over HTTP and a WebSocket.

A real ``serve`` on real git worktrees, checked by real ruff; real HTTP (httpx)
and WebSocket (websockets) clients.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from greenloop.fleet.place import ServePlace, common_dir
from tests.conftest import wait_until
from tests.test_devloop_helpers import TIMEOUT, Background, cli, python_env, write
from tests.test_fleet import _add_worktree, _git, _serve_dir

__all__ = ["_serve_dir"]  # the fixture giving each test a serve folder of its own

RUFF_RED = "import os\n"
"""ruff F401: ``os`` imported but unused."""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "main"
    write(
        root,
        {
            "pyproject.toml": """\
                [project]
                name = "demo"
                version = "0"

                [tool.ruff.lint]
                select = ["F"]

                [tool.greenloop.checkers.mypy]
                enabled = false
                """,
            "demo/__init__.py": "",
            "demo/calc.py": "X = 1\n",
        },
    )
    _git("init", "-q", cwd=root)
    _git("add", "-A", cwd=root)
    _git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init", cwd=root)
    return root.resolve()


class Served:
    """A running ``greenloop serve --port 0`` and the base URL it serves HTTP on."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.server = Background(
            "serve", "--repo", str(repo), "--jobs", "1", "--port", "0", cwd=repo, env=python_env()
        )
        wait_until(ServePlace.of(common_dir(repo) or repo).socket.exists, what="the serve socket")
        done = cli("status", "--json", cwd=repo, env=python_env())
        self.url: str = json.loads(done.stdout)["serve"]["http"]
        self.ws_url = "ws" + self.url.removeprefix("http")

    def status(self) -> dict[str, Any]:
        """``/__greenloop/status``."""
        response = httpx.get(self.url + "__greenloop/status", timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document


@pytest.fixture
def served(repo: Path) -> Iterator[Served]:
    served = Served(repo)
    try:
        yield served
    finally:
        served.server.close()


class Messages:
    """One stream's messages as they arrive, read by a thread of its own."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._taken = 0

    def put(self, message: dict[str, Any] | None) -> None:
        """Called by the reader: a message, or None at the end of the stream."""
        self._queue.put(message)

    def next(self, kind: str | None = None, worktree: Path | None = None, **fields: Any) -> Any:
        """The first message not taken yet of ``kind`` about ``worktree`` with ``fields``."""

        def matches(message: dict[str, Any]) -> bool:
            return (
                (kind is None or message.get("kind") == kind)
                and (worktree is None or message.get("worktree") == str(worktree))
                and all(message.get(k) == v for k, v in fields.items())
            )

        while True:
            for index in range(self._taken, len(self.seen)):
                if matches(self.seen[index]):
                    self._taken = index + 1
                    return self.seen[index]
            message = self._queue.get(timeout=TIMEOUT)
            if message is None:
                raise AssertionError(f"the stream ended; saw {self.seen!r}")
            self.seen.append(message)

    def ended(self) -> None:
        """Read to the end of the stream."""
        while (message := self._queue.get(timeout=TIMEOUT)) is not None:
            self.seen.append(message)

    def verdicts(self, worktree: Path) -> list[str]:
        """Every verdict seen so far about ``worktree``."""
        return [
            m["tree"]
            for m in self.seen
            if m.get("kind") == "verdict" and m.get("worktree") == str(worktree)
        ]


class HttpStream(Messages):
    """``GET /__greenloop/events``: JSON lines."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._client = httpx.Client(timeout=httpx.Timeout(TIMEOUT, read=None))
        self._response = self._client.send(self._client.build_request("GET", url), stream=True)
        self.status = self._response.status_code
        self.content_type = self._response.headers["content-type"]
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self._response.iter_lines():
                if line:
                    self.put(json.loads(line))
        except httpx.HTTPError:
            pass  # closed by the test
        self.put(None)

    def close(self) -> None:
        """Hang up."""
        self._response.close()
        self._client.close()


class WsStream(Messages):
    """The ``/__greenloop/events`` WebSocket: a JSON text frame per message."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.ws: ClientConnection = connect(url, open_timeout=TIMEOUT)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                self.put(json.loads(self.ws.recv()))
        except ConnectionClosed:
            pass
        self.put(None)

    def close(self) -> None:
        """Hang up."""
        self.ws.close()


def test_every_worktree_then_a_red_edit_in_one_of_them(repo: Path) -> None:
    one, two = _add_worktree(repo, "one"), _add_worktree(repo, "two")
    served = Served(repo)
    pid = served.server.proc.pid
    events = served.url + "__greenloop/events"
    streams: list[HttpStream | WsStream] = []
    try:
        every = HttpStream(events)
        every_ws = WsStream(served.ws_url + "__greenloop/events")
        only_one = HttpStream(f"{events}?worktree={one}")
        only_one_ws = WsStream(f"{served.ws_url}__greenloop/events?worktree={one}")
        streams += [every, every_ws, only_one, only_one_ws]
        assert (every.status, every.content_type) == (200, "application/x-ndjson")
        for stream in streams:
            assert stream.next() == {"serving": pid}
        for stream in (every, every_ws):
            for tree in (repo, one, two):
                stream.next("worktree_added", tree)
                stream.next("verdict", tree, tree="green")
        for stream in (only_one, only_one_ws):
            # As `{"op": "watch"}`: the worktree's file verdicts first.
            stream.next("file_verdict", one, path=str(one / "demo/calc.py"), state="green")
            stream.next("verdict", one, tree="green")

        (one / "demo/calc.py").write_text(RUFF_RED)
        for stream in streams:
            red = stream.next("became_red", one)
            assert [(d["path"], d["code"]) for d in red["diagnostics"]] == [
                (str(one / "demo/calc.py"), "F401")
            ]
            stream.next("verdict", one, tree="red")
        for stream in (every, every_ws):
            assert (stream.verdicts(repo), stream.verdicts(two)) == (["green"], ["green"])
            assert not [m for m in stream.seen if m.get("kind") == "became_red"][1:]
        for stream in (only_one, only_one_ws):
            assert {m.get("worktree") for m in stream.seen[1:]} == {str(one)}

        status = served.status()
        assert status["serve"]["pid"] == pid
        assert status["serve"]["http"] == served.url
        assert status["serve"]["streams"] == 4
        assert status["worktrees"] == {"served": sorted(map(str, (repo, one, two))), "skipped": {}}

        # A reader that hangs up is unsubscribed, while nothing is sent to it.
        only_one_ws.close()
        wait_until(lambda: served.status()["serve"]["streams"] == 3, what="a stream less")
        with _raw_get(served.url, f"/__greenloop/events?worktree={two}"):
            wait_until(lambda: served.status()["serve"]["streams"] == 4, what="a new stream")
        wait_until(lambda: served.status()["serve"]["streams"] == 3, what="a stream less")

        # Stopping the server ends every open stream.
        assert served.server.stop() == 130
        for stream in (every, every_ws, only_one):
            stream.ended()
        assert every_ws.ws.close_code == 1001
    finally:
        for stream in streams:
            stream.close()
        served.server.close()


def _raw_get(url: str, path: str) -> socket.socket:
    """A connection that sent ``GET path`` and read the stream's first line.

    Plain socket, not httpx: an httpx stream closed while its reader thread is
    blocked in ``recv`` keeps the connection open (the kernel closes a socket only
    once no call uses it), so the server would never see the hang-up.
    """
    host, port = httpx.URL(url).host, httpx.URL(url).port
    assert port is not None
    conn = socket.create_connection((host, port), timeout=TIMEOUT)
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    received = b""
    while b'{"serving":' not in received:
        chunk = conn.recv(1 << 16)
        assert chunk, received
        received += chunk
    assert received.startswith(b"HTTP/1.1 200 "), received
    return conn


def test_a_worktree_it_does_not_serve_is_answered_unserved(served: Served, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    response = httpx.get(
        served.url + "__greenloop/events", params={"worktree": str(elsewhere)}, timeout=TIMEOUT
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/x-ndjson"
    why = json.loads(response.text)["unserved"]
    assert f"{elsewhere} is not a worktree of" in why

    with connect(
        f"{served.ws_url}__greenloop/events?worktree={elsewhere}", open_timeout=TIMEOUT
    ) as ws:
        assert json.loads(ws.recv(timeout=TIMEOUT)) == {"unserved": why}
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=TIMEOUT)
        assert ws.close_code == 4404


def test_a_foreign_host_or_origin_is_refused(served: Served) -> None:
    for path in ("__greenloop/events", "__greenloop/status"):
        response = httpx.get(served.url + path, headers={"host": "evil.example"}, timeout=TIMEOUT)
        assert response.status_code == 403
        assert "greenloop serve with --allowed-host evil.example" in response.text
    with pytest.raises(InvalidStatus) as refused:
        connect(
            served.ws_url + "__greenloop/events",
            origin=Origin("http://evil.example"),
            open_timeout=TIMEOUT,
        )
    assert refused.value.response.status_code == 403
    assert served.status()["serve"]["streams"] == 0


def test_a_taken_port_exits_2_with_nothing_left_running(repo: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = cli("serve", "--repo", str(repo), "--port", str(port), cwd=repo, env=python_env())
    assert done.returncode == 2, done.stderr
    assert f"cannot serve HTTP on 127.0.0.1:{port}" in done.stderr
    assert "in use" in done.stderr
    assert not ServePlace.of(common_dir(repo) or repo).socket.exists()
    status = json.loads(cli("status", "--json", cwd=repo, env=python_env()).stdout)
    assert "serve" not in status and status["watcher"]["live"] is False

    done = cli("serve", "--repo", str(repo), "--host", "0.0.0.0", cwd=repo, env=python_env())
    assert done.returncode == 2
    assert "give --port too" in done.stderr
    done = cli(
        "serve",
        "--repo",
        str(repo),
        "--port",
        "0",
        "--allowed-host",
        "not a host",
        cwd=repo,
        env=python_env(),
    )
    assert done.returncode == 2
    assert "--allowed-host 'not a host' is not a host name" in done.stderr
