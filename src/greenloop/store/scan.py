"""Turn a directory on disk into tree entries, storing file contents on the way."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from greenloop.store.exceptions import StoreError
from greenloop.store.trees import TreeEntry, normalize_mode

PutFile = Callable[[Path], str]
"""Stores one file and returns its digest."""

Exclude = Callable[[str], bool]
"""Given a POSIX relative path, True to leave it (and, for a directory, its contents) out."""


def scan_directory(
    directory: Path, put_file: PutFile, exclude: Exclude | None = None
) -> list[TreeEntry]:
    """Entries for everything below ``directory``; file contents go through ``put_file``.

    Symlinks are recorded with their target and never followed. Sockets, FIFOs
    and device files have no stored form, so they raise :class:`StoreError`
    unless ``exclude`` leaves them out.
    """
    if not directory.is_dir():
        raise StoreError(f"cannot store {directory} as a tree: it is not a directory")
    entries: list[TreeEntry] = []
    # An explicit stack instead of recursion: deep trees cannot hit the
    # interpreter's recursion limit.
    pending: list[tuple[str, str]] = [(os.fspath(directory), "")]
    while pending:
        dir_path, prefix = pending.pop()
        try:
            with os.scandir(dir_path) as it:
                children = list(it)
        except OSError as exc:
            raise StoreError(f"cannot read directory {dir_path}: {exc}") from exc
        for child in children:
            rel = prefix + child.name
            if exclude is not None and exclude(rel):
                continue
            entry = _entry_for(child, rel, put_file)
            entries.append(entry)
            if entry.kind == "dir":
                pending.append((child.path, rel + "/"))
    return entries


def _entry_for(child: os.DirEntry[str], rel: str, put_file: PutFile) -> TreeEntry:
    try:
        st = child.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            return TreeEntry(
                rel, "symlink", normalize_mode("symlink", 0), target=os.readlink(child)
            )
    except OSError as exc:
        raise StoreError(f"cannot read {child.path}: {exc}") from exc
    if stat.S_ISDIR(st.st_mode):
        return TreeEntry(rel, "dir", normalize_mode("dir", 0))
    if stat.S_ISREG(st.st_mode):
        blob = put_file(Path(child.path))
        return TreeEntry(rel, "file", normalize_mode("file", st.st_mode), blob=blob)
    raise StoreError(
        f"cannot store {child.path}: it is neither a file, a directory nor a symlink "
        "(exclude it to store the rest of the tree)"
    )
