"""``greenloop init --from-github-actions``: workflows shaped like real projects' become
pipeline files that render to their jobs' steps, order, cells, services and secrets,
pass ruff and ``mypy --strict`` as written, and (the shell-only one) run green."""

from __future__ import annotations

import ast
import itertools
import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenloop.cli._pysource import INDENT, Call, Field, Str, literal, render, text
from tests.conftest import cli
from tests.test_devloop_helpers import VENV_BIN

FIXTURES = Path(__file__).parent / "fixtures" / "github_actions"
ACTIVATE = 'export PATH="$PWD/.venv/bin:$PATH"; '
"""What begins each step after a job's setup-python: its virtualenv first on PATH."""
WORKFLOWS = sorted(p.stem for p in FIXTURES.glob("*.yml"))


def _translate(tmp_path: Path, name: str) -> tuple[Path, dict[str, Any]]:
    """A project translated from fixture ``name``: its folder and init's --json answer."""
    project = tmp_path / name
    project.mkdir()
    result = cli(
        "init", "--from-github-actions", str(FIXTURES / f"{name}.yml"), "--json", cwd=project
    )
    assert result.returncode == 0, result.stderr
    return project, json.loads(result.stdout)


def _pipeline(project: Path) -> dict[str, Any]:
    rendered = cli("render", cwd=project)
    assert rendered.returncode == 0, rendered.stderr
    pipelines = json.loads(rendered.stdout)["pipelines"]
    assert [p["name"] for p in pipelines] == ["ci"]
    return dict(pipelines[0])


def _steps(pipeline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["key"]: s for s in pipeline["steps"]}


def _clean(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"


def _secrets(step: dict[str, Any]) -> dict[str, str]:
    return {use["env"]: use["name"] for use in step["secrets"]}


@pytest.mark.parametrize("name", WORKFLOWS)
def test_the_pipeline_passes_ruff_and_mypy_strict_as_written(tmp_path: Path, name: str) -> None:
    project, _ = _translate(tmp_path, name)
    path = str(project / ".greenloop" / "pipeline.py")
    ruff = str(VENV_BIN / "ruff")
    _clean([ruff, "check", "--no-cache", path], project)
    _clean([ruff, "format", "--no-cache", "--check", path], project)
    _clean([str(VENV_BIN / "mypy"), "--strict", "--no-incremental", path], project)


def test_a_python_library_matrix_and_lint_job(tmp_path: Path) -> None:
    project, answer = _translate(tmp_path, "python-lib")
    pipeline = _pipeline(project)
    steps = _steps(pipeline)
    assert pipeline["on"] == ["push", "pull_request"]
    assert pipeline["env"] == {
        "FORCE_COLOR": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "CI": "true",
    }
    # The lint job: one chain, in the image of its setup-python, pip's cache kept. A
    # virtualenv stands in for setup-python's Python, first on the later steps' PATH.
    assert steps["lint.python-virtualenv"]["image"] == "python:3.12-slim"
    assert "-m venv .venv" in steps["lint.python-virtualenv"]["command"]
    assert steps["lint.install-linters"]["builds_in"] == "lint.python-virtualenv"
    assert steps["lint.ruff"]["builds_in"] == "lint.install-linters"
    assert steps["lint.mypy"]["builds_in"] == "lint.ruff"
    assert steps["lint.ruff"]["command"] == (
        f"{ACTIVATE}set -e\nruff check .\nruff format --check ."
    )
    assert [c["path"] for c in steps["lint.mypy"]["cache_dirs"]] == ["~/.cache/pip"]
    # The test job: a cell per Python version (the runner axis is one machine here;
    # 3.10 is excluded on windows only, so it stays), each its own chain.
    versions = ["3.10", "3.11", "3.12", "3.13"]
    for version in versions:
        venv = steps[f"test.python-virtualenv[python_version={version}]"]
        assert venv["image"] == f"python:{version}-slim"
        assert venv["env"]["MATRIX_PYTHON_VERSION"] == version
        install = steps[f"test.install-dependencies[python_version={version}]"]
        assert install["builds_in"] == venv["key"]
        assert install["timeout_seconds"] == 1200
        tests = steps[f"test.run-tests[python_version={version}]"]
        assert tests["builds_in"] == install["key"]
        assert tests["command"] == f"{ACTIVATE}python -m pytest --cov=src --cov-report=xml -q"
    assert len(steps) == 4 + 3 * len(versions)
    assert answer["not_translated"] == [
        'job test, step "Upload coverage": uses codecov/codecov-action@v4 (with: token, files)'
    ]
    source = (project / ".greenloop" / "pipeline.py").read_text()
    assert '# - job test, step "Upload coverage": uses codecov/codecov-action@v4' in source
    assert "# not translated: uses codecov/codecov-action@v4 (with: token, files)" in source


def test_a_node_app_over_two_node_versions(tmp_path: Path) -> None:
    project, answer = _translate(tmp_path, "node-app")
    steps = _steps(_pipeline(project))
    for major in ("18", "20"):
        cell = f"[node_version={major}.x]"
        assert steps[f"build.npm-ci{cell}"]["image"] == f"node:{major}-slim"
        chain = ["build.npm-ci", "build.npm-run-lint", "build.npm-test-watchall-false"]
        chain += ["build.npm-run-build-if-present"]
        for parent, child in itertools.pairwise(chain):
            assert steps[child + cell]["builds_in"] == parent + cell
        assert steps[f"build.npm-test-watchall-false{cell}"]["env"]["NODE_OPTIONS"] == (
            "--max-old-space-size=4096"
        )
        assert {c["name"]: c["path"] for c in steps[f"build.npm-ci{cell}"]["cache_dirs"]} == {
            "npm": "~/.npm"
        }
    assert answer["not_translated"] == [
        "job build, step 7: uses actions/upload-artifact@v4 (with: name, path)"
    ]


def test_a_django_app_with_postgres_redis_and_secrets(tmp_path: Path) -> None:
    project, answer = _translate(tmp_path, "django-postgres")
    pipeline = _pipeline(project)
    steps = _steps(pipeline)
    services = {s["name"]: s for s in pipeline["services"]}
    assert services["postgres"]["image"] == "postgres:16"
    assert services["postgres"]["ports"] == [5432]
    assert services["postgres"]["ready"] == "pg_isready -U django"
    assert services["postgres"]["env"] == {"POSTGRES_USER": "django", "POSTGRES_DB": "app_test"}
    assert _secrets(services["postgres"]) == {"POSTGRES_PASSWORD": "DB_PASSWORD"}
    # No --health-cmd: GitHub does not wait for redis, and neither does the pipeline.
    assert services["redis"]["ready"] == "true"
    test_steps = ["test.install-dependencies", "test.migrate", "test.run-tests"]
    for key in test_steps:
        assert steps[key]["services"] == ["postgres", "redis"]
        assert _secrets(steps[key])["DJANGO_SECRET_KEY"] == "DJANGO_SECRET_KEY"
        assert steps[key]["env"]["DJANGO_SETTINGS_MODULE"] == "app.settings.ci"
    assert _secrets(steps["test.migrate"])["DATABASE_PASSWORD"] == "DB_PASSWORD"
    assert steps["test.run-tests"]["timeout_seconds"] == 900
    assert steps["test.python-virtualenv"]["image"] == "python:3.12-slim"
    assert steps["test.install-dependencies"]["builds_in"] == "test.python-virtualenv"
    # The deploy job: after the tests, its token a secret in the variable of its name.
    deploy = steps["deploy.deploy"]
    assert deploy["depends_on"] == ["test.run-tests"] and deploy["builds_in"] is None
    assert _secrets(deploy) == {"DEPLOY_TOKEN": "DEPLOY_TOKEN"}
    assert "Bearer ${DEPLOY_TOKEN}" in deploy["command"] and "secrets." not in deploy["command"]
    missed = "\n".join(answer["not_translated"])
    assert "${{ github.sha }}" in missed
    assert "if: github.ref == 'refs/heads/main'" in missed
    assert "steps get the port as $POSTGRES_PORT" in missed


def test_a_release_workflow_with_needs_chains_and_untranslatable_actions(tmp_path: Path) -> None:
    project, answer = _translate(tmp_path, "release")
    steps = _steps(_pipeline(project))
    wheel = "test-wheel.pip-install-dist-whl-python-c-import-myl"
    docs = "docs.pip-install-r-docs-requirements-txt"
    venv = "build.python-virtualenv"
    assert set(steps) == {
        venv,
        "build.read-the-version",
        "build.build",
        wheel,
        docs,
        "report.summary",
    }
    assert steps["build.read-the-version"]["builds_in"] == venv
    assert steps["build.build"]["builds_in"] == "build.read-the-version"
    assert steps[venv]["image"] == "python:3-slim"
    assert steps[wheel]["depends_on"] == steps[docs]["depends_on"] == ["build.build"]
    # publish and docker have no run: steps: report waits for what they wait for, and
    # (if: always()) runs whatever those did.
    report = steps["report.summary"]
    assert report["depends_on"] == [wheel, docs] and report["runs_after_failure"]
    missed = answer["not_translated"]
    for action in (
        "actions/upload-artifact@v4",
        "actions/download-artifact@v4",
        "pypa/gh-action-pypi-publish@release/v1",
        "docker/setup-buildx-action@v3",
        "docker/login-action@v3",
        "docker/build-push-action@v6",
    ):
        assert any(f"uses {action}" in m for m in missed), action
    assert any("$GITHUB_OUTPUT" in m for m in missed)
    assert any("${{ needs.publish.result }}" in m for m in missed)
    source = (project / ".greenloop" / "pipeline.py").read_text()
    for item in missed:
        assert f"# - {item}" in source


def test_odd_shapes_are_translated_or_named(tmp_path: Path) -> None:
    project, answer = _translate(tmp_path, "odd-shapes")
    pipeline = _pipeline(project)
    steps = _steps(pipeline)
    # A container job: its image, its env; the workflow's default working-directory.
    install = steps["list.install"]
    assert install["image"] == "python:3.11-bookworm"
    assert install["env"]["PYTHONDONTWRITEBYTECODE"] == "1"
    assert install["command"] == "cd app && pip install --no-cache-dir -r requirements.txt"
    # A workflow env secret reaches every job's first step (pipeline env is plain).
    assert _secrets(install) == {"TOKEN": "API_TOKEN"}
    assert "TOKEN" not in pipeline["env"]
    assert steps["list.long-script"]["command"].startswith("cd app && bash -e -c '")
    assert steps["list.python-shell"]["command"].startswith("cd app && python3 -c 'import os")
    # An include-only matrix, and versions an image tag does not name as they are.
    cells = {k: s for k, s in steps.items() if k.startswith("chain.")}
    venvs = [s for k, s in cells.items() if k.startswith("chain.python-virtualenv")]
    assert {s["image"] for s in venvs} == {"python:3.12-slim", "pypy:3.10-slim"}
    assert {s["command"] for s in cells.values() if s not in venvs} == {
        f"{ACTIVATE}tox -e py312 -- --db-port ${{DB_PORT}}",
        f"{ACTIVATE}tox -e pypy310 -- --db-port ${{DB_PORT}}",
    }
    # Two jobs declaring the same service share one.
    assert [s["name"] for s in pipeline["services"]] == ["db"]
    assert steps["after-all.echo-n-c-d-done"]["timeout_seconds"] == 150
    missed = "\n".join(answer["not_translated"])
    for item in (
        "shell: pwsh",
        "a reusable workflow (octo-org/shared",
        "strategy.matrix ${{ fromJSON(needs.setup.outputs.matrix) }}",
        "path node_modules",
        "option --tmpfs",
        "container options: --user 1001",
        "if: failure()",
        "${{ github.run_number }}",
    ):
        assert item in missed, item


def test_the_shell_only_workflow_runs_green(tmp_path: Path) -> None:
    project, answer = _translate(tmp_path, "shell")
    assert answer["not_translated"] == []
    (project / "README.md").write_text("# checks\n")
    (project / "site").mkdir()
    (project / "site" / "index.txt").write_text("the index page\n")
    steps = _steps(_pipeline(project))
    assert steps["report.echo-report-for-out"]["runs_after_failure"]
    assert len(steps["report.echo-report-for-out"]["depends_on"]) == 2
    assert (
        steps["build.render[flavor=fancy,banner=-fancy-]"]["env"]["MATRIX_BANNER"]
        == "*** fancy ***"
    )
    green = cli("run", "--format", "plain", cwd=project, timeout=300)
    assert green.returncode == 0, green.stdout + green.stderr
    assert "build: Render plain [flavor=plain] passed" in green.stdout
    assert green.stdout.count("hello: 3 lines") == 2  # each cell: its line, banner, index
    assert "continue-on-error: this step failed; the job goes on" in green.stdout
    assert "report for build-out" in green.stdout
    # GitHub runs a script with -e: its first failing line fails the step.
    (project / "README.md").unlink()
    red = cli("run", "--format", "plain", cwd=project, timeout=300)
    assert red.returncode == 1 and "check: Files are there failed" in red.stdout, red.stdout


def _wheel(path: Path, greeting: str) -> None:
    """A wheel of package ``demo`` (``demo.GREETING``), written by hand: no build tool."""
    import base64
    import hashlib
    import zipfile

    files = {
        "demo/__init__.py": f"GREETING = {greeting!r}\n",
        "demo-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
        "demo-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, body in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(body.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(body.encode())}")
    files["demo-1.0.dist-info/RECORD"] = "\n".join([*record, "demo-1.0.dist-info/RECORD,,"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as wheel:
        for name, body in files.items():
            wheel.writestr(name, body)


def test_setup_python_gives_the_job_a_python_pip_installs_into(tmp_path: Path) -> None:
    # The machine's Python is read-only in the sandbox (and Debian's refuses pip):
    # a bare `pip install` works, as on GitHub, in the virtualenv that stands for it.
    project, answer = _translate(tmp_path, "setup-python")
    assert answer["not_translated"] == []
    _wheel(project / "dist" / "demo-1.0-py3-none-any.whl", "hello from demo")
    green = cli("run", "--format", "plain", cwd=project, timeout=300)
    assert green.returncode == 0, green.stdout + green.stderr
    assert "hello from demo" in green.stdout
    assert "test: Import it passed" in green.stdout


def test_a_job_only_an_untranslated_job_needs_is_not_kept_in_a_variable(tmp_path: Path) -> None:
    # Regression: the job's chain was assigned to a variable nothing read (ruff F841).
    workflow = tmp_path / "ci.yml"
    workflow.write_text(
        "on: push\njobs:\n"
        "  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: make\n"
        "  publish:\n    needs: build\n    steps:\n      - uses: pypa/gh-action-pypi-publish@v1\n"
    )
    assert cli("init", "--from-github-actions", str(workflow), cwd=tmp_path).returncode == 0
    path = tmp_path / ".greenloop" / "pipeline.py"
    assert "build = " not in path.read_text()
    _clean([str(VENV_BIN / "ruff"), "check", "--no-cache", str(path)], tmp_path)
    assert _steps(_pipeline(tmp_path))["build.make"]["command"] == "make"


def test_without_workflow_it_takes_the_only_one(tmp_path: Path) -> None:
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    shutil.copy(FIXTURES / "shell.yml", folder / "checks.yml")
    done = cli("init", "--from-github-actions", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "from .github/workflows/checks.yml" in done.stdout
    source = (tmp_path / ".greenloop" / "pipeline.py").read_text()
    assert "workflow .github/workflows/checks.yml." in source
    # Several: an error listing them, and nothing written.
    shutil.copy(FIXTURES / "node-app.yml", folder / "node.yaml")
    (tmp_path / ".greenloop" / "pipeline.py").unlink()
    several = cli("init", "--from-github-actions", cwd=tmp_path)
    assert several.returncode == 2
    assert ".github/workflows/checks.yml, .github/workflows/node.yaml" in several.stderr
    assert not (tmp_path / ".greenloop" / "pipeline.py").exists()


def test_without_any_workflow_it_says_so(tmp_path: Path) -> None:
    done = cli("init", "--from-github-actions", cwd=tmp_path)
    assert done.returncode == 2 and "no workflow in" in done.stderr
    assert not (tmp_path / ".greenloop").exists()


def test_an_existing_pipeline_file_needs_force(tmp_path: Path) -> None:
    assert cli("init", cwd=tmp_path).returncode == 0
    again = cli("init", "--from-github-actions", str(FIXTURES / "shell.yml"), cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr
    assert "from-github-actions" not in (tmp_path / ".greenloop" / "pipeline.py").read_text()
    forced = cli(
        "init", "--from-github-actions", str(FIXTURES / "shell.yml"), "--force", cwd=tmp_path
    )
    assert forced.returncode == 0, forced.stderr
    assert "from-github-actions" in (tmp_path / ".greenloop" / "pipeline.py").read_text()


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (None, "no such file"),
        ("jobs: [unclosed\n", "is not YAML (line 2)"),
        ("- a\n- list\n", "expected a mapping with jobs:, got a list"),
        ("", "got nothing"),
        ("name: CI\non: push\n", "has no jobs"),
        ("jobs: {}\n", "has no jobs"),
        ("jobs:\n  a: just text\n", "job 'a' is a str, not a mapping"),
        ("jobs:\n  a:\n    steps: run this\n", "the steps of job 'a' are not a list"),
        ("jobs:\n  a:\n    needs: b\n    steps: []\n", "job 'a' needs 'b', which is no job"),
        (
            "jobs:\n  a:\n    needs: b\n    steps: []\n  b:\n    needs: a\n    steps: []\n",
            "the jobs' needs: form a cycle: a -> b -> a",
        ),
    ],
)
def test_bad_input_is_an_error_and_writes_nothing(
    tmp_path: Path, content: str | None, error: str
) -> None:
    workflow = tmp_path / "ci.yml"
    if content is not None:
        workflow.write_text(content)
    done = cli("init", "--from-github-actions", str(workflow), cwd=tmp_path)
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith("error: ") and error in done.stderr, done.stderr
    assert not (tmp_path / ".greenloop").exists()


def test_options_that_do_not_go_together(tmp_path: Path) -> None:
    alone = cli("init", str(FIXTURES / "shell.yml"), cwd=tmp_path)
    assert alone.returncode == 2 and "--from-github-actions" in alone.stderr
    both = cli("init", "--template", "python", "--from-github-actions", cwd=tmp_path)
    assert both.returncode == 2 and "not both" in both.stderr
    assert not (tmp_path / ".greenloop").exists()


def test_the_text_answer_lists_what_was_not_translated(tmp_path: Path) -> None:
    done = cli("init", "--from-github-actions", str(FIXTURES / "node-app.yml"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "not translated (1, marked in the file):" in done.stdout
    assert "  - job build, step 7: uses actions/upload-artifact@v4" in done.stdout


# -- the source it writes -------------------------------------------------------------

_TRICKY = "ab $'\"\\{}\n\t\x01\x7fé🚀;"


@given(st.text(alphabet=_TRICKY + "xyz0", max_size=40))
def test_a_literal_reads_back_as_its_text(value: str) -> None:
    assert ast.literal_eval(literal([value])) == value


@given(
    st.text(alphabet=_TRICKY, max_size=20),
    st.text(alphabet=_TRICKY, max_size=20),
    st.text(alphabet=_TRICKY, max_size=8),
)
def test_an_f_string_reads_back_with_its_field(before: str, after: str, value: str) -> None:
    source = literal([before, Field("cell_value"), after])
    assert eval(source, {"cell_value": value}) == before + value + after


def test_ruff_leaves_the_literals_and_calls_as_written(tmp_path: Path) -> None:
    # Ruff's own choices (quotes, escapes, joining short strings back) on many tricky
    # strings, in the forms the pipeline file has them: call arguments, positional
    # (long multi-line ones a line per string) and keyword, in calls short or exploded,
    # at the indents of a function's body and of a loop in it.
    chars = _TRICKY + "abcdefgh     \n"
    rng = random.Random(17)
    lines = ['def sh(*commands: str, label: str = "") -> None:', f"{INDENT}del commands, label", ""]
    lines += ["", "def f(cell_value: str) -> None:", f"{INDENT}for _ in cell_value:"]
    for i in range(400):
        value = "".join(rng.choice(chars) for _ in range(rng.randrange(0, 160)))
        parts = (value[:20], Field("cell_value"), value[20:]) if i % 3 else (value,)
        kwargs = (("label", text(value[: rng.randrange(0, 120)])),)
        call = Call("sh", (Str(parts, split=True),), kwargs, explode=i % 4 == 0)
        lines += render(call, INDENT * 2, f"x{i} = " if i % 2 else "")
    lines.append(f"{INDENT}sh()")
    for _ in range(100):
        value = "".join(rng.choice(chars) for _ in range(rng.randrange(0, 160)))
        lines += render(Call("sh", (Str((value,), split=True),)), INDENT)
    path = tmp_path / "literals.py"
    path.write_text("\n".join(lines) + "\n")
    ruff = str(VENV_BIN / "ruff")
    _clean([ruff, "format", "--no-cache", "--check", "--diff", str(path)], tmp_path)
    _clean([ruff, "check", "--no-cache", "--ignore", "F841", str(path)], tmp_path)


def test_every_cache_it_keeps_names_the_variable_its_tool_reads() -> None:
    # Without a sandbox the local executor cannot mount a cache folder: the tool is
    # pointed at it by its variable, which greenloop must know for every path written.
    from greenloop.cli._github_actions.job_steps import CACHE_NAMES, EXTRA_CACHE_ENV
    from greenloop.sdk.cache_dirs import KNOWN_ENV

    for path in CACHE_NAMES:
        assert path in KNOWN_ENV or path in EXTRA_CACHE_ENV, path
