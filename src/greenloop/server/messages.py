"""The JSON the dev server speaks: the status document and the WebSocket messages.

Every WebSocket message is an object with a ``type`` — ``sync``, ``state``,
``build``, ``artifact`` or ``app`` — the contract payload that caused it (``event``,
``result`` or ``app``, as its pydantic JSON), and ``status``: the whole status after the
change. Clients that only need to know "what now" read ``status`` and can
never fall out of step; clients that want the stream read the payloads.
"""

from __future__ import annotations

import json
from typing import Any

from greenloop.protocol.devloop import BuildResult, StateEvent
from greenloop.server.app_status import AppStatus
from greenloop.server.snapshot import Snapshot


def status_document(snapshot: Snapshot) -> dict[str, Any]:
    """The ``/__greenloop/status`` body for ``snapshot``."""
    return {
        "verdict": snapshot.verdict.value,
        "artifact": (
            snapshot.artifact.model_dump(mode="json") if snapshot.artifact is not None else None
        ),
        "last_build": (
            snapshot.last_build.model_dump(mode="json") if snapshot.last_build is not None else None
        ),
        "diagnostics_count": len(snapshot.diagnostics),
        "diagnostics": [d.model_dump(mode="json") for d in snapshot.diagnostics],
        "app": snapshot.app.model_dump(mode="json") if snapshot.app is not None else None,
    }


def sync_message(snapshot: Snapshot) -> str:
    """The first message a client gets: where things stand."""
    return _encode({"type": "sync", "status": status_document(snapshot)})


def state_message(event: StateEvent, snapshot: Snapshot) -> str:
    """A verdict event from the model, with the status after it."""
    payload = event.model_dump(mode="json")
    return _encode({"type": "state", "event": payload, "status": status_document(snapshot)})


def build_message(result: BuildResult, snapshot: Snapshot) -> str:
    """A build result (servable or failed), with the status after it."""
    payload = result.model_dump(mode="json")
    return _encode({"type": "build", "result": payload, "status": status_document(snapshot)})


def artifact_message(result: BuildResult, snapshot: Snapshot) -> str:
    """A newly served artifact and the build that made it, with the status after it."""
    payload = result.model_dump(mode="json")
    return _encode({"type": "artifact", "result": payload, "status": status_document(snapshot)})


def app_message(app: AppStatus, snapshot: Snapshot) -> str:
    """The app behind the proxy changed (started, took over, failed, exited)."""
    payload = app.model_dump(mode="json")
    return _encode({"type": "app", "app": payload, "status": status_document(snapshot)})


def _encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))
