"""A command in its own process ends without taking the interpreter apart, and that changes
nothing: what it prints, its exit code, its atexit functions and its threads are the
interpreter's own ending's.

Each command runs twice: as ``python -m greenloop`` does, and under a tracer, which
makes :func:`greenloop._entry.leave` step aside so the interpreter ends the usual way.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_pipeline

# The traced twin of ``python -m greenloop``: a tracer that traces nothing, so the
# command runs as it does, but ends the interpreter's way.
_TRACED = (
    "import runpy, sys\n"
    "sys.settrace(lambda *args: None)\n"
    "sys.argv[0] = 'greenloop'\n"
    "runpy.run_module('greenloop', run_name='__main__', alter_sys=True)\n"
)

_PIPELINE = """
@gl.pipeline("ci")
def ci():
    talks = gl.sh("for i in $(seq 3000); do echo line $i; done", label="talks")
    talks.sh("echo bye; exit 3", label="fails")
"""


def _run(
    args: list[str], cwd: Path, *, traced: bool, stdout: int | None = None
) -> tuple[int, str, str]:
    head = [sys.executable, "-c", _TRACED] if traced else [sys.executable, "-m", "greenloop"]
    done = subprocess.run(
        [*head, *args],
        cwd=cwd,
        stdout=subprocess.PIPE if stdout is None else stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    return done.returncode, _steady(done.stdout or ""), _steady(done.stderr)


def _steady(text: str) -> str:
    """``text`` without what differs from run to run: ids and durations."""
    text = re.sub(r"\b[0-9a-f]{12}\b|\b[0-9a-f-]{36}\b", "ID", text)
    text = re.sub(r'"(at|duration_s)":[0-9.e-]+', r'"\1":T', text)
    return re.sub(r"\d+(\.\d+)?s\b", "Ts", text)


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["--help"],
        ["no-such-command"],
        ["pipelines"],
        ["run", "--format", "plain"],
        ["run", "--format", "plain", "--no-cache"],
        ["run", "--format", "json", "--no-cache"],
        ["run", "no-such-pipeline"],
    ],
    ids=lambda args: "-".join(args),
)
def test_a_command_ends_as_the_interpreter_would_end_it(project: Path, args: list[str]) -> None:
    write_pipeline(project, _PIPELINE)
    _run(["run", "--format", "plain"], project, traced=False)  # the cache: the same for both
    fast = _run(args, project, traced=False)
    assert fast == _run(args, project, traced=True)
    if "--no-cache" in args:
        code, out, _ = fast
        assert code == 1 and "line 3000" in out  # all of it, to the last line


def test_a_closed_stdout_ends_as_it_always_has(project: Path) -> None:
    write_pipeline(project, _PIPELINE)
    for args in (["--help"], ["run", "--format", "plain"]):
        results = []
        for traced in (False, True):
            read, write = os.pipe()
            os.close(read)  # nobody reads what the command prints
            try:
                results.append(_run(args, project, traced=traced, stdout=write))
            finally:
                os.close(write)
        assert results[0][0] == results[1][0], args
        assert results[0][2] == results[1][2], args


def test_threads_then_atexit_functions_finish_before_it_ends(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    script = (
        "import atexit, sys, threading\n"
        "import greenloop._entry as entry\n"
        f"marks = open({str(marks)!r}, 'w')\n"
        "go = threading.Event()\n"
        "def lines():\n"
        "    go.wait()\n"
        "    for i in range(20000):\n"
        "        marks.write(f'line {i}\\n')\n"
        "threading.Thread(target=lines).start()\n"
        "def bye():\n"
        "    marks.write('atexit\\n')\n"
        "    marks.close()\n"
        "    print('bye from atexit')  # still in stdout's buffer as the process ends\n"
        "atexit.register(bye)\n"
        "leave = entry.leave\n"
        "def late_work(stop):\n"
        "    go.set()  # the thread starts its work as the command ends\n"
        "    leave(stop)\n"
        "entry.leave = late_work\n"
        "sys.argv = ['greenloop', '--version']\n"
        "entry.main()\n"
    )
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=buffered
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("bye from atexit\n")
    written = marks.read_text().splitlines()
    assert written[-1] == "atexit"  # the thread was waited for, then atexit ran
    assert len(written) == 20001
