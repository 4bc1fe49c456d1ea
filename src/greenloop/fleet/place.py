"""Where a repository's ``greenloop serve`` listens, found without running git.

Every worktree of a repository shares one *common* git folder (the main
worktree's ``.git``); the socket and the lock are named after its real path,
so each worktree finds the same server. They live in a private folder of the
user's (``$GREENLOOP_SERVE_DIR``, else ``$TMPDIR/greenloop-serve-<uid>``), never
in the tree, and their names stay short: a Unix socket path is limited to
about 100 bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

SERVE_DIR_ENV = "GREENLOOP_SERVE_DIR"
"""Moves the folder holding every repository's serve socket and lock."""


def common_dir(worktree: Path) -> Path | None:
    """The common git folder of the worktree whose top folder is ``worktree``, or None.

    Read from ``.git`` itself (a folder in the main worktree, a ``gitdir:`` file in
    a linked one, whose ``commondir`` file points back): no git process per command.
    """
    dot_git = worktree / ".git"
    if dot_git.is_dir():
        return dot_git.resolve()
    try:
        text = dot_git.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("gitdir:"):
        return None
    git_dir = (worktree / text.removeprefix("gitdir:").strip()).resolve()
    try:
        common = (git_dir / "commondir").read_text(encoding="utf-8").strip()
    except OSError:
        return git_dir if git_dir.is_dir() else None
    return (git_dir / common).resolve()


@dataclass(frozen=True)
class ServePlace:
    """The socket and lock of the ``greenloop serve`` of one repository."""

    common: Path
    """The repository's common git folder."""
    socket: Path
    lock: Path

    @classmethod
    def of(cls, common: Path) -> ServePlace:
        """The place of the repository whose common git folder is ``common``."""
        real = common.resolve()
        # The repository's folder name (for people), then a hash of the real path.
        name = real.parent.name if real.name == ".git" else real.name
        name = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:24] or "repo"
        key = f"{name}-{hashlib.sha256(os.fsencode(real)).hexdigest()[:16]}"
        folder = serve_folder()
        return cls(real, folder / f"{key}.sock", folder / f"{key}.lock")


def serve_folder() -> Path:
    """The folder holding every repository's serve socket and lock (not created here)."""
    override = os.environ.get(SERVE_DIR_ENV)
    if override:
        return Path(override).expanduser().absolute()
    return Path(os.environ.get("TMPDIR") or "/tmp") / f"greenloop-serve-{os.getuid()}"
