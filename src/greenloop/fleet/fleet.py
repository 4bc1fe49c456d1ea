"""Every worktree of a repository, each with its watch loop, kept in step with git.

The fleet reads ``git worktree list`` when it starts and again whenever the
list may have changed (:class:`~greenloop.fleet.worktrees.WorktreeListWatch`):
a new worktree gets a :class:`~greenloop.fleet.member.Member`, a removed one's
is stopped. A worktree that cannot be served (bad settings, or a ``greenloop
watch`` of its own already running) is *skipped*, said so on the stream, and
tried again every :data:`RETRY_S` seconds while any is skipped. Rounds of all
worktrees share one :class:`~greenloop.devloop.pool.RoundPool`, and their
language-server checkers a few shared servers, one workspace folder a worktree
(:class:`~greenloop.devloop.lsp_shared.SharedLanguageServers`). A new worktree's
mypy starts warm, from a copy of a served sibling's cache.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from greenloop.devloop import mypy_cache
from greenloop.devloop.lsp_shared import DEFAULT_PER_PROGRAM, SharedLanguageServers
from greenloop.devloop.pool import RoundPool
from greenloop.fleet.events import EventHub, Message, Subscriber
from greenloop.fleet.member import HEARTBEAT_S, Member
from greenloop.fleet.worktrees import WorktreeListWatch, git_common_dir, list_worktrees
from greenloop.protocol import SetupError

RETRY_S = 5.0
"""How often worktrees that could not be served are tried again."""

SETTLE_S = 0.2
"""After the worktree list changed, how long to let git finish before reading it."""


def _still(member: Member, rounds: int) -> bool:
    # Still between the same rounds: its cache was left alone meanwhile (mypy writes it
    # only during a round).
    return member.settled() == rounds


def default_jobs() -> int:
    """Rounds checking at once by default: half the cores (each round runs several checkers)."""
    return max(1, (os.cpu_count() or 2) // 2)


class Fleet:
    """The served worktrees of the repository ``repo`` is in."""

    def __init__(
        self,
        repo: Path,
        jobs: int,
        log: Callable[[str], None],
        lsp_servers: int = DEFAULT_PER_PROGRAM,
    ) -> None:
        """Raises ``SetupError`` when ``repo`` is not in a git repository.

        ``lsp_servers``: shared language servers a checker command, for all worktrees.
        """
        self.common = git_common_dir(repo)
        self.jobs = jobs
        self.hub = EventHub()
        self._pool = RoundPool(jobs)
        self._servers = SharedLanguageServers(lsp_servers)
        self._log = log
        self._members: dict[str, Member] = {}
        self._skipped: dict[str, str] = {}
        self._rescans = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.http: str | None = None
        """The base URL of the fleet's HTTP endpoint, when ``serve --port`` runs one."""

    def run(self) -> None:
        """Serve until :meth:`stop`, following the worktree list; then stop every loop."""
        watch = WorktreeListWatch(self.common, self._wake.set, self._stop)
        watch.start()
        try:
            self.rescan()
            beat_at = time.monotonic() + HEARTBEAT_S
            while not self._stop.is_set():
                # Nothing wakes an idle fleet but a change to the list, a loop that
                # ended by itself, a retry of a skipped worktree, stop(), and this one
                # heartbeat timer for every member (none of them wakes by itself).
                retry = bool(self._skipped) or self._failed()
                wait = max(beat_at - time.monotonic(), 0.0)
                woke = self._wake.wait(min(wait, RETRY_S) if retry else wait)
                if self._stop.is_set():
                    break
                if time.monotonic() >= beat_at:
                    self._beat()
                    beat_at = time.monotonic() + HEARTBEAT_S
                if woke:
                    self._stop.wait(SETTLE_S)
                    self._wake.clear()
                elif not retry:
                    continue
                self.rescan()
        finally:
            self.close()
            watch.join()

    def stop(self) -> None:
        """Make :meth:`run` stop every loop and return."""
        self._stop.set()
        self._wake.set()

    def _beat(self) -> None:
        for member in list(self._members.values()):
            member.beat()

    def _failed(self) -> bool:
        return any(not m.alive for m in list(self._members.values()))

    def rescan(self) -> None:
        """Read the worktree list; serve new worktrees, stop serving gone ones."""
        with self._rescans:
            try:
                wanted = {str(p): p for p in list_worktrees(self.common)}
            except SetupError as e:
                self._log(f"greenloop serve: {e}")
                return
            for key, member in list(self._members.items()):
                if key in wanted and member.alive:
                    continue
                with self.hub.lock:  # a new subscriber's replay reads the members
                    del self._members[key]
                member.stop()
                why = (
                    "no longer a worktree"
                    if key not in wanted
                    else member.failure or "its loop ended"
                )
                self._log(f"greenloop serve: stopped serving {key}: {why}")
                self.hub.publish({"kind": "worktree_removed", "worktree": key, "reason": why})
            skipped: dict[str, str] = {}
            for key, path in wanted.items():
                if key not in self._members:
                    reason = self._add(key, path)
                    if reason is not None:
                        skipped[key] = reason
            self._skipped = skipped

    def _add(self, key: str, path: Path) -> str | None:
        try:
            member = Member(path, self.hub, self._pool, self._servers, on_end=self._wake.set)
        except (SetupError, OSError) as e:
            reason = str(e)
            if self._skipped.get(key) != reason:
                self._log(f"greenloop serve: not serving {key}: {reason}")
                self.hub.publish({"kind": "worktree_skipped", "worktree": key, "reason": reason})
            return reason
        self._seed(member)
        with self.hub.lock:
            self._members[key] = member
            self.hub.publish({"kind": "worktree_added", "worktree": key})
        member.start()
        self._log(f"greenloop serve: serving {key}")
        return None

    def _seed(self, member: Member) -> None:
        for other in list(self._members.values()):
            rounds = other.settled()
            if rounds is not None and mypy_cache.seed(
                member.root, other.root, functools.partial(_still, other, rounds)
            ):
                self._log(f"greenloop serve: {member.key}'s mypy starts from {other.key}'s cache")
                return

    def member(self, worktree: str) -> Member | None:
        """The member serving ``worktree`` (a real path), reading the list again if unknown."""
        member = self._members.get(worktree)
        if member is None and not self._stop.is_set():
            self.rescan()
            member = self._members.get(worktree)
        return member if member is not None and member.alive else None

    def skipped(self, worktree: str) -> str | None:
        """Why ``worktree`` is not served, when it is a worktree the fleet skipped."""
        return self._skipped.get(worktree)

    def unserved(self, worktree: str) -> str:
        """Why the fleet does not serve ``worktree`` (skipped, or not one of its worktrees)."""
        return self.skipped(worktree) or f"{worktree} is not a worktree of {self.common}"

    def follow(self, worktree: str | None) -> Subscriber | str:
        """A subscriber to every worktree's messages (``None``), or to ``worktree``'s
        starting with its file verdicts; why not, when the fleet does not serve it.

        The caller unsubscribes (``hub.unsubscribe``) when its reader is gone.
        """
        if worktree is None:
            return self.hub.subscribe(None, self.replay)
        member = self.member(worktree)
        if member is None:
            return self.unserved(worktree)
        return member.subscribe()

    def listing(self) -> dict[str, Any]:
        """The served worktrees (real paths) and the skipped ones with why."""
        return {"served": sorted(self._members), "skipped": dict(sorted(self._skipped.items()))}

    def replay(self) -> list[Message]:
        """Every served worktree and its last verdict (call holding the hub's lock)."""
        messages: list[Message] = []
        for key, member in sorted(self._members.items()):
            messages.append({"kind": "worktree_added", "worktree": key})
            messages += member.replay(files=False)
        for key, reason in sorted(self._skipped.items()):
            messages.append({"kind": "worktree_skipped", "worktree": key, "reason": reason})
        return messages

    def describe(self, socket: Path) -> dict[str, Any]:
        """The ``serve`` section of ``greenloop status``."""
        return {
            "pid": os.getpid(),
            "socket": str(socket),
            "repository": str(self.common),
            "jobs": self.jobs,
            "lsp_servers": {
                "limit": self._servers.per_program,
                "running": len(self._servers.servers()),
            },
            "worktrees": len(self._members),
            "skipped": len(self._skipped),
            "http": self.http,
            "streams": self.hub.subscribers,
        }

    def close(self) -> None:
        """Stop every loop (their checkers are killed) and end every stream."""
        self._stop.set()
        with self._rescans:
            members, self._members = list(self._members.values()), {}
        for member in members:
            member.begin_stop()
        for member in members:
            member.stop()
        self._servers.close()
        self.hub.close()
