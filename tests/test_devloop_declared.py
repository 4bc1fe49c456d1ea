"""What a project declares, which checkers that chooses, and the new parsers' edge cases.

No checker program runs here: where a command line is looked at, the program
is a stand-in script in the project's ``node_modules/.bin`` or ``.venv/bin``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from greenloop.devloop.checkers import resolve_checkers
from greenloop.devloop.checkers.biome import biome_github
from greenloop.devloop.checkers.choose import Selection, choose_checkers
from greenloop.devloop.checkers.commands import Options, carry, shell_commands, unwrap
from greenloop.devloop.checkers.declared import read_declarations
from greenloop.devloop.checkers.eslint import eslint_json
from greenloop.devloop.checkers.flake8 import flake8
from greenloop.devloop.checkers.ruff_format import ruff_format
from greenloop.devloop.config import Kind, Role, load_config
from greenloop.protocol import Severity
from tests.test_devloop_helpers import write

BASE = Path("/proj")

# --- command lines -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "tools"),
    [
        (
            "FOO=1 uv run python -m mypy src && ruff check . --fix",
            [["mypy", "src"], ["ruff", "check", ".", "--fix"]],
        ),
        ("npx --yes @biomejs/biome@2 check .", [["biome", "check", "."]]),
        (
            "./node_modules/.bin/eslint . --max-warnings 0 | tee lint.log",
            [["eslint", ".", "--max-warnings", "0"], ["tee", "lint.log"]],
        ),
        ("if ! poetry run flake8 src; then exit 1; fi", [["flake8", "src"], ["exit", "1"], []]),
        ("ruff check \\\n  src tests", [["ruff", "check", "src", "tests"]]),
        ("npm exec -- eslint .", [["eslint", "."]]),
        (".venv/bin/python3.12 -m flake8", [["flake8"]]),
        ("uvx ruff@0.8 format --check", [["ruff", "format", "--check"]]),
        ("echo 'unclosed", []),
        ("# a comment\n\n", []),
    ],
)
def test_shell_lines_become_tools_without_their_launchers(
    script: str, tools: list[list[str]]
) -> None:
    assert [unwrap(argv) for argv in shell_commands(script)] == tools


def test_carry_keeps_paths_and_listed_options_only() -> None:
    options = Options(
        keep={"--config": True, "--strict": False},
        valued=frozenset({"--format"}),
        prefixes=("--warn-",),
        fixes=frozenset({"--fix"}),
    )
    args = [
        "--format",
        "pylint",
        "src",
        "--config",
        "c.toml",
        "--fix",
        "--warn-unused",
        "--strict=x",
        "--",
        "-odd",
    ]
    assert carry(args, options) == (
        "src",
        "--config",
        "c.toml",
        "--warn-unused",
        "--strict=x",
        "-odd",
    )


# --- where projects declare commands -----------------------------------------------


def _commands(root: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.evidence.file, c.evidence.key, c.argv) for c in read_declarations(root).commands]


def test_tox_commands_from_tox_ini_setup_cfg_and_tox_toml(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "tox.ini": """\
                [tox]
                envlist = py, lint
                [testenv]
                commands =
                    py311: pytest {posargs}
                    - coverage report
                [testenv:lint]
                commands = flake8 {posargs:src tests} --config {toxinidir}/setup.cfg
                    {envpython} -m mypy
                """,
            "setup.cfg": "[testenv:types]\ncommands = pyright\n",  # no [tox:tox]: not tox's
            "tox.toml": """\
                [env.style]
                commands = [["ruff", "check", { replace = "posargs", default = ["src"] }]]
                """,
        },
    )
    assert _commands(tmp_path) == [
        ("tox.ini", "[testenv] commands", ("pytest",)),
        (
            "tox.ini",
            "[testenv:lint] commands",
            ("flake8", "src", "tests", "--config", "./setup.cfg"),
        ),
        ("tox.ini", "[testenv:lint] commands", ("mypy",)),
        ("tox.toml", "[env.style] commands", ("ruff", "check", "src")),
    ]


def test_nox_the_pipeline_and_ci_commands(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "noxfile.py": """\
                import nox

                @nox.session
                def lint(session):
                    session.install("flake8")
                    session.run("flake8", "src", *session.posargs)
                """,
            ".greenloop/pipeline.py": """\
                import greenloop as gl

                @gl.pipeline("ci")
                def ci() -> None:
                    gl.sh("mypy src && pyright", label="types")
                    gl.python.lint(command="ruff check .")
                """,
            ".github/workflows/ci.yml": """\
                on: [push]
                jobs:
                  lint:
                    steps:
                      - uses: actions/checkout@v4
                      - uses: astral-sh/ruff-action@v3
                        with:
                          src: src
                      - run: |
                          npm ci
                          npm run lint
                """,
            ".gitlab-ci.yml": """\
                stages: [test]
                lint:
                  script:
                    - biome ci .
                """,
            "package.json": '{"scripts": {"lint": "eslint src"}}',
        },
    )
    assert _commands(tmp_path) == [
        ("package.json", "scripts.lint", ("eslint", "src")),
        ("noxfile.py", "session lint", ("flake8", "src")),
        (".greenloop/pipeline.py", "line 5", ("mypy", "src")),
        (".greenloop/pipeline.py", "line 5", ("pyright",)),
        (".greenloop/pipeline.py", "line 6", ("ruff", "check", ".")),
        (".github/workflows/ci.yml", "jobs.lint.steps[1]", ("ruff", "check", "src")),
        (".github/workflows/ci.yml", "jobs.lint.steps[2]", ("npm", "ci")),
        (
            ".github/workflows/ci.yml",
            "jobs.lint.steps[2] → package.json scripts.lint",
            ("eslint", "src"),
        ),
        (".gitlab-ci.yml", "lint.script", ("biome", "ci", ".")),
    ]


def test_package_scripts_that_check_are_followed_through_npm_run(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "package.json": """\
                {"scripts": {
                  "lint": "npm run lint:js && yarn types",
                  "lint:js": "eslint .",
                  "lint:fix": "eslint . --fix",
                  "types": "tsc -p tsconfig.app.json --noEmit",
                  "loop": "npm run loop",
                  "format": "biome format --write ."
                }}
                """
        },
    )
    commands = read_declarations(tmp_path).commands
    assert [(c.evidence.key, c.argv, c.lint) for c in commands] == [
        ("scripts.lint → package.json scripts.lint:js", ("eslint", "."), True),
        (
            "scripts.lint → package.json scripts.types",
            ("tsc", "-p", "tsconfig.app.json", "--noEmit"),
            True,
        ),
        ("scripts.types", ("tsc", "-p", "tsconfig.app.json", "--noEmit"), True),
        ("scripts.lint:js", ("eslint", "."), True),
    ]


def test_pre_commit_hooks_that_run_at_commit_time(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            ".pre-commit-config.yaml": """\
                default_stages: [pre-commit, pre-push]
                repos:
                  - repo: meta
                    hooks: [{id: check-useless-excludes}]
                  - repo: https://github.com/PyCQA/flake8
                    rev: 7.1.0
                    hooks:
                      - id: flake8
                        args: ["--max-line-length=100"]
                      - id: flake8
                        alias: slow
                        stages: [manual]
                  - repo: local
                    hooks:
                      - id: types
                        entry: poetry run mypy --strict
                        language: system
                """
        },
    )
    hooks = read_declarations(tmp_path).hooks
    assert [(h.id, h.args, h.entry) for h in hooks] == [
        ("flake8", ("--max-line-length=100",), None),
        ("types", (), "poetry run mypy --strict"),
    ]


def test_an_unreadable_source_is_a_problem_not_a_failure(tmp_path: Path) -> None:
    write(tmp_path, {".pre-commit-config.yaml": "repos: [\n", "package.json": "{"})
    found = read_declarations(tmp_path)
    assert found.commands == [] and found.hooks == []
    assert [p.split(":")[0] for p in found.problems] == ["package.json", ".pre-commit-config.yaml"]


# --- which checkers run --------------------------------------------------------------


def _choose(root: Path) -> Selection:
    return choose_checkers(root, load_config(root))


def _names(selection: Selection) -> list[str]:
    return [c.name for c in selection.chosen]


def test_no_configuration_keeps_the_defaults(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"pyproject.toml": "[project]\nname = 'a'\n", "tsconfig.json": "{}", "Cargo.toml": ""},
    )
    selection = _choose(tmp_path)
    assert _names(selection) == ["cargo", "ruff", "mypy", "tsc"]
    assert {c.name: c.role for c in selection.chosen}["ruff"] is Role.ADVISORY
    (ruff,) = [c for c in selection.chosen if c.name == "ruff"]
    assert ruff.why == "a default for python projects, as this one declares no python checker"


def test_a_configured_linter_replaces_the_defaults_and_decides_green(tmp_path: Path) -> None:
    write(tmp_path, {"setup.cfg": "[metadata]\nname = a\n[flake8]\nmax-line-length = 100\n"})
    selection = _choose(tmp_path)
    (only,) = selection.chosen
    assert (only.name, only.role) == ("flake8", Role.AUTHORITATIVE)
    assert only.why.endswith("no type checker runs: the project's checks are its linters")
    skipped = {s.name: s.why for s in selection.skipped}
    assert skipped["ruff"] == "the project declares its python checkers (flake8), not this one"
    assert skipped["mypy"] == skipped["ruff"]


def test_a_linter_stays_advisory_beside_a_declared_type_checker(tmp_path: Path) -> None:
    write(tmp_path, {".flake8": "[flake8]\n", "mypy.ini": "[mypy]\n", "setup.py": ""})
    assert [(c.name, c.role) for c in _choose(tmp_path).chosen] == [
        ("flake8", Role.ADVISORY),
        ("mypy", Role.AUTHORITATIVE),
    ]


def test_fixers_in_scripts_are_not_checks_but_a_fixing_hook_is(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pyproject.toml": "[tool.ruff]\n",
            ".github/workflows/fmt.yml": "jobs:\n  f:\n    steps:\n      - run: ruff format .\n",
        },
    )
    selection = _choose(tmp_path)
    assert _names(selection) == ["ruff"]
    (fixer,) = selection.unfollowed
    assert fixer.evidence.command == ("ruff", "format", ".")
    assert fixer.why == "it rewrites files rather than checking them"
    write(
        tmp_path,
        {
            ".pre-commit-config.yaml": """\
                repos:
                  - repo: https://github.com/astral-sh/ruff-pre-commit
                    rev: v0.8.6
                    hooks: [{id: ruff-format}, {id: ruff, args: [--fix, --select, I]}]
                """
        },
    )
    selection = _choose(tmp_path)
    assert _names(selection) == ["ruff", "ruff-format"]
    ruff = selection.chosen[0]
    assert ruff.declared == ("--select", "I")
    assert ruff.arguments_from is not None and ruff.arguments_from.key == "hook ruff"


def test_settings_add_and_remove_checkers_whatever_was_found(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "setup.cfg": "[flake8]\n",
            "greenloop.toml": "[checkers.ruff]\n[checkers.flake8]\nenabled = false\n",
        },
    )
    selection = _choose(tmp_path)
    assert [(c.name, c.role, c.why) for c in selection.chosen] == [
        (
            "ruff",
            Role.AUTHORITATIVE,
            "named in the settings; authoritative, since no type "
            "checker runs: the project's checks are its linters",
        ),
    ]
    skipped = {s.name: s for s in selection.skipped}
    assert skipped["flake8"].why == "turned off in checkers (enabled = false)"
    assert [e.file for e in skipped["flake8"].evidence] == ["setup.cfg"]


def test_a_kind_left_out_by_the_settings_skips_its_declared_checkers(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "package.json": '{"scripts": {"lint": "eslint ."}}',
            "a.py": "",
            "greenloop.toml": 'kinds = ["python"]\n',
        },
    )
    selection = _choose(tmp_path)
    assert selection.kinds == {Kind.PYTHON: "settings"}
    skipped = {s.name: s for s in selection.skipped}
    assert skipped["eslint"].why == "the `kinds` setting leaves out javascript"
    assert [str(e) for e in skipped["eslint"].evidence] == ["package.json scripts.lint: eslint ."]


def test_an_unknown_lint_command_or_hook_is_named(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "package.json": (
                '{"scripts": {"lint": "stylelint \\"**/*.css\\" && biome lint && npm test"}}'
            ),
            ".pre-commit-config.yaml": "repos:\n  - repo: x\n    hooks: [{id: codespell}]\n",
        },
    )
    selection = _choose(tmp_path)
    assert _names(selection) == ["biome"]
    assert [(str(u.evidence), u.why.split(";")[0]) for u in selection.unfollowed] == [
        (
            "package.json scripts.lint: stylelint **/*.css",
            "greenloop has no built-in checker for `stylelint`",
        ),
        (
            ".pre-commit-config.yaml hook codespell",
            "no built-in checker runs the pre-commit hook `codespell`",
        ),
    ]


def _stand_in(root: Path, folder: str, program: str) -> None:
    path = root / folder / program
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)


def _argv(root: Path, name: str) -> tuple[str, ...]:
    (checker,) = [c for c in resolve_checkers(root, load_config(root)) if c.name == name]
    return checker.argv[1:]


def test_the_projects_arguments_reach_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    for program in ("mypy", "flake8", "ruff"):
        _stand_in(tmp_path, ".venv/bin", program)
    for program in ("tsc", "eslint", "biome"):
        _stand_in(tmp_path, "node_modules/.bin", program)
    write(
        tmp_path,
        {
            "pyproject.toml": "[project]\nname = 'a'\n",
            "tox.ini": """\
                [testenv:lint]
                commands =
                  flake8 --format=pylint --max-line-length 100 src
                  mypy -p app --strict --junit-xml out.xml
                """,
            "tsconfig.json": "{}",
            "package.json": """\
                {"scripts": {"lint": "eslint --cache --max-warnings 0 && biome lint --write src",
                             "typecheck": "tsc -p tsconfig.app.json --noEmit --watch"}}
                """,
            "app/__init__.py": "",
        },
    )
    assert _argv(tmp_path, "flake8") == (
        "--format=default",
        "--no-show-source",
        "--max-line-length",
        "100",
        "src",
    )
    mypy = _argv(tmp_path, "mypy")
    # The project named its targets, so greenloop lists no files of its own.
    assert mypy[-3:] == ("-p", "app", "--strict")
    assert "app/__init__.py" not in mypy and "out.xml" not in mypy
    assert _argv(tmp_path, "tsc") == ("--noEmit", "--pretty", "false", "-p", "tsconfig.app.json")
    assert _argv(tmp_path, "eslint") == ("--format", "json", "--max-warnings", "0", ".")
    # `--write` makes the script a fixer: it is not followed, and biome is not declared.
    assert [c.name for c in resolve_checkers(tmp_path, load_config(tmp_path))] == [
        "flake8",
        "mypy",
        "tsc",
        "eslint",
    ]


def test_biome_runs_the_projects_subcommand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))
    _stand_in(tmp_path, "node_modules/.bin", "biome")
    write(tmp_path, {"package.json": "{}", "biome.json": "{}"})
    assert _argv(tmp_path, "biome") == ("check", "--reporter=github", "--colors=off")
    write(tmp_path, {"package.json": '{"scripts": {"lint": "biome lint --reporter=json src"}}'})
    assert _argv(tmp_path, "biome") == ("lint", "--reporter=github", "--colors=off", "src")


# --- the new parsers ----------------------------------------------------------------


def test_flake8_codes_are_codes_and_every_finding_an_error() -> None:
    out = [
        "./src/a.py:3:80: E501 line too long (96 > 79 characters)\n",
        "src/b.py:1:1: F401 'os' imported but unused\n",
        "src/c.py:10:5: SIM102 Use a single if-statement\n",
        "src/d.py:0:1: E902 FileNotFoundError: [Errno 2] No such file\n",
        "Traceback (most recent call last):\n",
    ]
    found = list(flake8(out, [], BASE, "flake8"))
    assert [(d.path, d.line, d.col, d.code, d.severity) for d in found] == [
        ("/proj/src/a.py", 3, 80, "E501", Severity.ERROR),
        ("/proj/src/b.py", 1, 1, "F401", Severity.ERROR),
        ("/proj/src/c.py", 10, 5, "SIM102", Severity.ERROR),
        ("/proj/src/d.py", 1, 1, "E902", Severity.ERROR),
    ]
    assert found[0].message == "line too long (96 > 79 characters)"


def test_eslint_json_severities_and_fatal_parse_errors() -> None:
    out = """[{"filePath": "/proj/src/a.ts", "messages": [
        {"ruleId": "no-console", "severity": 1, "message": "Unexpected console",
         "line": 2, "column": 3},
        {"ruleId": null, "fatal": true, "severity": 2, "message": "Parsing error: ';' expected",
         "line": 7, "column": 1}
      ]}, {"filePath": "/proj/src/b.ts", "messages": []}]"""
    warning, fatal = eslint_json([out], [], BASE, "eslint")
    assert (warning.path, warning.line, warning.col, warning.code, warning.severity) == (
        "/proj/src/a.ts",
        2,
        3,
        "no-console",
        Severity.WARNING,
    )
    assert (fatal.line, fatal.code, fatal.severity) == (7, None, Severity.ERROR)
    assert list(eslint_json(["Oops! Something went wrong!"], [], BASE, "eslint")) == []


def test_biome_github_lines_are_unescaped() -> None:
    out = [
        "::error title=lint/suspicious/noDebugger,file=/proj/src/a.ts,line=2,endLine=2,"
        "col=3,endColumn=12::This is an unexpected use of the debugger statement.",
        "::warning title=lint/style/x,file=/proj/src/we%2Cird%3A.ts,line=1,col=1::"
        "first%0Asecond 100%25",
        "::notice title=deserialize,file=/proj/biome.json,line=2,col=14::schema version mismatch",
        "Checked 3 files in 11ms. No fixes applied.",
    ]
    error, warning, notice = biome_github(out, [], BASE, "biome")
    assert (error.path, error.line, error.col, error.code, error.severity) == (
        "/proj/src/a.ts",
        2,
        3,
        "lint/suspicious/noDebugger",
        Severity.ERROR,
    )
    assert (warning.path, warning.message, warning.severity) == (
        "/proj/src/we,ird:.ts",
        "first\nsecond 100%",
        Severity.WARNING,
    )
    assert notice.severity is Severity.INFO


def test_ruff_format_json_and_its_older_text() -> None:
    json_out = (
        '[{"code": "unformatted", "filename": "/proj/a.py", "location": {"row": 4, "column": 2},'
        ' "message": "File would be reformatted", "severity": "error"}]'
    )
    (found,) = ruff_format([json_out], [], BASE, "ruff")
    assert (found.path, found.line, found.col, found.code) == ("/proj/a.py", 4, 2, "unformatted")
    text = ["Would reformat: src/b.py\n", "1 file would be reformatted\n"]
    warning = ["warning: The --output-format flag for the formatter is unstable\n"]
    (older,) = ruff_format(text, warning, BASE, "ruff")
    assert (older.path, older.line, older.code, older.severity) == (
        "/proj/src/b.py",
        1,
        "unformatted",
        Severity.ERROR,
    )
