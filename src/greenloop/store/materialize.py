"""Recreate a stored tree on disk without ever writing outside the destination."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from greenloop.store.errors import StoreError
from greenloop.store.layout import TEMP_PREFIX
from greenloop.store.trees import TreeEntry, check_relative_path

OpenBlob = Callable[[str], BinaryIO]
"""Opens a stored blob for reading."""


def materialize_entries(entries: Iterable[TreeEntry], dest: Path, open_blob: OpenBlob) -> None:
    """Write ``entries`` under ``dest``, creating it if needed.

    Files are copied (never hardlinked) so nothing done to the result can
    change the store. Existing files and symlinks at an entry's path are
    replaced; an existing directory in the way of a file or symlink raises
    :class:`StoreError` rather than being deleted. Anything else already in
    ``dest`` is left alone.

    Entry paths are re-checked here, and every parent directory must be a real
    directory inside ``dest`` -- never a symlink -- so a tree (or a stale
    symlink already in ``dest``) cannot redirect a write outside it.
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    safe_dirs: set[Path] = {root}
    # Parents sort before their children, so directories exist before their contents.
    for entry in sorted(entries, key=lambda e: e.path):
        parts = _safe_parts(entry.path)
        parent = _checked_parent(root, parts[:-1], safe_dirs)
        target = parent / parts[-1]
        if entry.kind == "dir":
            _make_dir(target)
            safe_dirs.add(target)
        elif entry.kind == "symlink":
            assert entry.target is not None  # guaranteed by TreeEntry
            _place_symlink(target, entry.target)
        else:
            assert entry.blob is not None  # guaranteed by TreeEntry
            _place_file(target, entry.blob, entry.mode, open_blob)


def _safe_parts(path: str) -> list[str]:
    check_relative_path(path)
    parts = path.split("/")
    for part in parts:
        # On Windows a backslash or drive colon inside one POSIX component
        # would still act as a separator and could climb out of dest.
        if (os.altsep and os.altsep in part) or (os.sep != "/" and os.sep in part):
            raise StoreError(f"tree path {path!r} cannot be written safely on this system")
    return parts


def _checked_parent(root: Path, parts: list[str], safe_dirs: set[Path]) -> Path:
    current = root
    for part in parts:
        current = current / part
        if current in safe_dirs:
            continue
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            raise StoreError(
                f"cannot materialize below {current}: the tree does not list that directory"
            ) from None
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(
                f"refusing to write below {current}: it is not a real directory "
                "(a symlink there could redirect the write outside the destination)"
            )
        safe_dirs.add(current)
    return current


def _existing_mode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return None


def _make_dir(target: Path) -> None:
    mode = _existing_mode(target)
    if mode is not None and stat.S_ISDIR(mode):
        return
    if mode is not None:
        # A file or symlink where the tree wants a directory: unlink it (never
        # follow it) and make the directory.
        target.unlink()
    target.mkdir()
    os.chmod(target, 0o755)


def _refuse_dir_in_the_way(target: Path) -> None:
    mode = _existing_mode(target)
    if mode is not None and stat.S_ISDIR(mode):
        raise StoreError(f"cannot materialize {target}: a directory is in the way")


def _place_symlink(target: Path, link_target: str) -> None:
    _refuse_dir_in_the_way(target)
    tmp = _new_symlink(target.parent, link_target)
    # rename replaces an existing symlink itself, not whatever it points to.
    _replace(tmp, target)


def _place_file(target: Path, blob: str, mode: int, open_blob: OpenBlob) -> None:
    _refuse_dir_in_the_way(target)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, open_blob(blob) as src:
            shutil.copyfileobj(src, out)
            os.fchmod(out.fileno(), mode)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _replace(tmp, target)


def _new_symlink(directory: Path, link_target: str) -> str:
    # There is no mkstemp for symlinks: pick random names until one is free.
    while True:
        tmp = os.path.join(directory, TEMP_PREFIX + secrets.token_hex(8))
        try:
            os.symlink(link_target, tmp)
        except FileExistsError:
            continue
        return tmp


def _replace(tmp: str, target: Path) -> None:
    try:
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
