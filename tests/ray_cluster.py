"""A real Ray cluster on loopback for the ``ray`` executor's tests and bench.

``RayCluster`` starts a head node (no CPUs: it runs no step, as on KubeRay) and
worker nodes with one CPU each, every node with ``ray start`` on its own
loopback address (127.0.0.2, .3, ...; Ray rewrites 127.0.0.1 to the machine's
outside address) and its own greenloop store (``GREENLOOP_CACHE_DIR``), which
the node's workers inherit. Every process a node starts carries a marker in
its environment, so stopping the cluster (or killing one node) signals exactly
those processes by pid -- never ``ray stop``, which would stop every Ray
process on the machine.

Set ``GREENLOOP_REQUIRE_RAY=1`` (CI does) to fail instead of skipping when Ray
is not installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType

import pytest

REQUIRE_ENV = "GREENLOOP_REQUIRE_RAY"
_MARKER = "GREENLOOP_TEST_RAY_NODE"
_OBJECT_STORE_BYTES = 100_000_000
# Notice a dead node in ~3 s rather than Ray's default of a minute or so.
_FAST_HEALTH = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def ray_binary() -> str | None:
    """The ``ray`` command beside this interpreter, if Ray is installed."""
    beside = Path(sys.executable).parent / "ray"
    if beside.exists():
        return str(beside)
    return shutil.which("ray")


def require_ray() -> str:
    """The ``ray`` command, or skip the test (fail under ``GREENLOOP_REQUIRE_RAY=1``)."""
    binary = ray_binary()
    try:
        import ray  # noqa: F401
    except ImportError:
        binary = None
    if binary is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"Ray is not installed and {REQUIRE_ENV}=1")
        pytest.skip("Ray is not installed (pip install 'greenloop[ray]')")
    return binary


class RayNode:
    """One node of a :class:`RayCluster`."""

    def __init__(self, name: str, ip: str, store: Path, resources: str = "") -> None:
        self.name = name
        self.resources = resources
        """Custom resources, as ``ray start --resources`` takes them (JSON)."""
        self.ip = ip
        self.store = store
        self.marker = f"{name}-{uuid.uuid4().hex[:8]}"

    def pids(self) -> list[int]:
        """Every live process this node started (found by its environment marker)."""
        found = []
        needle = f"{_MARKER}={self.marker}".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue  # gone, or not ours to read
        return found

    def kill(self) -> None:
        """SIGKILL every process of the node: it dies as a machine does."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class RayCluster:
    """A head and ``workers`` one-CPU worker nodes on loopback, under ``directory``."""

    def __init__(self, directory: Path, *, binary: str, workers: int = 2) -> None:
        self.directory = directory
        self.binary = binary
        self.head = RayNode("head", "127.0.0.2", directory / "head-store")
        # The last worker has a custom resource, so a step can ask for that node.
        self.workers = [
            RayNode(
                f"node{i + 1}",
                f"127.0.0.{3 + i}",
                directory / f"node{i + 1}-store",
                '{"big": 1}' if i == workers - 1 else "",
            )
            for i in range(workers)
        ]
        self.address = ""

    def start(self) -> RayCluster:
        """Start every node and wait until the cluster counts them all."""
        temp = self.directory / "tmp"
        temp.mkdir(parents=True, exist_ok=True)
        try:
            self._start(
                self.head,
                "--head",
                "--port=0",
                "--num-cpus=0",
                "--include-dashboard=false",
                f"--temp-dir={temp}",
            )
            self.address = (temp / "ray_current_cluster").read_text().strip()
            for node in self.workers:
                self.add(node)
        except BaseException:
            self.stop()
            raise
        return self

    def add(self, node: RayNode) -> None:
        """Start ``node`` as a worker of this cluster (again, after a kill)."""
        extra = [f"--resources={node.resources}"] if node.resources else []
        self._start(node, f"--address={self.address}", "--num-cpus=1", *extra)
        self.wait_alive(len([n for n in self.workers if n.pids()]) + 1)

    def wait_alive(self, count: int, timeout: float = 60) -> None:
        """Wait until ``count`` nodes are alive (a guard, not a measurement)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive() == count:
                return
            time.sleep(0.5)
        raise AssertionError(f"the Ray cluster did not reach {count} live nodes")

    def alive(self) -> int:
        """How many nodes the cluster counts as alive."""
        out = subprocess.run(
            [sys.executable, "-c", _COUNT, self.address],
            capture_output=True,
            text=True,
            timeout=60,
            env=self._env(self.head),
        )
        # Ray's driver prints cluster events (a node marked dead) on stdout
        # whatever log_to_driver says, so the count is the marked line.
        counts = [
            ln.removeprefix("alive=") for ln in out.stdout.splitlines() if ln.startswith("alive=")
        ]
        return int(counts[-1]) if counts else -1

    def env(self) -> dict[str, str]:
        """What a driver needs to reach the cluster."""
        return {"RAY_ADDRESS": self.address}

    def stop(self) -> None:
        """Kill every process of every node (SIGTERM, then SIGKILL what is left)."""
        nodes = [*self.workers, self.head]
        for node in nodes:
            for pid in node.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(n.pids() for n in nodes):
            time.sleep(0.2)
        for node in nodes:
            node.kill()

    def _env(self, node: RayNode) -> dict[str, str]:
        env = {
            **os.environ,
            _MARKER: node.marker,
            "GREENLOOP_CACHE_DIR": str(node.store),
            "RAY_USAGE_STATS_ENABLED": "0",
            # No token: Ray keeps its default one in ~/.ray/auth_token, which another
            # cluster started on this machine may replace under us (a node joining later
            # is then refused), and a driver reads it once, when it imports Ray.
            "RAY_AUTH_MODE": "disabled",
            **_FAST_HEALTH,
        }
        env.pop("RAY_ADDRESS", None)
        return env

    def _start(self, node: RayNode, *args: str) -> None:
        command = [
            self.binary,
            "start",
            *args,
            f"--node-ip-address={node.ip}",
            f"--object-store-memory={_OBJECT_STORE_BYTES}",
            "--disable-usage-stats",
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=120, env=self._env(node)
        )
        if done.returncode != 0:
            raise RuntimeError(f"ray start failed for {node.name}:\n{done.stderr[-3000:]}")

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_COUNT = """
import logging, sys, ray
ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)
print("alive=%d" % sum(1 for n in ray.nodes() if n["Alive"]))
"""
