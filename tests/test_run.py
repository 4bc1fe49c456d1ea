"""``greenloop run`` with the local executor: chaining, caching, scheduling, failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from greenloop.engine.run import Run, RunOptions, RunResult
from greenloop.executors.bwrap import unavailable
from greenloop.plugins.discovery import Executors
from greenloop.protocol import BuildEvent, StepLog
from greenloop.sdk.loader import load
from greenloop.store import Store
from tests.conftest import cli, write_pipeline


def run(store: Store, root: Path, name: str = "ci", **options: object) -> tuple[RunResult, list]:
    events: list[BuildEvent] = []
    pipeline = load(root / ".greenloop" / "pipeline.py").pipeline(name)
    the_run = Run(
        store,
        pipeline,
        root,
        Executors(store),
        events.append,
        RunOptions(**options),  # type: ignore[arg-type]
    )
    return the_run.execute(), events


def logs(events: list[BuildEvent], step: str) -> list[str]:
    return [e.line for e in events if isinstance(e, StepLog) and e.step == step]


def statuses(result: RunResult) -> dict[str, str]:
    return {k: o.status for k, o in result.steps.items()}


CHAIN = """
@gl.pipeline("ci")
def ci():
    deps = gl.sh("echo installed > deps.txt; mkdir -p lib && echo v1 > lib/x",
                 label="deps", cache=gl.on_change("requirements.txt"))
    deps.sh("cat deps.txt lib/x src.txt", label="use", cache=gl.forever())
    deps.sh("cat src.txt", label="always")
"""


def test_chain_inherits_filesystem_and_second_run_is_cached(store: Store, project: Path) -> None:
    write_pipeline(project, CHAIN)
    (project / "requirements.txt").write_text("a==1\n")
    (project / "src.txt").write_text("source one\n")
    first, events = run(store, project)
    assert first.status == "passed", events
    assert statuses(first) == {"deps": "passed", "use": "passed", "always": "passed"}
    assert logs(events, "use") == ["installed", "v1", "source one"]

    second, events = run(store, project)
    assert statuses(second) == {"deps": "cached", "use": "cached", "always": "passed"}
    # The uncached step still sees the current workspace over the cached parent.
    (project / "src.txt").write_text("source two\n")
    third, events = run(store, project)
    assert statuses(third)["deps"] == "cached"
    assert logs(events, "always") == ["source two"]


def test_changed_lock_file_reruns_the_step_and_everything_downstream(
    store: Store, project: Path
) -> None:
    write_pipeline(project, CHAIN)
    (project / "requirements.txt").write_text("a==1\n")
    (project / "src.txt").write_text("s\n")
    run(store, project)
    (project / "requirements.txt").write_text("a==2\n")
    result, _ = run(store, project)
    assert statuses(result) == {"deps": "passed", "use": "passed", "always": "passed"}
    again, _ = run(store, project)
    assert statuses(again)["use"] == "cached"


def test_deleted_workspace_files_vanish_from_cached_parents(store: Store, project: Path) -> None:
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            gl.sh("true", label="base", cache=gl.forever()).sh("ls", label="ls")
        """,
    )
    (project / "keep.txt").write_text("k")
    (project / "gone.txt").write_text("g")
    run(store, project)
    (project / "gone.txt").unlink()
    result, events = run(store, project)
    assert statuses(result)["base"] == "cached"
    assert "gone.txt" not in logs(events, "ls") and "keep.txt" in logs(events, "ls")


def test_ttl_expires(store: Store, project: Path) -> None:
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            gl.sh("echo hi", label="short", cache=gl.ttl(0.2))
            gl.sh("echo hi", label="long", cache=gl.compose(gl.ttl(3600), gl.forever()))
        """,
    )
    run(store, project)
    time.sleep(0.3)
    result, _ = run(store, project)
    assert statuses(result) == {"short": "passed", "long": "cached"}


def test_failure_skips_dependents_but_independent_branches_finish(
    store: Store, project: Path
) -> None:
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            bad = gl.sh("echo oops >&2; exit 3", label="bad")
            bad.sh("echo never", label="after-bad")
            good = gl.sh("sleep 0.3; echo ok", label="good")
            gl.wait(bad, good).sh("echo joined", label="joined")
        """,
    )
    result, events = run(store, project)
    assert result.status == "failed"
    assert statuses(result) == {
        "bad": "failed",
        "after-bad": "skipped",
        "good": "passed",
        "joined": "skipped",
    }
    assert result.steps["bad"].exit_code == 3
    assert logs(events, "bad") == ["oops"]


def test_fail_fast_cancels_running_steps(store: Store, project: Path) -> None:
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            gl.sh("sleep 0.2; exit 1", label="bad")
            gl.sh("sleep 30", label="slow")
        """,
    )
    result, _ = run(store, project, fail_fast=True)
    assert statuses(result) == {"bad": "failed", "slow": "cancelled"}
    assert result.steps["slow"].duration_s < 25


def test_fail_fast_is_a_failed_run_and_still_answers_from_the_cache(project: Path) -> None:
    # Regression: --fail-fast exited 130 ("run cancelled"), called a step that was
    # stopped "cancelled: chatty did not pass" and showed cache hits as cancelled.
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            gl.sh("test ! -e go", label="bad")
            chatty = gl.sh("echo started; if [ -e go ]; then sleep 30; fi", label="chatty")
            chatty.sh("echo report", label="report")
            gl.sh("echo warm", label="warm", cache=gl.forever())
            gl.sh("echo new", label="new")
        """,
    )
    assert cli("run", cwd=project).returncode == 0  # caches `warm`
    (project / "go").write_text("")
    result = cli("run", "--fail-fast", "-j", "2", "--json", cwd=project)
    assert result.returncode == 1, result.stdout + result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    finished = {e["step"]: e for e in events if e["type"] == "step_finished"}
    assert finished["bad"]["status"] == "failed"
    assert finished["chatty"]["status"] == "cancelled"
    assert finished["chatty"]["error"] == "stopped by --fail-fast: bad failed"
    assert finished["report"]["status"] == "skipped"
    assert finished["report"]["error"] == "chatty was cancelled"
    assert finished["warm"]["status"] == "cached"
    assert finished["new"]["status"] == "skipped"
    assert [e["status"] for e in events if e["type"] == "run_finished"] == ["failed"]


@pytest.mark.parametrize("fmt", ["plain", "terminal", "json"])
def test_a_closed_stdout_ends_output_quietly_and_the_run_is_recorded(
    project: Path, fmt: str
) -> None:
    # Regression: `greenloop run ci | head -3` died of BrokenPipeError in a
    # formatter thread and the run stayed "running" for ever.
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            gl.sh("for i in $(seq 1 3000); do echo line $i; done", label="chatty")
            gl.sh("sleep 0.5; echo done > done.txt", label="later")
        """,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "greenloop", "run", "--format", fmt],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    for _ in range(3):
        process.stdout.readline()
    process.stdout.close()  # what `| head -3` does
    errors = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, errors
    assert "Traceback" not in errors and "BrokenPipe" not in errors, errors
    runs = json.loads(cli("runs", "--json", cwd=project).stdout)
    assert [r["status"] for r in runs] == ["passed"]


def test_a_file_elsewhere_names_its_root_and_never_packs_the_store(tmp_path: Path) -> None:
    # Regression: `-f FILE` outside .greenloop/ silently made the file's folder the
    # root, and packed greenloop's own cache (here tmp_path/cache) into the steps.
    (tmp_path / "ci.py").write_text(
        'import greenloop as gl\n\n@gl.pipeline("ci")\ndef ci():\n'
        '    gl.sh("find . -type f | sort", label="list")\n'
    )
    (tmp_path / "src.txt").write_text("mine")
    assert cli("cache", "stats", cwd=tmp_path).returncode == 0  # creates the store
    assert (tmp_path / "cache").is_dir()
    result = cli("run", "-f", "ci.py", "--format", "plain", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"plan: 1 steps, 0 cached, 1 to run in {tmp_path.resolve()}" in result.stdout
    listed = [line.split("│ ")[1] for line in result.stdout.splitlines() if "list │" in line]
    assert listed == ["./ci.py", "./src.txt"]
    assert "project root" in cli("run", "--help", cwd=tmp_path).stdout


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_an_artifact_leading_outside_the_step_is_named_as_such(project: Path, sandbox: str) -> None:
    # Regression: this read "plugin 'local' crashed: ValueError ..." (and under bwrap
    # copied the host's /etc/passwd out as the artifact).
    write_pipeline(
        project,
        f'@gl.pipeline("ci", sandbox="{sandbox}")\ndef ci():\n'
        '    gl.sh("ln -s /etc out", label="esc", artifacts=["out/passwd"])\n',
    )
    result = cli("run", "--format", "plain", cwd=project)
    assert result.returncode == 1
    assert "esc │ greenloop: artifact path escapes the step's folder: out/passwd" in result.stdout
    assert "crashed" not in result.stdout
    path = write_pipeline(
        project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true", artifacts=["../x"])\n'
    )
    declared = cli("run", cwd=project)
    assert declared.returncode == 2
    assert (
        f"{path.resolve()}:5: invalid artifacts: artifact path '../x' escapes the step's folder"
        in declared.stderr
    )


def test_independent_steps_run_in_parallel(store: Store, project: Path) -> None:
    # Each step waits for the other's marker file: only a parallel run can pass.
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            gl.sh("touch $MARK/a; until [ -e $MARK/b ]; do sleep 0.05; done", label="a",
                  timeout=20)
            gl.sh("touch $MARK/b; until [ -e $MARK/a ]; do sleep 0.05; done", label="b",
                  timeout=20)
        """.replace("$MARK", str(project.parent)),
    )
    # The steps meet in a host folder, so they run unsandboxed (bwrap would hide it).
    result, _ = run(store, project, jobs=2, sandbox="none")
    assert result.status == "passed", statuses(result)


def test_background_processes_end_with_their_step(store: Store, project: Path) -> None:
    marker = project.parent / "daemon-alive"
    write_pipeline(
        project,
        f'@gl.pipeline("ci")\ndef ci():\n'
        f'    gl.sh("(sleep 2; touch {marker}) > /dev/null 2>&1 & echo started", label="bg")\n',
    )
    result, events = run(store, project)
    assert result.status == "passed" and logs(events, "bg") == ["started"]
    time.sleep(3)  # long enough for the background job to have finished, had it survived
    assert not marker.exists()


def test_timeout_fails_the_step(store: Store, project: Path) -> None:
    write_pipeline(
        project,
        '@gl.pipeline("ci")\ndef ci():\n    gl.sh("sleep 30", label="slow", timeout=0.3)\n',
    )
    result, events = run(store, project)
    assert result.steps["slow"].status == "failed" and result.steps["slow"].exit_code == 124
    assert any("timed out" in line for line in logs(events, "slow"))


def test_artifacts_are_stored_and_come_back_on_hits(store: Store, project: Path) -> None:
    write_pipeline(
        project,
        """
        @gl.pipeline("build")
        def build():
            gl.sh("mkdir -p dist && echo '<h1>hi</h1>' > dist/index.html", label="site",
                  artifacts=["dist"], cache=gl.forever())
        """,
    )
    first, _ = run(store, project, "build")
    [artifact] = first.steps["site"].artifacts
    assert artifact.mime == "inode/directory" and artifact.size_bytes == len("<h1>hi</h1>\n")
    out = project.parent / "out"
    store.materialize(artifact.key, out)
    assert (out / "index.html").read_text() == "<h1>hi</h1>\n"
    second, _ = run(store, project, "build")
    assert second.steps["site"].status == "cached"
    assert second.steps["site"].artifacts == [artifact]


def test_missing_artifact_fails_the_step(store: Store, project: Path) -> None:
    write_pipeline(
        project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true", artifacts=["nope"])\n'
    )
    result, _ = run(store, project)
    assert result.status == "failed"


def test_history_records_runs(store: Store, project: Path) -> None:
    write_pipeline(
        project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true", cache=gl.forever())\n'
    )
    run(store, project)
    run(store, project)
    runs = store.index.runs()
    assert [r.status for r in runs] == ["passed", "passed"]
    assert runs[0].cached == 1 and runs[1].cached == 0


def test_cli_run_exit_codes_and_json(project: Path) -> None:
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo hi", label="hi")\n')
    ok = cli("run", "ci", "--json", cwd=project)
    assert ok.returncode == 0, ok.stderr
    assert '"type":"run_finished"' in ok.stdout.replace(" ", "")
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("exit 1")\n')
    assert cli("run", cwd=project).returncode == 1
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    1/0\n')
    broken = cli("run", cwd=project)
    assert broken.returncode == 2
    assert f"{project.resolve()}/.greenloop/pipeline.py:5: ZeroDivisionError" in broken.stderr
    assert cli("run", "nope", cwd=project).returncode == 2
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true")\n')
    unknown = cli("run", "--executor", "nope", cwd=project)
    assert unknown.returncode == 2 and "no executor named 'nope'" in unknown.stderr


def test_sigint_cancels_and_exits_130(project: Path) -> None:
    marker = project.parent / "started"
    # The step shares the marker's folder with the test: bound read-write under bwrap.
    sandbox = "bwrap" if unavailable(project.parent / "probe") is None else "none"
    write_pipeline(
        project,
        f'@gl.pipeline("ci", sandbox=gl.sandbox("{sandbox}", rw_binds=["{project.parent}"]))\n'
        f'def ci():\n    gl.sh("touch {marker}; sleep 60", label="slow")\n',
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "greenloop", "run", "--format", "plain"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "cancelled" in out
    # No sleeping child was left behind.
    leftover = subprocess.run(["pgrep", "-f", f"touch {marker}; sleep 60"], capture_output=True)
    assert leftover.returncode == 1
    assert os.path.exists(marker)
