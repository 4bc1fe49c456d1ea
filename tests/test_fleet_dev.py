"""``greenloop dev`` hosted by ``greenloop serve``: real git worktrees, mypy, builds, a browser.

The example site is committed to a git repository with a second worktree;
one ``serve`` watches both, and ``dev`` in a worktree asks it to build,
publish and serve that worktree's green trees instead of running a loop of
its own.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from greenloop.fleet.place import SERVE_DIR_ENV, ServePlace, common_dir
from tests.browser import TIMEOUT_MS, browser_page, require_browser
from tests.conftest import wait_until
from tests.test_devloop_helpers import TIMEOUT, Background, cli, python_env

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "site"
OVERLAY = "#greenloop-overlay"


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    if shutil.which("mypy", path=python_env()["PATH"]) is None:
        pytest.skip("mypy is not installed")
    # A short folder of its own: a Unix socket's path must stay under ~100 bytes.
    folder = tempfile.mkdtemp(prefix="gls-")
    monkeypatch.setenv(SERVE_DIR_ENV, folder)  # where this process looks for the socket too
    yield {
        **python_env(),
        SERVE_DIR_ENV: folder,
        "GREENLOOP_CACHE_DIR": str(tmp_path / "cache"),
    }
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, Path]:
    """The site's main worktree and a second one."""
    main = tmp_path / "main"
    shutil.copytree(EXAMPLE, main, ignore=shutil.ignore_patterns(".greenloop-state", "dist"))
    _git("init", "-q", cwd=main)
    _git("add", "-A", cwd=main)
    _git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "site", cwd=main)
    _git("worktree", "add", "-q", str(tmp_path / "second"), cwd=main)
    return main.resolve(), (tmp_path / "second").resolve()


@pytest.fixture
def server(repo: tuple[Path, Path], env: dict[str, str]) -> Iterator[Background]:
    main, _ = repo
    proc = Background("serve", "--jobs", "1", cwd=main, env=env)
    place = ServePlace.of(common_dir(main) or main)
    try:
        wait_until(place.socket.exists, what="the serve socket")
        yield proc
    finally:
        proc.close()


def _dev(root: Path, env: dict[str, str], *flags: str) -> tuple[Background, str]:
    """``greenloop dev --json`` in ``root`` and the URL it serves on."""
    proc = Background("dev", "--port", "0", "--json", *flags, cwd=root, env=env)
    assert proc.proc.stderr is not None
    first = proc.proc.stderr.readline()
    found = re.search(r"serving (http://\S+/) .*in greenloop serve", first)
    assert found is not None, f"dev did not start in serve: {first}{proc.proc.stderr.read()}"
    return proc, found.group(1)


def _build(proc: Background) -> dict[str, Any]:
    """The next build result ``dev --json`` prints."""
    line = proc.wait_line(lambda text: '"input_hash"' in text and '"outcome"' in text)
    result: dict[str, Any] = json.loads(line)
    return result


def _edit(root: Path, old: str, new: str) -> None:
    pages = root / "pages.py"
    text = pages.read_text()
    assert old in text
    pages.write_text(text.replace(old, new))


def _port_open(url: str) -> bool:
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_dev_in_a_served_worktree_builds_publishes_and_reloads_from_the_servers_loop(
    repo: tuple[Path, Path], env: dict[str, str], server: Background
) -> None:
    require_browser()
    from playwright.sync_api import expect

    main, second = repo
    dev, url = _dev(main, env)
    try:
        assert _build(dev)["outcome"]["kind"] in ("compiled", "deduplicated")
        # One session a worktree: a second `dev` there is refused, naming why.
        again = cli("dev", "--port", "0", cwd=main, env=env)
        assert again.returncode == 2
        assert "already runs on" in again.stderr

        with browser_page() as page:
            page.goto(url)
            expect(page.locator("#title")).to_have_text("Hello from greenloop", timeout=TIMEOUT_MS)

            page.evaluate("window.__stillHere = true")
            _edit(main, "VISITS: int = 3", 'VISITS: int = "three"')
            overlay = page.locator(OVERLAY)
            expect(overlay).to_be_visible(timeout=TIMEOUT_MS)
            expect(overlay.locator(".greenloop-source").first).to_contain_text("mypy")
            # The last green page stays under the overlay; the other worktree stays green.
            expect(page.locator("#title")).to_have_text("Hello from greenloop")
            assert page.evaluate("window.__stillHere") is True
            assert cli("check", cwd=second, env=env).returncode == 0

            _edit(main, 'VISITS: int = "three"', "VISITS: int = 4")
            _edit(main, "Hello from greenloop", "Second version")
            expect(page.locator("#title")).to_have_text("Second version", timeout=TIMEOUT_MS)
            expect(page.locator(OVERLAY)).to_have_count(0)
            expect(page.locator("li")).to_have_count(4)
        # The server's status file records the session's builds.
        status = json.loads(cli("status", "--json", cwd=main, env=env).stdout)
        assert status["watcher"]["last_build"]["published"] is True
    finally:
        code = dev.stop()
        dev.close()
    assert code == 130
    # The session ended with its `dev`; the worktree is still served.
    wait_until(lambda: not _port_open(url), what="the dev server to close")
    assert cli("check", cwd=main, env=env).returncode == 0
    assert server.proc.poll() is None


def test_each_worktree_gets_its_own_build_and_bad_flags_are_refused_as_alone(
    repo: tuple[Path, Path], env: dict[str, str], server: Background
) -> None:
    main, second = repo
    refused = cli("dev", "--port", "0", "--ready", "/health", cwd=main, env=env)
    assert refused.returncode == 2
    assert "--ready needs an app" in refused.stderr

    _edit(second, "Hello from greenloop", "The second worktree")
    one, one_url = _dev(main, env)
    two, two_url = _dev(second, env)
    try:
        assert _build(one)["outcome"]["kind"] in ("compiled", "deduplicated")
        assert _build(two)["outcome"]["kind"] == "compiled"
        assert "Hello from greenloop" in httpx.get(one_url, timeout=TIMEOUT).text
        assert "The second worktree" in httpx.get(two_url, timeout=TIMEOUT).text
        # A server that stops ends every session it hosts: `dev` says so, exit 2.
        assert server.stop() == 130
        assert one.proc.wait(timeout=TIMEOUT) == 2
        assert two.proc.wait(timeout=TIMEOUT) == 2
        assert one.proc.stderr is not None
        assert "greenloop serve" in one.proc.stderr.read()
    finally:
        one.close()
        two.close()
    assert not _port_open(one_url)


def test_a_malformed_dev_request_gets_a_setup_error(
    repo: tuple[Path, Path], env: dict[str, str], server: Background
) -> None:
    main, _ = repo
    place = ServePlace.of(common_dir(main) or main)
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(TIMEOUT)
        conn.connect(str(place.socket))
        request = {"op": "dev", "worktree": str(main), "dev": {"port": "eighty"}}
        conn.sendall(json.dumps(request).encode() + b"\n")
        answer = json.loads(conn.makefile().readline())
    assert "malformed dev request" in answer["setup_error"]
    assert server.proc.poll() is None  # it lives on after a bad request
