"""The worktrees of a repository, and a wake-up whenever that list may have changed.

The list comes from ``git worktree list --porcelain`` (bare entries and
worktrees whose folder is gone are left out). ``git worktree add``, ``remove``
and ``prune`` all write under the common folder's ``worktrees/``; that folder
(and each entry in it) is watched with inotify, so a change is noticed at once
and nothing is polled while the list stays put. Where inotify is not
available the list is re-read every :data:`POLL_S` seconds.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from greenloop.devloop.inotify_source import InotifySource
from greenloop.devloop.inotify_source import available as inotify_available
from greenloop.protocol import SetupError

POLL_S = 2.0
"""How often the list is re-read where inotify cannot say it changed."""


def list_worktrees(repo: Path) -> list[Path]:
    """Every worktree (its top folder, real path) of the repository ``repo`` is in.

    Raises ``SetupError`` when ``repo`` is not in a git repository or git fails.
    """
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "worktree", "list", "--porcelain"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as e:
        raise SetupError(f"cannot run git to list the worktrees of {repo}: {e}") from e
    if done.returncode != 0:
        said = done.stderr.strip() or f"exit status {done.returncode}"
        raise SetupError(f"cannot list the worktrees of {repo}: git says: {said}")
    found: list[Path] = []
    for record in done.stdout.split("\n\n"):
        lines = record.splitlines()
        if not lines or not lines[0].startswith("worktree ") or "bare" in lines[1:]:
            continue
        path = Path(lines[0].removeprefix("worktree "))
        if path.is_dir():  # a worktree deleted by hand is listed until pruned
            found.append(path.resolve())
    return found


def git_common_dir(repo: Path) -> Path:
    """The common git folder of the repository ``repo`` is in (raises ``SetupError``)."""
    done = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--path-format=absolute", "--git-common-dir"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        said = done.stderr.strip() or f"exit status {done.returncode}"
        raise SetupError(f"{repo} is not in a git repository: git says: {said}")
    return Path(done.stdout.strip()).resolve()


class WorktreeListWatch:
    """Calls ``changed`` (from its own thread) whenever the worktree list may differ."""

    def __init__(self, common: Path, changed: Callable[[], None], stop: threading.Event) -> None:
        self._common = common
        self._folder = str(common / "worktrees")
        self._changed = changed
        self._stop = stop
        self._source: InotifySource | None = None
        self._thread = threading.Thread(target=self._run, name="greenloop-worktrees", daemon=True)

    def start(self) -> None:
        """Start watching (the first list is the caller's to read)."""
        self._thread.start()

    def join(self) -> None:
        """Wait for the watching thread to end (after the stop event is set)."""
        source = self._source
        if source is not None:
            source.interrupt()
        self._thread.join()

    def _relevant(self, path: str) -> bool:
        # worktrees/ and what is directly in each of its entries: enough to see an entry
        # come or go, and the checkout of a new one finish (its index is written last).
        if path == self._folder:
            return True
        parent = os.path.dirname(path)
        return parent == self._folder or os.path.dirname(parent) == self._folder

    def _run(self) -> None:
        if inotify_available():
            try:
                # It blocks until an event or join()'s interrupt: no timed wake-ups.
                source = InotifySource(
                    self._common,
                    self._relevant,
                    lambda _paths: self._changed(),
                    self._stop,
                    stop_check_ms=None,
                )
                self._source = source
                source.start()
                source.run()
                return
            except OSError:
                pass  # out of watches, say: fall back to reading the list now and then
        while not self._stop.wait(POLL_S):
            self._changed()
