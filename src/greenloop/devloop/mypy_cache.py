"""Keeping mypy's incremental cache honest.

mypy trusts a cached module while the source file's size and whole-second
mtime are unchanged, so an edit that keeps the size within the same second
(a quick fix-and-revert, an agent rewriting a line) is checked against the old
content. greenloop gives mypy a private cache and remembers each file's
(second, size, digest) from the previous run; when a file's content changed
but its (second, size) did not, the cache is wiped before mypy runs.

A new tree's cache may start as a copy of a sibling's (:func:`seed`, which
``greenloop serve`` does for a new worktree): mypy's cache names sources by
relative path and checks each against its content, so the copy answers for
every module the two trees share (the standard library's and the installed
packages' above all), and the copied stamps let the guard above wipe it where
the new tree's files could fool mypy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from greenloop.devloop.file_digests import DigestCache
from greenloop.devloop.treestate import state_dir


def cache_dir(root: Path) -> Path:
    """The private mypy cache of the tree at ``root``, in its state folder (never in the tree)."""
    return state_dir(root) / "mypy"


_STAMPS = "greenloop-stamps.json"
_digests = DigestCache()


@dataclass(frozen=True)
class CacheGuard:
    """A private mypy cache and the project files (relative) whose edits it must not hide."""

    cache_dir: Path
    files: tuple[str, ...]

    def prepare(self, root: Path) -> None:
        """Wipe the cache if it could hide an edit; record the files as mypy will see them."""
        current = _stamps(root, self.files)
        stamps_path = self.cache_dir / _STAMPS
        try:
            previous = json.loads(stamps_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = {}
        if not isinstance(previous, dict) or _fooled(previous, current):
            shutil.rmtree(self.cache_dir, ignore_errors=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        temp = stamps_path.with_suffix(".tmp")
        temp.write_text(json.dumps(current), encoding="utf-8")
        os.replace(temp, stamps_path)


def _stamps(root: Path, files: Iterable[str]) -> dict[str, list[object]]:
    stamps: dict[str, list[object]] = {}
    for rel in files:
        path = root / rel
        try:
            st = path.stat()
        except OSError:
            continue
        stamps[rel] = [int(st.st_mtime), st.st_size, _digests.digest(path)]
    return stamps


def _fooled(previous: dict[str, object], current: dict[str, list[object]]) -> bool:
    for rel, (second, size, digest) in current.items():
        before = previous.get(rel)
        if isinstance(before, list) and before[:2] == [second, size] and before[2:] != [digest]:
            return True
    return False


def seed(root: Path, source: Path, unchanged: Callable[[], bool]) -> bool:
    """Give the tree at ``root``, which has no mypy cache yet, a copy of ``source``'s.

    ``unchanged`` says whether ``source``'s cache was left alone while it was
    copied (its tree ran no round); the copy is dropped when it was not. The
    source's cache is only read: SQLite shards through SQLite's backup, so each
    is a consistent snapshot. Whether a copy is now in place.
    """
    target, origin = cache_dir(root), cache_dir(source)
    if target.exists() or not (origin / _STAMPS).is_file():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix="mypy-seed-", dir=target.parent))
    try:
        shutil.copytree(origin, temp, dirs_exist_ok=True, copy_function=_copy)
        if not unchanged():
            return False
        temp.rename(target)  # fails if a cache appeared meanwhile: that one is kept
    except (OSError, sqlite3.Error):
        return False
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return True


def _copy(src: str, dst: str) -> None:
    if not src.endswith(".db"):
        shutil.copy2(src, dst)
        return
    read_only = f"{Path(src).as_uri()}?mode=ro"
    with (
        contextlib.closing(sqlite3.connect(read_only, uri=True)) as db,
        contextlib.closing(sqlite3.connect(dst)) as copy,
    ):
        db.backup(copy)
