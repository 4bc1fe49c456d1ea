"""Which ``Host`` a request may name: the dev server's guard against DNS rebinding.

A page on ``evil.example`` can make its own name resolve to ``127.0.0.1`` and then
read the dev server as if it were its own site: the browser sends
``Host: evil.example``. So every request, HTTP and WebSocket alike, must name one
of our own hosts — a loopback address, ``localhost`` (and its subdomains, which
browsers resolve to loopback), the address the server is bound to — or a name the
user allowed (``--allowed-host``); anything else is refused with 403, as vite's
``server.allowedHosts`` and webpack-dev-server's ``allowedHosts`` do.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

_HOST = re.compile(
    r"^(?:\[(?P<ip6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9_\-]+(?:\.[a-z0-9_\-]+)*\.?))(?::[0-9]{1,5})?$"
)
_POLICY_VIOLATION = 1008


def host_name(header: str) -> str | None:
    """The host a ``Host`` header (or an ``--allowed-host`` value) names, or None if malformed.

    Lowercase, without port, brackets or a trailing dot: ``[::1]:8000`` is ``::1``.
    """
    found = _HOST.match(header.strip().lower())
    if found is None:
        return None
    if found["ip6"] is not None:
        try:
            return str(ipaddress.IPv6Address(found["ip6"]))
        except ValueError:
            return None
    return str(found["name"]).rstrip(".")


def _is_loopback(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HostPolicy:
    """The hosts a request may name: loopback, the bound address, and the user's names.

    A user name that starts with ``.`` allows that domain and all its subdomains.
    """

    bound: str = "127.0.0.1"
    """The address the server listens on."""
    allowed: tuple[str, ...] = ()
    """Names the user allows besides loopback (lowercase, from :func:`host_name`)."""

    @classmethod
    def of(cls, bound: str, allowed: Iterable[str] = ()) -> HostPolicy:
        """A policy for a server on ``bound``; raises ValueError naming a malformed name."""
        names = []
        for value in allowed:
            domain = value.startswith(".")
            name = host_name(value[1:] if domain else value)
            if not name:
                raise ValueError(f"--allowed-host {value!r} is not a host name")
            names.append("." + name if domain else name)
        return cls(bound=host_name(bound) or bound, allowed=tuple(names))

    def allows(self, header: str | None) -> bool:
        """True when a request with this ``Host`` header (None: none sent) is ours."""
        name = host_name(header) if header is not None else None
        if not name:
            return False
        if _is_loopback(name) or name == self.bound:
            return True
        return any(
            name == a or (a.startswith(".") and (name == a[1:] or name.endswith(a)))
            for a in self.allowed
        )


class HostGuard:
    """ASGI middleware answering 403 to every request whose ``Host`` the policy refuses."""

    def __init__(self, app: ASGIApp, policy: HostPolicy, command: str = "greenloop dev") -> None:
        """Guard ``app`` with ``policy``; a refusal says to restart ``command`` allowing it."""
        self.app = app
        self._policy = policy
        self._command = command

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass allowed requests on; refuse the rest before the app sees them."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        hosts = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
        if len(hosts) == 1 and self._policy.allows(hosts[0]):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            # Closing before the handshake is accepted is an HTTP 403.
            await WebSocket(scope, receive, send).close(code=_POLICY_VIOLATION)
            return
        named = host_name(hosts[0]) if len(hosts) == 1 else None
        message = (
            f"{self._command}: Host {named or (hosts[0] if hosts else '')!r} is not allowed "
            f"(a guard against DNS rebinding); to serve it, start {self._command} with "
            f"--allowed-host {named or 'NAME'}\n"
        )
        await PlainTextResponse(message, status_code=403)(scope, receive, send)
