"""Cache policies a step can carry: ``forever``, ``ttl``, ``on_change``, ``compose``.

A step with no policy always runs. The policies are the IR models themselves,
so what the pipeline file says is exactly what ``greenloop render`` prints.
"""

from __future__ import annotations

from datetime import timedelta

from greenloop.protocol.ir import CachePolicy, Compose, Forever, OnChange, Ttl


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
