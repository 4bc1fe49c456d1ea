"""`greenloop dev` end to end: real checkers, real builds, real server, real browser.

The example site is copied to a temporary folder and served by a real
`greenloop dev` process; Chromium (through Playwright) watches the page while
the test edits `pages.py` to a green change, to a red one, and back.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import TIMEOUT_MS, browser_page, require_browser

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "site"
OVERLAY = "#greenloop-overlay"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".greenloop-state", "dist"))
    return root


@pytest.fixture
def dev(site: Path, tmp_path: Path) -> Iterator[str]:
    require_browser()
    if shutil.which("mypy") is None and not Path(sys.executable).with_name("mypy").exists():
        pytest.skip("mypy is not installed")
    env = {
        **os.environ,
        "GREENLOOP_CACHE_DIR": str(tmp_path / "cache"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "greenloop", "dev", "--port", "0"],
        cwd=site,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    url = None
    deadline = time.monotonic() + 60
    while url is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        found = re.search(r"serving (http://\S+/)", line)
        url = found.group(1) if found else None
    try:
        assert url is not None, f"greenloop dev did not start: {proc.stderr.read()}"
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 130


def edit(site: Path, old: str, new: str) -> None:
    pages = site / "pages.py"
    pages.write_text(pages.read_text().replace(old, new))


def test_green_reloads_red_overlays_fix_recovers(site: Path, dev: str) -> None:
    from playwright.sync_api import expect

    with browser_page() as page:
        page.goto(dev)
        # Before the first green build the holding page waits, then reloads itself.
        expect(page.locator("#title")).to_have_text("Hello from greenloop", timeout=TIMEOUT_MS)

        edit(site, "Hello from greenloop", "Second version")
        expect(page.locator("#title")).to_have_text("Second version", timeout=TIMEOUT_MS)
        expect(page.locator(OVERLAY)).to_have_count(0)

        page.evaluate("window.__stillHere = true")
        edit(site, "VISITS: int = 3", 'VISITS: int = "three"')
        overlay = page.locator(OVERLAY)
        expect(overlay).to_be_visible(timeout=TIMEOUT_MS)
        pages = str((site / "pages.py").resolve())
        expect(overlay.locator(".greenloop-location").first).to_contain_text(f"{pages}:5:")
        expect(overlay.locator(".greenloop-source").first).to_contain_text("mypy")
        # The last green page is still shown under the overlay: no reload, old content.
        expect(page.locator("#title")).to_have_text("Second version")
        assert page.evaluate("window.__stillHere") is True

        edit(site, 'VISITS: int = "three"', "VISITS: int = 4")
        edit(site, "Second version", "Third version")
        expect(page.locator("#title")).to_have_text("Third version", timeout=TIMEOUT_MS)
        expect(page.locator(OVERLAY)).to_have_count(0)
        expect(page.locator("li")).to_have_count(4)
