"""Save→page-reloaded latency of ``greenloop dev`` for a green edit, in a real browser.

A real ``greenloop dev --port 0 --json`` serves a temp copy of ``examples/site``
to headless Debian Chromium (Playwright, ``/usr/bin/chromium`` as installed; no
``playwright install``). Each edit gives ``pages.py`` a new title (green, and an
input never built before, so every edit is a real build), and the latency runs
from just before the write to the reloaded page's ``DOMContentLoaded``. Both ends
are wall-clock readings on the same machine (``time.time()`` here, ``Date.now()``
in the page), so Playwright's polling for the new page is not counted.

Beside it, per edit:

* check — the verdict's own duration (``last_check_ms`` in the tree's ``watch.json``,
  the round that turned the tree green);
* build — the build step's own time (``artifact.build_duration_ms`` of the
  ``BuildResult`` line ``dev --json`` prints);
* overhead = latency - (check + build): watching, the debounce window (a
  deliberate wait, shown apart), publishing, the WebSocket message and the
  browser's reload. Target: ≤ 100 ms.

    python bench/edit_to_browser.py [--edits N] [--chromium PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greenloop.cli._devloop import DEV_DEBOUNCE_MS
from greenloop.devloop.rounds import Setup
from greenloop.devloop.status import status_path
from greenloop.protocol import BuildResult, Compiled

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.browser import CHROMIUM_ARGS

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "site"
TARGET_OVERHEAD_MS = 100.0
# Failure guards, never measurements.
TIMEOUT_S = 60.0
# Every page load notes when its DOM was ready, in the same clock as time.time().
LOADED_AT = (
    "document.addEventListener('DOMContentLoaded', () => { window.__loadedAt = Date.now(); });"
)
WARM_UP = 2  # the first rounds fill mypy's cache and Chromium's; not counted


@dataclass
class Sample:
    """One edit's figures, in milliseconds."""

    latency: float
    check: float
    build: float
    green: float  # save → the BecameGreen line on dev's stdout
    published: float  # save → the BuildResult line (printed once published)

    @property
    def overhead(self) -> float:
        """What greenloop adds around the check and the build."""
        return self.latency - (self.check + self.build)


class Dev:
    """``greenloop dev --json`` with every stdout line timestamped as it arrives."""

    def __init__(self, site: Path, cache: Path) -> None:
        env = {
            **os.environ,
            "GREENLOOP_CACHE_DIR": str(cache),
            # In its own process, as measured so far: a daemon it started would load
            # greenloop in the background while the loop is timed, and outlive the bench.
            "GREENLOOP_NO_DAEMON": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "greenloop", "dev", "--port", "0", "--json"],
            cwd=site,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        assert self.proc.stderr is not None
        self.url = ""
        deadline = time.monotonic() + TIMEOUT_S
        while not self.url and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise SystemExit(f"greenloop dev did not start: {self.proc.stderr.read()}")
            found = re.search(r"serving (http://\S+/)", line)
            self.url = found.group(1) if found else ""
        # Keep both pipes drained: a full pipe would stall the loop being measured.
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.time(), json.loads(line)))

    def next_build(self, since: float) -> tuple[float, float, BuildResult]:
        """When BecameGreen and the BuildResult were seen after ``since``, and the result."""
        green_at = 0.0
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            at, obj = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if at < since:
                continue
            if obj.get("kind") == "became_green":
                green_at = at
            elif "outcome" in obj:
                return green_at, at, BuildResult.model_validate(obj)

    def stop(self) -> None:
        """SIGTERM (a clean stop) and wait."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def last_check(site: Path, since: float) -> float:
    """The duration of the check round that finished after ``since`` (watch.json)."""
    status = status_path(site)
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            data = json.loads(status.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            data = {}  # replaced atomically, but may not exist yet
        if (data.get("last_check_at") or 0) >= since and data.get("last_check_ms") is not None:
            return float(data["last_check_ms"])
        time.sleep(0.01)
    raise SystemExit("watch.json never recorded the check of this edit")


def copy_site(into: Path) -> Path:
    """A fresh copy of the example, without any state a local run left in it."""
    site = into / "site"
    shutil.copytree(
        EXAMPLE, site, ignore=shutil.ignore_patterns(".greenloop-state", "dist", ".mypy_cache")
    )
    for leftover in (site / ".greenloop").iterdir():
        if leftover.name != "pipeline.py":
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
    return site


def measure(edits: int, chromium: str) -> tuple[list[Sample], int]:
    """Run the edits; return their samples and the configured debounce window."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="greenloop-bench-") as scratch:
        site = copy_site(Path(scratch))
        settings = Setup.load(site).config.settings
        # What `greenloop dev` waits: the settings' window if set, else dev's default.
        debounce_ms = (
            settings.debounce_ms if "debounce_ms" in settings.model_fields_set else DEV_DEBOUNCE_MS
        )
        pages = site / "pages.py"
        original = pages.read_text()
        dev = Dev(site, Path(scratch) / "cache")
        samples: list[Sample] = []
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                page = browser.new_page()
                page.set_default_timeout(TIMEOUT_S * 1000)
                page.add_init_script(LOADED_AT)
                page.goto(dev.url)
                page.wait_for_function(
                    "document.getElementById('title')?.textContent === 'Hello from greenloop'"
                )
                for n in range(WARM_UP + edits):
                    title = f"Edit number {n}"
                    time.sleep(0.3)  # a quiet tree between edits, as between a person's saves
                    saved = time.time()
                    pages.write_text(original.replace("Hello from greenloop", title))
                    page.wait_for_function(
                        f"document.getElementById('title')?.textContent === {title!r}"
                        " && window.__loadedAt !== undefined"
                    )
                    loaded_ms = float(page.evaluate("window.__loadedAt"))
                    green_at, result_at, result = dev.next_build(saved)
                    if not isinstance(result.outcome, Compiled) or result.artifact is None:
                        raise SystemExit(f"edit {n} was not a fresh build: {result.outcome}")
                    check = last_check(site, saved)
                    if n < WARM_UP:
                        continue
                    samples.append(
                        Sample(
                            latency=loaded_ms - saved * 1000,
                            check=check,
                            build=float(result.artifact.build_duration_ms),
                            green=(green_at - saved) * 1000,
                            published=(result_at - saved) * 1000,
                        )
                    )
                browser.close()
        finally:
            dev.stop()
    return samples, debounce_ms


def row(name: str, values: list[float], width: int = 34) -> str:
    """One figure's line: its median, minimum and 90th percentile."""
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return (
        f"  {name:<{width}} median {statistics.median(values):7.1f} ms"
        f"   min {ordered[0]:7.1f}   p90 {p90:7.1f}"
    )


def main() -> None:
    """Measure and print the medians (and spread) of every figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=25, help="measured edits (≥ 20)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    if args.edits < 1:
        parser.error("--edits must be positive")
    samples, debounce_ms = measure(args.edits, args.chromium)

    print(f"greenloop dev, examples/site, {len(samples)} green edits (+{WARM_UP} warm-up)")
    print(row("save -> page reloaded (latency)", [s.latency for s in samples]))
    print(row("check (verdict duration)", [s.check for s in samples]))
    print(row("build (build_duration_ms)", [s.build for s in samples]))
    print(row("overhead = latency - (check+build)", [s.overhead for s in samples]))
    print(f"    of which debounce window          {debounce_ms:7d} ms (configured wait)")
    print(row("  save -> BecameGreen on stdout", [s.green for s in samples]))
    print(row("  save -> BuildResult (published)", [s.published for s in samples]))
    print(row("  published -> page loaded", [s.latency - s.published for s in samples]))
    overhead = statistics.median(s.overhead for s in samples)
    verdict = "met" if overhead <= TARGET_OVERHEAD_MS else "MISSED"
    print(f"target: median overhead <= {TARGET_OVERHEAD_MS:.0f} ms: {verdict} ({overhead:.1f} ms)")


if __name__ == "__main__":
    main()
