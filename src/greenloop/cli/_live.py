"""The live step tree on a terminal (rich ``Live``), started once a step runs.

Finished steps become permanent lines above the live region, so the scrollback
holds one line per step in the order they ended; the region itself shows each
running step with a spinner and its elapsed time, its last log lines under it,
then the steps still waiting to start, and a footer counting what is done and
waiting. At the end of the run the region
goes away and each failed step's whole log is printed, then the run's line.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from greenloop.cli._transcript import WARNINGS_STEP, RunTranscript, plain_text
from greenloop.cli.formatters import Line, describe, failure_summary
from greenloop.protocol import BuildEvent, RunFinished, StepFinished, StepLog, StepStarted

LOG_LINES = 3
"""How many of a running step's last log lines show under it (fewer on a short terminal)."""


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich would exit the process; the caller decides what a closed output
        # means (``greenloop run | head`` still finishes the run).
        self.quiet = True
        raise BrokenPipeError


@dataclass
class _Running:
    label: str
    executor: str
    since: float = field(default_factory=time.monotonic)
    spinner: Spinner = field(default_factory=lambda: Spinner("dots", style="blue"))
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))


class LiveTree:
    """The live view of one run, from its first running step to its end."""

    def __init__(
        self,
        stream: TextIO,
        *,
        total: int | None,
        colour: bool,
        planned: dict[str, str] | None = None,
    ) -> None:
        self._console = _Console(
            file=stream,
            highlight=False,
            soft_wrap=True,
            force_terminal=True,
            no_color=not colour,
        )
        self._total = total
        self._waiting = dict(planned or {})  # key -> label, until the step starts or ends
        self._done = 0
        self._running: dict[str, _Running] = {}
        # Held only to read or change the state above, never while calling rich:
        # rich's refresh thread holds its own lock when it asks for a frame.
        self._lock = threading.Lock()
        self._live = Live(
            console=self._console,
            get_renderable=self._frame,
            refresh_per_second=8,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()
        atexit.register(self._live.stop)  # a run that dies must not leave the cursor hidden

    def handle(self, event: BuildEvent, run: RunTranscript | None) -> None:
        """Update the tree for ``event`` (``run``: the transcript of the run so far)."""
        if isinstance(event, StepStarted):
            with self._lock:
                self._running[event.step] = _Running(event.label, event.executor)
                self._waiting.pop(event.step, None)
        elif isinstance(event, StepLog):
            if event.step == WARNINGS_STEP or event.step not in self._running:
                self._print([(f"  {event.step} │ {event.line}", "red")])
            else:
                with self._lock:
                    self._running[event.step].tail.append(event.line)
        elif isinstance(event, StepFinished):
            with self._lock:
                self._running.pop(event.step, None)
                self._waiting.pop(event.step, None)
                self._done += 1
            self._print([describe(event) or (event.label, "")])
        elif isinstance(event, RunFinished):
            self._live.stop()
            atexit.unregister(self._live.stop)
            summary = failure_summary(run, whole_logs=True) if run is not None else []
            self._print([*summary, describe(event) or ("", "")])
        else:
            described = describe(event)
            if described is not None:
                self._print([described])

    def _print(self, lines: list[Line]) -> None:
        for text, style in lines:
            self._console.print(Text(text, style=style))

    def _frame(self) -> RenderableType:
        """What the live region shows now (called by rich's refresh thread)."""
        with self._lock:
            running = [(r, list(r.tail)) for r in self._running.values()]
            waiting = list(self._waiting.values())
            done = self._done
        # Keep the region within the terminal: fewer log lines per step when crowded,
        # and the waiting steps in what room is left.
        height = self._console.size.height
        waiting_shown = waiting[: max(0, min(len(waiting), (height - 2 - len(running)) // 2))]
        room = height - 1 - len(running) - len(waiting_shown)
        shown = max(0, min(LOG_LINES, room // max(1, len(running))))
        now = time.monotonic()
        items: list[RenderableType] = []
        for step, tail in running:
            step.spinner.update(
                text=Text.assemble(
                    (step.label, "bold"),
                    f" [{step.executor}] ",
                    (f"{now - step.since:.1f}s", "dim"),
                    no_wrap=True,
                    overflow="ellipsis",
                )
            )
            items.append(step.spinner)
            for line in tail[len(tail) - shown :] if shown else []:
                items.append(
                    Text(f"  │ {plain_text(line)}", style="dim", no_wrap=True, overflow="ellipsis")
                )
        for label in waiting_shown:
            items.append(
                Text(f"○ {label}  waiting", style="dim", no_wrap=True, overflow="ellipsis")
            )
        if len(waiting) > len(waiting_shown):
            items.append(Text(f"  … and {len(waiting) - len(waiting_shown)} more", style="dim"))
        counts = [f"{len(running)} running", f"{done} done"]
        if self._total is not None:
            counts.append(f"{max(0, self._total - done - len(running))} waiting")
        items.append(Text(" · ".join(counts), style="dim"))
        return Group(*items)
