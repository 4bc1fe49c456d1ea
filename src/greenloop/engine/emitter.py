"""Where a run's events go: the formatter sees all, hooks the starts and ends of runs and steps."""

from __future__ import annotations

import threading
from collections.abc import Callable

from greenloop.plugins.spec import Hook
from greenloop.protocol import (
    BuildEvent,
    RunFinished,
    RunStarted,
    StepFinished,
    StepLog,
    StepStarted,
)

_HOOKED = (RunStarted, RunFinished, StepStarted, StepFinished)


class Emitter:
    """Delivers a run's events in order, one at a time, to its formatter and hooks."""

    def __init__(
        self,
        emit: Callable[[BuildEvent], None],
        hooks: list[Hook],
        warning: Callable[[str], StepLog],
    ) -> None:
        """``emit`` is the formatter; ``warning`` makes the line a failing hook is reported in."""
        self._emit = emit
        self._hooks = list(hooks)
        self._warning = warning
        self._lock = threading.Lock()

    def emit(self, event: BuildEvent) -> str | None:
        """Send ``event`` to the formatter and every hook; return a hook's veto of a run."""
        veto = None
        with self._lock:
            self._emit(event)
            # Hooks see the before/after events of runs and steps, not every log line.
            for hook in self._hooks if isinstance(event, _HOOKED) else ():
                try:
                    verdict = hook.handle(event)
                except Exception as e:  # a broken hook must not take the run down with it
                    self._emit(self._warning(f"hook {hook.name!r} failed: {e}"))
                    continue
                if verdict is not None and verdict.veto and isinstance(event, RunStarted):
                    veto = veto or f"vetoed by hook {hook.name!r}: {verdict.veto}"
        return veto
