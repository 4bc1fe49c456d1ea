"""Small filesystem and process helpers every layer shares (imports nothing of greenloop)."""

from __future__ import annotations

import os
import tempfile
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
