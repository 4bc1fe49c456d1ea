"""Recreate a stored tree on disk without ever writing outside the destination, and keep
shared read-only checkouts of trees (the lower layers of overlay snapshots)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from greenloop.store.exceptions import StoreError
from greenloop.store.hashing import is_digest
from greenloop.store.layout import TEMP_PREFIX
from greenloop.store.trees import TreeEntry, check_relative_path

CHECKOUTS_DIR = "checkouts"
"""Subdirectory of the store holding one shared checkout per tree, named by its digest."""

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


@contextlib.contextmanager
def checked_out(folder: Path, tree: str, build: Callable[[Path], None]) -> Iterator[Path]:
    """The checkout of ``tree`` in ``folder``, built by ``build`` the first time, held
    (a shared lock, so gc leaves it alone) while the ``with`` block runs.

    A checkout is built in a temp folder and renamed into place, so nobody ever
    sees half of one; when two processes build the same tree at once, one rename
    wins and the other's copy is thrown away. Nobody may write into a checkout:
    it is the read-only lower layer every step built off that tree shares.
    """
    final = folder / tree
    while True:
        if not final.is_dir():
            _build_checkout(folder, final, build)
        fd = os.open(final, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            # gc renames a checkout away before deleting it: if ours went, build anew.
            now = _stat_or_none(final)
            if now is not None and os.path.samestat(os.fstat(fd), now):
                os.utime(fd)  # last used, for gc's age limit
                yield final
                return
        finally:
            os.close(fd)


def adopt_checkout(folder: Path, tree: str, prepared: Path) -> bool:
    """Make ``prepared`` the checkout of ``tree`` in ``folder`` unless there is one; True
    when it was adopted (moved, not copied).

    ``prepared`` must hold exactly what :func:`checked_out` would build for
    ``tree`` (normalised modes included) and be on the same filesystem.
    """
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(prepared, folder / tree)
    except OSError:  # there is one already (or another filesystem): keep it
        return False
    return True


def checkout_sizes(folder: Path) -> dict[str, int]:
    """The bytes each checkout in ``folder`` holds, by tree digest."""
    if not folder.is_dir():
        return {}
    sizes = {}
    for child in folder.iterdir():
        if is_digest(child.name):
            sizes[child.name] = sum(
                os.lstat(os.path.join(top, name)).st_size
                for top, _, names in os.walk(child)
                for name in names
            )
    return sizes


def sweep_checkouts(
    folder: Path,
    keep: Callable[[str], bool],
    *,
    unused_for: float | None,
    grace: float,
    max_bytes: int | None = None,
) -> int:
    """Delete the checkouts of trees ``keep`` rejects, those unused for ``unused_for``
    seconds, and temp folders older than ``grace`` seconds; then, while the rest hold
    more than ``max_bytes``, the least recently used. Return how many went.

    A checkout in use (see :func:`checked_out`) is skipped.
    """
    if not folder.is_dir():
        return 0
    now = time.time()
    removed = 0
    kept: list[tuple[float, Path]] = []
    for child in folder.iterdir():
        age = now - child.lstat().st_mtime
        if child.name.startswith(TEMP_PREFIX):
            if age > grace:
                _rmtree(child)
                removed += 1
            continue
        if not is_digest(child.name):
            continue
        if keep(child.name) and (unused_for is None or age <= unused_for):
            kept.append((age, child))
            continue
        removed += _remove_checkout(folder, child)
    if max_bytes is not None:
        sizes = checkout_sizes(folder)
        total = sum(sizes.values())
        for _, child in sorted(kept, key=lambda found: found[0], reverse=True):  # oldest first
            if total <= max_bytes:
                break
            if _remove_checkout(folder, child):
                removed += 1
                total -= sizes.get(child.name, 0)
    return removed


def _remove_checkout(folder: Path, child: Path) -> int:
    """Remove the checkout ``child`` unless a step is using it; 1 if it went, else 0."""
    try:
        fd = os.open(child, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        doomed = folder / f"{TEMP_PREFIX}gc-{secrets.token_hex(8)}"
        os.rename(child, doomed)
    finally:
        os.close(fd)
    _rmtree(doomed)
    return 1


def _build_checkout(folder: Path, final: Path, build: Callable[[Path], None]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=folder))
    try:
        os.chmod(tmp, 0o755)
        build(tmp)
        os.rename(tmp, final)
    except OSError:
        _rmtree(tmp)
        if not final.is_dir():  # not merely beaten to it by another process
            raise
    except BaseException:
        _rmtree(tmp)
        raise


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
