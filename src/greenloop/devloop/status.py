"""The watcher's status file and single-watcher lock, and what ``greenloop status`` reports.

Both live in the tree's state folder (:mod:`greenloop.devloop.treestate`), never
in the tree. ``watch.json`` is rewritten atomically (temp file + rename) with the
watcher's pid, verdict and diagnostic counts on every change; in between, the
heartbeat only touches the file (its mtime is the heartbeat: no read, no
write, so twenty idle worktrees under ``serve`` cost three system calls each
per beat). ``watch.lock`` is held
(``flock``) for the watcher's life, so a second watcher on the same tree is
refused while the first is alive; a dead one's lock is released by the kernel,
and a hung one (stale heartbeat) has its lock file replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from greenloop._fs import pid_alive, write_atomically
from greenloop.devloop.loop import Listener, Verdict
from greenloop.devloop.treestate import state_dir
from greenloop.protocol import (
    BecameRed,
    BuildResult,
    Failed,
    SetupError,
    Severity,
    StateEvent,
    TreeState,
)

STATUS_FILE = "watch.json"
"""Where the watcher reports itself, in the tree's state folder."""

LOCK_FILE = "watch.lock"
"""The single-watcher lock, in the tree's state folder."""


def status_path(root: Path) -> Path:
    """The status file of the tree at ``root``."""
    return state_dir(root) / STATUS_FILE


def lock_path(root: Path) -> Path:
    """The watcher lock of the tree at ``root``."""
    return state_dir(root) / LOCK_FILE


HEARTBEAT_S = 1.0
"""How often a live watcher rewrites its status file."""

STALE_AFTER_S = 15.0
"""A heartbeat older than this means the watcher is hung or gone."""

Activity = Literal["starting", "checking", "idle", "stopped"]
"""What the watcher was doing when it last wrote its status."""


class LastBuild(BaseModel):
    """What ``dev``'s last build came to: published, not published, or failed (and why)."""

    model_config = ConfigDict(extra="ignore")

    outcome: str
    """The ``BuildOutcome`` kind: ``compiled``, ``deduplicated`` or ``failed``."""
    published: bool
    """Whether it is now what ``--out`` and the server show."""
    reason: str | None = None
    """Why it failed, for a failed build."""
    input_hash: str
    at: float


class WatchStatus(BaseModel):
    """What a watcher last said about itself and the tree."""

    model_config = ConfigDict(extra="ignore")

    version: Literal[1] = 1
    pid: int
    token: str
    root: str
    started_at: float
    heartbeat_at: float
    activity: Activity = "starting"
    verdict: TreeState = TreeState.UNKNOWN
    errors: int = 0
    warnings: int = 0
    diagnostics: int = 0
    checkers: list[str] = []
    checks: int = 0
    last_check_at: float | None = None
    last_check_ms: int | None = None
    stopped_at: float | None = None
    last_build: LastBuild | None = None
    app: dict[str, Any] | None = None
    """``greenloop dev``'s app, as ``/__greenloop/status`` has it (pid, port, build, health)."""


class AlreadyWatching(SetupError):
    """Another live watcher owns this tree."""


def read_status(root: Path) -> WatchStatus | None:
    """The status file's content, or None when it is missing or unreadable.

    ``heartbeat_at`` is the later of the one written and the file's mtime (a beat
    touches the file without rewriting it).
    """
    try:
        with status_path(root).open("rb") as f:
            data = f.read()
            touched = os.fstat(f.fileno()).st_mtime
        status = WatchStatus.model_validate_json(data)
    except (OSError, ValidationError):
        return None
    if touched > status.heartbeat_at:
        status.heartbeat_at = touched
    return status


def write_status(root: Path, status: WatchStatus) -> None:
    """Replace the status file atomically, so readers see the old or the new one, never a mix.

    Not fsynced: it is rewritten every second, a crash makes it stale anyway (the
    heartbeat says so), and an fsync here sat on the path from a save to its check.
    """
    write_atomically(
        status_path(root),
        (status.model_dump_json(indent=2) + "\n").encode(),
        prefix=".watch.json.",
        durable=False,
    )


def liveness(status: WatchStatus | None, now: float | None = None) -> str:
    """``live``, ``stale`` (hung or killed without cleaning up), ``stopped`` or ``none``."""
    if status is None:
        return "none"
    if status.stopped_at is not None:
        return "stopped"
    now = time.time() if now is None else now
    if not pid_alive(status.pid) or now - status.heartbeat_at > STALE_AFTER_S:
        return "stale"
    return "live"


class WatchLock:
    """Ownership of a tree's watcher slot, held until :meth:`release`."""

    def __init__(self, root: Path, fd: int) -> None:
        self.root = root
        self.token = uuid.uuid4().hex
        self._fd = fd
        self._inode = os.fstat(fd).st_ino
        self._path = lock_path(root)  # worked out once: a heartbeat looks at it every beat

    @classmethod
    def acquire(cls, root: Path) -> WatchLock:
        """Take the slot, taking over from a dead or hung watcher; else raise AlreadyWatching."""
        path = lock_path(root)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                status = read_status(root)
                state = liveness(status)
                if state in ("live", "none"):
                    raise AlreadyWatching(_refusal(root, status)) from None
                if state == "stale":
                    # Hung but holding its lock: give the slot a fresh lock file to hold.
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                else:
                    time.sleep(0.2)  # it said "stopped" and is letting go of the lock
                continue
            if _same_file(fd, path):
                return cls(root, fd)
            os.close(fd)  # replaced while we were locking it; try the new one
        raise AlreadyWatching(f"could not take the watcher lock {path}; try again")

    def holds(self) -> bool:
        """Whether the lock file is still the one this slot holds (nobody replaced it)."""
        return _inode(self._path) == self._inode

    def owns(self) -> bool:
        """False once another watcher has taken the slot over."""
        if not self.holds():
            return False
        status = read_status(self.root)
        return status is None or status.token == self.token

    def release(self) -> None:
        """Give the slot up (the status file stays, saying what was last seen)."""
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def _refusal(root: Path, status: WatchStatus | None) -> str:
    if status is None:
        return f"another watcher is starting on {root}; stop it first"
    age = max(time.time() - status.heartbeat_at, 0.0)
    return (
        f"a watcher (pid {status.pid}) is already running on {root} "
        f"(heartbeat {age:.1f}s ago); stop it first"
    )


def watcher_section(root: Path) -> dict[str, Any]:
    """Whether a watcher is live on ``root`` and what it last saw."""
    status = read_status(root)
    state = liveness(status)
    section: dict[str, Any] = {"state": state, "live": state == "live"}
    if status is not None:
        section.update(
            pid=status.pid,
            activity=status.activity,
            verdict=status.verdict.value,
            errors=status.errors,
            warnings=status.warnings,
            diagnostics=status.diagnostics,
            checkers=status.checkers,
            checks=status.checks,
            started_at=status.started_at,
            heartbeat_age_s=round(max(time.time() - status.heartbeat_at, 0.0), 3),
            last_check_at=status.last_check_at,
            last_check_ms=status.last_check_ms,
            stopped_at=status.stopped_at,
        )
        if status.last_build is not None:
            section["last_build"] = status.last_build.model_dump(mode="json")
        if status.app is not None:
            section["app"] = status.app
    return section


class StatusWriter:
    """Keeps the status file current: on every change, and on a heartbeat in between."""

    def __init__(
        self,
        lock: WatchLock,
        on_lost: Callable[[], None],
        heartbeat_s: float | None = HEARTBEAT_S,
    ) -> None:
        """Write ``lock``'s tree's status; ``on_lost`` is called if another watcher takes it.

        ``heartbeat_s`` (under :data:`STALE_AFTER_S`) is how often an idle status is rewritten.
        None: no heartbeat thread of its own; the owner calls :meth:`beat` that often
        (one timer for many writers, not one each).
        """
        now = time.time()
        self._heartbeat_s = heartbeat_s
        self._lock = lock
        self._on_lost = on_lost
        self._status = WatchStatus(
            pid=os.getpid(),
            token=lock.token,
            root=str(lock.root),
            started_at=now,
            heartbeat_at=now,
        )
        self._guard = threading.Lock()
        self._path = status_path(lock.root)
        self._written: int | None = None  # the inode of the status file this writer wrote last
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="greenloop-heartbeat", daemon=True)

    def start(self) -> None:
        """Write the first status and start the heartbeat."""
        self.update()
        if self._heartbeat_s is not None:
            self._thread.start()

    def update(self, **fields: Any) -> None:
        """Change some fields (and the heartbeat) and rewrite the file."""
        with self._guard:
            self._status = self._status.model_copy(update={**fields, "heartbeat_at": time.time()})
            write_status(self._lock.root, self._status)
            self._written = _inode(self._path)

    def build(self, result: BuildResult, published: bool) -> None:
        """Record what ``dev``'s last build came to."""
        reason = result.outcome.reason if isinstance(result.outcome, Failed) else None
        last = LastBuild(
            outcome=result.outcome.kind,
            published=published,
            reason=reason,
            input_hash=result.input_hash,
            at=time.time(),
        )
        self.update(last_build=last)

    def stop(self) -> None:
        """Stop the heartbeat and record that this watcher stopped (if it still owns the slot)."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._lock.owns():
            self.update(activity="stopped", stopped_at=time.time())

    def beat(self) -> bool:
        """Beat now (touch the status file, or rewrite it when it is not the one this writer
        wrote); False (and ``on_lost`` called) if the slot was taken."""
        if self._done.is_set():
            return True  # stopping: stop() writes the last status
        with self._guard:
            # Every writer renames a new file into place, so the same inode means nobody
            # else wrote it since: touching it is the whole heartbeat.
            written = self._written is not None and _inode(self._path) == self._written
            if written and self._lock.holds():
                with contextlib.suppress(OSError):
                    os.utime(self._path)
                    return True
        if not self._lock.owns():
            self._on_lost()
            return False
        self.update()
        return True

    def _beat(self) -> None:
        assert self._heartbeat_s is not None
        while not self._done.wait(self._heartbeat_s):
            if not self.beat():
                return


class StatusListener(Listener):
    """Mirrors the watch loop's progress into the status file."""

    def __init__(self, writer: StatusWriter) -> None:
        self._writer = writer
        self._checks = 0

    def checking(self, changed: frozenset[str]) -> None:
        """A round started."""
        self._writer.update(activity="checking")

    def early(self, events: list[StateEvent]) -> None:
        """An advisory checker turned the tree red mid-round: the file says red at once."""
        for event in events:
            if isinstance(event, BecameRed):
                counts = Counter(d.severity for d in event.diagnostics)
                self._writer.update(
                    verdict=TreeState.RED,
                    errors=counts[Severity.ERROR],
                    warnings=counts[Severity.WARNING],
                    diagnostics=len(event.diagnostics),
                )

    def verdict(self, verdict: Verdict) -> None:
        """A round finished: record its verdict and counts."""
        self._checks += 1
        counts = verdict.counts()
        self._writer.update(
            activity="idle",
            verdict=verdict.tree,
            errors=counts[Severity.ERROR],
            warnings=counts[Severity.WARNING],
            diagnostics=sum(counts.values()),
            checkers=verdict.checkers,
            checks=self._checks,
            last_check_at=time.time(),
            last_check_ms=verdict.duration_ms,
        )
