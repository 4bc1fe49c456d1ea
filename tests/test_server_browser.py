"""A real browser against a real dev server: reload on green, overlay on red.

The tests drive a :class:`LiveState` directly, as the dev loop would; no
checkers or builds run. Every wait is Playwright's, with a generous timeout as
a failure guard.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from greenloop.protocol.devloop import BecameGreen, BecameRed
from greenloop.server import DevServer, LiveState, serve
from tests.browser import TIMEOUT_MS, browser_page, require_browser
from tests.test_server_support import (
    diagnostic,
    failed_result,
    green_result,
    identity,
    page,
    running,
    write_site,
)

OVERLAY = "#greenloop-overlay"


@pytest.fixture
def state() -> LiveState:
    return LiveState()


@pytest.fixture
def server(state: LiveState) -> Iterator[DevServer]:
    require_browser()
    with running(state) as server:
        yield server


def publish(state: LiveState, tmp_path: Path, version: str, body: str = "") -> None:
    """Publish a site whose ``<h1>`` says ``version``, as a green build of it."""
    html = page(version).replace("</h1>", "</h1>" + body)
    site = write_site(tmp_path / version, {"index.html": html})
    state.push_state(BecameGreen(identity=identity(version)))
    result = green_result(version)
    state.push_build(result)
    state.set_artifact(site, result)


def test_reload_on_green_overlay_on_red(
    tmp_path: Path, server: DevServer, state: LiveState
) -> None:
    from playwright.sync_api import expect

    with browser_page() as browser:
        browser.goto(server.url)
        expect(browser.locator("#greenloop-waiting")).to_contain_text("first green build")

        publish(state, tmp_path, "v1")
        expect(browser.locator("h1")).to_have_text("v1", timeout=TIMEOUT_MS)
        expect(browser.locator(OVERLAY)).to_have_count(0)
        browser.evaluate("window.__sameDocument = true")

        bad = diagnostic(path="/project/src/app.py", line=12, col=5, message="undefined 'foo'")
        state.push_state(BecameRed(diagnostics=[bad]))
        overlay = browser.locator(OVERLAY)
        expect(overlay).to_be_visible(timeout=TIMEOUT_MS)
        expect(overlay.locator(".greenloop-location")).to_have_text("/project/src/app.py:12:5")
        expect(overlay.locator(".greenloop-message")).to_have_text("undefined 'foo'")
        expect(overlay.locator(".greenloop-source")).to_contain_text("ruff")
        # The last green page is still there under the overlay, not reloaded.
        expect(browser.locator("h1")).to_have_text("v1")
        assert browser.evaluate("window.__sameDocument") is True

        publish(state, tmp_path, "v2")
        expect(browser.locator("h1")).to_have_text("v2", timeout=TIMEOUT_MS)
        expect(browser.locator(OVERLAY)).to_have_count(0)
        # A full reload, not a patch of the old document.
        assert browser.evaluate("window.__sameDocument") is None


def test_overlay_lists_every_diagnostic_and_the_page_stays_usable(
    tmp_path: Path, server: DevServer, state: LiveState
) -> None:
    from playwright.sync_api import expect

    button = (
        "<button id='count' onclick='this.textContent = String(Number(this.textContent) + 1)'>"
        "0</button>"
    )
    publish(state, tmp_path, "v1", body=button)
    with browser_page() as browser:
        browser.goto(server.url)
        expect(browser.locator("h1")).to_have_text("v1")
        state.push_state(
            BecameRed(
                diagnostics=[
                    diagnostic(path="/p/b.py", line=3, col=1, message="second"),
                    diagnostic(path="/p/a.py", line=7, col=9, message="first"),
                ]
            )
        )
        overlay = browser.locator(OVERLAY)
        expect(overlay.locator(".greenloop-location")).to_have_text(["/p/a.py:7:9", "/p/b.py:3:1"])
        expect(overlay.locator(".greenloop-message")).to_have_text(["first", "second"])

        browser.locator("#count").click()  # the panel leaves the page clickable
        expect(browser.locator("#count")).to_have_text("1")

        browser.locator("#greenloop-overlay-close").click()
        expect(overlay).to_have_count(0)
        # A new red picture brings it back.
        state.push_state(BecameRed(diagnostics=[diagnostic(message="third")]))
        expect(overlay.locator(".greenloop-message")).to_have_text("third")


def test_a_failed_build_of_a_green_tree_is_shown_too(
    tmp_path: Path, server: DevServer, state: LiveState
) -> None:
    from playwright.sync_api import expect

    publish(state, tmp_path, "v1")
    with browser_page() as browser:
        browser.goto(server.url)
        expect(browser.locator("h1")).to_have_text("v1")
        state.push_build(failed_result("v2", reason="step 'build' exited 1"))
        overlay = browser.locator(OVERLAY)
        expect(overlay).to_contain_text("The last build failed")
        expect(overlay.locator(".greenloop-message")).to_have_text("step 'build' exited 1")
        expect(browser.locator("h1")).to_have_text("v1")


def test_red_before_the_first_green_shows_on_the_holding_page(
    server: DevServer, state: LiveState
) -> None:
    from playwright.sync_api import expect

    state.push_state(BecameRed(diagnostics=[diagnostic(message="not yet")]))
    with browser_page() as browser:
        browser.goto(server.url)
        expect(browser.locator("#greenloop-waiting")).to_be_visible()
        expect(browser.locator(OVERLAY).locator(".greenloop-message")).to_have_text("not yet")


def test_the_page_reconnects_after_the_server_comes_back(tmp_path: Path, state: LiveState) -> None:
    from playwright.sync_api import expect

    require_browser()
    publish(state, tmp_path, "v1")
    first = serve(state)
    port = first.port
    with browser_page() as browser:
        browser.goto(first.url)
        expect(browser.locator("h1")).to_have_text("v1")
        first.stop()
        # A restarted dev loop on the same port, already at a newer green build.
        publish(state, tmp_path, "v2")
        second = serve(state, port=port)
        try:
            expect(browser.locator("h1")).to_have_text("v2", timeout=TIMEOUT_MS)
        finally:
            second.stop()
