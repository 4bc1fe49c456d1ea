"""Save→new-app-serving latency of ``greenloop dev`` for a web app, minus what is not greenloop's.

A real ``greenloop dev --port 0 --json`` runs a temp copy of ``examples/app`` (a
Starlette app under uvicorn, ``ready = "/healthz"``, no build pipeline: the
green tree's snapshot is the build). Each edit gives ``app.py`` a new title
(green, never built before) and the latency runs from just before the write to
the first response through the proxy that carries the new title; the bench
asks ``/api/title`` every 2 ms over one keep-alive connection.

Beside it, per edit:

* check — the verdict's own duration (``last_check_ms`` in the tree's ``watch.json``);
* build — the snapshot's own time (``artifact.build_duration_ms`` of the build);
* app start — the new process's own start, spawn to ``/healthz`` answering
  (``status.app.current.ready_ms``; the supervisor polls every 5 ms, so this
  counts up to 5 ms of greenloop's waiting as the app's);
* overhead = latency - (check + build + app start): watching, the debounce
  window (a deliberate wait, shown apart), publishing, spawning, the swap and
  the bench's own polling. Target: median ≤ 100 ms.

For reference, the app's start on its own (uvicorn spawned by the bench, 1 ms
polls) is measured too, outside ``greenloop dev``.

    python bench/app_swap.py [--edits N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.edit_to_browser import Dev, last_check
from bench.edit_to_browser import row as figure
from greenloop.cli._devloop import DEV_DEBOUNCE_MS
from greenloop.protocol import Compiled

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "app"
TARGET_OVERHEAD_MS = 100.0
WARM_UP = 2  # the first rounds fill mypy's cache and the OS's page cache; not counted
POLL_S = 0.002
# Failure guards, never measurements.
TIMEOUT_S = 60.0


@dataclass
class Sample:
    """One edit's figures, in milliseconds."""

    latency: float
    check: float
    build: float
    app_start: float
    green: float  # save → the BecameGreen line on dev's stdout
    published: float  # save → the BuildResult line (printed once published)
    swapped: float  # save → the app line saying this build's app serves

    @property
    def overhead(self) -> float:
        """What greenloop adds around the check, the build and the app's own start."""
        return self.latency - (self.check + self.build + self.app_start)


def copy_app(into: Path) -> Path:
    """A fresh copy of the example, without any state a local run left in it."""
    root = into / "app"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".greenloop", "*_cache"))
    return root


def serving(http: httpx.Client, url: str, title: str) -> float:
    """Poll until the proxy answers with ``title``; when it first did (``time.time()``)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if http.get(url + "api/title").json().get("title") == title:
                return time.time()
        except (httpx.HTTPError, ValueError):
            pass  # the holding page before the first app, or a 502: keep asking
        time.sleep(POLL_S)
    raise SystemExit(f"{title!r} was never served")


def takeover(dev: Dev, input_hash: str) -> float:
    """When ``dev`` printed that the app of build ``input_hash`` serves (``time.time()``)."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        at, line = dev.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        current = (line.get("app") or {}).get("current") or {}
        if current.get("input_hash") == input_hash and current.get("health") == "healthy":
            return at


def measure(edits: int) -> list[Sample]:
    """Run the edits against a real ``greenloop dev``; return their samples."""
    with tempfile.TemporaryDirectory(prefix="greenloop-bench-app-") as scratch:
        root = copy_app(Path(scratch))
        app_py = root / "app.py"
        original = app_py.read_text()
        dev = Dev(root, Path(scratch) / "cache")
        samples: list[Sample] = []
        try:
            with httpx.Client(timeout=TIMEOUT_S, trust_env=False) as http:
                serving(http, dev.url, "Hello from the app")
                for n in range(WARM_UP + edits):
                    title = f"Edit number {n}"
                    time.sleep(0.3)  # a quiet tree between edits, as between a person's saves
                    saved = time.time()
                    app_py.write_text(original.replace("Hello from the app", title))
                    served = serving(http, dev.url, title)
                    green_at, published_at, result = dev.next_build(saved)
                    swapped_at = takeover(dev, result.input_hash)
                    if not isinstance(result.outcome, Compiled) or result.artifact is None:
                        raise SystemExit(f"edit {n} was not a fresh build: {result.outcome}")
                    current = http.get(dev.url + "__greenloop/status").json()["app"]["current"]
                    if current["input_hash"] != result.input_hash:
                        raise SystemExit(f"edit {n}: the serving app is not this edit's build")
                    check = last_check(root, saved)
                    if n < WARM_UP:
                        continue
                    samples.append(
                        Sample(
                            latency=(served - saved) * 1000,
                            check=check,
                            build=float(result.artifact.build_duration_ms),
                            app_start=float(current["ready_ms"]),
                            green=(green_at - saved) * 1000,
                            published=(published_at - saved) * 1000,
                            swapped=(swapped_at - saved) * 1000,
                        )
                    )
        finally:
            dev.stop()
    return samples


def standalone_start(runs: int) -> list[float]:
    """The app's own start, spawn to ``/healthz`` answering, without greenloop (ms)."""
    starts = []
    with tempfile.TemporaryDirectory(prefix="greenloop-bench-app-") as scratch:
        root = copy_app(Path(scratch))
        for _ in range(runs):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            spawned = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)],
                cwd=root,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                with httpx.Client(timeout=TIMEOUT_S, trust_env=False) as http:
                    deadline = spawned + TIMEOUT_S
                    while time.monotonic() < deadline:
                        try:
                            if http.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                                break
                        except httpx.HTTPError:
                            time.sleep(0.001)
                    starts.append((time.monotonic() - spawned) * 1000)
            finally:
                proc.terminate()
                proc.wait(TIMEOUT_S)
    return starts


def main() -> None:
    """Measure and print the medians (and spread) of every figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=20, help="measured edits (≥ 20)")
    args = parser.parse_args()
    if args.edits < 1:
        parser.error("--edits must be positive")
    samples = measure(args.edits)
    alone = standalone_start(5)

    def row(name: str, values: list[float]) -> str:
        return figure(name, values, width=42)

    print(f"greenloop dev, examples/app, {len(samples)} green edits (+{WARM_UP} warm-up)")
    print(row("save -> new app serving (latency)", [s.latency for s in samples]))
    print(row("check (verdict duration)", [s.check for s in samples]))
    print(row("build (snapshot, build_duration_ms)", [s.build for s in samples]))
    print(row("app start (spawn -> ready, ready_ms)", [s.app_start for s in samples]))
    print(row("overhead = latency - (check+build+start)", [s.overhead for s in samples]))
    window = "of which debounce window"
    print(f"    {window:<42} {DEV_DEBOUNCE_MS:7d} ms (configured wait)")
    print(row("  save -> BecameGreen on stdout", [s.green for s in samples]))
    print(row("  save -> BuildResult (published)", [s.published for s in samples]))
    print(row("  published -> app serving (its line)", [s.swapped - s.published for s in samples]))
    print(row("  that minus app start", [s.swapped - s.published - s.app_start for s in samples]))
    print(row("  app serving -> the bench saw it", [s.latency - s.swapped for s in samples]))
    print(row("the app alone: spawn -> /healthz (ref.)", alone))
    overhead = statistics.median(s.overhead for s in samples)
    verdict = "met" if overhead <= TARGET_OVERHEAD_MS else "MISSED"
    print(f"target: median overhead <= {TARGET_OVERHEAD_MS:.0f} ms: {verdict} ({overhead:.1f} ms)")


if __name__ == "__main__":
    main()
