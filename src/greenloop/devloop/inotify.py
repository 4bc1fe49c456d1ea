"""A recursive Linux inotify watch that blocks until the kernel has news (no polling).

watchfiles hands changes over from a sleep-and-look loop (its ``step``), so
every change waited up to two steps before anyone saw it and the thread woke
dozens of times a second while nothing happened. Here the thread sleeps in
``poll()`` on the inotify descriptor and wakes only for an event (or to be
closed), so a change is seen within a millisecond and an idle watcher costs
nothing.

Only Linux has inotify; :func:`available` says whether this module can work,
and the watcher falls back to watchfiles elsewhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import select
import struct
import sys
import threading
from collections.abc import Callable
from pathlib import Path

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x0100_0000
IN_DONT_FOLLOW = 0x0200_0000
IN_ISDIR = 0x4000_0000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
)
"""Everything that can change a file's content, name or existence."""

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len
_READ_SIZE = 1 << 16

_libc: ctypes.CDLL | None = None


def available() -> bool:
    """True when this platform has inotify and libc exposes it."""
    return _load() is not None


def _load() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.inotify_init1.argtypes = [ctypes.c_int]
            libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):
            return None
        _libc = libc
    return _libc


class Inotify:
    """Recursive inotify on ``root``: :meth:`wait` returns the absolute paths that changed.

    ``skip_dir(rel)`` says which folders (root-relative posix paths) are not
    worth a watch (dependency trees, build output); it is asked again on
    :meth:`rescan`, so a folder the settings stop ignoring gets watched.
    A folder that appears is watched at once and reported whole, since files
    may land in it before its watch exists; a kernel queue overflow reports
    every top-level entry, so nothing is ever lost silently.
    """

    def __init__(self, root: Path, skip_dir: Callable[[str], bool]) -> None:
        libc = _load()
        if libc is None:
            raise OSError(errno.ENOSYS, "inotify is not available on this platform")
        self._libc = libc
        self.root = root
        self._skip_dir = skip_dir
        self._fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            raise _error("inotify_init1")
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        self._poll.register(self._wake_r, select.POLLIN)
        self._paths: dict[int, str] = {}  # watch descriptor -> absolute folder path
        self._wds: dict[str, int] = {}
        self.closed = False
        # interrupt() and close() come from different threads: a write after the close
        # could land in whatever file reused the descriptor number.
        self._lock = threading.Lock()
        try:
            self.rescan()
        except OSError:
            self.close()
            raise

    def rescan(self) -> list[str]:
        """Watch every folder under the root not skipped; the folders newly watched."""
        return self._add_tree(str(self.root))

    def wait(self, timeout_s: float | None) -> set[str]:
        """Block until something changed (or ``timeout_s``, or :meth:`interrupt`); the paths.

        An empty set means the wait ended without a change.
        """
        timeout_ms = None if timeout_s is None else max(int(timeout_s * 1000), 0)
        ready = dict(self._poll.poll(timeout_ms))
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 512):
                    pass
        return self._read() if self._fd in ready else set()

    def interrupt(self) -> None:
        """Make a blocked :meth:`wait` return now (from any thread)."""
        with self._lock:
            if self.closed:
                return
            # A full pipe wakes it all the same.
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\0")

    def close(self) -> None:
        """Release the descriptor and every watch."""
        with self._lock:
            if not self.closed:
                self.closed = True
                for fd in (self._fd, self._wake_r, self._wake_w):
                    os.close(fd)

    def _read(self) -> set[str]:
        changed: set[str] = set()
        while True:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                return changed
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                offset += _HEADER.size
                name = data[offset : offset + length].rstrip(b"\0")
                offset += length
                self._event(wd, mask, os.fsdecode(name), changed)

    def _event(self, wd: int, mask: int, name: str, changed: set[str]) -> None:
        if mask & IN_Q_OVERFLOW:
            # Events were dropped: watch whatever is new and call everything changed.
            self.rescan()
            changed.update(os.path.join(self.root, n) for n in _listdir(str(self.root)))
            return
        folder = self._paths.get(wd)
        if folder is None:
            return
        if mask & IN_IGNORED:
            self._forget(wd, folder)
            return
        if mask & IN_DELETE_SELF:
            changed.add(folder)
            return
        path = os.path.join(folder, name) if name else folder
        changed.add(path)
        if mask & IN_ISDIR:
            if mask & (IN_MOVED_FROM | IN_DELETE):
                self._unwatch_tree(path)
            if mask & (IN_CREATE | IN_MOVED_TO):
                # Files may have landed in it before its watch existed: the folder is
                # reported whole, and the change filter looks at every file under it.
                self._add_tree(path)

    def _add_tree(self, top: str) -> list[str]:
        added: list[str] = []
        stack = [top]
        while stack:
            folder = stack.pop()
            rel = os.path.relpath(folder, self.root)
            if rel != "." and self._skip_dir(Path(rel).as_posix()):
                continue
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(folder), _MASK)
            if wd < 0:
                err = ctypes.get_errno()
                if err in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                    continue  # gone already, or not ours to read: nothing to watch
                raise _error(f"inotify_add_watch {folder}", err)
            if self._wds.get(folder) != wd:
                added.append(folder)
            self._paths[wd] = folder
            self._wds[folder] = wd
            stack.extend(
                os.path.join(folder, entry.name)
                for entry in _scandir(folder)
                if entry.is_dir(follow_symlinks=False)
            )
        return added

    def _unwatch_tree(self, top: str) -> None:
        # A folder moved away keeps its watches, which would report under the old name.
        prefix = top + os.sep
        for folder in [f for f in self._wds if f == top or f.startswith(prefix)]:
            wd = self._wds.pop(folder)
            self._paths.pop(wd, None)
            self._libc.inotify_rm_watch(self._fd, wd)

    def _forget(self, wd: int, folder: str) -> None:
        self._paths.pop(wd, None)
        if self._wds.get(folder) == wd:  # not a newer watch of a folder made again
            del self._wds[folder]


def _scandir(folder: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError:
        return []


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _error(what: str, err: int | None = None) -> OSError:
    err = ctypes.get_errno() if err is None else err
    return OSError(err, f"{what}: {os.strerror(err)}")
