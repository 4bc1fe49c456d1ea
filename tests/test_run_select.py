"""Working with part of a run: selecting steps, env values, the pipeline's timeout, and
getting artifacts out (``run --only/--from/--failed/-e/--artifacts-dir``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.conftest import cli, write_pipeline

PIPELINE = """
@gl.pipeline("ci")
def ci():
    deps = gl.sh("mkdir -p dist/sub && printf 'wheel\\\\000bytes' > dist/pkg.whl"
                 " && ln -s pkg.whl dist/sub/link && echo $GREETING > hello.txt",
                 label="deps", cache=gl.forever(), artifacts=["dist", "hello.txt"])
    deps.sh("echo lint", label="lint")
    test = deps.sh("test -e ok", label="test")
    test.sh("echo after", label="after")
    gl.wait(test).sh("echo report", label="report")
    gl.sh("echo other", label="other")
"""


def _finished(result: Any) -> dict[str, dict[str, Any]]:
    events = [json.loads(line) for line in result.stdout.splitlines()]
    return {e["step"]: e for e in events if e["type"] == "step_finished"}


def test_only_runs_a_step_with_the_chain_it_builds_in(project: Path) -> None:
    write_pipeline(project, PIPELINE)
    result = cli("run", "--only", "lint", "--json", "-e", "GREETING=hi", cwd=project)
    assert result.returncode == 0, result.stderr
    assert {k: e["status"] for k, e in _finished(result).items()} == {
        "deps": "passed",
        "lint": "passed",
    }
    # A glob; the chain is answered from the cache now.
    again = cli(
        "run", "--only", "l*", "--only", "oth?r", "--json", "-e", "GREETING=hi", cwd=project
    )
    assert {k: e["status"] for k, e in _finished(again).items()} == {
        "deps": "cached",
        "lint": "passed",
        "other": "passed",
    }


def test_from_runs_a_step_and_everything_after_it(project: Path) -> None:
    write_pipeline(project, PIPELINE)
    (project / "ok").write_text("")
    result = cli("run", "--from", "test", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    assert set(_finished(result)) == {"deps", "test", "after", "report"}


def test_failed_reruns_what_did_not_pass_last_time(project: Path) -> None:
    write_pipeline(project, PIPELINE)
    never = cli("run", "--failed", cwd=project)
    assert never.returncode == 2 and "pipeline 'ci' has not run yet" in never.stderr
    red = cli("run", "--json", cwd=project)
    assert red.returncode == 1
    assert _finished(red)["after"]["status"] == "skipped"
    (project / "ok").write_text("")
    rerun = cli("run", "--failed", "--json", cwd=project)
    assert rerun.returncode == 0, rerun.stderr
    assert {k: e["status"] for k, e in _finished(rerun).items()} == {
        "deps": "cached",
        "test": "passed",
        "after": "passed",
        "report": "passed",
    }
    green = cli("run", "--failed", cwd=project)
    assert green.returncode == 2 and "every step passed in the last run" in green.stderr


def test_an_unknown_key_is_exit_2_listing_the_keys(project: Path) -> None:
    write_pipeline(project, PIPELINE)
    for flag in ("--only", "--from"):
        result = cli("run", flag, "tset", cwd=project)
        assert result.returncode == 2
        assert "no step of pipeline 'ci' matches 'tset'" in result.stderr
        assert "deps, lint, test, after, report, other" in result.stderr
    assert json.loads(cli("runs", "--json", cwd=project).stdout) == []


def test_pipelines_steps_lists_the_keys(project: Path) -> None:
    write_pipeline(project, PIPELINE)
    listed = json.loads(cli("pipelines", "--steps", "--json", cwd=project).stdout)
    assert [s["key"] for s in listed[0]["steps"]] == [
        "deps",
        "lint",
        "test",
        "after",
        "report",
        "other",
    ]
    assert "  lint  (in deps)" in cli("pipelines", "--steps", cwd=project).stdout


def test_env_values_reach_every_step_and_its_cache_key(project: Path) -> None:
    write_pipeline(project, PIPELINE)
    first = cli(
        "run", "--only", "deps", "-e", "GREETING=hello", "--artifacts-dir", "out", cwd=project
    )
    assert first.returncode == 0, first.stderr
    assert (project / "out" / "deps" / "hello.txt").read_text() == "hello\n"
    same = cli("run", "--only", "deps", "-e", "GREETING=hello", "--json", cwd=project)
    assert _finished(same)["deps"]["status"] == "cached"
    other = cli("run", "--only", "deps", "-e", "GREETING=bye", "--json", cwd=project)
    assert _finished(other)["deps"]["status"] == "passed"
    for bad in ("NOVALUE", "=x", "1X=y", "A-B=c"):
        refused = cli("run", "-e", bad, cwd=project)
        assert refused.returncode == 2 and "expected KEY=VALUE" in refused.stderr, bad


def test_artifacts_dir_exports_cached_steps_byte_for_byte(project: Path, tmp_path: Path) -> None:
    write_pipeline(project, PIPELINE)
    out = tmp_path / "artifacts"
    assert cli("run", "--only", "deps", cwd=project).returncode == 0
    # A stale file at an artifact's path is replaced, a neighbour left alone.
    (out / "deps" / "dist").mkdir(parents=True)
    (out / "deps" / "dist" / "stale").write_text("old")
    (out / "mine.txt").write_text("keep")
    cached = cli("run", "--only", "deps", "--json", "--artifacts-dir", str(out), cwd=project)
    assert _finished(cached)["deps"]["status"] == "cached"
    assert (out / "deps" / "dist" / "pkg.whl").read_bytes() == b"wheel\0bytes"
    assert os.readlink(out / "deps" / "dist" / "sub" / "link") == "pkg.whl"
    assert not (out / "deps" / "dist" / "stale").exists()
    assert (out / "mine.txt").read_text() == "keep"
    assert sorted(p.name for p in (out / "deps").iterdir()) == ["dist", "hello.txt"]


def test_artifacts_dir_inside_the_store_is_refused(project: Path, tmp_path: Path) -> None:
    write_pipeline(project, PIPELINE)
    assert cli("cache", "stats", cwd=project).returncode == 0
    result = cli("run", "--artifacts-dir", str(tmp_path / "cache" / "x"), cwd=project)
    assert result.returncode == 2 and "inside greenloop's store" in result.stderr


def test_the_pipelines_timeout_stops_the_run_with_124(project: Path) -> None:
    write_pipeline(
        project,
        """
        @gl.pipeline("ci", timeout=1)
        def ci():
            slow = gl.sh("echo started; sleep 60", label="slow")
            slow.sh("echo never", label="after")
        """,
    )
    result = cli("run", "--json", cwd=project)
    assert result.returncode == 124, result.stdout + result.stderr
    finished = _finished(result)
    assert finished["slow"]["status"] == "cancelled"
    assert finished["slow"]["error"] == "stopped by the pipeline's timeout (1s)"
    assert finished["after"]["status"] == "skipped"
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["status"] == "failed"
    assert events[-1]["error"] == "timed out: the pipeline's timeout (1s) ran out"
