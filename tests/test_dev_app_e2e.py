"""`greenloop dev` for apps end to end: real checkers, a real proxy, real apps, a real browser.

``examples/app`` (a Starlette app under uvicorn) and a plain Node ``http``
server are copied to a temporary folder and run by a real ``greenloop dev``
process; the tests edit them to green, red, green-but-crashing-at-import and
green-but-500 versions and watch what the proxy serves, what the status says
and (in Chromium) what the page shows.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from greenloop._fs import pid_alive
from tests.browser import TIMEOUT_MS, browser_page, require_browser
from tests.conftest import cli, wait_until
from tests.test_dev_faults import DevProcess, dev_env, require_mypy

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "app"
OVERLAY = "#greenloop-overlay"
# Guards against a hang, never measurements.
GUARD_S = 120.0

NODE_SERVER = """\
const http = require("http");
const TITLE = "node one";

http
  .createServer((req, res) => {
    try {
      if (req.url === "/healthz") {
        res.end("ok");
        return;
      }
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(`<!doctype html><html><body><h1 id="title">${TITLE}</h1></body></html>`);
    } catch (err) {
      console.error(err.stack);
      res.writeHead(500, { "content-type": "text/plain" });
      res.end("internal error");
    }
  })
  .listen(Number(process.env.PORT), "127.0.0.1");
"""

NODE_SETTINGS = """\
kinds = []

[checkers.syntax]
command = "node --check server.js"

[dev]
app = "node server.js"
ready = "/healthz"
"""


class Running:
    """A ``greenloop dev`` child on a project, and ways to look at it."""

    def __init__(self, root: Path, dev: DevProcess) -> None:
        self.root = root
        self.dev = dev

    def status(self) -> dict[str, Any]:
        """The server's status document."""
        document: dict[str, Any] = httpx.get(self.dev.url + "__greenloop/status").json()
        return document

    def app(self) -> dict[str, Any]:
        """``status.app``."""
        app: dict[str, Any] = self.status()["app"]
        return app

    def edit(self, file: str, old: str, new: str) -> None:
        """Replace ``old`` by ``new`` in ``file`` (which must contain it)."""
        path = self.root / file
        text = path.read_text()
        assert old in text, f"{old!r} not in {file}"
        path.write_text(text.replace(old, new))

    def until(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait until ``predicate`` holds (a guard, not a measurement)."""
        wait_until(predicate, GUARD_S, what)

    def serving(self) -> str:
        """The page's ``<h1>`` as the proxy serves it now."""
        text = httpx.get(self.dev.url, timeout=GUARD_S).text
        return text.split('id="title">')[-1].split("id='title'>")[-1].split("</h1>")[0]


def start(root: Path, tmp_path: Path) -> Iterator[Running]:
    dev = DevProcess(root, tmp_path / "cache")
    try:
        yield Running(root, dev)
    finally:
        assert dev.stop() == 130


@pytest.fixture
def python_app(tmp_path: Path) -> Iterator[Running]:
    require_mypy()
    root = tmp_path / "app"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".greenloop", "*_cache"))
    yield from start(root, tmp_path)


@pytest.fixture
def node_app(tmp_path: Path) -> Iterator[Running]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    root = tmp_path / "node"
    root.mkdir()
    (root / "server.js").write_text(NODE_SERVER)
    (root / "greenloop.toml").write_text(NODE_SETTINGS)
    yield from start(root, tmp_path)


def current(running: Running) -> dict[str, Any]:
    app = running.app()["current"]
    assert app is not None
    return dict(app)


def test_a_starlette_app_through_green_red_crashing_and_500(python_app: Running) -> None:
    run = python_app
    run.until(lambda: run.app()["current"] is not None, "the first app to serve")
    assert run.serving() == "Hello from the app"
    first = current(run)
    assert first["health"] == "healthy" and pid_alive(first["pid"])
    # `greenloop status --json` names the same process.
    run.until(
        lambda: (
            json.loads(cli("status", "--json", cwd=run.root, env=dev_env(Path())).stdout)["watcher"]
            .get("app", {})
            .get("current", {})
            .get("pid")
            == first["pid"]
        ),
        "watch.json to name the app",
    )
    text = cli("status", cwd=run.root).stdout
    assert f"app pid {first['pid']} on port {first['port']}" in text and "healthy" in text

    # Green: a new process takes over, the old one is stopped.
    run.edit("app.py", "Hello from the app", "Second version")
    run.until(lambda: run.serving() == "Second version", "the second version to serve")
    second = current(run)
    assert second["pid"] != first["pid"] and second["input_hash"] != first["input_hash"]
    run.until(lambda: not pid_alive(first["pid"]), "the first app to stop")

    # Red: nothing is built; the same process keeps serving, and pages carry the overlay.
    run.edit("app.py", "VISITS: int = 3", 'VISITS: int = "three"')
    run.until(lambda: run.status()["verdict"] == "red", "the tree to turn red")
    assert current(run)["pid"] == second["pid"]
    page = httpx.get(run.dev.url).text
    assert "Second version" in page and "/__greenloop/client.js" in page

    # Green, but the app cannot even import: it never takes over.
    run.edit("app.py", 'VISITS: int = "three"', 'VISITS: int = int("three")')
    run.until(lambda: run.app()["failed_start"] is not None, "the failed start to show")
    failed = run.app()["failed_start"]
    assert failed["problem"]["summary"] == "exited with code 1 before it was ready"
    assert failed["problem"]["error"].startswith("ValueError: invalid literal for int()")
    assert failed["problem"]["location"]["path"] == str(run.root / "app.py")
    assert failed["problem"]["location"]["line"] == 10
    assert current(run)["pid"] == second["pid"]
    assert run.serving() == "Second version"

    # Green and starts, but the page answers 500: its traceback is in the status.
    run.edit("app.py", 'VISITS: int = int("three")', "VISITS: int = 3")
    run.edit(
        "app.py",
        'listed = "".join(f"<li>{item}</li>" for item in items())',
        "listed = items()[VISITS]",
    )
    run.until(lambda: current(run)["pid"] != second["pid"], "the 500 version to take over")
    assert run.app()["failed_start"] is None
    response = httpx.get(run.dev.url, headers={"accept": "text/html"})
    assert response.status_code == 500
    assert "/__greenloop/client.js" in response.text
    run.until(lambda: (current(run)["problem"] or {}).get("error") is not None, "the traceback")
    problem = current(run)["problem"]
    assert current(run)["health"] == "failing"
    assert problem["summary"] == "GET / answered 500"
    assert problem["error"] == "IndexError: list index out of range"
    assert problem["location"] == {"path": str(run.root / "app.py"), "line": 20, "col": None}

    # Fixed: healthy again.
    run.edit(
        "app.py",
        "listed = items()[VISITS]",
        'listed = "".join(f"<li>{item}</li>" for item in items())',
    )
    run.edit("app.py", "Second version", "Third version")
    run.until(lambda: run.serving() == "Third version", "the fixed version to serve")
    assert current(run)["health"] == "healthy" and current(run)["problem"] is None


def test_a_node_http_server_through_green_red_crashing_and_500(node_app: Running) -> None:
    run = node_app
    run.until(lambda: run.app()["current"] is not None, "the first node app to serve")
    assert run.serving() == "node one"
    first = current(run)

    run.edit("server.js", "node one", "node two")
    run.until(lambda: run.serving() == "node two", "the second version to serve")
    run.until(lambda: not pid_alive(first["pid"]), "the first node app to stop")
    second = current(run)

    run.edit("server.js", 'const TITLE = "node two";', 'const TITLE = "node two"; {')
    run.until(lambda: run.status()["verdict"] == "red", "a syntax error to turn the tree red")
    assert current(run)["pid"] == second["pid"] and run.serving() == "node two"

    run.edit("server.js", 'const TITLE = "node two"; {', 'const TITLE = require("./missing");')
    run.until(lambda: run.app()["failed_start"] is not None, "the failed start to show")
    failed = run.app()["failed_start"]["problem"]
    assert "Cannot find module './missing'" in failed["error"]
    assert failed["location"]["path"] == str(run.root / "server.js")
    assert failed["location"]["line"] == 2
    assert run.serving() == "node two"

    run.edit("server.js", 'const TITLE = require("./missing");', 'const TITLE = "node three";')
    run.edit("server.js", "      res.writeHead(200", "      null.boom();\n      res.writeHead(200")
    run.until(lambda: current(run)["pid"] != second["pid"], "the 500 version to take over")
    assert httpx.get(run.dev.url).status_code == 500
    run.until(lambda: (current(run)["problem"] or {}).get("error") is not None, "the stack")
    problem = current(run)["problem"]
    assert problem["error"].startswith("TypeError: Cannot read properties of null")
    assert problem["location"]["path"] == str(run.root / "server.js")
    assert problem["location"]["line"] == 11


def test_the_browser_sees_reloads_and_the_apps_errors(python_app: Running) -> None:
    require_browser()
    from playwright.sync_api import expect

    run = python_app
    with browser_page() as page:
        page.goto(run.dev.url)
        title = page.locator("#title")
        expect(title).to_have_text("Hello from the app", timeout=TIMEOUT_MS)

        run.edit("app.py", "Hello from the app", "Second version")
        expect(title).to_have_text("Second version", timeout=TIMEOUT_MS)
        expect(page.locator(OVERLAY)).to_have_count(0)

        page.evaluate("window.__stillHere = true")
        run.edit("app.py", "VISITS: int = 3", 'VISITS: int = int("three")')
        overlay = page.locator(OVERLAY)
        expect(overlay).to_be_visible(timeout=TIMEOUT_MS)
        expect(overlay).to_contain_text("The new app did not start")
        expect(overlay.locator(".greenloop-location")).to_have_text(f"{run.root / 'app.py'}:10")
        expect(overlay.locator(".greenloop-message")).to_contain_text("ValueError")
        expect(overlay.locator(".greenloop-log")).to_contain_text("Traceback")
        # The old app's page is still there, not reloaded.
        expect(title).to_have_text("Second version")
        assert page.evaluate("window.__stillHere") is True

        run.edit("app.py", 'VISITS: int = int("three")', "VISITS: int = 3")
        run.edit(
            "app.py",
            'listed = "".join(f"<li>{item}</li>" for item in items())',
            "listed = items()[VISITS]",
        )
        # The new build takes over, the page reloads onto its 500, and says why.
        expect(overlay).to_contain_text("The app is failing", timeout=TIMEOUT_MS)
        expect(overlay.locator(".greenloop-message")).to_contain_text(
            "IndexError: list index out of range", timeout=TIMEOUT_MS
        )
        expect(overlay.locator(".greenloop-location")).to_have_text(f"{run.root / 'app.py'}:20")
        assert page.evaluate("window.__stillHere") is None

        run.edit(
            "app.py",
            "listed = items()[VISITS]",
            'listed = "".join(f"<li>{item}</li>" for item in items())',
        )
        run.edit("app.py", "Second version", "Third version")
        expect(title).to_have_text("Third version", timeout=TIMEOUT_MS)
        expect(page.locator(OVERLAY)).to_have_count(0)
        expect(page.locator("li")).to_have_count(3)
