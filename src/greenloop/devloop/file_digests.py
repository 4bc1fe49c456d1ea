"""Content digests of project files, re-hashed only when a file may have changed."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_RACY_NS = 2_000_000_000
"""A file modified this close to when it was hashed may change again within the same
timestamp tick without its stat changing (git's "racy" entries), so it is hashed again."""


@dataclass(frozen=True)
class _Entry:
    key: tuple[int, int, int, int, int]
    hashed_at_ns: int
    digest: str


class DigestCache:
    """SHA-256 of each file's content (a symlink's target for a symlink); None when absent.

    Entries are reused while the file's stat is unchanged and the file was already
    settled when it was hashed, so the answer is always the current content's digest.
    """

    def __init__(self) -> None:
        self._entries: dict[Path, _Entry] = {}
        self._lock = threading.Lock()

    def digest(self, path: Path) -> str | None:
        """The digest of ``path`` now, or None when it does not exist (or is not a file)."""
        try:
            st = path.lstat()
        except OSError:
            return None
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
        with self._lock:
            entry = self._entries.get(path)
        if entry is not None and entry.key == key and entry.hashed_at_ns - key[2] > _RACY_NS:
            return entry.digest
        hashed_at = time.time_ns()
        value = _hash(path, st)
        if value is None:
            return None
        with self._lock:
            self._entries[path] = _Entry(key, hashed_at, value)
        return value


def _hash(path: Path, st: os.stat_result) -> str | None:
    h = hashlib.sha256()
    try:
        if stat.S_ISLNK(st.st_mode):
            h.update(b"symlink\0" + os.fsencode(os.readlink(path)))
        else:
            h.update(b"file\0")
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()
