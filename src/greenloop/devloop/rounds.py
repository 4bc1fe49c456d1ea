"""One round: identity before, checkers, identity after — a verdict only for a still tree.

If the tree changed while the checkers ran, what they said may describe a mix
of old and new files; such a round carries no identity, so it can make the
tree red but never green.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from greenloop.devloop.checkers import Checker, resolve_checkers
from greenloop.devloop.config import Config, Role, load_config
from greenloop.devloop.file_digests import DigestCache
from greenloop.devloop.identity import build_identity
from greenloop.devloop.ignores import Ignores
from greenloop.devloop.lsp import ServerPool
from greenloop.devloop.model import Round
from greenloop.devloop.runner import ReportFn, run_checkers
from greenloop.devloop.treestate import make_state_dir


@dataclass(frozen=True)
class Setup:
    """Settings and resolved checkers for one round (re-read every round while watching)."""

    config: Config
    checkers: list[Checker]

    @classmethod
    def load(cls, root: Path) -> Setup:
        """Read the settings and find every checker; raises ``SetupError`` when that fails.

        The tree's state folder (checker caches, the watcher's status) must be
        makeable too, so a bad ``GREENLOOP_STATE_DIR`` is a setup error, not a crash.
        """
        make_state_dir(root)
        config = load_config(root)
        return cls(config, resolve_checkers(root, config))


@dataclass(frozen=True)
class RoundResult:
    """A finished round and how long its checkers took."""

    round: Round
    setup: Setup
    duration_ms: int
    settled: bool


def check_round(
    root: Path,
    setup: Setup,
    cancel: threading.Event,
    digests: DigestCache,
    *,
    on_report: ReportFn | None = None,
    servers: ServerPool | None = None,
) -> RoundResult | None:
    """Run every checker once over the whole tree; None when cancelled.

    ``on_report`` hears of each checker's report as soon as that checker is
    done, before the round ends; ``servers`` keeps language-server checkers warm
    between rounds (see :func:`~greenloop.devloop.runner.run_checkers`).
    """
    started = time.monotonic()
    # One listing serves the identity before and the round's file list; the identity
    # after lists again, since a file created or deleted meanwhile must show.
    files = Ignores(root, setup.config.settings.ignore).files()
    before = build_identity(
        root, setup.config, checkers=setup.checkers, digests=digests, files=files
    )
    reports = run_checkers(root, setup.checkers, cancel, on_report, files=files, servers=servers)
    if reports is None:
        return None
    duration_ms = int((time.monotonic() - started) * 1000)
    after = build_identity(root, setup.config, checkers=setup.checkers, digests=digests)
    settled = before == after
    the_round = Round(
        reports=tuple(reports),
        authoritative=frozenset(c.name for c in setup.checkers if c.role is Role.AUTHORITATIVE),
        files=tuple(str(root / f) for f in files),
        identity=after if settled else None,
    )
    return RoundResult(the_round, setup, duration_ms, settled)
