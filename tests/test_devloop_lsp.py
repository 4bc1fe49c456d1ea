"""Language-server checkers: the real pyright-langserver kept warm, and one that crashes."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenloop.protocol import CheckResult, TreeState
from tests.conftest import wait_until
from tests.test_devloop_helpers import (
    PY_GREEN,
    PY_RED,
    Recorder,
    cli,
    env_with,
    looping,
    node_bin,
    python_env,
    python_project,
    write,
)

LSP_ON = "\n[tool.greenloop.checkers.pyright-lsp]\n"


_MARK = "GREENLOOP_TEST_LSP_ROOT"
"""Set to the project in the environment its servers inherit (node changes its own cwd)."""


def _servers(root: Path) -> list[int]:
    """Pids of the pyright language servers started for ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"pyright-langserver" in cmdline and f"{_MARK}={root}".encode() in environ:
            found.append(int(entry.name))
    return found


@pytest.fixture
def lsp_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", env_with(node_bin(), *python_env()["PATH"].split(":"))["PATH"])
    root = python_project(tmp_path)
    with (root / "pyproject.toml").open("a") as f:
        f.write(LSP_ON)
    monkeypatch.setenv(_MARK, str(root))
    return root


def test_check_runs_the_language_server_beside_the_other_checkers(lsp_project: Path) -> None:
    green = cli("check", cwd=lsp_project)
    assert green.returncode == 0, green.stdout + green.stderr
    assert "pyright-lsp" in green.stdout
    (lsp_project / "demo/calc.py").write_text(PY_RED)
    red = cli("check", "--json", cwd=lsp_project)
    assert red.returncode == 1, red.stdout + red.stderr
    result = CheckResult.model_validate_json(red.stdout)
    from_server = [(Path(d.path).name, d.line, d.col, d.code) for d in result.diagnostics]
    assert ("calc.py", 2, 12, "reportReturnType") in from_server
    assert {d.source for d in result.diagnostics} >= {"pyright", "mypy"}
    assert _servers(lsp_project) == []  # a one-shot check stops its server


@pytest.fixture
def watching(lsp_project: Path) -> Iterator[tuple[Path, Recorder]]:
    recorder = Recorder()
    with looping(lsp_project, recorder, 50):
        wait_until(lambda: len(recorder.verdicts) == 1, what="the first verdict")
        assert recorder.verdicts[0].tree is TreeState.GREEN
        yield lsp_project, recorder
    wait_until(lambda: not _servers(lsp_project), what="the server to stop with the watcher")


def _save(path: Path, root: Path, text: str) -> None:
    # In one step (a watcher that saw a truncation alone would check an empty file first),
    # from outside the watched tree (a temporary file in it would be one more change).
    fd, temp = tempfile.mkstemp(dir=root.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(temp, path)


def _pyright_errors(recorder: Recorder, index: int) -> list[tuple[str, int, int]]:
    return [
        (Path(d.path).name, d.line, d.col)
        for d in recorder.verdicts[index].diagnostics
        if d.source == "pyright"
    ]


def test_one_warm_server_answers_every_round(watching: tuple[Path, Recorder]) -> None:
    root, recorder = watching
    (server,) = _servers(root)
    _save(root / "demo/calc.py", root, PY_RED)
    wait_until(lambda: len(recorder.verdicts) == 2, what="the red verdict")
    assert recorder.verdicts[1].tree is TreeState.RED
    assert _pyright_errors(recorder, 1) == [("calc.py", 2, 12)]
    _save(root / "demo/calc.py", root, PY_GREEN)
    wait_until(lambda: len(recorder.verdicts) == 3, what="the green verdict")
    assert recorder.verdicts[2].tree is TreeState.GREEN
    assert _servers(root) == [server]


def test_a_server_that_died_between_rounds_is_started_again(
    watching: tuple[Path, Recorder],
) -> None:
    root, recorder = watching
    (server,) = _servers(root)
    os.kill(server, signal.SIGKILL)
    wait_until(lambda: server not in _servers(root), what="the server to die")
    _save(root / "demo/calc.py", root, PY_RED)
    wait_until(lambda: len(recorder.verdicts) == 2, what="the red verdict")
    assert _pyright_errors(recorder, 1) == [("calc.py", 2, 12)]
    (fresh,) = _servers(root)
    assert fresh != server


FRAMING = textwrap.dedent(
    """
    import json, os, sys

    def read():
        length = 0
        while (line := sys.stdin.buffer.readline().strip()):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return json.loads(sys.stdin.buffer.read(length))

    def send(message):
        body = json.dumps(message).encode()
        sys.stdout.buffer.write(b"Content-Length: %d\\r\\n\\r\\n" % len(body) + body)
        sys.stdout.buffer.flush()

    INITIALIZED = {"capabilities": {"diagnosticProvider": {"interFileDependencies": False}}}
    """
)
"""The start of a stand-in language server's script: JSON-RPC framing on stdio."""

# A language server that speaks just enough LSP, then dies when asked for diagnostics.
CRASHING_SERVER = FRAMING + textwrap.dedent(
    """
    while True:
        message = read()
        if message.get("method") == "initialize":
            send({"jsonrpc": "2.0", "id": message["id"], "result": INITIALIZED})
        elif message.get("method") == "textDocument/diagnostic":
            print("segfault in the type solver", file=sys.stderr, flush=True)
            os._exit(3)
    """
)


def test_a_server_that_crashes_mid_check_makes_the_round_red(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "server.py": CRASHING_SERVER,
            "a.py": "x = 1\n",
            "greenloop.toml": f"""\
                kinds = []
                [checkers.ok]
                command = ["{sys.executable}", "-c", "pass"]
                [checkers.crashy]
                command = ["{sys.executable}", "server.py"]
                format = "lsp"
                role = "advisory"
                """,
        },
    )
    done = cli("check", "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    result = CheckResult.model_validate_json(done.stdout)
    assert result.state is TreeState.RED
    (failure,) = result.diagnostics
    assert (failure.source, failure.code) == ("greenloop", "checker-failed")
    assert "crashy (a language server) failed" in failure.message
    assert "exit status 3" in failure.message
    assert "segfault in the type solver" in failure.message
