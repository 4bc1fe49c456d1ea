"""Settings a step can carry: cache policies (``forever``, ``ttl``, ``on_change``,
``compose``) and the local executor's ``sandbox``.

A step with no policy always runs. The policies are the IR models themselves,
so what the pipeline file says is exactly what ``greenloop render`` prints.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from pydantic import ValidationError

from greenloop.protocol.ir import CachePolicy, Compose, Forever, OnChange, Sandbox, SandboxMode, Ttl
from greenloop.sdk.steps import PipelineDefinitionError, _caller


def sandbox(
    mode: SandboxMode = "bwrap",
    *,
    network: bool = True,
    ro_binds: Iterable[str] = (),
    rw_binds: Iterable[str] = (),
    home: bool = False,
) -> Sandbox:
    """How the ``local`` executor isolates a step (see the README's "The local executor").

    ``ro_binds``/``rw_binds``: host folders (absolute) the step sees read-only /
    read-write at the same path, e.g. a tool's install folder or a download cache;
    ``home``: the step sees your ``$HOME`` (read-write) instead of an empty one.
    """
    try:
        return Sandbox(
            mode=mode, network=network, ro_binds=list(ro_binds), rw_binds=list(rw_binds), home=home
        )
    except ValidationError as e:
        message = e.errors()[0]["msg"].removeprefix("Value error, ")
        raise PipelineDefinitionError(f"invalid sandbox: {message}", _caller()) from None


def forever() -> Forever:
    """Cache until the command, its settings, or anything upstream changes."""
    return Forever()


def ttl(duration: timedelta | float) -> Ttl:
    """Cache for ``duration`` (a ``timedelta`` or seconds) after the step last ran."""
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    return Ttl(seconds=seconds)


def on_change(*globs: str, optional: bool = False) -> OnChange:
    """Cache until the content of workspace files matching any of ``globs`` changes.

    Globs are gitignore-style with brace sets (``"src/**/*.{ts,tsx}"``). A glob that
    matches no file in the workspace stops the run before anything runs, since the
    step would stay cached whatever changed; ``optional=True`` allows that (say,
    for lock files a project may not have).
    """
    return OnChange(globs=list(globs), optional=optional)


def compose(*policies: CachePolicy) -> Compose:
    """Cache only while every one of ``policies`` holds."""
    return Compose(policies=list(policies))
