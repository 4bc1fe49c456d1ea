"""The app supervisor with real programs: a Starlette app under uvicorn and a plain Node server.

Each test drives :class:`AppSupervisor` as the build thread does: one
``deploy`` per green build, from a folder holding that build. The dev server
in front of it is the real one (a proxy on a loopback port), and every request
goes through it. No checkers run here; ``greenloop dev`` end to end is in
``test_dev_app_e2e.py``.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from greenloop._fs import pid_alive
from greenloop.dev.app_supervisor import AppConfig, AppSupervisor
from greenloop.server import AppHealth, AppStatus, DevServer, LiveState, serve
from tests.conftest import wait_until
from tests.test_server_support import green_result

# Guards against a hang, never measurements.
GUARD_S = 60.0

UVICORN = (sys.executable, "-m", "uvicorn", "app:app", "--port", "{port}")

PYTHON_APP = """\
import os

from starlette.applications import Starlette
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

VERSION = {version!r}
{extra}


async def home(request):
    return HTMLResponse(f"<!doctype html><html><body><h1>{{VERSION}}</h1></body></html>")


async def healthz(request):
    return PlainTextResponse("ok", status_code={health})


async def boom(request):
    return PlainTextResponse(str(1 / 0))


async def die(request):
    os._exit(3)


app = Starlette(
    routes=[Route("/", home), Route("/healthz", healthz), Route("/boom", boom), Route("/die", die)]
)
"""

NODE_APP = """\
const http = require("http");
const VERSION = "{version}";
{extra}

http
  .createServer((req, res) => {{
    try {{
      if (req.url === "/boom") {{
        null.boom();
      }}
      res.writeHead(200, {{ "content-type": "text/html; charset=utf-8" }});
      res.end(`<!doctype html><html><body><h1>${{VERSION}}</h1></body></html>`);
    }} catch (err) {{
      console.error(err.stack);
      res.writeHead(500, {{ "content-type": "text/plain" }});
      res.end("internal error");
    }}
  }})
  .listen(Number(process.env.PORT), "127.0.0.1");
"""


class Apps:
    """A supervisor, the dev server in front of it, and builds to deploy."""

    def __init__(self, tmp_path: Path, config: AppConfig, file: str, template: str) -> None:
        self.tmp = tmp_path
        self.root = tmp_path / "project"
        self.root.mkdir()
        self.file = file
        self.template = template
        self.state = LiveState()
        self.changes: list[str] = []
        self.supervisor = AppSupervisor(
            config,
            self.root,
            self.state,
            on_change=lambda status, line: self.changes.append(line),
        )
        self.server: DevServer = serve(self.state, proxy=self.supervisor.proxy)

    def source(self, version: str, extra: str = "", health: int = 200) -> str:
        """The app's file for ``version``."""
        return self.template.format(version=version, extra=extra, health=health)

    def deploy(self, version: str, extra: str = "", health: int = 200) -> bool:
        """Write build ``version`` into its own folder and deploy it, as a published build."""
        site = self.tmp / "sites" / version
        site.mkdir(parents=True)
        source = self.source(version, extra, health)
        (site / self.file).write_text(source)
        (self.root / self.file).write_text(source)  # the tree this build came from
        return self.supervisor.deploy(site, green_result(version))

    def status(self) -> AppStatus:
        """The app status the server has."""
        status = self.state.snapshot().app
        assert status is not None
        return status

    def get(self, path: str = "", **kwargs: object) -> httpx.Response:
        """A request through the proxy."""
        return httpx.get(self.server.url + path, timeout=GUARD_S, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        """Stop every app and the server."""
        self.supervisor.close()
        self.server.stop()


@pytest.fixture
def python_apps(tmp_path: Path) -> Iterator[Apps]:
    pytest.importorskip("uvicorn")
    apps = Apps(tmp_path, AppConfig(UVICORN, ready="/healthz"), "app.py", PYTHON_APP)
    try:
        yield apps
    finally:
        apps.close()


def require_node() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")


@pytest.fixture
def node_apps(tmp_path: Path) -> Iterator[Apps]:
    require_node()
    apps = Apps(tmp_path, AppConfig(("node", "server.js")), "server.js", NODE_APP)
    try:
        yield apps
    finally:
        apps.close()


def title(response: httpx.Response) -> str:
    """The version a page says it is."""
    return response.text.split("<h1>")[1].split("</h1>")[0]


def error_reported(apps: Apps) -> bool:
    """Whether the serving app's problem names an error line from its log yet."""
    current = apps.status().current
    return current is not None and current.problem is not None and current.problem.error is not None


def test_a_new_build_takes_over_once_ready_and_the_old_app_stops(python_apps: Apps) -> None:
    apps = python_apps
    assert "first green build" in apps.get().text  # nothing ready yet: the holding page
    assert apps.deploy("v1")
    first = apps.status().current
    assert first is not None and first.health is AppHealth.HEALTHY
    page = apps.get()
    assert title(page) == "v1"
    assert f'data-greenloop-artifact="{first.tree}"' in page.text
    served = apps.state.snapshot().artifact
    assert served is not None and served.tree == first.tree

    assert apps.deploy("v2")
    second = apps.status().current
    assert second is not None and second.pid != first.pid and second.port != first.port
    assert title(apps.get()) == "v2"
    assert second.ready_ms is not None and second.ready_ms > 0
    wait_until(lambda: not pid_alive(first.pid), GUARD_S, "the old app to be stopped")
    assert any(f"app {second.pid}: serving build" in line for line in apps.changes)


def test_an_app_that_crashes_at_import_never_takes_over(python_apps: Apps) -> None:
    apps = python_apps
    assert apps.deploy("v1")
    serving = apps.status().current
    assert serving is not None
    assert not apps.deploy("v2", extra='LIMIT = int("three")')
    status = apps.status()
    assert status.current == serving  # untouched: the same process, still healthy
    assert title(apps.get()) == "v1"
    failed = status.failed_start
    assert failed is not None and failed.problem is not None
    assert failed.problem.summary == "exited with code 1 before it was ready"
    assert failed.problem.error == "ValueError: invalid literal for int() with base 10: 'three'"
    assert failed.problem.location is not None
    # The project's file, not the build's copy the traceback names.
    assert failed.problem.location.path == str(apps.root / "app.py")
    assert failed.problem.location.line == 8
    assert "Traceback (most recent call last):" in failed.problem.log_tail
    assert not pid_alive(failed.pid)
    # The next good build clears it.
    assert apps.deploy("v3")
    assert apps.status().failed_start is None
    assert title(apps.get()) == "v3"


def test_an_app_that_never_becomes_ready_is_stopped_at_the_timeout(tmp_path: Path) -> None:
    config = AppConfig(UVICORN, ready="/healthz", ready_timeout_s=1.5)
    apps = Apps(tmp_path, config, "app.py", PYTHON_APP)
    try:
        assert apps.deploy("v1")
        assert not apps.deploy("v2", health=503)
        failed = apps.status().failed_start
        assert failed is not None and failed.problem is not None
        assert failed.problem.summary == "not ready after 1.5s (GET /healthz answered 503)"
        wait_until(lambda: not pid_alive(failed.pid), GUARD_S, "the unready app to be stopped")
        assert title(apps.get()) == "v1"
    finally:
        apps.close()


def test_readiness_by_command(tmp_path: Path) -> None:
    probe = (
        f'{sys.executable} -c "import urllib.request; '
        "urllib.request.urlopen('http://127.0.0.1:{port}/healthz')\""
    )
    apps = Apps(tmp_path, AppConfig(UVICORN, ready=probe), "app.py", PYTHON_APP)
    try:
        assert apps.deploy("v1")
        assert title(apps.get()) == "v1"
        assert not apps.deploy("v2", health=500)  # the command fails every time: no takeover
        assert title(apps.get()) == "v1"
    finally:
        apps.close()


def test_a_serving_app_that_answers_500_shows_its_traceback(python_apps: Apps) -> None:
    apps = python_apps
    assert apps.deploy("v1")
    assert apps.get("boom").status_code == 500

    wait_until(lambda: error_reported(apps), GUARD_S, "the traceback to reach the status")
    current = apps.status().current
    assert current is not None and current.problem is not None
    assert current.health is AppHealth.FAILING
    assert current.problem.summary == "GET /boom answered 500"
    assert current.problem.error == "ZeroDivisionError: division by zero"
    assert current.problem.location is not None
    assert (current.problem.location.path, current.problem.location.line) == (
        str(apps.root / "app.py"),
        20,
    )
    # Still serving, and a new build's app starts with a clean slate.
    assert title(apps.get()) == "v1"
    assert apps.deploy("v2")
    current = apps.status().current
    assert current is not None and current.health is AppHealth.HEALTHY and current.problem is None


def test_a_serving_app_that_dies_is_reported(python_apps: Apps) -> None:
    apps = python_apps
    assert apps.deploy("v1")
    assert apps.get("die").status_code == 502  # the proxy answers for the app that died

    def exited() -> bool:
        current = apps.status().current
        return current is not None and current.health is AppHealth.EXITED

    wait_until(exited, GUARD_S, "the exit to reach the status")
    current = apps.status().current
    assert current is not None and current.problem is not None
    assert current.problem.summary == "the app exited with code 3"
    page = apps.get(headers={"accept": "text/html"})
    assert page.status_code == 502 and "script" in page.text  # the overlay says why
    # The same build again restarts it (a dead app is not "already serving").
    site = apps.tmp / "sites" / "v1"
    assert apps.supervisor.deploy(site, green_result("v1"))
    assert title(apps.get()) == "v1"


def test_a_node_http_server(node_apps: Apps) -> None:
    apps = node_apps
    assert apps.deploy("n1")
    first = apps.status().current
    assert first is not None
    assert title(apps.get()) == "n1"
    assert apps.deploy("n2")
    assert title(apps.get()) == "n2"
    wait_until(lambda: not pid_alive(first.pid), GUARD_S, "the old node app to be stopped")

    assert not apps.deploy("n3", extra='throw new Error("boom at start");')
    failed = apps.status().failed_start
    assert failed is not None and failed.problem is not None
    assert failed.problem.error == "Error: boom at start"
    assert failed.problem.location is not None
    assert (failed.problem.location.path, failed.problem.location.line) == (
        str(apps.root / "server.js"),
        3,
    )
    assert title(apps.get()) == "n2"

    assert apps.get("boom").status_code == 500

    wait_until(lambda: error_reported(apps), GUARD_S, "the stack to reach the status")
    current = apps.status().current
    assert current is not None and current.problem is not None
    assert current.problem.error is not None and current.problem.error.startswith("TypeError:")
    assert current.problem.location is not None
    assert current.problem.location.line == 9
    assert current.problem.location.col is not None


SWAPS = 20
CLIENTS = 4
# Bounds of the load test: it stops by itself well before either.
MAX_REQUESTS = 200_000


def test_no_request_fails_during_20_swaps(python_apps: Apps) -> None:
    """Clients keep requesting through the proxy while 20 new builds take over, one by one."""
    apps = python_apps
    assert apps.deploy("v0")
    done = threading.Event()
    seen: Counter[str] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=GUARD_S) as http:
            deadline = time.monotonic() + 10 * GUARD_S
            for _ in range(MAX_REQUESTS // CLIENTS):
                if done.is_set() or time.monotonic() > deadline:
                    return
                try:
                    response = http.get(apps.server.url)
                except httpx.HTTPError as e:
                    with lock:
                        failures.append(repr(e))
                    continue
                with lock:
                    if response.status_code == 200 and "<h1>" in response.text:
                        seen[title(response)] += 1
                    else:
                        failures.append(f"{response.status_code}: {response.text[:200]}")

    clients = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in clients:
        thread.start()
    try:
        # The clients start in their own time: v0 must have answered before it goes.
        wait_until(lambda: seen["v0"] > 0, GUARD_S, "v0 to answer")
        for n in range(1, SWAPS + 1):
            assert apps.deploy(f"v{n}")
            wait_until(lambda n=n: seen[f"v{n}"] > 0, GUARD_S, f"v{n} to answer")  # type: ignore[misc]
    finally:
        done.set()
        for thread in clients:
            thread.join(GUARD_S)
    assert failures == []
    assert all(seen[f"v{n}"] > 0 for n in range(SWAPS + 1))
    total = sum(seen.values())
    print(f"{total} requests during {SWAPS} swaps, 0 failed")
