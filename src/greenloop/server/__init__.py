"""The dev server of ``greenloop dev``: the latest green artifact, live reload, error overlay.

The dev loop feeds a :class:`LiveState` from its own threads; :func:`serve`
runs the HTTP/WebSocket server for it in a background thread. The server
serves only directories handed to :meth:`LiveState.set_artifact` — complete,
green builds — and tells browsers over a WebSocket when to reload and what is
red. See ``docs/dev-server.md``.
"""

from __future__ import annotations

from greenloop.server.app import create_app
from greenloop.server.app_status import AppHealth, AppProblem, AppProcessInfo, AppStatus
from greenloop.server.background import DevServer, serve
from greenloop.server.proxy import Proxy, Upstream, UpstreamFailure
from greenloop.server.snapshot import Snapshot
from greenloop.server.state import LiveState

__all__ = [
    "AppHealth",
    "AppProblem",
    "AppProcessInfo",
    "AppStatus",
    "DevServer",
    "LiveState",
    "Proxy",
    "Snapshot",
    "Upstream",
    "UpstreamFailure",
    "create_app",
    "serve",
]
