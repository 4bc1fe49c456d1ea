"""Storing a step's declared artifact, the same way for every executor."""

from __future__ import annotations

import mimetypes
import stat
from pathlib import Path

from greenloop.protocol.executor import ArtifactRef
from greenloop.store.store import Store

DIRECTORY_MIME = "inode/directory"


def store_artifact(store: Store, path: Path, *, mime: str | None = None) -> ArtifactRef:
    """Store the file or directory at ``path``; its ref names the blob or tree.

    A directory's size counts its regular files only, never what a symlink points
    at, so every executor reports the same size for the same tree.
    """
    if path.is_dir() and not path.is_symlink():
        size = sum(f.lstat().st_size for f in path.rglob("*") if stat.S_ISREG(f.lstat().st_mode))
        return ArtifactRef(key=store.put_tree(path), mime=DIRECTORY_MIME, size_bytes=size)
    guessed = mimetypes.guess_type(path.name)[0]
    return ArtifactRef(
        key=store.put_file(path),
        mime=mime or guessed or "application/octet-stream",
        size_bytes=path.stat().st_size,
    )
