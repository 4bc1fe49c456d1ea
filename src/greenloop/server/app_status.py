"""What the dev server says about the app behind its proxy: the JSON of ``status.app``.

The dev layer (``greenloop.dev.app_supervisor``) runs the app processes and hands these
to :meth:`LiveState.set_app`; the server only shows them (status, WebSocket,
overlay), so it never needs to know how an app is started or stopped.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class AppHealth(StrEnum):
    """Where one app process stands."""

    STARTING = "starting"
    """Started, not ready yet; the proxy does not send it anything."""
    HEALTHY = "healthy"
    """Ready, and nothing has gone wrong since."""
    FAILING = "failing"
    """Running, but it answered a request with a 5xx (or could not be reached)."""
    EXITED = "exited"
    """It ended by itself (not stopped by greenloop)."""


class SourceLocation(BaseModel):
    """A place in the project a traceback points at."""

    model_config = ConfigDict(frozen=True)

    path: str
    """The file: in the project tree when the build's file maps onto one, else as logged."""
    line: int
    col: int | None = None


class AppProblem(BaseModel):
    """Why an app did not start, or what went wrong while it ran."""

    model_config = ConfigDict(frozen=True)

    summary: str
    """What happened, e.g. ``exited with code 1 before it was ready`` or ``GET / answered 500``."""
    error: str | None = None
    """The error line of the app's own log (``NameError: name 'x' is not defined``), if any."""
    location: SourceLocation | None = None
    """Where the app's traceback points in the project's code, if it says."""
    log_tail: list[str] = []
    """The last lines the app printed (stdout and stderr)."""


class AppProcessInfo(BaseModel):
    """One app process: which build it runs, where it listens, how it is doing."""

    model_config = ConfigDict(frozen=True)

    pid: int
    port: int
    input_hash: str
    """The input hash of the build it runs."""
    tree: str
    """The artifact tree it runs from (what pages served by it carry)."""
    health: AppHealth
    started_at: float
    """When it was started (seconds since the epoch)."""
    ready_ms: int | None = None
    """How long it took from being started to answering its readiness check."""
    problem: AppProblem | None = None


class AppStatus(BaseModel):
    """The app side of ``greenloop dev``: the one serving, the one starting, the last failure."""

    model_config = ConfigDict(frozen=True)

    command: list[str]
    """The app command, ``{port}`` not yet filled in."""
    current: AppProcessInfo | None = None
    """The app the proxy sends requests to (None before the first one is ready)."""
    starting: AppProcessInfo | None = None
    """A newer build's app that is starting, not yet serving."""
    failed_start: AppProcessInfo | None = None
    """The newest build whose app did not become ready; cleared when a newer one takes over."""
