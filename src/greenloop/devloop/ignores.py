"""Which paths the dev loop never looks at, on top of the project's ``.gitignore`` files.

Build outputs, dependency folders, tool caches, editor scratch files and
greenloop's own state would otherwise make every check trigger another one
(``cargo check`` writes ``target/``) or make the build identity drift.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pathspec

from greenloop.devloop.treestate import state_root
from greenloop.engine.project_files import WORKSPACE_IGNORES, project_files
from greenloop.store import default_root

FIXED_IGNORES: tuple[str, ...] = (
    *WORKSPACE_IGNORES,
    ".hg/",
    ".svn/",
    ".jj/",
    "target/",
    "node_modules/",
    "dist/",
    "*.py[cod]",
    ".venv/",
    ".tox/",
    ".nox/",
    ".hypothesis/",
    "*.egg-info/",
    "*.tsbuildinfo",
    ".next/",
    ".turbo/",
    ".parcel-cache/",
    "*.swp",
    "*.swx",
    "*~",
    ".#*",
    "#*#",
    "4913",
)
"""Gitignore-style patterns the dev loop skips in every project: what is never part of a
workspace, and the build outputs, dependency folders and editor files a check must not see."""


class Ignores:
    """The fixed patterns, the settings' ``ignore`` list, and greenloop's folders inside the tree.

    Those are the store and the trees' state folder, when either lies inside.
    """

    def __init__(self, root: Path, extra: Iterable[str] = ()) -> None:
        self.root = root
        lines = [*FIXED_IGNORES, *extra]
        for own in (default_root(), state_root()):  # greenloop's store and the trees' state
            inside = _inside(own, root)
            if inside is not None:
                lines.append(f"/{inside}/")
        self._spec = pathspec.GitIgnoreSpec.from_lines(lines)

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        """True when the posix path ``rel`` (relative to the root) is never looked at."""
        if rel in ("", "."):
            return False
        return bool(self._spec.match_file(rel + "/" if is_dir else rel))

    def files(self) -> list[str]:
        """The project's files (git-aware, ``.gitignore``-aware) minus everything ignored here."""
        return [p for p in project_files(self.root) if not self.ignored(p)]


def _inside(path: Path, root: Path) -> str | None:
    try:
        rel = Path(os.path.abspath(path)).relative_to(root)
    except ValueError:
        return None
    return None if rel == Path(".") else rel.as_posix()
