"""A consistent view of the dev server's state: what the state hands out and messages encode."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from greenloop.protocol.devloop import ArtifactMeta, BuildResult, Diagnostic, TreeState
from greenloop.server.app_status import AppStatus


@dataclass(frozen=True)
class Snapshot:
    """One consistent view of the state, taken under its lock."""

    directory: Path | None
    """The resolved artifact directory being served, or None before the first green."""
    artifact: ArtifactMeta | None
    """Metadata of the served artifact."""
    verdict: TreeState
    """The tree's current verdict."""
    diagnostics: tuple[Diagnostic, ...]
    """The diagnostics of the current verdict, sorted by path, line and column."""
    last_build: BuildResult | None
    """The most recent build result, servable or failed."""
    app: AppStatus | None = None
    """The app behind the proxy, when ``greenloop dev`` runs one."""

    @property
    def artifact_id(self) -> str:
        """The served artifact's tree hash; empty before the first green."""
        return self.artifact.tree if self.artifact is not None else ""
