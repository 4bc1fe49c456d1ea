"""Output formatters for build events: ``terminal`` (live step tree), ``plain`` (CI logs), ``json``.

A formatter is built with the stream to write to and called with each event.
The terminal formatter draws a live step tree (rich) on a TTY once a step
runs; until then, and when the stream is no terminal, it writes lines itself,
so a fully cached run never imports rich.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, TextIO

from greenloop.cli._transcript import RunTranscript, Transcript
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

if TYPE_CHECKING:
    from greenloop.cli._live import LiveTree

TAIL_LINES = 20
"""How many of a failed step's last log lines the end-of-run summary repeats."""

_MARKS = {
    "passed": ("✓", "green"),
    "cached": ("↺", "cyan"),
    "failed": ("✗", "red"),
    "skipped": ("-", "yellow"),
    "cancelled": ("■", "yellow"),
}
_SGR = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "cyan": "36",
}

Line = tuple[str, str]
"""A line of output and its style (rich style words: ``bold red``; empty for none)."""


def describe(event: BuildEvent) -> Line | None:
    """A one-line human description of ``event`` and its colour, or ``None`` to print nothing."""
    if isinstance(event, RunStarted):
        return f"run {event.pipeline} ({event.run_id.hex[:12]})", "bold"
    if isinstance(event, PlanSummary):
        root = f" in {event.root}" if event.root else ""
        modes = "".join(f"; {mode}" for mode in event.modes)
        return (
            f"plan: {event.steps} steps, {event.cached} cached, {event.to_run} to run{root}{modes}",
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
        return f"{mark} {event.label} {event.status}{outcome_detail(event)}", colour
    if isinstance(event, RunFinished):
        mark, colour = _MARKS[event.status]
        why = f": {event.error}" if event.error else ""
        return f"{mark} run {event.status} in {event.duration_s:.2f}s{why}", f"bold {colour}"
    return None


def outcome_detail(step: StepFinished) -> str:
    """What follows a step's status in its line: exit code, time, reason."""
    code = f" (exit {step.exit_code})" if step.status == "failed" and step.exit_code else ""
    took = f" {step.duration_s:.2f}s" if step.status in ("passed", "failed") else ""
    why = f": {step.error}" if step.error else ""
    return f"{code}{took}{why}"


def failure_summary(run: RunTranscript, *, whole_logs: bool) -> list[Line]:
    """The end-of-run summary of a failed run: each failed step with its log (or its tail).

    Empty when no step failed. A log kept whole is printed whole; otherwise the
    transcript kept its tail and the header says so.
    """
    failed = run.failed
    if not failed:
        return []
    lines: list[Line] = [("", "")]
    for step in failed:
        log = run.logs.get(step.step, [])
        which = "its log" if whole_logs else f"the last {len(log)} lines of its log"
        shown = f"{which}:" if log else "no output."
        lines.append((f"✗ {step.label} failed{outcome_detail(step)} — {shown}", "bold red"))
        lines.extend((f"  │ {line}", "") for line in log)
    names = ", ".join(f"{s.label} (exit {s.exit_code})" if s.exit_code else s.label for s in failed)
    count = f"{len(failed)} step{'s' if len(failed) > 1 else ''}"
    lines.append((f"{count} failed: {names}", "bold red"))
    return lines


def wants_colour(stream: TextIO) -> bool:
    """Colour for ``stream``: ``FORCE_COLOR`` says yes, ``NO_COLOR`` or ``TERM=dumb`` say no,
    else only on a terminal (as rich decides)."""
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return stream.isatty()


def paint(text: str, style: str) -> str:
    """``text`` wrapped in the ANSI escapes for ``style`` (the rich style words above)."""
    codes = ";".join(_SGR[word] for word in style.split() if word in _SGR)
    return f"\x1b[{codes}m{text}\x1b[0m" if codes else text


class PlainFormatter:
    """Uncoloured lines, one per event, and a summary of the failed steps at the end."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._transcript = Transcript(keep=TAIL_LINES)

    def __call__(self, event: BuildEvent) -> None:
        """Write ``event`` as one line (after the failure summary, for the run's end)."""
        run = self._transcript.add(event)
        lines: list[Line] = []
        if run is not None and isinstance(event, RunFinished):
            lines = failure_summary(run, whole_logs=False)
        described = describe(event)
        if described is not None:
            lines.append(described)
        if lines:
            self._stream.write("".join(text + "\n" for text, _ in lines))
            self._stream.flush()


class TerminalFormatter:
    """For people at a terminal: a live step tree while steps run, coloured lines otherwise.

    On a TTY the first step that runs starts the live view (see
    :mod:`greenloop.cli._live`): one line per step, the running steps' last log
    lines under them, and each failed step's whole log at the end. Elsewhere
    (a pipe, ``TERM=dumb``) it writes the plain formatter's lines, coloured
    when ``FORCE_COLOR`` asks.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._colour = wants_colour(stream)
        self._can_live = stream.isatty() and os.environ.get("TERM") != "dumb"
        self._transcript = Transcript(keep=None if self._can_live else TAIL_LINES)
        self._live: LiveTree | None = None

    def __call__(self, event: BuildEvent) -> None:
        """Show ``event``: through the live tree while one is up, else as a line."""
        run = self._transcript.add(event)
        if self._live is None and self._can_live and isinstance(event, StepStarted):
            # rich is imported only here: a run where nothing runs never pays for it.
            from greenloop.cli._live import LiveTree

            plan = run.plan if run is not None else None
            total = plan.steps if plan is not None else None
            planned = plan.planned if plan is not None else {}
            self._live = LiveTree(self._stream, total=total, planned=planned, colour=self._colour)
        if self._live is not None:
            self._live.handle(event, run)
            if isinstance(event, RunFinished):
                self._live = None
            return
        lines: list[Line] = []
        if run is not None and isinstance(event, RunFinished):
            lines = failure_summary(run, whole_logs=self._can_live)
        described = describe(event)
        if described is not None:
            lines.append(described)
        if lines:
            colour = self._colour
            self._stream.write("".join((paint(t, s) if colour else t) + "\n" for t, s in lines))
            self._stream.flush()


class JsonFormatter:
    """One JSON object per event per line (the ``BuildEvent`` schema)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, event: BuildEvent) -> None:
        """Write ``event`` as a JSON line."""
        self._stream.write(event.model_dump_json() + "\n")
        self._stream.flush()
