"""Shared helpers for the dev-loop tests: projects, real checker programs, the CLI.

Checker programs come from the machine (cargo), this virtualenv (ruff, mypy)
or an npm install cached in the temp folder (tsc, pyright). A missing one
skips its tests, unless GREENLOOP_REQUIRE_CHECKERS=1 (CI), where it fails them.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from greenloop.devloop.loop import Listener, Verdict, WatchLoop
from greenloop.devloop.rounds import Setup
from greenloop.protocol import StateEvent

VENV_BIN = Path(sys.executable).parent
NODE_TOOLS = Path(
    os.environ.get("GREENLOOP_TEST_NODE_TOOLS")
    or Path(tempfile.gettempdir()) / "greenloop-test-node-tools-v1"
)
"""Where the npm checkers (tsc, pyright, eslint, biome) are installed once (CI may
pre-install them there)."""
NODE_PACKAGES = (
    "typescript@5",
    "pyright@1",
    "eslint@9",
    "@eslint/js@9",
    "typescript-eslint@8",
    "@biomejs/biome@2",
)
_JS_LINTER_PACKAGES = ("eslint", "@eslint/js", "typescript-eslint", "@biomejs/biome")
"""What a fixture project's own eslint config imports, and the linters themselves."""
TIMEOUT = 120.0
"""A failure guard only: nothing here is expected to take anywhere near this long."""

_ENTRY = textwrap.dedent(
    """
    import sys

    import click

    from greenloop.cli import main
    from greenloop.cli._devloop import COMMANDS

    # Until the dev-loop commands are registered on `greenloop`, serve them from a bare group.
    known = main.get_command(click.Context(main), "watch") is not None
    group = main if known else click.Group("greenloop", commands={c.name: c for c in COMMANDS})
    group(sys.argv[1:], prog_name="greenloop")
    """
)


def required() -> bool:
    """True when missing checker programs must fail the tests instead of skipping them."""
    return os.environ.get("GREENLOOP_REQUIRE_CHECKERS") == "1"


def need(program: str | None, name: str) -> str:
    """``program`` when found; otherwise skip (or fail, when checkers are required)."""
    if program is None:
        message = f"{name} is not installed here"
        if required():
            pytest.fail(f"{message} and GREENLOOP_REQUIRE_CHECKERS=1")
        pytest.skip(message)
    return program


def cargo() -> str:
    """Path of cargo, or skip."""
    found = shutil.which("cargo") or _existing(Path.home() / ".cargo" / "bin" / "cargo")
    return need(found, "cargo")


def node_bin() -> Path:
    """A folder with tsc and pyright from npm (installed once into the temp folder), or skip."""
    bin_dir = NODE_TOOLS / "node_modules" / ".bin"
    if not all((bin_dir / p).exists() for p in ("tsc", "pyright")):
        _npm_install()
    need(shutil.which("node"), "node")
    return bin_dir


def node_modules() -> Path:
    """A ``node_modules`` with tsc, eslint (and the configs a project imports) and biome, or skip.

    A fixture project links it as its own ``node_modules``, as ``npm install`` would leave it.
    """
    folder = NODE_TOOLS / "node_modules"
    if not all((folder / p / "package.json").exists() for p in _JS_LINTER_PACKAGES):
        _npm_install()
    node_bin()
    return folder


def _npm_install() -> None:
    """npm-install every package of ``NODE_PACKAGES`` into ``NODE_TOOLS``, or skip."""
    npm = need(shutil.which("npm"), "npm")
    NODE_TOOLS.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NODE_TOOLS), *NODE_PACKAGES],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        need(None, f"the npm checkers (npm install failed: {done.stderr.strip()[-500:]})")


def env_with(*bin_dirs: Path | str, path: str | None = None) -> dict[str, str]:
    """The environment with ``bin_dirs`` in front of PATH (or instead of it, given ``path``)."""
    env = dict(os.environ)
    rest = os.environ.get("PATH", "") if path is None else path
    env["PATH"] = os.pathsep.join([*(str(d) for d in bin_dirs), rest])
    return env


def python_env() -> dict[str, str]:
    """An environment where this virtualenv's ruff and mypy are on PATH."""
    return env_with(VENV_BIN)


def write(root: Path, files: dict[str, str]) -> None:
    """Write ``files`` (relative path → text) under ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def custom_checker(name: str, script: str) -> str:
    """``greenloop.toml`` text: no detected kinds, one checker running ``python SCRIPT``."""
    return f'kinds = []\n[checkers.{name}]\ncommand = ["{sys.executable}", "{script}"]\n'


PY_GREEN = "def double(a: int) -> int:\n    return a * 2\n"
PY_RED = "def double(a: int) -> str:\n    return a * 2\n"
"""mypy: line 2, column 12, return-value."""


def python_project(root: Path) -> Path:
    """A small, green Python project checked by ruff (rules F) and mypy (strict)."""
    write(
        root,
        {
            "pyproject.toml": """\
                [project]
                name = "demo"
                version = "0"

                [tool.mypy]
                strict = true

                [tool.ruff.lint]
                select = ["F"]
                """,
            "demo/__init__.py": "",
            "demo/calc.py": PY_GREEN,
        },
    )
    return root


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``greenloop ARGS`` in ``cwd`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-c", _ENTRY, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Background:
    """``greenloop ARGS`` running in the background, its stdout lines queued for the test."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ENTRY, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_line(self, predicate: Callable[[str], bool], timeout: float = TIMEOUT) -> str:
        """The next stdout line satisfying ``predicate`` (lines before it are kept in seen)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.proc.poll() is not None and self.lines.empty()):
                stderr = self.proc.stderr.read() if self.proc.poll() is not None else ""
                raise AssertionError(
                    f"no matching line; saw {self.seen!r}; exit {self.proc.poll()}; {stderr}"
                )
            try:
                line = self.lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            self.seen.append(line)
            if predicate(line):
                return line

    def wait_event(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next JSON line whose ``kind`` is ``kind``."""
        line = self.wait_line(lambda text: event_kind(text) == kind, timeout)
        event: dict[str, Any] = json.loads(line)
        return event

    def rest(self) -> list[str]:
        """Once the process has exited: the stdout lines no ``wait_line`` has taken yet."""
        self._reader.join(TIMEOUT)
        lines = []
        while not self.lines.empty():
            lines.append(self.lines.get_nowait())
        return lines

    def stop(self) -> int:
        """SIGTERM it and wait for it to exit; its exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=TIMEOUT)

    def close(self) -> None:
        """Make sure it is gone (for teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def event_kind(line: str) -> str | None:
    """The ``kind`` of a JSON-lines event, None for any other line."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value.get("kind") if isinstance(value, dict) else None


class Recorder(Listener):
    """Keeps every round, verdict and event a watch loop reports (thread-safe)."""

    def __init__(self) -> None:
        self.rounds: list[frozenset[str]] = []
        self.verdicts: list[Verdict] = []
        self.seen: list[StateEvent] = []
        self.lock = threading.Lock()

    def checking(self, changed: frozenset[str]) -> None:
        with self.lock:
            self.rounds.append(changed)

    def events(self, events: list[StateEvent]) -> None:
        with self.lock:
            self.seen.extend(events)

    def verdict(self, verdict: Verdict) -> None:
        with self.lock:
            self.verdicts.append(verdict)

    def edges(self) -> list[str]:
        """The kinds of the edge events so far (file verdicts left out)."""
        with self.lock:
            return [e.kind for e in self.seen if e.kind != "file_verdict"]


@contextlib.contextmanager
def looping(
    root: Path, listener: Listener, debounce_ms: int
) -> Iterator[tuple[WatchLoop, threading.Thread]]:
    """A watch loop on ``root`` running in a thread; stopped, and its end awaited, on exit."""
    stop = threading.Event()
    loop = WatchLoop(root, Setup.load(root), listener, stop, debounce_ms=debounce_ms)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        yield loop, thread
    finally:
        stop.set()
        thread.join(TIMEOUT)
    assert not thread.is_alive(), "the watch loop did not stop"


def _existing(path: Path) -> str | None:
    return str(path) if path.exists() else None


GATED_CHECKER = """
import os, pathlib, sys, time
state = pathlib.Path(sys.argv[1])
run = len(list(state.glob("started-*")))
(state / "pid.tmp").write_text(str(os.getpid()))
os.replace(state / "pid.tmp", state / f"started-{run}")  # never seen half-written
deadline = time.monotonic() + 300  # a guard, so a failed test leaves nothing behind for long
while not (state / "gate").exists() and time.monotonic() < deadline:
    time.sleep(0.02)
(state / f"finished-{run}").write_text("")
"""
"""A clean, silent checker script (argv[1] = a state folder outside the tree): it records
``started-N`` with its pid, then finishes only while ``STATE/gate`` exists."""
