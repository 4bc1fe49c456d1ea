"""File events from Linux inotify, read by a thread that sleeps until there is one.

watchfiles wakes every step (10 ms) to look for events: about 0.6 % of a core
for an idle ``watch``, which adds up over many worktrees. Here the thread
blocks in ``poll(2)`` on the inotify descriptor and costs nothing while the
tree is quiet; an event is handed over the moment it is read.

Every folder the watch filter accepts is watched (ignored ones, such as
``.git`` or ``node_modules``, never are). A folder that appears gets a watch
and is scanned, since files may land in it before the watch does. A lost
queue (``IN_Q_OVERFLOW``) reports every top-level entry, so the change filter
re-reads the whole tree: an event may be late, never lost.

A source looks at its stop event a few times a second, or (``stop_check_ms=None``)
only when :meth:`InotifySource.interrupt` writes to its wake pipe: twenty idle
sources in one ``serve`` then never wake at all.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable
from pathlib import Path

try:
    from inotify_simple import INotify
    from inotify_simple import flags as f
except ImportError:  # not Linux: watchfiles it is
    INotify = None

_MASK = (
    0
    if INotify is None
    else (
        f.CREATE
        | f.MODIFY
        | f.CLOSE_WRITE
        | f.DELETE
        | f.MOVED_FROM
        | f.MOVED_TO
        | f.ATTRIB
        | f.DELETE_SELF
        | f.MOVE_SELF
        | f.ONLYDIR
        | f.EXCL_UNLINK
    )
)
STOP_CHECK_MS = 250
"""How often a quiet watcher looks at its stop event: a few wakeups a second."""


def available() -> bool:
    """Whether inotify works here (Linux, and the library loads)."""
    if INotify is None:
        return False
    try:
        INotify().close()
    except (OSError, AttributeError):
        return False
    return True


class InotifySource:
    """Watches ``root`` for ``relevant`` paths and hands each batch of changed paths on."""

    def __init__(
        self,
        root: Path,
        relevant: Callable[[str], bool],
        deliver: Callable[[set[str]], None],
        stop: threading.Event,
        stop_check_ms: int | None = STOP_CHECK_MS,
    ) -> None:
        """Watch ``root``; ``deliver`` gets the absolute paths of each batch of events.

        ``stop_check_ms`` is how often a quiet source looks at ``stop`` (default: a few
        times a second; None: only when :meth:`interrupt` is called).
        """
        self._stop_check_ms = stop_check_ms
        self._root = str(root)
        self._relevant = relevant
        self._deliver = deliver
        self._stop = stop
        self._inotify = INotify()
        self._folders: dict[int, str] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # A closed descriptor's number is reused: interrupt() must never write after close.
        self._wake_guard = threading.Lock()
        self._closed = False

    def interrupt(self) -> None:
        """Make a waiting :meth:`run` look at its stop event now (safe from any thread)."""
        with self._wake_guard:
            if self._closed:
                return
            # A full pipe means a wake-up is pending already.
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"x")

    def start(self) -> None:
        """Watch every relevant folder below the root, now (raises ``OSError`` if one fails)."""
        self._add_tree(self._root)

    def run(self) -> None:
        """Read and hand over events until the stop event is set; close the descriptor."""
        try:
            poller = select.poll()
            poller.register(self._inotify.fileno(), select.POLLIN)
            poller.register(self._wake_r, select.POLLIN)
            while not self._stop.is_set():
                ready = {fd for fd, _ in poller.poll(self._stop_check_ms)}
                if self._wake_r in ready:
                    self._drain_wakes()
                if self._inotify.fileno() not in ready:
                    continue
                events = self._inotify.read(timeout=0)
                changed: set[str] = set()
                for event in events:
                    if event.mask & f.Q_OVERFLOW:
                        changed |= {os.path.join(self._root, n) for n in os.listdir(self._root)}
                        continue
                    folder = self._folders.get(event.wd)
                    if folder is None:
                        continue
                    if event.mask & f.IGNORED:  # its folder went away
                        self._folders.pop(event.wd, None)
                        continue
                    path = os.path.join(folder, event.name) if event.name else folder
                    if not self._relevant(path):
                        continue
                    changed.add(path)
                    if event.mask & f.ISDIR and event.mask & (f.CREATE | f.MOVED_TO):
                        changed |= self._add_tree(path)
                    elif event.name == ".gitignore":
                        # What is ignored changed: a folder may be watched now.
                        changed |= self._add_tree(self._root)
                if changed:
                    self._deliver(changed)
        finally:
            self._inotify.close()
            with self._wake_guard:
                self._closed = True
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _drain_wakes(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def _add_tree(self, top: str) -> set[str]:
        """Watch ``top`` and every relevant folder below it; the paths found in them."""
        found: set[str] = set()
        pending = [top]
        while pending:
            folder = pending.pop()
            try:
                wd = self._inotify.add_watch(folder, _MASK)
            except FileNotFoundError:
                continue  # gone again already
            self._folders[wd] = folder
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if not self._relevant(entry.path):
                    continue
                found.add(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
        return found
