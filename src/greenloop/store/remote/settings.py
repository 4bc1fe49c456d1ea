"""How a remote cache is configured: environment variables, modes, defaults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

REMOTE_CACHE_ENV = "GREENLOOP_REMOTE_CACHE"
"""Environment variable naming the remote cache URL (``--remote-cache`` overrides it)."""
REMOTE_CACHE_MODE_ENV = "GREENLOOP_REMOTE_CACHE_MODE"
"""Environment variable holding the mode, ``read`` or ``readwrite`` (the default)."""
REMOTE_CACHE_TOKEN_ENV = "GREENLOOP_REMOTE_CACHE_TOKEN"
"""Environment variable holding a bearer token sent with every request."""
REMOTE_CACHE_TIMEOUT_ENV = "GREENLOOP_REMOTE_CACHE_TIMEOUT"
"""Environment variable overriding the per-request timeout, in seconds."""

RemoteMode = Literal["read", "readwrite"]
"""``read`` only looks entries up; ``readwrite`` also publishes what this machine builds."""
MODES: tuple[RemoteMode, ...] = get_args(RemoteMode)
"""Every valid mode."""

DEFAULT_TIMEOUT_S = 30.0
"""Seconds a request may wait on the network (connecting, or between body chunks)."""
DEFAULT_JOBS = 8
"""Blob transfers in flight at once."""

Warn = Callable[[str], None]
"""Receives the one warning line a run prints about its remote."""


def check_mode(mode: str) -> RemoteMode:
    """``mode`` as a :data:`RemoteMode`; :class:`ValueError` if it is not one."""
    for known in MODES:
        if mode == known:
            return known
    raise ValueError(f"remote cache mode must be one of {', '.join(MODES)}: {mode!r}")
