"""A spare loader (forked ahead by a command forked from the daemon) loads exactly as
a loader forked at load time: the same document, the same errors, and the file sees
the process as it is when it is loaded, not as it was when the spare was forked."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from greenloop.daemon import spare
from greenloop.sdk import loader
from greenloop.sdk.loader import PipelineFileError, hand_over, load
from tests.conftest import write_pipeline

_READS_ITS_PROCESS = """\
import os, sys

@gl.pipeline("ci", env={"X": os.environ.get("SPARE_X", "unset"), "CWD": os.getcwd(),
                        "ARGV": " ".join(sys.argv[1:])})
def ci():
    gl.sh("true", label="t")
"""


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


def _until(predicate: object) -> None:
    deadline = time.monotonic() + 60  # a guard against a hang, not a measurement
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_the_file_sees_the_process_as_it_is_at_load_time(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_pipeline(project, _READS_ITS_PROCESS)
    hand_over(spare.start())
    monkeypatch.setenv("SPARE_X", "set after the fork")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["greenloop", "run", "ci"])
    document = load(path)
    assert loader._spare is None  # used up
    env = document.pipelines[0].env
    assert env == {"X": "set after the fork", "CWD": str(tmp_path), "ARGV": "run ci"}
    assert document == load(path)  # the same as a loader forked now


def test_errors_name_the_file_and_line_as_ever(project: Path) -> None:
    path = write_pipeline(project, "raise RuntimeError('boom')\n")
    hand_over(spare.start())
    with pytest.raises(PipelineFileError) as spared:
        load(path)
    with pytest.raises(PipelineFileError) as usual:
        load(path)
    assert (spared.value.message, spared.value.where) == (usual.value.message, usual.value.where)
    assert spared.value.where == f"{path}:3"


def test_a_file_that_ends_its_process_is_named_as_ever(project: Path) -> None:
    path = write_pipeline(project, "import os\nos._exit(3)\n")
    hand_over(spare.start())
    with pytest.raises(PipelineFileError, match=r"ended the process .* \(exit status 3\)"):
        load(path)


def test_a_spare_that_is_gone_or_interrupted_is_done_without(project: Path) -> None:
    path = write_pipeline(project, _READS_ITS_PROCESS)
    expected = load(path)
    # As in a terminal (a background job may have inherited SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _each_way(path, expected)
    finally:
        signal.signal(signal.SIGINT, previous)


def _each_way(path: Path, expected: object) -> None:
    for how in (signal.SIGKILL, signal.SIGINT):
        ahead = spare.start()
        os.kill(ahead[0], how)
        _until(lambda pid=ahead[0]: _zombie(pid))
        hand_over(ahead)
        assert load(path) == expected


def test_an_unused_spare_leaves_when_its_command_does(project: Path) -> None:
    pid, request, answer = spare.start()
    os.close(request)  # what the command's exit does
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.read(answer, 100) == b""
    os.close(answer)


def test_only_commands_that_load_want_one() -> None:
    assert spare.wanted(["greenloop", "run", "ci"])
    assert not spare.wanted(["greenloop", "--version"])
    assert not spare.wanted(["greenloop"])
    assert not spare.wanted(["greenloop", "daemon", "status"])


def test_a_spare_forked_ahead_becomes_its_command_then_loads_as_ever(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_pipeline(project, 'print("from the file")\n' + _READS_ITS_PROCESS)
    ahead = spare.fork_ahead(())
    # The command's run request and stdio come after the fork, as in the daemon.
    err_r, err_w = os.pipe()
    run = {
        "argv": ["greenloop", "run"],
        "cwd": str(project),
        "env": dict(os.environ),
        "umask": 0o22,
        "path0": sys.path[0],
    }
    hand_over(spare.ready(ahead, run, [0, 1, err_w]))
    os.close(err_w)
    monkeypatch.setenv("SPARE_X", "set at load time")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["greenloop", "run", "ci"])
    document = load(path)
    assert loader._spare is None  # used up
    assert document.pipelines[0].env == {
        "X": "set at load time",
        "CWD": str(tmp_path),
        "ARGV": "run ci",
    }
    # What the file prints goes to the stderr its command was given.
    with os.fdopen(err_r) as printed:
        assert printed.read() == "from the file\n"


def test_a_spare_forked_ahead_says_which_pages_it_wrote_once_it_has_answered(
    project: Path,
) -> None:
    path = write_pipeline(project, _READS_ITS_PROCESS)
    told_r, told_w = os.pipe()
    ahead = spare.fork_ahead((), tell=told_w)
    os.close(told_w)
    run = {"argv": ["greenloop", "run"], "cwd": os.getcwd(), "env": dict(os.environ)}
    hand_over(spare.ready(ahead, {**run, "umask": 0o22, "path0": sys.path[0]}, [0, 1, 2]))
    assert load(path) == load(path)  # the second one forked as ever
    with os.fdopen(told_r, "rb") as told:
        data = told.read()  # to its end: the spare hangs up once it has told
    assert data and len(data) % 16 == 0  # start and length of each run of pages


def test_a_spare_forked_ahead_that_is_not_wanted_leaves_and_is_reaped() -> None:
    ahead = spare.fork_ahead(())
    spare.dismiss(ahead)
    _until(lambda: not Path(f"/proc/{ahead.pid}").exists())


def test_a_spare_forked_ahead_that_is_gone_is_done_without(project: Path) -> None:
    path = write_pipeline(project, _READS_ITS_PROCESS)
    expected = load(path)
    ahead = spare.fork_ahead(())
    os.kill(ahead.pid, signal.SIGKILL)
    _until(lambda: _zombie(ahead.pid))
    run = {"argv": ["greenloop", "run"], "cwd": os.getcwd(), "env": dict(os.environ)}
    hand_over(spare.ready(ahead, {**run, "umask": 0o22, "path0": sys.path[0]}, [0, 1, 2]))
    assert load(path) == expected
