"""Small filesystem and process helpers every layer shares (imports nothing of greenloop)."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomically(
    path: Path, data: bytes, *, prefix: str | None = None, durable: bool = True
) -> None:
    """Replace ``path`` with ``data`` so readers see the old bytes or the new, never a mix.

    Temp file in the same directory, fsync, rename, then fsync the directory so
    the rename itself survives a crash. ``durable=False`` skips both fsyncs, for
    files whose loss in a power cut does not matter (readers still never see a mix).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make renames and new names in ``directory`` durable (a no-op off POSIX)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: Path) -> None:
    """Make everything written to ``path``'s filesystem durable: ``syncfs(2)`` where
    the C library has it, else a sync of every filesystem."""
    syncfs = _syncfs()
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    try:
        import ctypes  # only where a store is made durable: not on a cached run (~2 ms)

        libc = ctypes.CDLL(None, use_errno=True)
        found: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return found


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, as an opaque token (None if it is gone or unknowable).

    A pid alone is reused once its process exits; the pid with this token names one
    process for good. Linux only: the boot id and the start time in clock ticks.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[-1].split()
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
    except OSError:
        return None
    # Field 22 of stat, counted after the parenthesised command name (fields 1 and 2).
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None


def process_alive(pid: int, start: str | None) -> bool:
    """Whether the process ``pid`` that started at ``start`` (:func:`process_start`) runs.

    With ``start`` None (not recorded, or not Linux) only the pid is checked.
    """
    if not pid_alive(pid):
        return False
    return start is None or process_start(pid) in (start, None)


def pid_alive(pid: int | str) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie or malformed pid does not)."""
    if isinstance(pid, str):
        if not pid.isdigit():
            return False
        pid = int(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def remove_orphans(folder: Path) -> None:
    """Remove the folders in ``folder`` whose owner died: each is named ``<pid>-<anything>``.

    A greenloop process killed outright cannot clean up its scratch folders
    (a step's sandbox, a plugin's half-sent uploads); the next one does.
    """
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if not pid_alive(entry.name.split("-", 1)[0]):
            shutil.rmtree(entry, ignore_errors=True)


def private_folder(folder: Path, env: str, *, hint_on_create: bool = False) -> str | None:
    """Create ``folder`` (mode 700) if need be; why it cannot be used, or None.

    Only its owner may use it: a socket in it answers for the user's trees.
    ``env`` names the variable that moves the folder, for the message;
    ``hint_on_create`` also names it when the folder cannot be created.
    """
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.stat()
    except OSError as e:
        hint = f"; set {env} to a writable folder" if hint_on_create else ""
        return f"cannot create {folder}: {e.strerror}{hint}"
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        return f"{folder} must be a folder only you can use (mode 700); fix it or set {env}"
    return None
