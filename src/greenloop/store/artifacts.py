"""Storing a step's declared artifact the same way for every executor, and getting it out."""

from __future__ import annotations

import mimetypes
import os
import shutil
import stat
import tempfile
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


def export_artifact(store: Store, ref: ArtifactRef, dest: Path) -> None:
    """Write artifact ``ref`` at ``dest``, byte for byte, replacing whatever is there.

    A directory artifact becomes a folder (its symlinks stay symlinks, and no write
    ever goes through one), any other a file written atomically.
    """
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.is_dir():
        shutil.rmtree(dest)
    if ref.mime == DIRECTORY_MIME:
        store.materialize(ref.key, dest)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-artifact-")
    try:
        with os.fdopen(fd, "wb") as out, store.open_blob(ref.key) as blob:
            shutil.copyfileobj(blob, out)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 is for its secrecy, not the artifact's
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
