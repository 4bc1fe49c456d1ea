"""``greenloop check``: one honest verdict on the tree as it is."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from greenloop.devloop.file_digests import DigestCache
from greenloop.devloop.model import Model
from greenloop.devloop.rounds import Setup, check_round
from greenloop.protocol import CheckResult

ATTEMPTS = 3
"""Rounds tried while the tree keeps changing under the checkers before giving up on green."""


class Interrupted(Exception):
    """The check was cancelled before it finished; there is no verdict."""


def check_once(root: Path, cancel: threading.Event | None = None) -> CheckResult:
    """Check the tree at ``root`` once and return the model's verdict and every diagnostic.

    Raises ``SetupError`` (bad settings, missing program) and :class:`Interrupted`.
    A tree that changed during every attempt is reported ``unknown``, never green.
    """
    cancel = cancel or threading.Event()
    started = time.monotonic()
    setup = Setup.load(root)
    digests = DigestCache()
    model = Model()
    for _ in range(ATTEMPTS):
        result = check_round(root, setup, cancel, digests)
        if result is None:
            raise Interrupted
        model.apply(result.round)
        if result.settled:
            break
    return CheckResult(
        state=model.tree,
        diagnostics=model.diagnostics,
        checkers=[c.name for c in setup.checkers],
        duration_ms=int((time.monotonic() - started) * 1000),
        omitted=model.omitted,
    )
