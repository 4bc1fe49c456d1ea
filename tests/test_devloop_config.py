"""Settings, detection, the build identity, and the output parsers' edge cases."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from greenloop.devloop.checkers import resolve_checkers
from greenloop.devloop.checkers.cargo import cargo_json
from greenloop.devloop.checkers.choose import choose_checkers
from greenloop.devloop.checkers.detect import detect_kinds
from greenloop.devloop.checkers.formats import gnu
from greenloop.devloop.checkers.mypy import mypy_json, mypy_supports_json
from greenloop.devloop.checkers.table import BUILTINS, OUTPUTS
from greenloop.devloop.checkers.tsc import tsc
from greenloop.devloop.config import (
    DEFAULT_CHECKER_TIMEOUT_S,
    Config,
    ConfigError,
    Format,
    Kind,
    Role,
    load_config,
)
from greenloop.devloop.identity import build_identity, host_triple
from greenloop.devloop.ignores import Ignores
from greenloop.protocol import Profile, SetupError, Severity
from tests.test_devloop_helpers import cli, python_env, python_project, write

# --- settings -----------------------------------------------------------------


def test_no_settings_means_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config.source is None
    assert config.settings.debounce_ms == 120
    assert config.settings.profile is Profile.DEV


def test_greenloop_toml_is_read_and_a_string_command_is_split(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "greenloop.toml": """\
                kinds = ["python"]
                target = "web"
                debounce_ms = 300
                [checkers.lint]
                command = "python3 -m lint --strict 'a b'"
                role = "advisory"
                """
        },
    )
    settings = load_config(tmp_path).settings
    assert settings.kinds == [Kind.PYTHON]
    assert settings.target == "web"
    assert settings.debounce_ms == 300
    assert settings.checkers["lint"].command == ["python3", "-m", "lint", "--strict", "a b"]
    assert settings.checkers["lint"].role is Role.ADVISORY


@pytest.mark.parametrize(
    ("name", "text", "key"),
    [
        ("greenloop.toml", "debounce = 5\n", "'debounce'"),
        ("greenloop.toml", "[checkers.mypy]\nenabeld = false\n", "'checkers.mypy.enabeld'"),
        (
            "pyproject.toml",
            "[tool.greenloop]\nprofiel = 'dev'\n",
            "'tool.greenloop.profiel'",
        ),
        ("greenloop.toml", "[checkers.own]\ntimeout = 5\n", "'checkers.own.timeout'"),
        ("greenloop.toml", "timeout_s = 5\n", "'timeout_s'"),
    ],
)
def test_unknown_keys_are_errors_naming_the_key(
    tmp_path: Path, name: str, text: str, key: str
) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert f"unknown key {key}" in str(caught.value)
    assert name in str(caught.value)


def test_bad_values_name_the_key(tmp_path: Path) -> None:
    (tmp_path / "greenloop.toml").write_text("debounce_ms = -1\nprofile = 'fast'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    message = str(caught.value)
    assert "debounce_ms" in message
    assert "profile" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("checker_timeout_s = 0\n", "checker_timeout_s"),
        ("checker_timeout_s = -5\n", "checker_timeout_s"),
        ("checker_timeout_s = true\n", "checker_timeout_s"),
        ("checker_timeout_s = inf\n", "checker_timeout_s"),
        ("checker_timeout_s = nan\n", "checker_timeout_s"),
        ("[checkers.own]\ntimeout_s = 0\n", "checkers.own.timeout_s"),
        ("[checkers.own]\ntimeout_s = false\n", "checkers.own.timeout_s"),
        ("[checkers.own]\ntimeout_s = 'soon'\n", "checkers.own.timeout_s"),
        ("[checkers.own]\ntimeout_s = 1e9\n", "checkers.own.timeout_s"),
    ],
)
def test_bad_timeouts_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    (tmp_path / "greenloop.toml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert f"{key}: " in str(caught.value)


def test_settings_in_two_places_are_refused(tmp_path: Path) -> None:
    (tmp_path / "greenloop.toml").write_text("")
    (tmp_path / "pyproject.toml").write_text("[tool.greenloop]\n")
    with pytest.raises(ConfigError, match="keep one"):
        load_config(tmp_path)


def test_invalid_settings_exit_2_from_check(tmp_path: Path) -> None:
    python_project(tmp_path)
    (tmp_path / "greenloop.toml").write_text("colour = 'green'\n")
    done = cli("check", cwd=tmp_path, env=python_env())
    assert done.returncode == 2
    assert "unknown key 'colour'" in done.stderr


# --- detection and checker resolution ------------------------------------------


def test_detection_from_marker_files(tmp_path: Path) -> None:
    assert detect_kinds(tmp_path) == []
    (tmp_path / "tool.py").write_text("")
    assert detect_kinds(tmp_path) == [Kind.PYTHON]
    (tmp_path / "Cargo.toml").write_text("")
    (tmp_path / "tsconfig.json").write_text("{}")
    assert detect_kinds(tmp_path) == [Kind.RUST, Kind.PYTHON, Kind.TYPESCRIPT]


def test_python_type_checkers_follow_the_project(tmp_path: Path) -> None:
    def chosen() -> list[str]:
        return [c.name for c in choose_checkers(tmp_path, load_config(tmp_path)).chosen]

    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'a'\n")
    assert chosen() == ["ruff", "mypy"]
    (tmp_path / "pyproject.toml").write_text("[tool.pyright]\n")
    assert chosen() == ["pyright"]
    (tmp_path / "pyproject.toml").write_text("[tool.pyright]\n[tool.mypy]\n")
    assert chosen() == ["mypy", "pyright"]


def test_mypy_json_needs_1_11() -> None:
    assert mypy_supports_json("mypy 1.20.2 (compiled: yes)")
    assert mypy_supports_json("mypy 1.11.0")
    assert not mypy_supports_json("mypy 1.10.1 (compiled: yes)")
    assert not mypy_supports_json("unknown (exit 1)")


def test_python_defaults_ruff_advisory_mypy_authoritative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", python_env()["PATH"])
    python_project(tmp_path)
    checkers = {c.name: c for c in resolve_checkers(tmp_path, load_config(tmp_path))}
    assert list(checkers) == ["ruff", "mypy"]
    assert checkers["ruff"].role is Role.ADVISORY
    assert checkers["mypy"].role is Role.AUTHORITATIVE
    assert checkers["mypy"].format is Format.MYPY_JSON
    # No targets in mypy's config: the project's own (gitignore-aware) file list.
    assert "demo/calc.py" in checkers["mypy"].argv


def test_settings_disable_override_and_add_checkers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", python_env()["PATH"])
    python_project(tmp_path)
    with (tmp_path / "pyproject.toml").open("a") as f:
        f.write(
            "[tool.greenloop.checkers.ruff]\nenabled = false\n"
            "[tool.greenloop.checkers.mypy]\nrole = 'advisory'\n"
            "[tool.greenloop.checkers.own]\ncommand = ['true']\n"
        )
    checkers = {c.name: c for c in resolve_checkers(tmp_path, load_config(tmp_path))}
    assert list(checkers) == ["mypy", "own"]
    assert checkers["mypy"].role is Role.ADVISORY
    assert checkers["own"].role is Role.AUTHORITATIVE
    assert checkers["own"].format is Format.GNU
    assert checkers["own"].source == "own"


def test_checker_timeouts_default_globally_and_per_checker(tmp_path: Path) -> None:
    (tmp_path / "greenloop.toml").write_text(
        "[checkers.own]\ncommand = ['true']\n[checkers.quick]\ncommand = ['true']\n"
        "timeout_s = 0.25\n"
    )
    checkers = {c.name: c.timeout_s for c in resolve_checkers(tmp_path, load_config(tmp_path))}
    assert checkers == {"own": DEFAULT_CHECKER_TIMEOUT_S, "quick": 0.25}
    assert DEFAULT_CHECKER_TIMEOUT_S == 600
    (tmp_path / "greenloop.toml").write_text(
        "checker_timeout_s = 30\n[checkers.own]\ncommand = ['true']\n"
        "[checkers.quick]\ncommand = ['true']\ntimeout_s = 0.25\n"
    )
    checkers = {c.name: c.timeout_s for c in resolve_checkers(tmp_path, load_config(tmp_path))}
    assert checkers == {"own": 30, "quick": 0.25}


def test_only_advisory_checkers_is_a_setup_error(tmp_path: Path) -> None:
    (tmp_path / "greenloop.toml").write_text(
        "[checkers.own]\ncommand = ['true']\nrole = 'advisory'\n"
    )
    with pytest.raises(SetupError, match="could never turn green"):
        resolve_checkers(tmp_path, load_config(tmp_path))


def test_a_custom_checker_needs_a_command(tmp_path: Path) -> None:
    (tmp_path / "greenloop.toml").write_text("[checkers.own]\nrole = 'advisory'\n")
    with pytest.raises(ConfigError, match="needs a `command`"):
        resolve_checkers(tmp_path, load_config(tmp_path))


def test_nothing_to_check_is_a_setup_error(tmp_path: Path) -> None:
    done = cli("check", cwd=tmp_path)
    assert done.returncode == 2
    assert "nothing to check" in done.stderr


def test_missing_programs_exit_2_naming_them_and_how_to_install(tmp_path: Path) -> None:
    python_project(tmp_path)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = dict(os.environ, PATH=str(empty))
    done = cli("check", cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stdout
    assert "'ruff'" in done.stderr and "pip install ruff" in done.stderr
    assert "'mypy'" in done.stderr and "pip install mypy" in done.stderr
    assert "GREEN" not in done.stdout


def test_missing_custom_program_exit_2_with_the_configured_hint(tmp_path: Path) -> None:
    (tmp_path / "greenloop.toml").write_text(
        "[checkers.own]\ncommand = ['greenloop-no-such-checker', '--all']\n"
        "install = 'get it from the team wiki'\n"
    )
    done = cli("check", "--json", cwd=tmp_path)
    assert done.returncode == 2
    assert "greenloop-no-such-checker" in done.stderr
    assert "get it from the team wiki" in done.stderr
    assert done.stdout == ""


# --- build identity --------------------------------------------------------------


def _identity(root: Path) -> object:
    config = load_config(root)
    return build_identity(root, config, checkers=[])


def test_identity_is_stable_and_follows_content(tmp_path: Path) -> None:
    write(tmp_path, {"src/a.py": "x = 1\n", "pyproject.toml": "[project]\nname='a'\n"})
    first = _identity(tmp_path)
    assert _identity(tmp_path) == first
    (tmp_path / "src/a.py").write_text("x = 2\n")
    second = _identity(tmp_path)
    assert second.source_tree != first.source_tree
    assert (second.lockfiles, second.toolchain, second.config, second.pipeline) == (
        first.lockfiles,
        first.toolchain,
        first.config,
        first.pipeline,
    )


def test_ignored_paths_do_not_change_the_identity(tmp_path: Path) -> None:
    write(tmp_path, {"src/a.py": "x = 1\n", ".gitignore": "*.log\n", "sub/.gitignore": "gen/\n"})
    before = _identity(tmp_path)
    write(
        tmp_path,
        {
            "debug.log": "noise",
            "sub/gen/out.py": "",
            "target/debug/x": "",
            "node_modules/p/index.js": "",
            "src/__pycache__/a.cpython-311.pyc": "",
            ".greenloop/watch.json": "{}",
        },
    )
    assert _identity(tmp_path) == before
    write(tmp_path, {".greenloop/pipeline.py": ""})
    after = _identity(tmp_path)
    assert after.pipeline != before.pipeline
    assert after.source_tree != before.source_tree  # the pipeline file is a project file too


def test_absent_and_empty_files_hash_differently(tmp_path: Path) -> None:
    absent = _identity(tmp_path)
    (tmp_path / "uv.lock").write_text("")
    (tmp_path / ".python-version").write_text("")
    (tmp_path / ".greenloop").mkdir()
    (tmp_path / ".greenloop/pipeline.py").write_text("")
    empty = _identity(tmp_path)
    assert empty.lockfiles != absent.lockfiles
    assert empty.toolchain != absent.toolchain
    assert empty.pipeline != absent.pipeline


def test_requirements_files_count_as_lockfiles(tmp_path: Path) -> None:
    before = _identity(tmp_path)
    (tmp_path / "requirements-dev.txt").write_text("pytest\n")
    assert _identity(tmp_path).lockfiles != before.lockfiles


def test_config_target_and_profile_are_part_of_the_identity(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'a'\n")
    default = _identity(tmp_path)
    assert default.target == host_triple()
    assert default.profile is Profile.DEV
    with (tmp_path / "pyproject.toml").open("a") as f:
        f.write("[tool.greenloop]\ntarget = 'web'\nprofile = 'release'\n")
    configured = _identity(tmp_path)
    assert configured.config != default.config
    assert (configured.target, configured.profile) == ("web", Profile.RELEASE)


def test_checker_versions_are_part_of_the_toolchain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", python_env()["PATH"])
    python_project(tmp_path)
    config = load_config(tmp_path)
    with_tools = build_identity(tmp_path, config)
    without = build_identity(tmp_path, config, checkers=[])
    assert with_tools.toolchain != without.toolchain
    assert with_tools.source_tree == without.source_tree


def test_identity_honours_git_ignores(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    write(tmp_path, {"a.py": "", ".gitignore": "secret.py\n"})
    before = _identity(tmp_path)
    (tmp_path / "secret.py").write_text("x")
    assert _identity(tmp_path) == before
    assert "secret.py" not in Ignores(tmp_path).files()


def test_settings_ignore_list_is_honoured(tmp_path: Path) -> None:
    write(tmp_path, {"a.py": "", "greenloop.toml": "ignore = ['scratch/']\n"})
    before = _identity(tmp_path)
    write(tmp_path, {"scratch/notes.py": "x"})
    assert _identity(tmp_path) == before


# --- parsers: shapes the real-program tests do not always produce ----------------

BASE = Path("/proj")


def test_gnu_format_with_and_without_column_severity_and_code() -> None:
    out = (
        "src/a.c:3:7: warning: unused variable [-Wunused]\n"
        "src/b.py:10: error: Name 'x' is not defined  [name-defined]\n"
        "lib.py:4:2: E999 something odd\n"
        "not a diagnostic line\n"
    )
    found = list(gnu(out.splitlines(), ["/abs/c.txt:1:1: note: on stderr\n"], BASE, "lint"))
    assert [(d.path, d.line, d.col, d.severity, d.code) for d in found] == [
        ("/proj/src/a.c", 3, 7, Severity.WARNING, "-Wunused"),
        ("/proj/src/b.py", 10, 1, Severity.ERROR, "name-defined"),
        ("/proj/lib.py", 4, 2, Severity.ERROR, None),
        ("/abs/c.txt", 1, 1, Severity.INFO, None),
    ]
    assert found[1].message == "Name 'x' is not defined"


def test_tsc_continuation_lines_and_global_errors() -> None:
    out = (
        "src/a.ts(4,9): error TS2322: Type 'A' is not assignable to type 'B'.\n"
        "  Property 'x' is missing in type 'A'.\n"
        "error TS5023: Unknown compiler option 'strictt'.\n"
    )
    first, second = tsc(out.splitlines(keepends=True), [], BASE, "tsc")
    assert (first.path, first.line, first.col, first.code) == ("/proj/src/a.ts", 4, 9, "TS2322")
    assert first.message.endswith("Property 'x' is missing in type 'A'.")
    assert (second.path, second.line, second.code) == ("/proj/tsconfig.json", 1, "TS5023")


def test_cargo_spanless_summaries_are_dropped_but_spanless_errors_kept() -> None:
    lines = [
        '{"reason":"compiler-message","manifest_path":"/proj/Cargo.toml","message":'
        '{"level":"failure-note","message":"For more information…","spans":[]}}',
        '{"reason":"compiler-message","manifest_path":"/proj/Cargo.toml","message":'
        '{"level":"error","message":"aborting due to 1 previous error","spans":[]}}',
        '{"reason":"compiler-message","manifest_path":"/proj/Cargo.toml","message":'
        '{"level":"error","message":"`main` function not found","code":{"code":"E0601"},'
        '"spans":[]}}',
        '{"reason":"build-finished","success":false}',
        "not json",
    ]
    (only,) = cargo_json(lines, [], BASE, "rustc")
    assert (only.path, only.code, only.severity) == ("/proj/Cargo.toml", "E0601", Severity.ERROR)


def test_mypy_file_level_errors_are_clamped_to_line_1() -> None:
    out = '{"file": "a.py", "line": -1, "column": -1, "message": "m", "hint": null, '
    out += '"code": "misc", "severity": "error"}\n'
    (only,) = mypy_json([out], [], BASE, "mypy")
    assert (only.line, only.col) == (1, 1)


def test_every_output_format_is_read_by_exactly_one_parser() -> None:
    # A format nobody reads fails at its first report; two modules bringing one, silently.
    brought = [fmt for checker in BUILTINS.values() for fmt in checker.outputs]
    assert len(brought) == len(set(brought))
    assert set(OUTPUTS) == set(Format) - {Format.LSP}


def test_config_object_defaults() -> None:
    assert Config().settings.checkers == {}
