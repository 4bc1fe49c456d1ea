"""The command line: help, version, schema, init, pipelines, runs and cache commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from greenloop import __version__
from greenloop.protocol.schema import WIRE_TYPES
from tests.conftest import cli, write_pipeline


def test_help_lists_every_command_and_version(tmp_path: Path) -> None:
    result = cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in (
        "run",
        "render",
        "pipelines",
        "init",
        "runs",
        "cache",
        "schema",
        "check",
        "watch",
        "dev",
        "status",
        "plugins",
        "explain",
        "logs",
        "artifacts",
        "hook",
        "daemon",
    ):
        assert f"  {command} " in result.stdout, command
    assert cli("--version", cwd=tmp_path).stdout.strip() == f"greenloop, version {__version__}"


def test_schema_prints_every_wire_type(tmp_path: Path) -> None:
    everything = json.loads(cli("schema", cwd=tmp_path).stdout)
    assert set(everything) == set(WIRE_TYPES)
    one = json.loads(cli("schema", "ExecutorInput", cwd=tmp_path).stdout)
    assert one["additionalProperties"] is False and "cache_lookup" in one["properties"]
    unknown = cli("schema", "Nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown type 'Nope'" in unknown.stderr


@pytest.mark.parametrize(
    ("marker", "template"),
    [
        ("Cargo.toml", "rust"),
        ("package.json", "node"),
        ("pyproject.toml", "python"),
        (None, "generic"),
    ],
)
def test_init_detects_the_project(tmp_path: Path, marker: str | None, template: str) -> None:
    if marker:
        (tmp_path / marker).write_text("")
    result = cli("init", cwd=tmp_path)
    assert result.returncode == 0 and f"({template} template)" in result.stdout
    listed = cli("pipelines", "--json", cwd=tmp_path)
    assert json.loads(listed.stdout)[0]["name"] == "ci"
    again = cli("init", cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr


def test_generic_template_runs_green_and_then_cached(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hi")
    cli("init", cwd=tmp_path)
    first = cli("run", "--format", "plain", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    second = cli("run", "--format", "plain", cwd=tmp_path)
    assert "setup cached" in second.stdout
    runs = json.loads(cli("runs", "--json", cwd=tmp_path).stdout)
    assert [r["status"] for r in runs] == ["passed", "passed"]
    steps = cli("runs", "--run", runs[0]["run_id"][:8], cwd=tmp_path)
    assert "cached" in steps.stdout
    # Regression: the dashed id `runs --json` prints was refused.
    dashed = cli("runs", "--run", runs[0]["run_id"], "--json", cwd=tmp_path)
    assert dashed.returncode == 0, dashed.stderr
    assert {s["status"] for s in json.loads(dashed.stdout)} == {"cached", "passed"}
    assert cli("runs", "--run", runs[0]["run_id"].upper()[:13], cwd=tmp_path).returncode == 0
    unknown = cli("runs", "--run", "zz", cwd=tmp_path)
    assert unknown.returncode == 2 and "no run with id 'zz'" in unknown.stderr


def test_python_template_tests_the_current_sources_not_an_installed_copy(
    tmp_path: Path,
) -> None:
    # Regression: the cached `pip install .` froze the sources of the day the lock
    # files last changed, so a broken function still passed "python test".
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\n'
        'build-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "calc-demo"\nversion = "0.1.0"\n'
    )
    (tmp_path / "src" / "calc").mkdir(parents=True)
    source = tmp_path / "src" / "calc" / "__init__.py"
    source.write_text("def add(a, b):\n    return a + b\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_calc.py").write_text(
        "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    )
    assert cli("init", cwd=tmp_path).returncode == 0
    # A real install from PyPI: the guard is generous for a loaded machine.
    green = cli("run", "--format", "plain", cwd=tmp_path, timeout=900)
    assert green.returncode == 0, green.stdout + green.stderr
    source.write_text("def add(a, b):\n    return a - b\n")
    red = cli("run", "--format", "plain", cwd=tmp_path, timeout=900)
    assert "python install cached" in red.stdout
    assert red.returncode == 1 and "python test failed" in red.stdout, red.stdout


@pytest.mark.parametrize("command", [["run", "ci"], ["render"], ["pipelines", "--json"]])
def test_an_exiting_pipeline_file_is_exit_2_with_file_and_line(
    project: Path, command: list[str]
) -> None:
    path = write_pipeline(
        project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("false")\n    raise SystemExit(0)\n'
    )
    result = cli(*command, cwd=project)
    assert result.returncode == 2, result.stdout
    assert f"{path.resolve()}:6: the pipeline file called sys.exit(0)" in result.stderr


@pytest.mark.parametrize(
    "command", [["render"], ["pipelines", "--json"], ["run", "--json"], ["run", "--format", "json"]]
)
def test_a_pipeline_files_prints_go_to_stderr_never_into_json(
    project: Path, command: list[str]
) -> None:
    write_pipeline(
        project,
        'print("hello from the file")\nimport os\nos.system("echo from a subprocess")\n'
        '@gl.pipeline("ci")\ndef ci():\n    print("building")\n    gl.sh("true")\n',
    )
    result = cli(*command, cwd=project)
    assert result.returncode == 0, result.stderr
    if command[0] == "run":
        assert all(json.loads(line) for line in result.stdout.splitlines())
    else:
        json.loads(result.stdout)
    for text in ("hello from the file", "from a subprocess", "building"):
        assert text in result.stderr and text not in result.stdout


def test_missing_pipeline_file_is_a_setup_error(tmp_path: Path) -> None:
    result = cli("run", cwd=tmp_path)
    assert result.returncode == 2 and "greenloop init" in result.stderr


def test_cache_commands(project: Path, tmp_path: Path) -> None:
    write_pipeline(
        project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo hi", cache=gl.forever())\n'
    )
    assert cli("run", cwd=project).returncode == 0
    stats = json.loads(cli("cache", "stats", "--json", cwd=project).stdout)
    assert stats["entries"] == 1 and stats["misses"] == 1
    assert cli("cache", "path", cwd=project).stdout.strip() == os.environ["GREENLOOP_CACHE_DIR"]
    assert cli("cache", "verify", cwd=project).returncode == 0
    gc = json.loads(cli("cache", "gc", "--json", cwd=project).stdout)
    assert gc["entries_removed"] == 0
    # Corrupt one object: verify says so and exits 1.
    objects = Path(os.environ["GREENLOOP_CACHE_DIR"]) / "objects"
    victim = next(p for p in objects.rglob("*") if p.is_file() and not p.name.startswith("."))
    victim.chmod(0o644)
    victim.write_bytes(b"corrupted")
    bad = cli("cache", "verify", cwd=project)
    assert bad.returncode == 1 and "corrupt" in bad.stdout
    assert cli("cache", "clean", "--yes", cwd=project).returncode == 0
    assert not Path(os.environ["GREENLOOP_CACHE_DIR"]).exists()


def test_cache_clean_refuses_a_folder_that_is_not_a_store(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    env = {**os.environ, "GREENLOOP_CACHE_DIR": str(precious)}
    result = subprocess.run(
        [sys.executable, "-m", "greenloop", "cache", "clean", "--yes"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2 and "not a greenloop store" in result.stderr
    assert (precious / "thesis.txt").read_text() == "years of work"


@pytest.mark.parametrize(
    "command",
    [
        ("run", "nosuch"),
        ("render", "nosuch"),
        ("explain", "nosuch"),
        ("debug", "s", "--pipeline", "nosuch"),
    ],
)
def test_an_unknown_pipeline_is_exit_2_naming_those_defined(
    project: Path, command: tuple[str, ...]
) -> None:
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            gl.sh("true", label="s")

        @gl.pipeline("docs")
        def docs():
            gl.sh("true", label="d")
        """,
    )
    done = cli(*command, cwd=project)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: no pipeline named 'nosuch' (defined: ci, docs)"
