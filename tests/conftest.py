"""Shared fixtures: a private store per test, a helper to write pipeline projects, and the
session's Ray cluster for the ray executor's tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from greenloop.daemon.spawn import lock_holder
from greenloop.store import Store
from tests.ray_cluster import RayCluster, require_ray
from tests.test_remote_server import NginxServer, require_nginx


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Never touch the developer's real cache, local or remote, trees' state or settings, nor
    # hand commands to a greenloop daemon the developer has running. Commands run in their own
    # process: a test of the daemon (tests/test_daemon.py) turns it on, in its own folder.
    monkeypatch.setenv("GREENLOOP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GREENLOOP_DAEMON_DIR", str(tmp_path / "daemon"))
    monkeypatch.setenv("GREENLOOP_STATE_DIR", str(tmp_path / "tree-state"))
    monkeypatch.setenv("GREENLOOP_CONFIG", str(tmp_path / "greenloop-config.toml"))
    monkeypatch.setenv("GREENLOOP_NO_DAEMON", "1")
    for variable in (
        "GREENLOOP_REMOTE_CACHE",
        "GREENLOOP_REMOTE_CACHE_MODE",
        "GREENLOOP_REMOTE_CACHE_TOKEN",
    ):
        monkeypatch.delenv(variable, raising=False)
    yield
    stop_daemons(tmp_path / "daemon")


def held_locks(folder: Path) -> dict[Path, int]:
    """The daemon lock files in ``folder`` a daemon holds (serving or starting): its pid."""
    held = {}
    for lock in folder.glob("*.lock") if folder.is_dir() else []:
        pid = lock_holder(str(lock))
        if pid is not None:
            held[lock] = pid
    return held


def stop_daemons(folder: Path) -> None:
    """Kill every daemon that holds a lock in ``folder``: no daemon a test started, or a
    command started by itself, outlives the test."""
    for pid in held_locks(folder).values():
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


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


@pytest.fixture(scope="session")
def ray_folder() -> Iterator[Path]:
    """A folder for the session's cluster and its cache, outside pytest's own temp folders:
    pytest deletes old runs' folders when a new run starts, and a run elsewhere on the
    machine would pull the sockets and stores from under a cluster still running."""
    folder = Path(tempfile.mkdtemp(prefix="greenloop-ray-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster(ray_folder: Path) -> Iterator[RayCluster]:
    """A head and two worker nodes on loopback, shared by every Ray test of the session."""
    binary = require_ray()
    with RayCluster(ray_folder / "cluster", binary=binary) as cluster:
        try:
            yield cluster
        finally:
            from greenloop.executors.ray_cluster import disconnect

            disconnect()


@pytest.fixture(scope="session")
def ray_cache(ray_folder: Path) -> Iterator[NginxServer]:
    """The nginx WebDAV cache between the Ray nodes (and the host)."""
    with NginxServer(ray_folder / "cache", binary=require_nginx()) as server:
        yield server


@pytest.fixture
def on_ray(
    ray_cluster: RayCluster, ray_cache: NginxServer, monkeypatch: pytest.MonkeyPatch
) -> RayCluster:
    """Make ``--executor ray`` usable in this test: the cluster and the cache it needs."""
    for name, value in ray_cluster.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GREENLOOP_REMOTE_CACHE", ray_cache.url)
    return ray_cluster
