"""Shared fixtures: a private store per test, and a helper to write pipeline projects."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from greenloop.store import Store


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never touch the developer's real cache, local or remote, or trees' state, nor hand commands
    # to a greenloop daemon the developer has running.
    monkeypatch.setenv("GREENLOOP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GREENLOOP_DAEMON_DIR", str(tmp_path / "daemon"))
    monkeypatch.setenv("GREENLOOP_STATE_DIR", str(tmp_path / "tree-state"))
    for variable in (
        "GREENLOOP_REMOTE_CACHE",
        "GREENLOOP_REMOTE_CACHE_MODE",
        "GREENLOOP_REMOTE_CACHE_TOKEN",
    ):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "cache")
    yield s
    s.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / ".greenloop").mkdir(parents=True)
    return root


def cli(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``greenloop ARGS`` in ``cwd`` as a real process (``env`` adds to the environment).

    ``timeout`` is a guard against a hang, never a measurement.
    """
    return subprocess.run(
        [sys.executable, "-m", "greenloop", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        env={**os.environ, **(env or {})},
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 120.0, what: str = "") -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` (a guard, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


def write_pipeline(root: Path, body: str) -> Path:
    """Write ``.greenloop/pipeline.py`` with ``import greenloop as gl`` and ``body``."""
    path = root / ".greenloop" / "pipeline.py"
    path.write_text("import greenloop as gl\n\n" + textwrap.dedent(body))
    return path
