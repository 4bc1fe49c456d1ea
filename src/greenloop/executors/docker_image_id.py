"""An image's id, as the engine names it: what a container step's cache key holds.

A tag is a name that moves (``docker build -t app .`` again, a new pull), so a
key on the name alone would answer a step from the cache after its image
changed: a wrong green. The id is asked for on every run, fully cached ones
too, so on a local socket it takes one small HTTP/1.1 request written by hand:
neither the Docker SDK's import nor ``http.client``'s (with ``ssl`` and
``email``, ~10 ms of a cached run).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from greenloop.protocol import SetupError

_DEFAULT_HOST = "unix:///var/run/docker.sock"
_TIMEOUT_S = 30.0


def image_id(image: str, client: Callable[[], Any]) -> str | None:
    """The id of ``image`` on the engine ``DOCKER_HOST`` names; None when it is not there.

    ``client()`` gives a Docker SDK client, used only for an engine not on a unix
    socket. Raises ``SetupError`` when the engine cannot be asked.
    """
    host = os.environ.get("DOCKER_HOST") or _DEFAULT_HOST
    if not host.startswith("unix://"):
        return _through_sdk(image, client())
    path = host.removeprefix("unix://")
    try:
        status, body = unix_get(path, f"/images/{quote(image, safe='/:@')}/json")
    except OSError as e:
        raise SetupError(
            f"cannot ask the Docker engine at {host} for image {image!r}: {e}. Start one, or "
            "point DOCKER_HOST at a running engine"
        ) from None
    if status == 404:
        return None
    try:
        found = json.loads(body)["Id"]
    except (ValueError, KeyError, TypeError):
        found = None
    if status != 200 or not isinstance(found, str):
        raise SetupError(
            f"the Docker engine at {host} answered {status} for image {image!r}: "
            f"{body[:200].decode(errors='replace').strip()}"
        )
    return found


def _through_sdk(image: str, client: Any) -> str | None:
    import docker.errors

    try:
        return str(client.images.get(image).id)
    except docker.errors.ImageNotFound:
        return None


def unix_get(socket_path: str, target: str) -> tuple[int, bytes]:
    """``GET target`` over the unix socket at ``socket_path``: the status and the body.

    One request on its own connection (``Connection: close``), so the answer ends
    where the stream does; a chunked body is decoded. ``OSError`` when the engine
    cannot be reached or its answer is not HTTP.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(_TIMEOUT_S)
        sock.connect(socket_path)
        request = f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode("ascii"))
        chunks: list[bytes] = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if not sep or len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise OSError(f"not an HTTP answer: {head[:80]!r}")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    if b"chunked" in headers.get(b"transfer-encoding", b""):
        body = _unchunk(body)
    elif (length := headers.get(b"content-length", b"")).isdigit():
        if len(body) < int(length):
            raise OSError(f"the answer ended after {len(body)} of its {int(length)} bytes")
        body = body[: int(length)]
    return int(parts[1]), body


def _unchunk(data: bytes) -> bytes:
    """The body of a ``Transfer-Encoding: chunked`` answer (``OSError`` when it is cut short)."""
    body = bytearray()
    at = 0
    while True:
        end = data.find(b"\r\n", at)
        try:
            size = int(data[at:end].split(b";", 1)[0], 16) if end >= 0 else -1
        except ValueError:
            size = -1
        if size < 0 or end + 2 + size > len(data):
            raise OSError("the answer's chunked body is cut short or malformed")
        if size == 0:
            return bytes(body)
        body += data[end + 2 : end + 2 + size]
        at = end + 2 + size + 2  # the chunk's own CRLF
