"""What a run said, folded from its build events: for summaries and reports at its end.

Formatters and report writers each keep a :class:`Transcript` fed the same events
they render, so nothing about a run has to be asked of the engine afterwards.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

from greenloop.protocol import (
    BuildEvent,
    PlanSummary,
    RunFinished,
    RunStarted,
    StepFinished,
    StepLog,
)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
WARNINGS_STEP = "greenloop"
"""The pseudo step the engine logs its own warnings under."""


def plain_text(line: str) -> str:
    """``line`` without terminal escape sequences (colours, cursor moves)."""
    return _ANSI.sub("", line)


@dataclass
class RunTranscript:
    """One run: how it started, each step's end (in order) and the logs of its failed steps."""

    started: RunStarted
    plan: PlanSummary | None = None
    steps: list[StepFinished] = field(default_factory=list)
    logs: dict[str, list[str]] = field(default_factory=dict)
    finished: RunFinished | None = None

    @property
    def failed(self) -> list[StepFinished]:
        """The steps that failed, in the order they ended."""
        return [s for s in self.steps if s.status == "failed"]


class Transcript:
    """Folds build events into :class:`RunTranscript` records, one per run.

    Every step's log is kept while it runs — its last ``keep`` lines, or all of
    them with ``keep=None`` — and dropped when it passes; a failed step's stays.
    """

    def __init__(self, keep: int | None) -> None:
        self._keep = keep
        self._running: dict[str, deque[str]] = {}
        self.runs: list[RunTranscript] = []

    @property
    def current(self) -> RunTranscript | None:
        """The latest run, finished or not."""
        return self.runs[-1] if self.runs else None

    def add(self, event: BuildEvent) -> RunTranscript | None:
        """Take ``event`` in; return the run it belongs to (None before any run started)."""
        if isinstance(event, RunStarted):
            self._running.clear()
            self.runs.append(RunTranscript(started=event))
            return self.runs[-1]
        run = self.current
        if run is None:
            return None
        if isinstance(event, PlanSummary):
            run.plan = event
        elif isinstance(event, StepLog) and event.step != WARNINGS_STEP:
            lines = self._running.get(event.step)
            if lines is None:
                lines = self._running[event.step] = deque(maxlen=self._keep)
            lines.append(event.line)
        elif isinstance(event, StepFinished):
            run.steps.append(event)
            lines = self._running.pop(event.step, deque())
            if event.status == "failed":
                run.logs[event.step] = list(lines)
        elif isinstance(event, RunFinished):
            run.finished = event
        return run
