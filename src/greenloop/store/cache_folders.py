"""Cache folders steps keep across runs (``cache_dirs=``), owned by the store.

Each lives at ``cache-dirs/<name>/`` beside a lock file. A step holds the
lock while it uses the folder: shared for ``shared`` (any number at once),
exclusive for ``locked`` (one at a time); a ``private`` step takes the first
of ``<name>``, ``<name>~1``, ... that nobody holds. Removing a folder takes
the lock exclusively without waiting, so gc never pulls a cache from under a
running step. The folder's mtime is touched on use: the last time a step used it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from greenloop.protocol.ir import CacheSharing

CACHE_DIRS = "cache-dirs"
"""The store's folder of cache folders."""


@dataclass(frozen=True)
class CacheDirUsage:
    """One cache folder as ``cache stats`` shows it."""

    name: str
    size_bytes: int
    last_used: float


class CacheDirs:
    """The cache folders of the store at ``root``."""

    def __init__(self, root: Path) -> None:
        """Manage ``root/cache-dirs`` (made on first use)."""
        self.folder = root / CACHE_DIRS

    @contextmanager
    def use(self, name: str, sharing: CacheSharing) -> Iterator[Path]:
        """The folder for cache ``name``, held as ``sharing`` says until the block ends."""
        self.folder.mkdir(exist_ok=True)
        candidates = (
            [name] if sharing != "private" else [name, *(f"{name}~{n}" for n in range(1, 64))]
        )
        for i, which in enumerate(candidates):
            lock = os.open(self.folder / f"{which}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if sharing == "private" and i < len(candidates) - 1:
                    try:
                        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        os.close(lock)
                        continue
                else:
                    fcntl.flock(lock, fcntl.LOCK_SH if sharing == "shared" else fcntl.LOCK_EX)
                path = self.folder / which
                path.mkdir(exist_ok=True)
                os.utime(path)
                yield path
                return
            finally:
                os.close(lock)  # closing releases the lock

    def usage(self) -> list[CacheDirUsage]:
        """Every cache folder with its size, by name."""
        if not self.folder.is_dir():
            return []
        return [
            CacheDirUsage(path.name, _size(path), path.stat().st_mtime)
            for path in sorted(self.folder.iterdir())
            if path.is_dir()
        ]

    def remove(self, *, unused_for: float = 0.0, now: float) -> list[str]:
        """Remove the folders no step holds and none used for ``unused_for`` seconds;
        their names."""
        removed = []
        for usage in self.usage():
            if now - usage.last_used < unused_for:
                continue
            lock = os.open(self.folder / f"{usage.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock)
                continue  # a step is using it
            try:
                shutil.rmtree(self.folder / usage.name, ignore_errors=True)
                removed.append(usage.name)
            finally:
                os.close(lock)
        return removed


def _size(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
