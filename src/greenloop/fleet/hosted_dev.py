"""What the fleet needs of a ``greenloop dev`` session it hosts for a worktree.

The fleet sits below the dev stack (builds, publishing, the dev server), so it
never imports it: ``greenloop serve`` hands the endpoint a :data:`DevOpener`
that opens one (:func:`greenloop.dev.session.open_hosted`). The member then
feeds the session its loop's events, as ``dev``'s own loop would, and the
session tells what its builds and app come to through a :class:`DevReports`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from greenloop.devloop.loop import Listener
from greenloop.protocol import BuildResult


class DevReports(Protocol):
    """Where a hosted session says what happened (the member: status file and stream)."""

    def build(self, result: BuildResult, published: bool) -> None:
        """A build ended: its result, and whether it is now what is served."""

    def app(self, status: dict[str, Any], line: str) -> None:
        """The app changed (``status`` as ``/__greenloop/status`` has it; ``line`` for people)."""

    def log(self, line: str) -> None:
        """A line the app printed."""


class HostedDev(Protocol):
    """An open dev session: serving at :attr:`url`, building on :attr:`builds`' green edges."""

    @property
    def url(self) -> str:
        """Where its server listens."""

    @property
    def builds(self) -> Listener:
        """The listener to feed the worktree's loop events to."""

    def start(self) -> None:
        """Serve the last published build and start building."""

    def close(self) -> None:
        """Stop building, its app and its server."""


DevOpener = Callable[[Path, Mapping[str, Any], DevReports], HostedDev]
"""Opens a session for a worktree from a ``dev`` request's flags; raises ``SetupError``."""
