"""The green/red model: the only thing that decides whether the tree is green.

Checkers report to it in :class:`Round` values; it answers with
:class:`~greenloop.protocol.StateEvent` values. ``FileVerdict`` events are
level-triggered (they describe the current state and may be resent, see
:meth:`Model.snapshot`); ``BecameGreen`` and ``BecameRed`` fire only on an edge.

The rules:

* Any error-severity diagnostic, from an authoritative or an advisory checker,
  makes the tree red -- also one a checker's report only counted
  (:class:`Omitted`): a file with such errors is red, listed or not.
* The tree turns green only after a *decisive* round: every authoritative
  checker configured reported (ran to the end) for one state of the tree whose
  build identity is known, and nobody reported an error. Advisory checkers can
  never make it green; a tree that has never had a decisive round is never green.
  A checker stopped at its timeout reports an error and is not complete, so it
  can never help a round be decisive.
* An advisory checker that finishes with errors while the authoritative ones
  still run may be folded in at once (:meth:`Model.early`): the tree turns red
  without waiting for the round, which then settles the verdict as usual.
* A change to the tree (:meth:`Model.invalidate`) takes green away until the next
  decisive round, so every green has its own ``BecameGreen`` and build identity.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from greenloop.devloop.config import Role
from greenloop.protocol import (
    BecameGreen,
    BecameRed,
    BuildIdentity,
    Diagnostic,
    FileState,
    FileVerdict,
    Severity,
    StateEvent,
    TreeState,
)
from greenloop.protocol.devloop import sorted_diagnostics


@dataclass(frozen=True)
class Omitted:
    """Diagnostics a report did not keep (past ``max_diagnostics``): counted per file and severity.

    ``counts`` holds ``(path, severity, how many)``, one item per pair.
    """

    counts: tuple[tuple[str, Severity, int], ...] = ()

    @classmethod
    def of(cls, counts: Mapping[tuple[str, Severity], int]) -> Omitted:
        """From a mapping of ``(path, severity)`` to a count, in a stable order."""
        return cls(tuple((p, s, n) for (p, s), n in sorted(counts.items()) if n > 0))

    def __bool__(self) -> bool:
        return bool(self.counts)

    def by_severity(self) -> dict[Severity, int]:
        """How many were left out, per severity."""
        totals: Counter[Severity] = Counter()
        for _, severity, n in self.counts:
            totals[severity] += n
        return dict(totals)

    def error_paths(self) -> set[str]:
        """The files with errors among those left out."""
        return {p for p, severity, _ in self.counts if severity is Severity.ERROR}


@dataclass(frozen=True)
class CheckerReport:
    """A checker that finished (or was stopped at its timeout), and everything it said.

    ``complete`` is False for a checker stopped before it ran to the end: its
    errors count, but it vouches for nothing, so its round is not decisive.
    ``crashed`` is True for one that died of a signal or hung past its timeout,
    so that running it again may well say something else. ``omitted`` counts
    what it said beyond the diagnostics kept.
    """

    checker: str
    role: Role
    diagnostics: tuple[Diagnostic, ...] = ()
    complete: bool = True
    crashed: bool = False
    omitted: Omitted = Omitted()

    @property
    def has_errors(self) -> bool:
        """True when any of its diagnostics, kept or omitted, is an error (the tree is red)."""
        return bool(self.omitted.error_paths()) or any(
            d.severity is Severity.ERROR for d in self.diagnostics
        )


@dataclass(frozen=True)
class Round:
    """What the checkers found about one state of the tree.

    ``authoritative`` names every authoritative checker configured: the round is
    decisive only when each of them has a complete report here. ``files`` lists the
    project's files (absolute) when the round covered the whole tree; None for a
    partial round that only updates what it mentions. ``identity`` is the build
    identity of the tree the checkers saw, None when it is not known (then the
    round can make the tree red, never green).
    """

    reports: tuple[CheckerReport, ...]
    authoritative: frozenset[str]
    files: tuple[str, ...] | None = None
    identity: BuildIdentity | None = None

    @property
    def decisive(self) -> bool:
        """True when this round may turn the tree green."""
        reported = {r.checker for r in self.reports if r.role is Role.AUTHORITATIVE and r.complete}
        return (
            bool(self.authoritative)
            and self.authoritative <= reported
            and self.identity is not None
        )


class Model:
    """Per-file and whole-tree verdicts, fed by rounds, emitting state events."""

    def __init__(self) -> None:
        self._tree = TreeState.UNKNOWN
        # Reports per checker, so a partial round replaces only what it re-checked.
        self._by_checker: dict[str, CheckerReport] = {}
        self._checked: set[str] = set()
        self._known: set[str] = set()
        self._sent: dict[str, FileVerdict] = {}
        self._identity: BuildIdentity | None = None

    @property
    def tree(self) -> TreeState:
        """The current aggregate verdict."""
        return self._tree

    @property
    def identity(self) -> BuildIdentity | None:
        """Build identity of the tree while it is green, else None."""
        return self._identity if self._tree is TreeState.GREEN else None

    @property
    def diagnostics(self) -> list[Diagnostic]:
        """Every current diagnostic kept, sorted by place, without duplicates."""
        return sorted_diagnostics(d for r in self._by_checker.values() for d in r.diagnostics)

    @property
    def omitted(self) -> dict[Severity, int]:
        """How many current diagnostics were left out, per severity (see :class:`Omitted`)."""
        totals: Counter[Severity] = Counter()
        for report in self._by_checker.values():
            totals.update(report.omitted.by_severity())
        return dict(totals)

    def invalidate(self) -> list[StateEvent]:
        """The tree changed: a green verdict no longer describes it.

        Green falls back to unknown (no event: the contract has no "became
        unknown"); red stays red until a round says otherwise.
        """
        if self._tree is TreeState.GREEN:
            self._tree = TreeState.UNKNOWN
            self._identity = None
        return []

    def apply(self, round_: Round) -> list[StateEvent]:
        """Fold one round in; returns the file verdicts that changed, then any edge."""
        if round_.files is not None:
            # A whole-tree round is the full truth: checkers no longer configured say nothing.
            self._by_checker = {}
        for report in round_.reports:
            self._by_checker[report.checker] = report
        decisive = round_.decisive
        if round_.files is not None:
            self._known = set(round_.files)
            self._checked = set(round_.files) if decisive else set()
        events: list[StateEvent] = list(self._file_events())
        errors = any(r.has_errors for r in self._by_checker.values())
        if errors:
            events.extend(self._enter_red())
        elif decisive:
            assert round_.identity is not None  # decisive implies a known identity
            events.extend(self._enter_green(round_.identity))
        elif self._tree is TreeState.GREEN:
            # Not decisive yet about a tree that changed: green cannot be vouched for.
            self._tree = TreeState.UNKNOWN
            self._identity = None
        return events

    def early(self, report: CheckerReport) -> list[StateEvent]:
        """Fold in an advisory checker that finished while its round still runs.

        Its errors turn the tree red now: the file verdicts of the files it
        flagged, then ``BecameRed`` if the tree was not red already. Returns the
        events. Clean and authoritative reports are ignored here: they wait for
        the whole round (:meth:`apply`), the only place green can be earned.
        """
        if report.role is not Role.ADVISORY or not report.has_errors:
            return []
        # A partial round without an identity: it may make the tree red, never green.
        return self.apply(Round(reports=(report,), authoritative=frozenset()))

    def snapshot(self) -> list[FileVerdict]:
        """The current verdict of every file (level-triggered: safe to resend any time)."""
        current = self._verdicts()
        return [current[path] for path in sorted(current)]

    def _enter_red(self) -> list[StateEvent]:
        was = self._tree
        self._tree, self._identity = TreeState.RED, None
        if was is TreeState.RED:
            return []
        return [BecameRed(diagnostics=self.diagnostics)]

    def _enter_green(self, identity: BuildIdentity) -> list[StateEvent]:
        was = self._tree
        self._tree, self._identity = TreeState.GREEN, identity
        if was is TreeState.GREEN:
            return []
        return [BecameGreen(identity=identity)]

    def _verdicts(self) -> dict[str, FileVerdict]:
        by_path: dict[str, list[Diagnostic]] = {}
        for d in self.diagnostics:
            by_path.setdefault(d.path, []).append(d)
        red = {p for r in self._by_checker.values() for p in r.omitted.error_paths()}
        return {
            path: self._verdict(path, by_path.get(path, []), path in red)
            for path in self._known | set(by_path) | red
        }

    def _verdict(
        self, path: str, diagnostics: list[Diagnostic], omitted_errors: bool
    ) -> FileVerdict:
        if omitted_errors or any(d.severity is Severity.ERROR for d in diagnostics):
            state = FileState.RED
        elif path in self._checked:
            state = FileState.GREEN
        else:
            state = FileState.UNCHECKED
        return FileVerdict(path=path, state=state, diagnostics=diagnostics)

    def _file_events(self) -> Iterable[FileVerdict]:
        current = self._verdicts()
        for path in sorted(current.keys() | self._sent.keys()):
            # A file gone from the project is told once as unchecked, then forgotten.
            verdict = current.get(path) or FileVerdict(path=path, state=FileState.UNCHECKED)
            if self._sent.get(path) != verdict:
                yield verdict
            if path in current:
                self._sent[path] = verdict
            else:
                self._sent.pop(path, None)
