"""The run history afterwards: ``greenloop logs``, ``artifacts`` and ``runs --run --json``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import cli, write_pipeline

PIPELINE = """
@gl.pipeline("ci")
def ci():
    build = gl.sh("echo building; echo warning >&2; mkdir -p dist && printf 'whl' > dist/a.whl",
                  label="build", cache=gl.forever(), artifacts=["dist"])
    build.sh("cat dist/a.whl; echo; echo tested", label="test")
    gl.sh("cat round.txt", label="round")
"""


def _runs(project: Path) -> list[dict[str, object]]:
    listed: list[dict[str, object]] = json.loads(cli("runs", "--json", cwd=project).stdout)
    return listed


def test_logs_of_a_step_and_of_a_cached_step(project: Path) -> None:
    write_pipeline(project, PIPELINE)
    (project / "round.txt").write_text("one\n")
    assert cli("run", cwd=project).returncode == 0
    (project / "round.txt").write_text("two\n")
    assert cli("run", cwd=project).returncode == 0
    first, second = reversed([str(r["run_id"]) for r in _runs(project)])
    assert cli("logs", "round", cwd=project).stdout == "two\n"
    assert cli("logs", "round", "--run", first, cwd=project).stdout == "one\n"
    # A cached step shows the log of the run that produced its entry.
    cached = cli("logs", "build", "--run", second, cwd=project)
    # stdout and stderr lines may come in either order.
    assert sorted(cached.stdout.splitlines()) == ["[stderr] warning", "building"], cached.stderr
    steps = json.loads(cli("runs", "--run", second, "--json", cwd=project).stdout)
    build = next(s for s in steps if s["key"] == "build")
    assert build["cached"] and len(build["cache_key"]) == 64 and len(build["log"]) == 64
    assert build["artifacts"][0]["path"] == "dist"


def test_logs_errors_are_exit_2(project: Path) -> None:
    none_yet = cli("logs", "build", cwd=project)
    assert none_yet.returncode == 2 and "no run recorded yet" in none_yet.stderr
    write_pipeline(project, PIPELINE)
    (project / "round.txt").write_text("1\n")
    assert cli("run", cwd=project).returncode == 0
    unknown = cli("logs", "biuld", cwd=project)
    assert unknown.returncode == 2 and "no recorded run has a step 'biuld'" in unknown.stderr
    run_id = str(_runs(project)[0]["run_id"])
    in_run = cli("logs", "biuld", "--run", run_id[:8], cwd=project)
    assert in_run.returncode == 2 and "has no step 'biuld' (its steps: " in in_run.stderr
    assert all(key in in_run.stderr for key in ("build", "test", "round"))
    bad_run = cli("logs", "build", "--run", "ffff0000", cwd=project)
    assert bad_run.returncode == 2 and "no run with id 'ffff0000'" in bad_run.stderr


def test_artifacts_lists_and_exports_a_past_run(project: Path, tmp_path: Path) -> None:
    write_pipeline(project, PIPELINE)
    (project / "round.txt").write_text("1\n")
    assert cli("run", cwd=project).returncode == 0
    listed = json.loads(cli("artifacts", "--json", cwd=project).stdout)
    assert [(a["step"], a["path"], a["size_bytes"]) for a in listed["artifacts"]] == [
        ("build", "dist", 3)
    ]
    out = tmp_path / "out"
    exported = cli("artifacts", "build", "--out", str(out), cwd=project)
    assert exported.returncode == 0, exported.stderr
    assert (out / "build" / "dist" / "a.whl").read_bytes() == b"whl"
    nothing = cli("artifacts", "round", cwd=project)
    assert nothing.returncode == 0 and "kept no artifacts" in nothing.stderr
