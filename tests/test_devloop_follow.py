"""``greenloop check`` follows each project's own checks, on fixtures shaped like real projects.

Each fixture under ``tests/fixtures/projects/NAME`` is a project as its authors
would have it (``NAME.red`` overlays the variant that breaks one of its rules).
For both, the project's own lint and type commands are run the way its config
says, in a copy of the tree, and ``greenloop check --json`` must be green
exactly where every one of them exits 0 — and red with the tool's own code
where one does not.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from greenloop.protocol import CheckResult, Severity, TreeState
from tests.conftest import cli as greenloop
from tests.test_devloop_helpers import VENV_BIN, cli, env_with, need, node_bin, node_modules

FIXTURES = Path(__file__).parent / "fixtures" / "projects"
PY_FILES = "{py}"
"""In a fixture's own command: every Python file, as pre-commit passes them to a hook."""


@dataclass(frozen=True)
class Fixture:
    """A project, what greenloop must pick for it, its own commands and its variant's finding.

    ``hooks``: the own commands are pre-commit hooks, which fail when they change a file.
    """

    name: str
    checkers: list[str]
    own: list[list[str]]
    red: tuple[str, str, str]
    """(file name, source, code) of the error the ``.red`` variant must report."""
    js: bool = False
    hooks: bool = False
    passing_on_red: list[int] = field(default_factory=list)
    """Indexes of own commands that still pass on the red variant."""


PROJECTS = [
    # Lints with flake8 (setup.cfg [flake8], tox's lint env) and never configured ruff.
    Fixture("flake8", ["flake8"], [["flake8"]], ("core.py", "flake8", "E501")),
    # [tool.ruff], run by GitHub Actions as `ruff check` and `ruff format --check`.
    Fixture(
        "ruff",
        ["ruff", "ruff-format"],
        [["ruff", "check", "--no-cache", "."], ["ruff", "format", "--no-cache", "--check", "."]],
        ("stock.py", "ruff", "F401"),
        passing_on_red=[1],
    ),
    # [tool.mypy] and [tool.pyright]: its CI runs both, and the variant fails mypy only.
    Fixture(
        "typed",
        ["mypy", "pyright"],
        [["mypy"], ["pyright"]],
        ("convert.py", "mypy", "unused-ignore"),
        passing_on_red=[1],
    ),
    Fixture(
        "biome",
        ["tsc", "biome"],
        [["npm", "run", "lint"], ["npm", "run", "typecheck"]],
        ("price.ts", "biome", "lint/suspicious/noDoubleEquals"),
        js=True,
        passing_on_red=[1],
    ),
    Fixture(
        "eslint",
        ["tsc", "eslint"],
        [["npm", "run", "lint"], ["npm", "run", "typecheck"]],
        ("todo.ts", "eslint", "@typescript-eslint/no-unused-vars"),
        js=True,
        passing_on_red=[1],
    ),
    # Its checks are pre-commit hooks only: ruff (with --fix), ruff-format and a local mypy.
    Fixture(
        "pre-commit",
        ["ruff", "ruff-format", "mypy"],
        [
            ["ruff", "check", "--no-cache", "--force-exclude", "--fix", PY_FILES],
            ["ruff", "format", "--no-cache", "--force-exclude", PY_FILES],
            ["mypy", PY_FILES],
        ],
        ("queue.py", "ruff", "unformatted"),
        hooks=True,
        passing_on_red=[0, 2],
    ),
]


def _env() -> dict[str, str]:
    # ruff, mypy and flake8 from this virtualenv; pyright and tsc from npm.
    need(shutil.which(str(VENV_BIN / "flake8")), "flake8")
    return env_with(VENV_BIN, node_bin())


def _copy(fixture: Fixture, dest: Path, *, red: bool = False) -> Path:
    """The fixture (its red variant overlaid) at ``dest``, with ``node_modules`` when it has JS."""
    shutil.copytree(FIXTURES / fixture.name, dest)
    if red:
        shutil.copytree(FIXTURES / f"{fixture.name}.red", dest, dirs_exist_ok=True)
    if fixture.js:
        (dest / "node_modules").symlink_to(node_modules(), target_is_directory=True)
    return dest


def _own(fixture: Fixture, dest: Path, env: dict[str, str], *, red: bool) -> list[bool]:
    """Whether each of the project's own commands passes, run in a fresh copy of the tree."""
    root = _copy(fixture, dest, red=red)
    py_files = sorted(str(p.relative_to(root)) for p in root.rglob("*.py"))
    passed = []
    for command in fixture.own:
        argv = [w for word in command for w in (py_files if word == PY_FILES else [word])]
        before = _snapshot(root)
        done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=300)
        # pre-commit fails a hook that changed a file, whatever it exited with.
        changed = fixture.hooks and _snapshot(root) != before
        passed.append(done.returncode == 0 and not changed)
    return passed


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "node_modules" not in p.parts and "cache" not in str(p)
    }


def _errors(result: CheckResult) -> list[tuple[str, str, str | None]]:
    return [
        (Path(d.path).name, d.source, d.code)
        for d in result.diagnostics
        if d.severity is Severity.ERROR
    ]


@pytest.mark.parametrize("red", [False, True], ids=["clean", "red"])
@pytest.mark.parametrize("fixture", PROJECTS, ids=[f.name for f in PROJECTS])
def test_check_is_green_exactly_where_the_projects_own_commands_pass(
    tmp_path: Path, fixture: Fixture, red: bool
) -> None:
    env = _env()
    own = _own(fixture, tmp_path / "own", env, red=red)
    # The fixture is what it says: its own checks pass clean and fail on the variant.
    expected = [i in fixture.passing_on_red for i in range(len(own))] if red else [True] * len(own)
    assert own == expected, f"{fixture.name}: the project's own commands gave {own}"

    root = _copy(fixture, tmp_path / "check", red=red)
    done = cli("check", "--json", cwd=root, env=env)
    assert done.returncode == (0 if all(own) else 1), done.stdout[-3000:] + done.stderr
    result = CheckResult.model_validate_json(done.stdout)
    assert result.checkers == fixture.checkers
    assert (result.state is TreeState.GREEN) == all(own)
    if red:
        assert fixture.red in _errors(result), _errors(result)
    else:
        assert _errors(result) == []


def test_the_pipeline_file_is_checked_by_the_projects_own_rules(tmp_path: Path) -> None:
    env = _env()
    (flake8,) = [f for f in PROJECTS if f.name == "flake8"]
    root = _copy(flake8, tmp_path / "project")
    assert greenloop("init", cwd=root).returncode == 0
    pipeline = root / ".greenloop" / "pipeline.py"
    # greenloop's own starter passes the project's flake8 (79 columns) as written.
    green = cli("check", "--json", cwd=root, env=env)
    assert green.returncode == 0, green.stdout + green.stderr
    pipeline.write_text(pipeline.read_text() + f"\n\nMOTTO = {'always green, ' * 8!r}\n")
    red = cli("check", "--json", cwd=root, env=env)
    assert red.returncode == 1, red.stdout + red.stderr
    result = CheckResult.model_validate_json(red.stdout)
    assert [(d.path, d.code) for d in result.diagnostics] == [(str(pipeline), "E501")]


def test_explain_checkers_gives_the_evidence_and_what_was_skipped(tmp_path: Path) -> None:
    env = _env()
    (pre_commit,) = [f for f in PROJECTS if f.name == "pre-commit"]
    root = _copy(pre_commit, tmp_path / "project")
    done = cli("check", "--explain-checkers", "--json", cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    explained = json.loads(done.stdout)
    assert explained["kinds"] == {"python": "pyproject.toml"}
    chosen = {c["name"]: c for c in explained["chosen"]}
    assert list(chosen) == ["ruff", "ruff-format", "mypy"]
    hook = {
        "file": ".pre-commit-config.yaml",
        "key": "hook ruff",
        "command": ["ruff", "check", "--fix"],
    }
    assert chosen["ruff"]["evidence"] == [hook]
    assert chosen["ruff"]["arguments_from"] == hook
    # The hook's --fix is a fixer's flag: the check never rewrites the tree.
    assert chosen["ruff"]["arguments"] == []
    assert "--no-fix" in chosen["ruff"]["command"]
    assert "--fix" not in chosen["ruff"]["command"]
    assert [e["key"] for e in chosen["mypy"]["evidence"]] == ["hook mypy"]
    assert chosen["mypy"]["role"] == "authoritative"
    skipped = {s["name"]: s["why"] for s in explained["skipped"]}
    assert "declares its python checkers (ruff, ruff-format, mypy)" in skipped["flake8"]
    assert "no typescript project here" in skipped["tsc"]
    # Hooks greenloop has no checker for are named; the pre-push one does not run at commit.
    assert [n["key"] for n in explained["not_followed"]] == [
        "hook trailing-whitespace",
        "hook end-of-file-fixer",
        "hook check-yaml",
    ]

    text = cli("check", "--explain-checkers", cwd=root, env=env)
    assert text.returncode == 0
    assert "ruff (advisory): the project declares it" in text.stdout
    assert "  .pre-commit-config.yaml hook ruff: ruff check --fix  <- its arguments" in text.stdout
    assert "flake8: the project declares its python checkers" in text.stdout


def test_explain_checkers_for_a_flake8_project_says_why_ruff_is_not_run(tmp_path: Path) -> None:
    (flake8,) = [f for f in PROJECTS if f.name == "flake8"]
    root = _copy(flake8, tmp_path / "project")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    # Nothing installed: explaining still works, and says what cannot run.
    done = cli("check", "--explain-checkers", "--json", cwd=root, env=env_with(path=str(empty)))
    assert done.returncode == 0, done.stderr
    explained = json.loads(done.stdout)
    (only,) = explained["chosen"]
    assert only["name"] == "flake8"
    assert only["role"] == "authoritative"
    assert [(e["file"], e["key"]) for e in only["evidence"]] == [
        ("setup.cfg", "[flake8]"),
        ("tox.ini", "[testenv:lint] commands"),
    ]
    assert only["command"] is None
    assert "pip install flake8" in only["missing"]
    skipped = {s["name"]: s["why"] for s in explained["skipped"]}
    assert skipped["ruff"] == "the project declares its python checkers (flake8), not this one"


def test_warnings_fail_the_check_where_the_projects_own_command_fails_on_them(
    tmp_path: Path,
) -> None:
    env = _env()
    (eslint,) = [f for f in PROJECTS if f.name == "eslint"]
    root = _copy(eslint, tmp_path / "project")
    config = root / "eslint.config.js"
    config.write_text(
        config.read_text().replace(
            "tseslint.configs.recommended,",
            'tseslint.configs.recommended,\n  { rules: { "no-console": "warn" } },',
        )
    )
    todo = root / "src" / "todo.ts"
    todo.write_text(todo.read_text() + 'console.log("loaded");\n')
    # A warning alone: `npm run lint` passes, and so does the check.
    assert (
        subprocess.run(["npm", "run", "lint"], cwd=root, env=env, capture_output=True).returncode
        == 0
    )
    done = cli("check", "--json", cwd=root, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    result = CheckResult.model_validate_json(done.stdout)
    assert [(d.severity, d.code) for d in result.diagnostics] == [(Severity.WARNING, "no-console")]
    # `--max-warnings 0` makes it fail: the check keeps the option and is red too.
    package = root / "package.json"
    package.write_text(package.read_text().replace('"eslint ."', '"eslint . --max-warnings 0"'))
    assert (
        subprocess.run(["npm", "run", "lint"], cwd=root, env=env, capture_output=True).returncode
        == 1
    )
    done = cli("check", "--json", cwd=root, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    result = CheckResult.model_validate_json(done.stdout)
    assert [(d.source, d.code) for d in result.diagnostics if d.severity is Severity.ERROR] == [
        ("greenloop", "checker-failed")
    ]
