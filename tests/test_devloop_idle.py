"""Watching that blocks while quiet: woken by an event or on stop, never by a timer."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from pathlib import Path

import pytest

from greenloop.devloop.file_digests import DigestCache
from greenloop.devloop.ignores import Ignores
from greenloop.devloop.inotify_source import InotifySource
from greenloop.devloop.inotify_source import available as inotify_available
from greenloop.devloop.status import StatusWriter, WatchLock, read_status, status_path, write_status
from greenloop.devloop.watcher import ChangeFilter
from tests.conftest import wait_until
from tests.test_devloop_helpers import TIMEOUT, write


@pytest.mark.skipif(not inotify_available(), reason="no inotify here")
def test_a_blocking_inotify_source_sees_edits_and_ends_on_interrupt(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    write(tmp_path, {"a.py": "0\n"})
    changes = ChangeFilter(Ignores(tmp_path), DigestCache())
    batches: queue.Queue[set[str]] = queue.Queue()
    stop = threading.Event()
    source = InotifySource(tmp_path, changes.relevant, batches.put, stop, stop_check_ms=None)
    source.start()
    thread = threading.Thread(target=source.run, daemon=True)
    thread.start()
    (tmp_path / "a.py").write_text("1\n")
    assert str(tmp_path / "a.py") in batches.get(timeout=TIMEOUT)
    # An interrupt without stop changes nothing: the source keeps watching.
    source.interrupt()
    (tmp_path / "a.py").write_text("2\n")
    assert str(tmp_path / "a.py") in batches.get(timeout=TIMEOUT)
    stop.set()
    source.interrupt()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    source.interrupt()  # after the end: a no-op, never a write to a reused descriptor


def test_a_writer_without_its_own_heartbeat_beats_when_told(tmp_path: Path) -> None:
    lock = WatchLock.acquire(tmp_path)
    lost: list[bool] = []
    writer = StatusWriter(lock, lambda: lost.append(True), heartbeat_s=None)
    writer.start()
    first = read_status(tmp_path)
    assert first is not None
    written = status_path(tmp_path).read_bytes()
    inode = status_path(tmp_path).stat().st_ino
    wait_until(lambda: time.time() > first.heartbeat_at)
    assert writer.beat()
    again = read_status(tmp_path)
    assert again is not None and again.heartbeat_at > first.heartbeat_at
    # A beat only touches the file: the same file, the same bytes.
    assert status_path(tmp_path).stat().st_ino == inode
    assert status_path(tmp_path).read_bytes() == written
    assert not lost
    writer.stop()
    after = read_status(tmp_path)
    assert after is not None and after.activity == "stopped"
    assert writer.beat()  # stopped: nothing is rewritten
    final = read_status(tmp_path)
    assert final is not None and final.heartbeat_at == after.heartbeat_at
    lock.release()


def test_a_beat_after_another_watcher_took_the_status_file_says_the_slot_is_lost(
    tmp_path: Path,
) -> None:
    lock = WatchLock.acquire(tmp_path)
    lost: list[bool] = []
    writer = StatusWriter(lock, lambda: lost.append(True), heartbeat_s=None)
    writer.start()
    mine = read_status(tmp_path)
    assert mine is not None
    # Another watcher's status, renamed into place as every writer does.
    write_status(tmp_path, mine.model_copy(update={"token": "someone else", "pid": 1}))
    assert not writer.beat()
    assert lost == [True]
    theirs = read_status(tmp_path)
    assert theirs is not None and theirs.token == "someone else"
    lock.release()
