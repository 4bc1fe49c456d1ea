"""``gl.matrix`` cells and ``wait(..., continue_on_failure=True)``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greenloop.sdk.loader import PipelineFileError, load
from tests.conftest import cli, write_pipeline

MATRIX = """
@gl.pipeline("ci")
def ci():
    tests = []
    for cell in gl.matrix(python=["3.11", "3.12"], os=["linux"]):
        deps = gl.sh("echo deps $MATRIX_PYTHON", label="deps", matrix=cell, cache=gl.forever())
        tests.append(deps.sh("echo test $MATRIX_PYTHON on $MATRIX_OS; test $MATRIX_PYTHON = 3.11",
                             label="test"))
    gl.wait(*tests, continue_on_failure=True).sh("echo report", label="report")
    gl.wait(*tests).sh("echo never", label="publish")
"""


def test_matrix_cells_are_steps_of_their_own(project: Path) -> None:
    steps = load(write_pipeline(project, MATRIX)).pipeline("ci").steps
    keys = [s.key for s in steps]
    assert keys == [
        "deps[python=3.11,os=linux]",
        "test[python=3.11,os=linux]",
        "deps[python=3.12,os=linux]",
        "test[python=3.12,os=linux]",
        "report",
        "publish",
    ]
    test = steps[1]
    assert test.env == {"MATRIX_PYTHON": "3.11", "MATRIX_OS": "linux"}
    assert test.label == "test [python=3.11,os=linux]"
    assert steps[4].runs_after_failure and not steps[5].runs_after_failure


def test_a_report_after_failed_cells_still_runs(project: Path) -> None:
    write_pipeline(project, MATRIX)
    result = cli("run", "--json", cwd=project)
    assert result.returncode == 1, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    finished = {e["step"]: e for e in events if e["type"] == "step_finished"}
    assert finished["test[python=3.11,os=linux]"]["status"] == "passed"
    assert finished["test[python=3.12,os=linux]"]["status"] == "failed"
    assert finished["report"]["status"] == "passed"
    assert finished["publish"]["status"] == "skipped"
    again = cli("run", "--json", "--only", "deps[*]", cwd=project)
    statuses = [json.loads(line) for line in again.stdout.splitlines()]
    cached = {e["step"] for e in statuses if e.get("status") == "cached"}
    assert cached == {"deps[python=3.11,os=linux]", "deps[python=3.12,os=linux]"}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("gl.matrix(python=[])", "matrix axis 'python' has no values"),
        ("gl.matrix()", "gl.matrix() needs at least one axis"),
        ('gl.matrix(python="3.11")', "needs a list of values"),
    ],
)
def test_a_bad_matrix_names_its_line(project: Path, call: str, message: str) -> None:
    path = write_pipeline(
        project, f'@gl.pipeline("ci")\ndef ci():\n    for c in {call}:\n        gl.sh("x")\n'
    )
    with pytest.raises(PipelineFileError) as err:
        load(path)
    assert err.value.where == f"{path.resolve()}:5" and message in err.value.message
    assert cli("run", cwd=project).returncode == 2
