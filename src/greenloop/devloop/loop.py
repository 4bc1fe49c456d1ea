"""``greenloop watch``: keep the verdict current as files change.

The loop checks the whole tree once, then waits for batches of real content
changes. A batch that arrives while a round is running cancels that round
(its checkers' process groups are killed) and starts a new one, so a verdict
always describes the latest tree. Settings are re-read every round; a broken
setting or a vanished program turns the tree red with a ``greenloop``
diagnostic instead of stopping the loop. A round in which a checker crashed
(died of a signal) or hung (hit its timeout) is red, and the tree is checked
again after a delay that doubles while that keeps happening (``CRASH_RETRY_S``).

A round starts as soon as the watcher hands a batch over, which is before the
debounce window has closed (see :mod:`greenloop.devloop.watcher`). Whatever it
says is held until the window closes, so a checker's time hides inside the
window, and a change before then supersedes the round like any other.

An advisory checker that finishes with errors while the authoritative ones
still run turns the tree red as soon as the window has closed (:meth:`Model.early
<greenloop.devloop.model.Model.early>`), so a fast linter's verdict is not held
back by a slow type checker; the round's final verdict follows when it ends.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from greenloop.devloop.config import Role
from greenloop.devloop.file_digests import DigestCache
from greenloop.devloop.ignores import Ignores
from greenloop.devloop.inotify_source import STOP_CHECK_MS
from greenloop.devloop.lsp import LanguageServers, ServerPool
from greenloop.devloop.model import CheckerReport, Model, Round
from greenloop.devloop.rounds import RoundResult, Setup, check_round
from greenloop.devloop.runner import tree_error
from greenloop.devloop.watcher import ChangeFilter, Watcher
from greenloop.protocol import (
    BuildIdentity,
    Diagnostic,
    SetupError,
    Severity,
    StateEvent,
    TreeState,
)

UNSETTLED_RETRIES = 3
"""Rounds re-run at once while the tree changes under the checkers without a file event."""

CRASH_RETRY_S = (1.0, 60.0)
"""After a round in which a checker crashed or hung, the tree is checked again after
the first delay, doubling after each such round in a row up to the second."""

_POLL_S = 0.05

_IDLE_S = 1.0
"""Longest idle wait for a batch: the watcher wakes the loop itself when it stops."""

RoundSlot = Callable[[threading.Event], AbstractContextManager[bool]]
"""Grants a round leave to run its checkers: yields True once it may, False when the
round was cancelled while it waited (see :class:`~greenloop.devloop.pool.RoundPool`)."""


def _any_time(cancel: threading.Event) -> AbstractContextManager[bool]:
    return contextlib.nullcontext(True)


@dataclass(frozen=True)
class Verdict:
    """What the loop knows after a finished round."""

    tree: TreeState
    diagnostics: list[Diagnostic]
    checkers: list[str]
    duration_ms: int
    changed: frozenset[str]
    omitted: Mapping[Severity, int] = field(default_factory=dict)
    """Diagnostics the reports only counted (past ``max_diagnostics``), per severity."""
    identity: BuildIdentity | None = None
    """The build identity of the tree the round saw, when it stood still (red or green)."""

    def counts(self) -> Counter[Severity]:
        """Diagnostics per severity, listed or omitted."""
        counts = Counter(d.severity for d in self.diagnostics)
        counts.update(self.omitted)
        return counts


class Listener:
    """Receives what the loop does; every method is a no-op unless overridden."""

    def checking(self, changed: frozenset[str]) -> None:
        """A round starts because of ``changed`` (empty for the first round and for re-checks)."""

    def events(self, events: list[StateEvent]) -> None:
        """The model emitted ``events`` (file verdicts that changed, then any edge).

        Mostly when a round finishes, just before :meth:`verdict`; also mid-round
        when an advisory checker's errors turn the tree red before the rest is done.
        """

    def early(self, events: list[StateEvent]) -> None:
        """``events`` arrived mid-round from an advisory checker; by default like any others."""
        self.events(events)

    def verdict(self, verdict: Verdict) -> None:
        """A round finished with ``verdict``."""


class WatchLoop:
    """Watcher → checkers → model, until ``stop`` is set."""

    def __init__(
        self,
        root: Path,
        setup: Setup,
        listener: Listener,
        stop: threading.Event,
        *,
        debounce_ms: int | None = None,
        servers: ServerPool | None = None,
        slot: RoundSlot = _any_time,
        idle_s: float | None = _IDLE_S,
    ) -> None:
        """Watch ``root``; ``servers`` (shared, owned by the caller) and ``slot`` let several
        loops share warm language servers and a bound on rounds checking at once.

        ``idle_s`` is how often a quiet loop (and its watcher) wakes to look at ``stop``;
        None: never by itself, only on :meth:`wake` (many idle loops in one process
        cost nothing while quiet; whoever sets ``stop`` calls :meth:`wake`).
        """
        self._idle_s = idle_s
        self.root = root
        self.model = Model()
        self._setup = setup
        self._listener = listener
        self._stop = stop
        self._debounce_ms = (
            debounce_ms if debounce_ms is not None else setup.config.settings.debounce_ms
        )
        self._digests = DigestCache()
        self._changes = ChangeFilter(Ignores(root, setup.config.settings.ignore), self._digests)
        self._own_servers: LanguageServers | None = None  # shut down when the loop ends
        if servers is None:
            servers = self._own_servers = LanguageServers()
        self._servers: ServerPool = servers
        self._slot = slot
        self._recheck = threading.Event()
        self._watcher: Watcher | None = None

    def run(self) -> None:
        """Watch and check until stopped; raises ``OSError`` if watching itself fails."""
        if self._own_servers is None:
            self._run()
            return
        with self._own_servers:
            self._run()

    def wake(self) -> None:
        """Make an idle loop look at its stop event now."""
        if self._watcher is not None:
            self._watcher.wake()

    def recheck(self) -> None:
        """Check the tree again as soon as the loop is idle, changed or not."""
        self._recheck.set()
        if self._watcher is not None:
            self._watcher.wake()

    def _run(self) -> None:
        changes = self._changes
        watcher = self._watcher = Watcher(
            changes,
            self._debounce_ms,
            self._stop,
            # A loop told to idle longer tells its watcher so too; by default both keep theirs.
            stop_check_ms=(
                STOP_CHECK_MS
                if self._idle_s == _IDLE_S
                else None
                if self._idle_s is None
                else int(self._idle_s * 1000)
            ),
        )
        # Watch first, then record the tree: an edit in between is seen, never lost.
        watcher.start()
        changes.prime()
        pending: frozenset[str] | None = frozenset()
        unsettled = 0
        crashes = 0  # rounds in a row in which a checker crashed
        retry_at: float | None = None
        while not self._stop.is_set():
            if pending is None and self._recheck.is_set():
                self._recheck.clear()
                pending = frozenset()
            if pending is None:
                wait = self._idle_s
                if retry_at is not None:
                    left = max(retry_at - time.monotonic(), 0)
                    wait = left if wait is None else min(wait, left)
                batch = watcher.next_batch(wait)
                if batch:
                    self.model.invalidate()
                    pending, unsettled, retry_at = batch, 0, None
                elif retry_at is not None and time.monotonic() >= retry_at:
                    pending, retry_at = frozenset(), None
                continue
            outcome = self._round(pending, watcher)
            if isinstance(outcome, frozenset):
                pending, unsettled = outcome, 0  # superseded by newer changes
                continue
            pending = None
            if outcome == "crashed":
                first, most = CRASH_RETRY_S
                retry_at = time.monotonic() + min(first * 2**crashes, most)
                crashes += 1
                continue
            crashes = 0
            if outcome == "unsettled" and unsettled < UNSETTLED_RETRIES:
                pending, unsettled = frozenset(), unsettled + 1

    def _round(self, changed: frozenset[str], watcher: Watcher) -> frozenset[str] | str:
        try:
            setup = Setup.load(self.root)
        except SetupError as e:
            self._finish(_setup_failure(self.root, e), changed, 0)
            return "done"
        if setup.config.settings.ignore != self._setup.config.settings.ignore:
            self._changes.ignores = Ignores(self.root, setup.config.settings.ignore)
        self._setup = setup
        cancel = threading.Event()
        box: list[RoundResult | Exception | None] = []
        # Reports of checkers already done, handed to this thread: only it touches the model.
        finished: queue.SimpleQueue[CheckerReport] = queue.SimpleQueue()

        done = threading.Event()

        def work() -> None:
            try:
                with self._slot(cancel) as granted:
                    # Not granted: cancelled while waiting, so there is nothing to say.
                    if granted:
                        box.append(
                            check_round(
                                self.root,
                                setup,
                                cancel,
                                self._digests,
                                on_report=finished.put,
                                servers=self._servers,
                            )
                        )
            except Exception as e:  # handed back to the loop's thread
                box.append(e)
            finally:
                done.set()
                watcher.wake()  # the verdict should not wait for the next poll

        worker = threading.Thread(target=work, name="greenloop-check", daemon=True)
        worker.start()
        # Told once the checkers are on their way: a listener's own work (the status
        # file) then overlaps the round instead of delaying it. Every event of this
        # round still comes after, from this thread.
        self._listener.checking(changed)
        newer: set[str] = set()
        # The round may have started before the debounce window closed: what it
        # says is held until then, and a change before then supersedes it.
        while not (done.is_set() and (cancel.is_set() or self._quiet(watcher))):
            if self._stop.is_set():
                cancel.set()
            wait = _POLL_S
            if done.is_set():
                wait = min(wait, watcher.quiet_at - time.monotonic())
            batch = watcher.next_batch(max(wait, 0))
            if batch:
                newer |= batch
                cancel.set()
                self.model.invalidate()
            elif not cancel.is_set() and self._quiet(watcher):
                self._early(finished)
        worker.join()
        # Reports still queued are part of the round's result, which is applied whole below.
        if newer:
            return frozenset(newer)
        result = box[0] if box else None
        if isinstance(result, SetupError):
            self._finish(_setup_failure(self.root, result), changed, 0)
            return "done"
        if isinstance(result, Exception):
            raise result
        if result is None or self._stop.is_set():
            return "done"
        self._finish(result.round, changed, result.duration_ms)
        if any(report.crashed for report in result.round.reports):
            return "crashed"
        return "done" if result.settled else "unsettled"

    @staticmethod
    def _quiet(watcher: Watcher) -> bool:
        return time.monotonic() >= watcher.quiet_at

    def _early(self, finished: queue.SimpleQueue[CheckerReport]) -> None:
        while True:
            try:
                report = finished.get_nowait()
            except queue.Empty:
                return
            # The model decides what an unfinished round may say (advisory errors only).
            events = self.model.early(report)
            if events:
                self._listener.early(events)

    def _finish(self, the_round: Round, changed: frozenset[str], duration_ms: int) -> None:
        events = self.model.apply(the_round)
        if events:
            self._listener.events(events)
        names = [c.name for c in self._setup.checkers]
        self._listener.verdict(
            Verdict(
                self.model.tree,
                self.model.diagnostics,
                names,
                duration_ms,
                changed,
                self.model.omitted,
                the_round.identity,
            )
        )


def _setup_failure(root: Path, error: SetupError) -> Round:
    diagnostic = tree_error(root, "setup", str(error))
    report = CheckerReport("greenloop", Role.ADVISORY, (diagnostic,))
    return Round(reports=(report,), authoritative=frozenset())


class FanOut(Listener):
    """Passes everything on to several listeners, in order."""

    def __init__(self, *listeners: Listener) -> None:
        self._listeners = listeners

    def checking(self, changed: frozenset[str]) -> None:
        """Tell every listener a round started."""
        for listener in self._listeners:
            listener.checking(changed)

    def events(self, events: list[StateEvent]) -> None:
        """Tell every listener about ``events``."""
        for listener in self._listeners:
            listener.events(events)

    def early(self, events: list[StateEvent]) -> None:
        """Tell every listener about mid-round ``events``."""
        for listener in self._listeners:
            listener.early(events)

    def verdict(self, verdict: Verdict) -> None:
        """Tell every listener a round finished."""
        for listener in self._listeners:
            listener.verdict(verdict)
