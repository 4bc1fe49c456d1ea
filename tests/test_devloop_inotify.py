"""The Linux inotify source of the watcher, and the watchfiles fallback behind the same API."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenloop.devloop import inotify
from greenloop.devloop.digests import DigestCache
from greenloop.devloop.ignores import Ignores
from greenloop.devloop.inotify import Inotify
from greenloop.devloop.watcher import ChangeFilter, Watcher
from tests.test_devloop_helpers import TIMEOUT

needs_inotify = pytest.mark.skipif(not inotify.available(), reason="inotify is Linux-only")


def _changes(source: Inotify, *, until: str) -> set[str]:
    """Everything reported until a path ending in ``until`` shows up (a sentinel write)."""
    seen: set[str] = set()
    while not any(p.endswith(until) for p in seen):
        batch = source.wait(TIMEOUT)
        assert batch, "no event arrived"
        seen |= batch
    return seen


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Inotify]:
    (tmp_path / "src").mkdir()
    (tmp_path / "node_modules").mkdir()
    watched = Inotify(tmp_path, lambda rel: rel.rsplit("/", 1)[-1] == "node_modules")
    yield watched
    watched.close()


@needs_inotify
def test_writes_are_reported_and_skipped_folders_are_not_watched(
    tmp_path: Path, source: Inotify
) -> None:
    (tmp_path / "node_modules" / "dep.js").write_text("noise")
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    assert _changes(source, until="a.py") == {str(tmp_path / "src" / "a.py")}


@needs_inotify
def test_a_new_folder_is_reported_whole_and_watched_from_then_on(
    tmp_path: Path, source: Inotify
) -> None:
    # Files written into a fresh folder before its watch exists are covered by the folder.
    (tmp_path / "new" / "deep").mkdir(parents=True)
    (tmp_path / "new" / "deep" / "b.py").write_text("1\n")
    assert str(tmp_path / "new") in _changes(source, until="new")
    (tmp_path / "new" / "deep" / "b.py").write_text("2\n")
    assert str(tmp_path / "new" / "deep" / "b.py") in _changes(source, until="b.py")


@needs_inotify
def test_a_moved_folder_reports_under_its_new_name(tmp_path: Path, source: Inotify) -> None:
    (tmp_path / "src" / "pkg").mkdir()
    _changes(source, until="pkg")
    os.rename(tmp_path / "src", tmp_path / "lib")
    assert {str(tmp_path / "src"), str(tmp_path / "lib")} <= _changes(source, until="lib")
    (tmp_path / "lib" / "pkg" / "c.py").write_text("1\n")
    changed = _changes(source, until="c.py")
    assert changed == {str(tmp_path / "lib" / "pkg" / "c.py")}


@needs_inotify
def test_interrupt_ends_a_wait_without_a_change(source: Inotify) -> None:
    threading.Thread(target=source.interrupt).start()
    assert source.wait(TIMEOUT) == set()
    source.close()
    source.interrupt()  # harmless once closed


@needs_inotify
def test_a_ruled_out_folder_is_watched_after_a_rescan(tmp_path: Path) -> None:
    skipped = {"later"}
    (tmp_path / "later").mkdir()
    source = Inotify(tmp_path, lambda rel: rel in skipped)
    try:
        skipped.clear()
        assert source.rescan() == [str(tmp_path / "later")]
        (tmp_path / "later" / "d.py").write_text("1\n")
        assert _changes(source, until="d.py") == {str(tmp_path / "later" / "d.py")}
    finally:
        source.close()


@pytest.mark.parametrize("backend", ["inotify", "watchfiles"])
def test_watcher_batches_a_new_folder_of_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    if backend == "inotify" and not inotify.available():
        pytest.skip("inotify is Linux-only")
    if backend == "watchfiles":
        monkeypatch.setattr(inotify, "available", lambda: False)
    (tmp_path / "a.py").write_text("1\n")
    changes = ChangeFilter(Ignores(tmp_path), DigestCache())
    changes.prime()
    stop = threading.Event()
    watcher = Watcher(changes, debounce_ms=50, stop=stop)
    watcher.start()
    try:
        (tmp_path / "pkg" / "sub").mkdir(parents=True)
        (tmp_path / "pkg" / "sub" / "m.py").write_text("1\n")
        (tmp_path / "pkg" / "n.py").write_text("1\n")
        got: set[str] = set()
        deadline = time.monotonic() + TIMEOUT  # a failure guard, not a measurement
        while got != {"pkg/sub/m.py", "pkg/n.py"}:
            assert time.monotonic() < deadline, f"only {got} arrived"
            got |= watcher.next_batch(1.0)
    finally:
        stop.set()
        watcher.close()
