"""A bound on rounds checking at once, shared by several watch loops.

``greenloop serve`` runs one watch loop per worktree; without a bound, twenty
worktrees saved at once would start twenty rounds of checkers. A loop asks the
pool for a slot before its checkers start and gives it back when they end, so
at most ``size`` rounds (each with its own checkers) run at a time, whatever
the number of worktrees. A round cancelled while it waits gives up its place.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_POLL_S = 0.05
"""How often a waiting round looks at its cancel event (only while it waits)."""


class RoundPool:
    """At most ``size`` rounds hold a slot at once."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a round pool needs at least one slot, not {size}")
        self.size = size
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def slot(self, cancel: threading.Event) -> Iterator[bool]:
        """Wait for a slot; yield True holding it, or False when ``cancel`` was set first."""
        while not self._slots.acquire(timeout=_POLL_S):
            if cancel.is_set():
                yield False
                return
        try:
            yield True
        finally:
            self._slots.release()
