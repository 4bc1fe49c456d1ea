"""``greenloop check`` against the real checker programs: green, red at the right place, green."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from greenloop._fs import pid_alive
from greenloop.devloop import mypy_cache
from greenloop.devloop.checkers import resolve as checkers_module
from greenloop.devloop.config import Format, load_config
from greenloop.devloop.oneshot import check_once
from greenloop.protocol import CheckResult, Severity, TreeState
from tests.conftest import wait_until
from tests.test_devloop_helpers import (
    PY_GREEN,
    PY_RED,
    cargo,
    cli,
    custom_checker,
    env_with,
    node_bin,
    python_env,
    python_project,
    write,
)


def _errors(result: CheckResult) -> list[tuple[str, int, int, str, str | None]]:
    return [
        (Path(d.path).name, d.line, d.col, d.source, d.code)
        for d in result.diagnostics
        if d.severity is Severity.ERROR
    ]


def test_python_green_red_green_through_the_cli(tmp_path: Path) -> None:
    root = python_project(tmp_path)
    env = python_env()
    green = cli("check", cwd=root, env=env)
    assert green.returncode == 0, green.stdout + green.stderr
    assert green.stdout.splitlines()[-1].startswith("GREEN — 0 errors")

    (root / "demo/calc.py").write_text(PY_RED)
    red = cli("check", cwd=root, env=env)
    assert red.returncode == 1, red.stdout + red.stderr
    calc = root / "demo" / "calc.py"
    assert f"error[return-value; mypy]: {calc}:2:12: Incompatible return value type" in red.stdout
    assert red.stdout.splitlines()[-1].startswith("RED — 1 error, 0 warnings (ruff, mypy;")

    as_json = cli("check", "--json", cwd=root, env=env)
    assert as_json.returncode == 1
    result = CheckResult.model_validate_json(as_json.stdout)
    assert result.state is TreeState.RED
    assert _errors(result) == [("calc.py", 2, 12, "mypy", "return-value")]
    assert result.checkers == ["ruff", "mypy"]

    (root / "demo/calc.py").write_text(PY_GREEN)
    again = cli("check", "--json", "--root", str(root), cwd=tmp_path.parent, env=env)
    assert again.returncode == 0
    assert json.loads(again.stdout)["state"] == "green"


def test_ruff_findings_are_advisory_but_still_red(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", python_env()["PATH"])
    root = python_project(tmp_path)
    (root / "demo/calc.py").write_text("import os\n\n" + PY_GREEN)
    result = check_once(root)
    assert result.state is TreeState.RED
    assert _errors(result) == [("calc.py", 1, 8, "ruff", "F401")]


def test_mypy_text_format_when_json_is_unsupported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", python_env()["PATH"])
    # An old mypy (before 1.11) has no -O json: the text format is parsed instead.
    monkeypatch.setattr(checkers_module, "program_version", lambda program: "mypy 1.10.0")
    root = python_project(tmp_path)
    (mypy,) = [
        c for c in checkers_module.resolve_checkers(root, load_config(root)) if c.name == "mypy"
    ]
    assert mypy.format is Format.GNU
    assert "--show-column-numbers" in mypy.argv
    assert check_once(root).state is TreeState.GREEN
    (root / "demo/calc.py").write_text(PY_RED)
    result = check_once(root)
    assert result.state is TreeState.RED
    assert _errors(result) == [("calc.py", 2, 12, "mypy", "return-value")]


def test_a_checker_that_fails_without_diagnostics_is_red_not_green(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "greenloop.toml": """\
                [checkers.broken]
                command = ["sh", "-c", "echo 'config file is corrupt' >&2; exit 3"]
                """
        },
    )
    done = cli("check", "--json", cwd=tmp_path)
    assert done.returncode == 1
    result = CheckResult.model_validate_json(done.stdout)
    (only,) = result.diagnostics
    assert (only.source, only.code, only.path) == ("greenloop", "checker-failed", str(tmp_path))
    assert "exited with status 3" in only.message
    assert "config file is corrupt" in only.message


def test_a_checker_that_hangs_is_killed_at_its_timeout_and_the_tree_is_red(
    tmp_path: Path,
) -> None:
    root, pids = tmp_path / "proj", tmp_path / "pids"
    pids.mkdir()
    # A leader that starts a helper in its process group, says something, then hangs.
    hang = (
        f"sleep 300 & echo $! > {pids}/helper; echo $$ > {pids}/leader; "
        "echo 'still waiting for the lock' >&2; wait"
    )
    write(
        root,
        {
            "notes.txt": "fine\n",
            "greenloop.toml": f"""\
                kinds = []
                [checkers.hang]
                command = ["sh", "-c", "{hang}"]
                timeout_s = 0.5
                """,
        },
    )
    done = cli("check", "--json", cwd=root)
    assert done.returncode == 1, done.stdout + done.stderr
    result = CheckResult.model_validate_json(done.stdout)
    assert result.state is TreeState.RED
    (only,) = result.diagnostics
    assert (only.source, only.code, only.path) == ("greenloop", "checker-timeout", str(root))
    assert only.message.startswith("hang did not finish within its timeout of 0.5s")
    assert "still waiting for the lock" in only.message
    assert "checkers.hang.timeout_s" in only.message
    started = [int((pids / name).read_text()) for name in ("leader", "helper")]
    wait_until(lambda: not any(pid_alive(pid) for pid in started), what="the group to die")


TODO_CHECKER = """
import pathlib
for path in sorted(pathlib.Path(".").glob("*.txt")):
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if "TODO" in line:
            print(f"{path}:{number}: error: {line}")
"""


def test_a_custom_command_with_the_common_format(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "todo_check.py": TODO_CHECKER,
            "greenloop.toml": custom_checker("todo", "todo_check.py"),
            "notes.txt": "fine\nTODO: fix\n",
        },
    )
    done = cli("check", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"error[todo]: {tmp_path / 'notes.txt'}:2:1: TODO: fix" in done.stdout
    (tmp_path / "notes.txt").write_text("fine\n")
    assert cli("check", cwd=tmp_path).returncode == 0


RUST_GREEN = 'fn main() {\n    let x: u32 = 1;\n    println!("{x}");\n}\n'
RUST_RED = 'fn main() {\n    let x: u32 = "one";\n    println!("{x}");\n}\n'


def test_rust_green_red_green(tmp_path: Path) -> None:
    cargo_program = cargo()
    write(
        tmp_path,
        {
            "Cargo.toml": """\
                [package]
                name = "tiny"
                version = "0.1.0"
                edition = "2021"
                """,
            "src/main.rs": RUST_GREEN,
        },
    )
    env = env_with(Path(cargo_program).parent)
    green = cli("check", cwd=tmp_path, env=env)
    assert green.returncode == 0, green.stdout + green.stderr
    assert "(cargo;" in green.stdout
    (tmp_path / "src/main.rs").write_text(RUST_RED)
    red = cli("check", "--json", cwd=tmp_path, env=env)
    assert red.returncode == 1, red.stdout + red.stderr
    result = CheckResult.model_validate_json(red.stdout)
    # --all-targets reports the error for the binary and its test harness: shown once.
    assert _errors(result) == [("main.rs", 2, 18, "rustc", "E0308")]
    assert result.diagnostics[0].path == str(tmp_path / "src" / "main.rs")
    (tmp_path / "src/main.rs").write_text(RUST_GREEN)
    assert cli("check", cwd=tmp_path, env=env).returncode == 0


TS_GREEN = "export const x: number = 1;\n"
TS_RED = 'export const y = 2;\nexport const x: number = "one";\n'


def test_typescript_green_red_green(tmp_path: Path) -> None:
    env = env_with(node_bin())
    write(
        tmp_path,
        {
            "tsconfig.json": '{"compilerOptions": {"strict": true}, "include": ["src"]}\n',
            "src/a.ts": TS_GREEN,
        },
    )
    green = cli("check", cwd=tmp_path, env=env)
    assert green.returncode == 0, green.stdout + green.stderr
    (tmp_path / "src/a.ts").write_text(TS_RED)
    red = cli("check", "--json", cwd=tmp_path, env=env)
    assert red.returncode == 1, red.stdout + red.stderr
    result = CheckResult.model_validate_json(red.stdout)
    assert _errors(result) == [("a.ts", 2, 14, "tsc", "TS2322")]
    (tmp_path / "src/a.ts").write_text(TS_GREEN)
    assert cli("check", cwd=tmp_path, env=env).returncode == 0


def test_pyright_beside_mypy_when_the_project_configures_both(tmp_path: Path) -> None:
    env = env_with(node_bin(), *python_env()["PATH"].split(":"))
    root = python_project(tmp_path)
    with (root / "pyproject.toml").open("a") as f:
        f.write("[tool.pyright]\ntypeCheckingMode = 'strict'\n")
    green = cli("check", cwd=root, env=env)
    assert green.returncode == 0, green.stdout + green.stderr
    # [tool.mypy] is there too: a project's CI that runs both is held to both.
    assert "(ruff, mypy, pyright;" in green.stdout
    (root / "demo/calc.py").write_text(PY_RED)
    red = cli("check", "--json", cwd=root, env=env)
    assert red.returncode == 1
    result = CheckResult.model_validate_json(red.stdout)
    assert sorted(_errors(result)) == [
        ("calc.py", 2, 12, "mypy", "return-value"),
        ("calc.py", 2, 12, "pyright", "reportReturnType"),
    ]


def test_an_edit_that_keeps_size_and_mtime_cannot_fool_mypys_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", python_env()["PATH"])
    root = python_project(tmp_path)
    calc = root / "demo/calc.py"
    stamp = calc.stat()
    assert check_once(root).state is TreeState.GREEN
    for text, state in ((PY_RED, TreeState.RED), (PY_GREEN, TreeState.GREEN)):
        # Same size, same mtime: exactly what mypy's own cache cannot tell apart.
        assert len(text) == stamp.st_size
        calc.write_text(text)
        os.utime(calc, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        assert check_once(root).state is state


def test_a_cache_seeded_from_another_tree_cannot_fool_mypy_either(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", python_env()["PATH"])
    source = python_project(tmp_path / "source")
    assert check_once(source).state is TreeState.GREEN
    stamp = (source / "demo/calc.py").stat()
    # Another tree whose calc.py has the source's size and mtime, not its content.
    tree = python_project(tmp_path / "tree")
    (tree / "demo/calc.py").write_text(PY_RED)
    os.utime(tree / "demo/calc.py", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))

    assert not mypy_cache.seed(tree, source, lambda: False)  # the source moved on: no copy
    assert not mypy_cache.cache_dir(tree).exists()
    assert mypy_cache.seed(tree, source, lambda: True)
    assert not mypy_cache.seed(tree, source, lambda: True)  # it has one now
    assert check_once(tree).state is TreeState.RED
    (tree / "demo/calc.py").write_text(PY_GREEN)
    assert check_once(tree).state is TreeState.GREEN


FLOOD_CHECKER = """
import sys
count = int(sys.argv[1])
write = sys.stdout.write
# Warnings first, over 100 files; the errors come last, in one file of their own.
for i in range(count):
    write(f"src/f{i % 100:03d}.py:{i + 1}:1: warning: a name that is not quite right [W1]\\n")
for i in range(3):
    write(f"src/late.py:{i + 1}:1: error: the real problem [E1]\\n")
sys.exit(1)
"""


def test_a_flood_of_diagnostics_keeps_the_first_n_errors_first_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        {
            "flood.py": FLOOD_CHECKER,
            "greenloop.toml": (
                f"kinds = []\nmax_diagnostics = 50\n[checkers.flood]\n"
                f'command = ["{sys.executable}", "flood.py", "20000"]\n'
            ),
        },
    )
    done = cli("check", "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr
    result = CheckResult.model_validate_json(done.stdout)
    assert result.state is TreeState.RED
    assert len(result.diagnostics) == 50
    # The errors that make the tree red are listed, though they came last.
    assert [
        (Path(d.path).name, d.line) for d in result.diagnostics if d.severity is Severity.ERROR
    ] == [
        ("late.py", 1),
        ("late.py", 2),
        ("late.py", 3),
    ]
    assert result.omitted == {Severity.WARNING: 20000 - 47}

    text = cli("check", cwd=tmp_path)
    assert text.returncode == 1
    lines = text.stdout.splitlines()
    assert lines[-2].startswith("... and 19953 more not listed (19953 warning)")
    assert lines[-1].startswith("RED — 3 errors, 20000 warnings (flood;")


def test_errors_past_the_limit_still_make_the_tree_and_their_files_red(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "flood.py": FLOOD_CHECKER.replace("for i in range(3)", "for i in range(30)"),
            "greenloop.toml": (
                f"kinds = []\nmax_diagnostics = 10\n[checkers.flood]\n"
                f'command = ["{sys.executable}", "flood.py", "5"]\n'
            ),
        },
    )
    done = cli("check", "--json", cwd=tmp_path)
    assert done.returncode == 1
    result = CheckResult.model_validate_json(done.stdout)
    assert result.state is TreeState.RED
    assert [d.severity for d in result.diagnostics] == [Severity.ERROR] * 10
    assert result.omitted == {Severity.ERROR: 20, Severity.WARNING: 5}
    # Not one greenloop "checker-failed": the checker's own errors explain its exit status.
    assert all(d.source == "flood" for d in result.diagnostics)


MEASURE_RSS = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_a_flood_of_diagnostics_is_read_as_a_stream(tmp_path: Path) -> None:
    # 300,000 diagnostics, 23 MB of output: held in memory they took ~600 MB.
    write(
        tmp_path,
        {
            "flood.py": FLOOD_CHECKER,
            "greenloop.toml": (
                f"kinds = []\n[checkers.flood]\n"
                f'command = ["{sys.executable}", "flood.py", "300000"]\n'
            ),
        },
    )
    greenloop = [sys.executable, "-m", "greenloop", "check"]
    env = {**os.environ, "GREENLOOP_NO_DAEMON": "1"}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE_RSS, *greenloop],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    code, max_rss_kb = (int(x) for x in done.stdout.split())
    assert code == 1
    assert max_rss_kb < 150_000, f"greenloop check peaked at {max_rss_kb / 1000:.0f} MB"
