"""``@gl.target``: reusable functions of steps, resolved by name like pytest fixtures."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli, write_pipeline

TARGETS = """
@gl.target
def deps() -> gl.Chain:
    return gl.sh("echo installed > deps.txt", label="install", cache=gl.forever())

@gl.target
def tests(deps: gl.Chain, python: str = "3.12") -> gl.Chain:
    return deps.sh(f"cat deps.txt && echo tested on {python}")

@gl.target
def lint(deps: gl.Chain) -> gl.Chain:
    return deps.sh("cat deps.txt && echo linted", label="ruff")
"""


def _steps(project: Path, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    done = cli("render", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    (pipeline,) = json.loads(done.stdout)["pipelines"]
    return {step["key"]: step for step in pipeline["steps"]}


def test_targets_resolve_by_name_and_share_what_they_ask_for(project: Path) -> None:
    write_pipeline(
        project,
        TARGETS
        + """
@gl.pipeline("ci")
def ci() -> None:
    tests(python="3.11")
    tests(python="3.12")
    tests(python="3.12")  # the same arguments: the same steps
    lint()
""",
    )
    steps = _steps(project)
    # One install for everyone who asked for deps; each target keyed by its name
    # and the arguments it was given, never by where it was called.
    assert sorted(steps) == [
        "deps.install",
        "lint.ruff",
        "tests[python=3.11]",
        "tests[python=3.12]",
    ]
    for key in ("lint.ruff", "tests[python=3.11]", "tests[python=3.12]"):
        assert steps[key]["builds_in"] == "deps.install"
    done = cli("run", "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    logs = [
        e["line"] for e in events if e["type"] == "step_log" and e["step"] == "tests[python=3.11]"
    ]
    assert logs == ["installed", "tested on 3.11"]


def test_a_key_stays_where_a_target_is_called_from(project: Path) -> None:
    write_pipeline(project, TARGETS + '@gl.pipeline("ci")\ndef ci() -> None:\n    tests()\n')
    before = _steps(project)
    write_pipeline(
        project,
        TARGETS + '@gl.pipeline("ci")\ndef ci() -> None:\n    gl.sh("echo other", label="other")\n'
        "    lint()\n    tests()\n",
    )
    after = _steps(project)
    assert before["tests"]["key"] == after["tests"]["key"] == "tests"
    assert set(after) == {"deps.install", "tests", "lint.ruff", "other"}


def test_targets_from_a_file_beside_the_pipeline_and_from_a_package(
    project: Path, tmp_path: Path
) -> None:
    # A team's building blocks, installed as a package (here: on PYTHONPATH).
    package = tmp_path / "site" / "team_ci"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import greenloop as gl\n"
        + textwrap.dedent(TARGETS)
        + textwrap.dedent(
            """
            @gl.target
            def report(tests: gl.Chain, lint: gl.Chain) -> gl.Chain:
                return gl.wait(tests, lint, continue_on_failure=True).sh("echo report")
            """
        )
    )
    # The project's own, next to its pipeline file: it overrides the package's deps.
    (project / ".greenloop" / "local_targets.py").write_text(
        "import greenloop as gl\n\n"
        "@gl.target\n"
        "def deps() -> gl.Chain:\n"
        '    return gl.sh("echo project deps > deps.txt", label="project install")\n'
    )
    write_pipeline(
        project,
        """
        from local_targets import deps  # noqa: F401  (overrides team_ci's deps by name)
        from team_ci import report

        @gl.pipeline("ci")
        def ci() -> None:
            report()
        """,
    )
    env = {"PYTHONPATH": str(tmp_path / "site")}
    steps = _steps(project, env)
    assert sorted(steps) == ["deps.project-install", "lint.ruff", "report", "tests"]
    assert steps["tests"]["builds_in"] == "deps.project-install"
    assert sorted(steps["report"]["depends_on"]) == ["lint.ruff", "tests"]
    assert steps["report"]["runs_after_failure"] is True
    done = cli("run", "--format", "plain", cwd=project, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "project deps" in done.stdout


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "@gl.target\ndef tests(deps):\n    return deps.sh('true')\n\n"
            '@gl.pipeline("ci")\ndef ci():\n    tests()\n',
            "target 'tests' asks for 'deps', but no target is named 'deps'",
        ),
        (
            "@gl.target\ndef a(b):\n    return b\n\n@gl.target\ndef b(a):\n    return a\n\n"
            '@gl.pipeline("ci")\ndef ci():\n    a()\n',
            "targets ask for each other in a cycle: a -> b -> a",
        ),
        (
            "@gl.target\ndef t(python='3.12'):\n    return gl.sh('true')\n\nt()\n",
            "target 't' can only be called inside a @gl.pipeline function or another target",
        ),
        (
            "@gl.target\ndef t(python='3.12'):\n    return gl.sh('true')\n\n"
            '@gl.pipeline("ci")\ndef ci():\n    t(pyhton="3.11")\n',
            "target 't': got an unexpected keyword argument 'pyhton'",
        ),
        (
            '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true", lable="x")\n',
            "a step takes no 'lable' (it takes artifacts, cache, cache_dirs",
        ),
        (
            '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true").sh("true", image="alpine")\n',
            "a step takes no 'image' (it takes",
        ),
    ],
)
def test_a_wrong_target_is_exit_2_naming_its_line(project: Path, body: str, message: str) -> None:
    path = write_pipeline(project, body)
    done = cli("render", cwd=project)
    assert done.returncode == 2, done.stdout
    assert message in done.stderr
    lines = path.read_text().splitlines()
    blamed = int(done.stderr.split(f"{path.resolve()}:", 1)[1].split(":", 1)[0])
    assert 0 < blamed <= len(lines), done.stderr


def test_toolchain_steps_share_one_install(project: Path) -> None:
    write_pipeline(
        project,
        '@gl.pipeline("ci")\ndef ci() -> None:\n    gl.python.lint()\n    gl.python.test()\n',
    )
    steps = _steps(project)
    assert sorted(steps) == ["python-install", "python-lint", "python-test"]
    assert (
        steps["python-test"]["builds_in"] == steps["python-lint"]["builds_in"] == "python-install"
    )
