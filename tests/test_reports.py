"""`run --junit FILE` and `--summary FILE`, and `run --event` over the pipelines' triggers."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.conftest import cli, write_pipeline

TESTS = """\
import pytest


def test_adds():
    assert 1 + 1 == 2


def test_subtracts():
    assert 3 - 1 == 2


@pytest.mark.skip(reason="not today")
def test_later():
    pass
"""


def _project(project: Path) -> None:
    (project / "test_calc.py").write_text(TESTS)
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci")
        def ci():
            setup = gl.sh("echo ready", label="setup", cache=gl.forever())
            setup.sh("{sys.executable} -m pytest -q -p no:cacheprovider test_calc.py "
                     "--junitxml=reports/unit.xml", label="unit",
                     artifacts=["reports"], cache=gl.on_change("test_calc.py"))
            lint = gl.sh("for i in $(seq 1 80); do echo lint $i; done; "
                         "printf 'lint says\\\\033[31m red \\\\001 here\\\\n'; "
                         "exit 5", label="lint")
            lint.sh("echo never", label="after")
        """,
    )


def test_junit_has_a_testcase_per_step_and_the_suites_steps_wrote(
    project: Path, tmp_path: Path
) -> None:
    _project(project)
    report = tmp_path / "out" / "junit.xml"  # its folder is made
    for attempt in (1, 2):  # the second run answers setup and unit from the cache
        result = cli("run", "--format", "plain", "--junit", str(report), cwd=project)
        assert result.returncode == 1, result.stdout + result.stderr
        root = ET.parse(report).getroot()
        assert root.tag == "testsuites"
        ours, theirs = root.findall("testsuite")
        assert ours.get("name") == "greenloop ci"
        cases = {c.get("name"): c for c in ours.findall("testcase")}
        assert sorted(cases) == ["after", "lint", "setup", "unit"]
        assert (ours.get("tests"), ours.get("failures"), ours.get("skipped")) == ("4", "1", "1")
        failure = cases["lint"].find("failure")
        assert failure is not None and failure.get("message") == "exit 5"
        assert failure.text is not None
        tail = failure.text.splitlines()
        assert tail[0] == "lint 32" and len(tail) == 50  # the tail
        assert cases["after"].find("skipped") is not None
        cached = cases["setup"].find("system-out")
        assert (cached is not None) == (attempt == 2)
        # pytest's own suite, from the artifact the unit step declared (also when cached).
        assert theirs.get("name") == "unit: pytest"
        names = sorted(c.get("name") or "" for c in theirs.findall("testcase"))
        assert names == ["test_adds", "test_later", "test_subtracts"]
        assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("7", "1", "2")
    # The colour codes and the control character a log carried are not in the XML.
    raw = report.read_text()
    assert "lint says red  here" in raw and "\x1b" not in raw and "\x01" not in raw


def test_summary_is_markdown_shaped_like_a_job_summary(project: Path, tmp_path: Path) -> None:
    _project(project)
    summary = tmp_path / "summary.md"
    result = cli("run", "--format", "plain", "--summary", str(summary), cwd=project)
    assert result.returncode == 1
    text = summary.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("## ❌ greenloop `ci` failed in ")
    assert "4 steps: 2 passed, 1 failed, 1 skipped" in lines
    assert "| ❌ | `lint` | failed (exit 5) |" in text
    assert "| ⏭️ | `after` | skipped: lint failed |  |" in lines
    assert "| `unit` | 3 | 0 | 0 | 1 |" in lines  # pytest's counts
    fold = lines.index("<details open>")
    assert "<code>lint</code>: the last 50 lines of its log" in lines[fold + 1]
    assert lines[fold + 3] == "```text" and "lint 80" in lines[fold + 3 : fold + 60]


def test_report_paths_that_cannot_be_written_are_exit_2(project: Path, tmp_path: Path) -> None:
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo hi", label="hi")\n')
    folder = cli("run", "--junit", str(tmp_path), cwd=project)
    assert folder.returncode == 2
    assert folder.stderr.strip() == f"error: --junit {tmp_path}: is a folder, not a file"
    assert json.loads(cli("runs", "--json", cwd=project).stdout) == []  # nothing ran
    (tmp_path / "plain-file").write_text("")
    below_a_file = tmp_path / "plain-file" / "summary.md"
    late = cli("run", "--summary", str(below_a_file), cwd=project)
    assert late.returncode == 2
    assert late.stderr.startswith(f"error: cannot write --summary {below_a_file}: ")
    assert [r["status"] for r in json.loads(cli("runs", "--json", cwd=project).stdout)] == [
        "passed"
    ]


def test_event_runs_every_pipeline_it_triggers(project: Path, tmp_path: Path) -> None:
    write_pipeline(
        project,
        """
        @gl.pipeline("ci", on=["push", "pull_request"])
        def ci():
            gl.sh("echo ci", label="ci-step")

        @gl.pipeline("nightly", on="schedule")
        def nightly():
            gl.sh("echo nightly", label="nightly-step")

        @gl.pipeline("lint", on=["push"])
        def lint():
            gl.sh("exit 3", label="lint-step")
        """,
    )
    listed = json.loads(cli("pipelines", "--json", cwd=project).stdout)
    assert [(p["name"], p["on"]) for p in listed] == [
        ("ci", ["push", "pull_request"]),
        ("nightly", ["schedule"]),
        ("lint", ["push"]),
    ]
    assert "ci\t1 steps\ton push, pull_request" in cli("pipelines", cwd=project).stdout
    report = tmp_path / "junit.xml"
    result = cli("run", "--event", "push", "--json", "--junit", str(report), cwd=project)
    assert result.returncode == 1  # lint failed; ci still ran
    events = [json.loads(line) for line in result.stdout.splitlines()]
    started = [e["pipeline"] for e in events if e["type"] == "run_started"]
    assert started == ["ci", "lint"]
    suites = [s.get("name") for s in ET.parse(report).getroot().findall("testsuite")]
    assert suites == ["greenloop ci", "greenloop lint"]
    assert cli("run", "--event", "schedule", cwd=project).returncode == 0

    none = cli("run", "--event", "release", cwd=project)
    assert none.returncode == 2
    assert "no pipeline runs on 'release'" in none.stderr
    both = cli("run", "ci", "--event", "push", cwd=project)
    assert both.returncode == 2
    assert "give a pipeline or --event push, not both" in both.stderr


def test_a_bad_event_name_is_exit_2_at_its_line(project: Path) -> None:
    path = write_pipeline(
        project, '@gl.pipeline("ci", on=["Push Now"])\ndef ci():\n    gl.sh("echo", label="x")\n'
    )
    result = cli("render", cwd=project)
    assert result.returncode == 2
    assert f"{path.resolve()}:3: pipeline 'ci': event 'Push Now' is not an event name" in (
        result.stderr
    )


def test_a_failing_test_steps_own_junit_is_merged(project: Path, tmp_path: Path) -> None:
    # A failed step reports the artifacts it did write: a red test run's JUnit file is
    # what a report needs most. It is never cached.
    (project / "test_calc.py").write_text(TESTS.replace("assert 3 - 1 == 2", "assert 3 - 1 == 5"))
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci")
        def ci():
            gl.sh("{sys.executable} -m pytest -q -p no:cacheprovider test_calc.py "
                  "--junitxml=reports/unit.xml", label="unit", artifacts=["reports"])
        """,
    )
    report = tmp_path / "junit.xml"
    result = cli("run", "--format", "plain", "--junit", str(report), cwd=project)
    assert result.returncode == 1, result.stdout + result.stderr
    suites = {s.get("name"): s for s in ET.parse(report).getroot().findall("testsuite")}
    theirs = suites["unit: pytest"]
    failed = [c.get("name") for c in theirs.findall("testcase") if c.find("failure") is not None]
    assert failed == ["test_subtracts"]
    out = tmp_path / "exported"
    assert cli("artifacts", "unit", "--out", str(out), cwd=project).returncode == 0
    assert b"test_subtracts" in (out / "unit" / "reports" / "unit.xml").read_bytes()
