"""File watching: raw change batches, reduced to real content changes.

Events come from Linux inotify where it works (a thread that sleeps until one
arrives: :mod:`greenloop.devloop.inotify_source`), else from watchfiles.

Events under ignored paths (fixed ignores, the settings' ``ignore`` list,
``.gitignore`` at any depth) are dropped, and so is a save that leaves a file's
content as it was: only a batch with at least one real change reaches the
checkers.

A batch is handed over once the tree has been quiet for a quarter of the
debounce window (the *settle* time), so checking can start while the rest of
the window runs; :attr:`Watcher.quiet_at` says when the whole window ends, and
the loop holds the verdict until then. A change inside the window is simply the
next batch, which cancels the check begun too early.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import watchfiles

from greenloop.devloop.file_digests import DigestCache
from greenloop.devloop.ignores import Ignores
from greenloop.devloop.inotify_source import STOP_CHECK_MS, InotifySource
from greenloop.devloop.inotify_source import available as inotify_available

WATCHER_ENV = "GREENLOOP_WATCHER"
"""``watchfiles`` makes the watcher poll with watchfiles even where inotify works."""

_MAX_HOLD_MS = 2_000
"""A never-quiet stream of changes is still checked after this long (or ten quiet windows)."""

_READY_TIMEOUT_MS = 200

SETTLE_DIVISOR = 4
"""Checking starts once the tree has been quiet for this fraction of the debounce window."""

_STEP_MS = 10
"""How often watchfiles looks for events: it hands a batch over after one step
with none, so the windows are timed from up to one step after the real event.
Each look wakes a thread (tens of microseconds here): 10 ms keeps an idle
watcher under 1% CPU, where 2 ms would cost about 2%."""


class ChangeFilter:
    """Remembers each project file's digest; says which reported paths really changed."""

    def __init__(self, ignores: Ignores, digests: DigestCache) -> None:
        self.ignores = ignores
        self._digests = digests
        self._known: dict[str, str] = {}

    @property
    def root(self) -> Path:
        """The watched project root."""
        return self.ignores.root

    def prime(self) -> None:
        """Record the current content of every project file (call before watching starts)."""
        self._known = {}
        for rel in self.ignores.files():
            digest = self._digests.digest(self.root / rel)
            if digest is not None:
                self._known[rel] = digest

    def relevant(self, path: str) -> bool:
        """Cheap first cut on an absolute path: False when it is under a fixed/config ignore."""
        rel = self._relative(path)
        return (
            rel is not None
            and not any(self.ignores.ignored(prefix, is_dir=True) for prefix in _parents(rel))
            and not self.ignores.ignored(rel, is_dir=os.path.isdir(path))
        )

    def changed(self, paths: Iterable[str]) -> frozenset[str]:
        """Project-relative paths among ``paths`` (absolute) whose content differs from before."""
        candidates = {rel for p in paths if (rel := self._relative(p)) is not None}
        if not candidates:
            return frozenset()
        tracked = set(self.ignores.files())
        # A path may be a folder that appeared or vanished: its files count.
        expanded = {
            f
            for f in tracked | self._known.keys()
            if f in candidates or any(f.startswith(c + "/") for c in candidates)
        }
        changed = set()
        for rel in expanded:
            now = self._digests.digest(self.root / rel) if rel in tracked else None
            if now == self._known.get(rel):
                continue
            changed.add(rel)
            if now is None:
                self._known.pop(rel, None)
            else:
                self._known[rel] = now
        return frozenset(changed)

    def _relative(self, path: str) -> str | None:
        try:
            rel = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return None
        return None if rel in ("", ".") else rel


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class Watcher:
    """A background thread turning file events into batches of really-changed paths."""

    def __init__(
        self,
        changes: ChangeFilter,
        debounce_ms: int,
        stop: threading.Event,
        stop_check_ms: int | None = STOP_CHECK_MS,
    ) -> None:
        """Watch ``changes.root``; with inotify, a quiet watcher looks at ``stop`` every
        ``stop_check_ms`` (default: a few times a second; None: only on :meth:`wake`)."""
        self._stop_check_ms = stop_check_ms
        self._source: InotifySource | None = None
        self._filter = changes
        self._debounce_ms = debounce_ms
        self._inotify = os.environ.get(WATCHER_ENV, "") != "watchfiles" and inotify_available()
        self._step_ms = max(min(debounce_ms, _STEP_MS), 1)
        # How late a batch reaches us after its last event: a whole step with watchfiles,
        # nothing with inotify.
        self._handover_ms = 0 if self._inotify else self._step_ms
        self._settle_ms = max(debounce_ms // SETTLE_DIVISOR, self._step_ms)
        self.quiet_at = 0.0
        """``time.monotonic()`` at which the debounce window after the last event ends."""
        self._stop = stop
        self._raw: queue.Queue[set[str] | BaseException] = queue.Queue()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="greenloop-watch", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        """Start watching; returns once events are being recorded (or raises ``OSError``)."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise OSError(f"the file watcher did not start within {timeout:g}s")
        self._raise_failure()

    def next_batch(self, timeout: float | None) -> frozenset[str]:
        """The next batch of really-changed paths, or an empty set when none came in time
        (``timeout`` None: wait until a batch or a :meth:`wake`).

        A batch ends once the settle time has passed with no further event (or after
        at most ``_MAX_HOLD_MS`` of a stream that never goes quiet), so a burst of
        writes is one batch. Any event, even one that changes nothing, moves
        :attr:`quiet_at` on.
        """
        try:
            raw = self._raw.get(timeout=timeout)
        except queue.Empty:
            return frozenset()
        if isinstance(raw, BaseException):
            raise raw
        if not raw:
            return frozenset()  # a wake-up, not a change
        settle_until = self._heard()
        hold_until = time.monotonic() + _MAX_HOLD_MS / 1000
        while (left := min(settle_until, hold_until) - time.monotonic()) > 0:
            try:
                more = self._raw.get(timeout=left)
            except queue.Empty:
                break
            if isinstance(more, BaseException):
                raise more
            if more:
                raw |= more
                settle_until = self._heard()
        return self._filter.changed(raw)

    def _heard(self) -> float:
        """Restart the windows for events just handed over; returns when settling ends."""
        # watchfiles hands events over only after a whole step without more: at
        # least that much of each window has already passed.
        now = time.monotonic() - self._handover_ms / 1000
        self.quiet_at = now + self._debounce_ms / 1000
        return now + self._settle_ms / 1000

    def wake(self) -> None:
        """Make a waiting :meth:`next_batch` return (empty) now; once stop is set, make
        the inotify thread see it too."""
        self._raw.put(set())
        source = self._source
        if source is not None and self._stop.is_set():
            source.interrupt()

    def _raise_failure(self) -> None:
        try:
            raw = self._raw.get_nowait()
        except queue.Empty:
            return
        if isinstance(raw, BaseException):
            raise raw
        self._raw.put(raw)

    def _watch(self) -> None:
        if self._inotify:
            self._watch_inotify()
        else:
            self._watch_polling()

    def _watch_inotify(self) -> None:
        try:
            source = InotifySource(
                self._filter.root,
                self._filter.relevant,
                self._raw.put,
                self._stop,
                stop_check_ms=self._stop_check_ms,
            )
            self._source = source
            source.start()
            self._ready.set()
            source.run()
        except Exception as e:  # handed to the consumer, which reports it
            self._raw.put(e if isinstance(e, OSError) else OSError(f"{type(e).__name__}: {e}"))
        finally:
            self._ready.set()
            self.wake()

    def _watch_polling(self) -> None:
        try:
            for batch in watchfiles.watch(
                self._filter.root,
                watch_filter=lambda _change, path: self._filter.relevant(path),
                # A short step hands events over promptly; the debounce window itself
                # is timed in next_batch, so the verdict waits for it once, not twice.
                step=self._step_ms,
                debounce=max(self._debounce_ms * 10, _MAX_HOLD_MS),
                stop_event=self._stop,
                rust_timeout=_READY_TIMEOUT_MS,
                yield_on_timeout=True,
                raise_interrupt=False,
                recursive=True,
            ):
                self._ready.set()
                if batch:
                    self._raw.put({path for _change, path in batch})
        except Exception as e:  # handed to the consumer, which reports it
            self._raw.put(e if isinstance(e, OSError) else OSError(f"{type(e).__name__}: {e}"))
        finally:
            self._ready.set()
            self.wake()  # stopped: a waiting next_batch need not sit out its timeout
