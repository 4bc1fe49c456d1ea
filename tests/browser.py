"""Headless Chromium through Playwright for tests, or a skip when it is not installed.

Debian's ``chromium`` is used as it is (``playwright install`` is never run).
With ``GREENLOOP_REQUIRE_BROWSER=1`` (CI) a missing browser fails instead of skipping.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Failure guards for Playwright's waits, in milliseconds: generous, never a measurement.
TIMEOUT_MS = 30_000


def chromium_path() -> str | None:
    """The Chromium binary to drive (``GREENLOOP_CHROMIUM``, else on PATH), or None."""
    override = os.environ.get("GREENLOOP_CHROMIUM")
    if override:
        return override if os.access(override, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_browser() -> str:
    """Chromium's path; skips the test without one, or fails when CI requires one."""
    path = chromium_path()
    missing = []
    if path is None:
        missing.append("chromium (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("playwright (pip install playwright)")
    if not missing:
        assert path is not None
        return path
    reason = "browser tests need " + " and ".join(missing)
    if os.environ.get("GREENLOOP_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + "; GREENLOOP_REQUIRE_BROWSER=1 forbids skipping")
    pytest.skip(reason)


@contextmanager
def browser_page() -> Iterator[Page]:
    """A fresh page in a fresh headless Chromium, closed afterwards."""
    executable = require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()
