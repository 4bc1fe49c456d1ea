"""Plugin discovery, ``greenloop plugins``, and the example stdio executor end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from greenloop.cli._plugins import plugins as plugins_command
from greenloop.executors.local import LocalExecutor
from greenloop.plugins import discovery, stdio
from greenloop.protocol.errors import PluginFailure
from greenloop.store import Store
from tests.conftest import write_pipeline
from tests.test_plugins_stdio import assert_no_leftovers, logs, run, write_plugin

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "plugins"
ECHO = EXAMPLES / "greenloop-executor-echo"


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private plugin directory, searched after the examples."""
    directory = tmp_path / "plugins"
    directory.mkdir()
    monkeypatch.setenv("GREENLOOP_PLUGIN_PATH", os.pathsep.join([str(EXAMPLES), str(directory)]))
    return directory


def greenloop(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenloop", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def events_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_example_is_a_standalone_executable() -> None:
    assert os.access(ECHO, os.X_OK)
    assert "greenloop" not in [
        line.split()[1].split(".")[0]
        for line in ECHO.read_text().splitlines()
        if line.startswith(("import ", "from "))
    ]


def test_echo_example_runs_a_pipeline_end_to_end(project: Path, plugin_path: Path) -> None:
    (project / "hello.txt").write_text("hello from the workspace\n")
    # Big and incompressible enough to need several archive.read chunks.
    (project / "big.bin").write_bytes(os.urandom(300_000))
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            gl.sh("cat hello.txt; echo to-stderr >&2; echo $GREETING", label="show",
                  env={"GREETING": "hi from env"})
            gl.sh("test -f big.bin && test -f .greenloop/pipeline.py", label="files")
        """,
    )
    done = greenloop("run", "--executor", "echo", "--format", "json", cwd=project)
    assert done.returncode == 0, done.stderr
    events = events_of(done.stdout)
    started = [e for e in events if e["type"] == "step_started"]
    assert {e["executor"] for e in started} == {"echo"}
    lines = [(e["stream"], e["line"]) for e in events if e["type"] == "step_log"]
    show = [(s, line) for s, line in lines if not line.startswith("echo:")]
    assert ("stdout", "hello from the workspace") in show
    assert ("stderr", "to-stderr") in show
    assert ("stdout", "hi from env") in show
    [summary] = {line for _, line in lines if line.startswith("echo: workspace has 3 members")}
    chunks = int(summary.split(" in ")[1].split()[0])
    assert chunks > 1, summary
    finished = {e["step"]: e["status"] for e in events if e["type"] == "step_finished"}
    assert finished == {"show": "passed", "files": "passed"}


def test_echo_example_reports_failures_and_honours_cancellation(
    store: Store, project: Path, plugin_path: Path
) -> None:
    pid_file = project.parent / "sleeper.pid"
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci")
        def ci():
            gl.sh("echo $$ > {pid_file}; exec sleep 60", label="slow", executor="echo")
            gl.sh("until [ -s {pid_file} ]; do sleep 0.05; done; exit 3", label="bad",
                  executor="echo")
        """,
    )
    result, events = run(store, project, fail_fast=True)
    assert result.steps["bad"].status == "failed" and result.steps["bad"].exit_code == 3
    assert result.steps["slow"].status == "cancelled"
    assert result.steps["slow"].exit_code == 130
    assert "echo: exit 130" in logs(events, "slow")
    # The plugin killed its command's process group when the host said "cancelled".
    (plugin_path / "sleeper.pids").write_text(pid_file.read_text())
    assert_no_leftovers(plugin_path, "sleeper")


def test_unknown_executor_names_stdio_plugins_too(plugin_path: Path) -> None:
    with pytest.raises(PluginFailure) as failure:
        discovery.load("executor", "nope")
    assert failure.value.error.kind == "not_found"
    assert "echo" in failure.value.error.message and "local" in failure.value.error.message
    assert {"echo", "local"} <= set(discovery.available("executor"))


def test_entry_points_win_over_executables_of_the_same_name(plugin_path: Path) -> None:
    write_plugin(plugin_path, "executor", "local")
    assert discovery.load("executor", "local") is LocalExecutor


def test_plugin_path_is_searched_before_path(
    tmp_path: Path, plugin_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = tmp_path / "bin"
    write_plugin(on_path, "executor", "dup")
    write_plugin(plugin_path, "executor", "dup")
    (plugin_path / "greenloop-executor-noexec").write_text("#!/bin/sh\n")  # not executable
    monkeypatch.setenv("PATH", os.pathsep.join([str(on_path), os.environ["PATH"]]))
    executor = discovery.load("executor", "dup")(None)
    assert isinstance(executor, stdio.StdioExecutor)
    assert executor.name == "dup" and executor.path == plugin_path / "greenloop-executor-dup"
    assert "noexec" not in discovery.available("executor")


def test_plugins_command_lists_builtins_and_stdio_plugins(plugin_path: Path) -> None:
    write_plugin(plugin_path, "executor", "old", "mismatch")
    write_plugin(plugin_path, "executor", "local")
    write_plugin(plugin_path, "hook", "friday")
    result = CliRunner().invoke(plugins_command, ["--json"])
    assert result.exit_code == 0, result.output
    listed = {(p["kind"], p["name"], p["transport"]): p for p in json.loads(result.output)}
    assert listed["executor", "local", "in-process"]["target"].endswith(":LocalExecutor")
    for formatter in ("terminal", "plain", "json"):
        assert ("formatter", formatter, "in-process") in listed
    echo = listed["executor", "echo", "stdio"]
    assert (echo["version"], echo["target"], echo["note"]) == ("0.1.0", str(ECHO), "")
    assert listed["hook", "friday", "stdio"]["version"] == "6.6.6"
    old = listed["executor", "old", "stdio"]
    assert old["version"] == "?" and old["note"].startswith("protocol_mismatch:")
    assert "shadowed" in listed["executor", "local", "stdio"]["note"]

    table = CliRunner().invoke(plugins_command, [])
    assert table.exit_code == 0
    assert any(
        line.split()[:4] == ["executor", "echo", "stdio", "0.1.0"]
        for line in table.output.splitlines()
    )
    for name in ("old", "local", "friday"):
        assert_no_leftovers(plugin_path, name)


def test_stdio_formatter_from_the_command_line(project: Path, plugin_path: Path) -> None:
    write_plugin(plugin_path, "formatter", "tags")
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo hi", label="hi")\n')
    done = greenloop("run", "--format", "tags", cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "<run_started>"
    assert "<step_log>" in done.stdout.splitlines()
    assert done.stdout.splitlines()[-1] == "<run_finished>"
    # The long-lived formatter process was shut down when greenloop exited.
    assert_no_leftovers(plugin_path, "tags")


def test_plugins_is_a_greenloop_command(tmp_path: Path, plugin_path: Path) -> None:
    import click

    from greenloop.cli import main

    if "plugins" not in main.list_commands(click.Context(main)):
        pytest.skip("`plugins` is not registered in greenloop.cli yet")
    done = greenloop("plugins", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = {(p["name"], p["transport"]) for p in json.loads(done.stdout)}
    assert {("local", "in-process"), ("echo", "stdio")} <= listed
