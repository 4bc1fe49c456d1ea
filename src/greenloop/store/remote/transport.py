"""HTTP to a remote cache server: three verbs, and the HTTP library's errors turned into ours.

The transport knows nothing of entries, trees or the local store; the client
(:mod:`greenloop.store.remote.http_cache`) decides what a failure means for a run.
The HTTP library is imported on the first request, not with this module:
importing it costs ~80 ms, and a run whose every step is a local hit never
talks to the remote at all.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote, urlsplit

from greenloop._version import __version__
from greenloop.store.hashing import CHUNK_SIZE

if TYPE_CHECKING:
    import httpx

_CONNECT_TIMEOUT_S = 5.0
_LENGTH_SLACK = 1 << 16
"""How far a ``Content-Length`` may exceed the expected size (a content encoding's overhead)."""


class Unavailable(Exception):
    """The server cannot be used for the rest of the run (down, slow, 5xx, auth refused)."""


class WritesRefused(Exception):
    """The server answers reads but refuses our uploads."""


class Untrusted(Exception):
    """The server answered with data that does not check out; this lookup is a miss."""


class TooLarge(Exception):
    """A body declares more bytes than its object can have; it is refused unread."""


class HttpTransport:
    """``GET``/``HEAD``/``PUT`` against one server, over one pooled connection set.

    Every request raises :class:`Unavailable` when the server cannot be used
    (including after :meth:`give_up`), :class:`Untrusted` when its body cannot
    be decoded and :class:`WritesRefused` when it refuses an upload.
    """

    url: str
    """The server's base URL with any credentials removed (safe to print)."""

    def __init__(self, url: str, *, token: str | None, timeout: float, connections: int) -> None:
        """Prepare requests to ``url``; raises :class:`ValueError` for a URL that cannot work."""
        self.url, self._basic = split_url(url)
        self._token = token
        self._timeout = timeout
        self._connections = connections
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._down: str | None = None

    def give_up(self, reason: str) -> None:
        """Fail every later request with ``reason`` (the first reason given wins)."""
        with self._lock:
            if self._down is None:
                self._down = reason

    @contextmanager
    def get(self, path: str, limit: int | None) -> Iterator[Iterator[bytes] | None]:
        """Stream ``GET path``: yields the body's chunks, or None for a 404.

        Raises :class:`TooLarge` before reading a byte when the body's declared
        length is over ``limit`` (plus slack); the caller stops a body without
        one once it has seen too much.
        """
        import httpx

        client = self._http()
        try:
            with client.stream("GET", path) as resp:
                if resp.status_code == 404:
                    yield None
                    return
                _check_read(resp.status_code, "GET", path)
                declared = _content_length(resp.headers.get("content-length"))
                if limit is not None and declared is not None and declared > limit + _LENGTH_SLACK:
                    # Closing the response drops the connection with the body unread.
                    raise TooLarge(f"is larger than {limit} bytes (Content-Length: {declared})")
                yield resp.iter_bytes(CHUNK_SIZE)
        except httpx.TransportError as e:
            raise Unavailable(_describe(e)) from e
        except httpx.DecodingError as e:
            raise Untrusted(f"undecodable body for GET /{path}: {e}") from e

    def head(self, path: str) -> bool:
        """Whether the server has ``path``."""
        return self.stat(path)[0]

    def stat(self, path: str) -> tuple[bool, int | None]:
        """Whether the server has ``path``, and its size when the answer gives one
        (``Content-Length``; None when it gives none)."""
        import httpx

        try:
            resp = self._http().head(path)
        except httpx.TransportError as e:
            raise Unavailable(_describe(e)) from e
        if resp.status_code == 404:
            return False, None
        _check_read(resp.status_code, "HEAD", path)
        return True, _content_length(resp.headers.get("content-length"))

    def put(self, path: str, content: bytes | BinaryIO, size: int, *, entry: bool = False) -> None:
        """Upload ``size`` bytes of ``content`` to ``path`` (``entry``: an entry document)."""
        import httpx

        client = self._http()
        try:
            resp = client.put(
                path,
                content=content,
                headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            )
        except httpx.TransportError as e:
            raise Unavailable(_describe(e)) from e
        if resp.status_code in (200, 201, 204):
            return
        if resp.status_code >= 500:
            raise Unavailable(
                f"HTTP {resp.status_code} for PUT /{path} (the server could not store it: "
                "its error log says why; a WebDAV server needs to write its folder)"
            )
        hint = ""
        if entry and resp.status_code == 400:
            hint = " (bazel-remote? start it with --disable_http_ac_validation)"
        raise WritesRefused(f"upload refused: {_refusal(resp.status_code)} for PUT /{path}{hint}")

    def close(self) -> None:
        """Release the connections."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._down is not None:
                raise Unavailable(self._down)
            if self._client is None:
                self._client = self._new_client()
            return self._client

    def _new_client(self) -> httpx.Client:
        import ssl

        import httpx

        headers = {"User-Agent": f"greenloop/{__version__}"}
        auth = None
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        elif self._basic is not None:
            auth = httpx.BasicAuth(*self._basic)
        # trust_env keeps the standard knobs working: SSL_CERT_FILE/SSL_CERT_DIR
        # for a private CA, and HTTPS_PROXY/NO_PROXY. A plain-http remote never
        # does TLS, so it gets an empty (fail-closed) context instead of paying
        # ~20 ms to load a CA bundle.
        verify: ssl.SSLContext | bool = True
        if self.url.startswith("http://"):
            verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        return httpx.Client(
            base_url=self.url + "/",
            auth=auth,
            headers=headers,
            verify=verify,
            timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, _CONNECT_TIMEOUT_S)),
            limits=httpx.Limits(
                max_connections=self._connections, max_keepalive_connections=self._connections
            ),
            follow_redirects=False,
            trust_env=True,
        )


def split_url(url: str) -> tuple[str, tuple[str, str] | None]:
    """(base URL without credentials, query or fragment; basic-auth pair from the URL or None)."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 -- raises ValueError for a malformed port
    except ValueError as e:
        raise ValueError(f"invalid remote cache URL {url!r}: {e}") from e
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in url.strip():
        raise ValueError(f"remote cache URL must be http:// or https:// with a host: {url!r}")
    host = parts.netloc.rpartition("@")[2]
    base = f"{parts.scheme}://{host}{parts.path}".rstrip("/")
    basic = None
    if parts.username is not None or parts.password is not None:
        basic = (unquote(parts.username or ""), unquote(parts.password or ""))
    return base, basic


def _check_read(status: int, method: str, path: str) -> None:
    if status == 200:
        return
    raise Unavailable(f"{_refusal(status)} for {method} /{path}")


def _refusal(status: int) -> str:
    """How to word an HTTP error status: 403 need not be about credentials at all."""
    if status == 401:
        return "credentials refused (HTTP 401)"
    if status == 403:
        # A WebDAV server that may not read or write its own folder answers 403 too.
        return "refused (HTTP 403: credentials or server permissions)"
    return f"HTTP {status}"


def _content_length(value: str | None) -> int | None:
    """A ``Content-Length`` header's value, None when absent or not a number."""
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _describe(error: Exception) -> str:
    detail = str(error) or type(error).__name__
    return f"{type(error).__name__}: {detail}"
