"""Output formatters for build events: ``terminal`` (rich), ``plain`` (CI logs), ``json`` (lines).

A formatter is built with the stream to write to and called with each event.
"""

from __future__ import annotations

from typing import TextIO

from greenloop.protocol import (
    BuildEvent,
    PlanSummary,
    RunFinished,
    RunStarted,
    StepCached,
    StepFinished,
    StepLog,
    StepStarted,
)

_MARKS = {
    "passed": ("✓", "green"),
    "cached": ("↺", "cyan"),
    "failed": ("✗", "red"),
    "skipped": ("-", "yellow"),
    "cancelled": ("■", "yellow"),
}


def describe(event: BuildEvent) -> tuple[str, str] | None:
    """A one-line human description of ``event`` and its colour, or ``None`` to print nothing."""
    if isinstance(event, RunStarted):
        return f"run {event.pipeline} ({event.run_id.hex[:12]})", "bold"
    if isinstance(event, PlanSummary):
        modes = "".join(f"; {mode}" for mode in event.modes)
        return (
            f"plan: {event.steps} steps, {event.cached} cached, {event.to_run} to run{modes}",
            "dim",
        )
    if isinstance(event, StepStarted):
        return f"▶ {event.label} [{event.executor}]", "blue"
    if isinstance(event, StepLog):
        return f"  {event.step} │ {event.line}", "red" if event.stream == "stderr" else ""
    if isinstance(event, StepCached):
        return None  # StepFinished(status=cached) follows and says it
    if isinstance(event, StepFinished):
        mark, colour = _MARKS[event.status]
        detail = (
            f" (exit {event.exit_code})" if event.status == "failed" and event.exit_code else ""
        )
        time = f" {event.duration_s:.2f}s" if event.status in ("passed", "failed") else ""
        why = f": {event.error}" if event.error else ""
        return f"{mark} {event.label} {event.status}{detail}{time}{why}", colour
    if isinstance(event, RunFinished):
        mark, colour = _MARKS[event.status]
        why = f": {event.error}" if event.error else ""
        return f"{mark} run {event.status} in {event.duration_s:.2f}s{why}", f"bold {colour}"
    return None


class PlainFormatter:
    """Uncoloured lines, one per event: for CI logs and pipes."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, event: BuildEvent) -> None:
        """Write ``event`` as one line."""
        described = describe(event)
        if described is not None:
            self._stream.write(described[0] + "\n")
            self._stream.flush()


class TerminalFormatter:
    """Coloured lines through rich, for people at a terminal."""

    def __init__(self, stream: TextIO) -> None:
        # rich is imported here, not at module level: plain and json output never need it.
        from rich.console import Console

        self._console = Console(file=stream, highlight=False, soft_wrap=True)

    def __call__(self, event: BuildEvent) -> None:
        """Print ``event`` in colour."""
        from rich.markup import escape

        described = describe(event)
        if described is not None:
            text, style = described
            self._console.print(f"[{style}]{escape(text)}[/]" if style else escape(text))


class JsonFormatter:
    """One JSON object per event per line (the ``BuildEvent`` schema)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, event: BuildEvent) -> None:
        """Write ``event`` as a JSON line."""
        self._stream.write(event.model_dump_json() + "\n")
        self._stream.flush()
