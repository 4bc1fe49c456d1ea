"""Run a greenloop HTTP server in a background thread, so the caller's thread keeps its loop.

:func:`serve` runs ``greenloop dev``'s server; :func:`serve_app` any ASGI app the
same way (``greenloop serve --port`` runs the fleet's with it).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

from greenloop.server.app import create_app
from greenloop.server.hosts import HostPolicy
from greenloop.server.proxy import Proxy
from greenloop.server.state import LiveState

_POLL_S = 0.01


class DevServer:
    """A running server; :meth:`stop` (or leaving a ``with`` block) shuts it down."""

    host: str
    """The address it listens on."""
    port: int
    """The port it listens on (the one picked, when asked for port 0)."""

    def __init__(
        self, server: uvicorn.Server, sock: socket.socket, host: str, name: str = "dev"
    ) -> None:
        """Wrap ``server``, which will listen on the already bound ``sock``; see :func:`serve`.

        ``name`` says which server it is in its thread's name and its errors.
        """
        self.host = host
        self.port = sock.getsockname()[1]
        self._server = server
        self._socket = sock
        self._name = name
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"greenloop-{name}-server", daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8123/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and stop serving; waits up to ``timeout`` seconds."""
        self._server.should_exit = True
        self._thread.join(timeout / 2)
        if self._thread.is_alive():
            # Graceful shutdown is waiting on a stuck connection; cut it.
            self._server.force_exit = True
            self._thread.join(timeout / 2)
        self._socket.close()

    def __enter__(self) -> DevServer:
        """Use the server as a context manager that stops it on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    def _start(self, timeout: float) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                self._socket.close()
                raise RuntimeError(f"the {self._name} server did not start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the {self._name} server did not start within {timeout:g}s")
            time.sleep(_POLL_S)

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as e:  # reported by _start; a thread has nowhere else to say it
            self._error = e


def serve(
    state: LiveState,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    allowed_hosts: Iterable[str] = (),
    start_timeout: float = 10.0,
    proxy: Proxy | None = None,
) -> DevServer:
    """Serve ``state`` on ``host``:``port`` (0 picks a free port) from a background thread.

    Requests must name a loopback host, ``host`` or one of ``allowed_hosts`` in
    their ``Host`` header (see :mod:`greenloop.server.hosts`); a malformed name
    raises ``ValueError``. Returns once the server accepts connections. Binding
    happens here, so a port in use raises ``OSError`` in the caller's thread.
    With ``proxy``, the server fronts an app (see :func:`create_app`).
    """
    policy = HostPolicy.of(host, allowed_hosts)
    return serve_app(
        create_app(state, policy, proxy),
        host,
        port,
        start_timeout=start_timeout,
        # Behind the proxy the app's own Server and Date headers are the ones to pass on;
        # uvicorn would add its own next to them.
        own_headers=proxy is None,
    )


def serve_app(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    start_timeout: float = 10.0,
    own_headers: bool = True,
    name: str = "dev",
) -> DevServer:
    """Serve ``app`` on ``host``:``port`` (0 picks a free port) from a background thread.

    Binding happens here, so a port in use raises ``OSError`` in the caller's thread;
    returns once the server accepts connections. ``own_headers`` adds uvicorn's
    ``Server`` and ``Date`` headers; ``name`` is the server's in its thread and errors.
    """
    sock = _bind(host, port)
    config = uvicorn.Config(
        app,
        lifespan="off",
        # The sans-I/O websockets backend: the legacy one is deprecated upstream.
        ws="websockets-sansio",
        # Leave the process's logging alone; greenloop's CLI owns it.
        log_config=None,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=3,
        server_header=own_headers,
        date_header=own_headers,
    )
    server = DevServer(uvicorn.Server(config), sock, host, name)
    server._start(start_timeout)
    return server


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # An explicit IPPROTO_TCP (create_server leaves it 0) is what makes asyncio set
    # TCP_NODELAY on every accepted connection. Without it, a response written as
    # headers then body waited for the browser's delayed ACK (~40 ms) on each reused
    # keep-alive connection, twice per reload (the page, then client.js).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen()
    except BaseException:
        sock.close()
        raise
    return sock
