"""An image's id, as the engine names it: what a container step's cache key holds.

A tag is a name that moves (``docker build -t app .`` again, a new pull), so a
key on the name alone would answer a step from the cache after its image
changed: a wrong green. The id is asked for on every run, fully cached ones
too, so on a local socket it takes one small HTTP request, without the Docker
SDK's import.
"""

from __future__ import annotations

import http.client
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
    conn = _UnixConnection(path)
    try:
        conn.request("GET", f"/images/{quote(image, safe='/:@')}/json")
        response = conn.getresponse()
        body = response.read()
    except OSError as e:
        raise SetupError(
            f"cannot ask the Docker engine at {host} for image {image!r}: {e}. Start one, or "
            "point DOCKER_HOST at a running engine"
        ) from None
    finally:
        conn.close()
    if response.status == 404:
        return None
    try:
        found = json.loads(body)["Id"]
    except (ValueError, KeyError, TypeError):
        found = None
    if response.status != 200 or not isinstance(found, str):
        raise SetupError(
            f"the Docker engine at {host} answered {response.status} for image {image!r}: "
            f"{body[:200].decode(errors='replace').strip()}"
        )
    return found


def _through_sdk(image: str, client: Any) -> str | None:
    import docker.errors

    try:
        return str(client.images.get(image).id)
    except docker.errors.ImageNotFound:
        return None


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over the engine's unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=_TIMEOUT_S)
        self._path = path

    def connect(self) -> None:
        """Connect to the socket instead of a TCP port."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock
