"""Out-of-process plugins that misbehave: each failure fails only its own step.

The plugins are small Python scripts written to ``tmp_path`` at test time and
run as real processes over real pipes.
"""

from __future__ import annotations

import io
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from greenloop.engine.run import Run, RunOptions, RunResult
from greenloop.plugins import discovery, stdio
from greenloop.plugins.discovery import Executors
from greenloop.plugins.spec import Hook
from greenloop.protocol.errors import PluginFailure
from greenloop.protocol.events import (
    BuildEvent,
    HookVerdict,
    RunFinished,
    RunStarted,
    StepLog,
    StepStarted,
)
from greenloop.protocol.ir import CommandStep
from greenloop.sdk.loader import load
from greenloop.store import Store
from tests.conftest import cli, write_pipeline

_PLUGIN = r'''#!@PYTHON@
"""A test plugin that misbehaves on purpose; MODE says how."""
import json, os, subprocess, sys, time

MODE, KIND, PIDS = "@MODE@", "@KIND@", "@PIDS@"


def note_pid(pid):
    with open(PIDS, "a") as f:
        f.write(f"{pid}\n")


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def answer(call_id, result):
    send({"jsonrpc": "2.0", "id": call_id, "result": result})


note_pid(os.getpid())
for line in sys.stdin:
    message = json.loads(line)
    method, call_id = message.get("method"), message.get("id")
    params = message.get("params") or {}
    if method == "initialize":
        kind = "hook" if MODE == "wrongkind" else KIND
        version = 999 if MODE == "mismatch" else params["protocol_version"]
        answer(call_id, {"name": "t", "kind": kind, "version": "6.6.6",
                         "protocol_version": version})
    elif method == "executor.run":
        # A grandchild in the plugin's process group: the host must take it down too.
        note_pid(subprocess.Popen(["sleep", "600"]).pid)
        step_id = params["input"]["step_id"]
        send({"jsonrpc": "2.0", "method": "log",
              "params": {"step_id": step_id, "stream": "stdout", "line": "started"}})
        if MODE == "crash":
            print("about to crash", file=sys.stderr, flush=True)
            os._exit(3)
        elif MODE == "hang":
            time.sleep(600)
        elif MODE == "garbage":
            sys.stdout.write("hello, I am not JSON\n")
            sys.stdout.flush()
            time.sleep(600)
        elif MODE == "shape":
            send({"jsonrpc": "1.0", "id": call_id, "result": {"exit_code": 0}})
            time.sleep(600)
        elif MODE == "invalid":
            answer(call_id, {"exit_code": "zero", "artifacts": []})
        elif MODE == "rpcerror":
            send({"jsonrpc": "2.0", "id": call_id,
                  "error": {"code": -32000, "message": "no docker here"}})
        else:
            answer(call_id, {"exit_code": 0, "committed_snapshot": None, "artifacts": []})
    elif method == "hook.event":
        if MODE == "crash":
            os._exit(4)
        if MODE == "hang":
            time.sleep(600)
        vetoed = params["event"]["type"] == "run_started"
        answer(call_id, {"veto": "not on a Friday" if vetoed else None})
    elif method == "formatter.event":
        event = params["event"]
        answer(call_id, {"output": f"<{event['type']}>\n"})
    elif method == "shutdown":
        answer(call_id, None)
        break
    elif call_id is not None:
        send({"jsonrpc": "2.0", "id": call_id,
              "error": {"code": -32601, "message": f"unknown method {method}"}})
'''


def write_plugin(directory: Path, kind: str, name: str, mode: str = "ok") -> Path:
    """Write an executable ``greenloop-KIND-NAME`` test plugin; its pids go to ``NAME.pids``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"greenloop-{kind}-{name}"
    text = (
        _PLUGIN.replace("@PYTHON@", sys.executable)
        .replace("@MODE@", mode)
        .replace("@KIND@", kind)
        .replace("@PIDS@", str(pid_file(directory, name)))
    )
    path.write_text(text)
    path.chmod(0o755)
    return path


def pid_file(directory: Path, name: str) -> Path:
    """Where the test plugin ``name`` records its own pid and its children's."""
    return directory / f"{name}.pids"


def recorded_pids(directory: Path, name: str) -> list[int]:
    """Every pid the test plugin ``name`` (and its children) recorded."""
    path = pid_file(directory, name)
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # An orphan that was killed may wait a moment as a zombie for init to reap it.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def assert_no_leftovers(directory: Path, name: str) -> None:
    """No process the plugin started (nor the plugin) is still running."""
    pids = recorded_pids(directory, name)
    assert pids, "the plugin never ran"
    deadline = time.monotonic() + 20
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in pids if not _gone(p)] == []


def run(
    store: Store, root: Path, hooks: list[Hook] | None = None, **options: object
) -> tuple[RunResult, list[BuildEvent]]:
    events: list[BuildEvent] = []
    pipeline = load(root / ".greenloop" / "pipeline.py").pipeline("ci")
    the_run = Run(
        store,
        pipeline,
        root,
        Executors(store),
        events.append,
        RunOptions(**options),  # type: ignore[arg-type]
        hooks=hooks,
    )
    return the_run.execute(), events


def logs(events: list[BuildEvent], step: str) -> list[str]:
    return [e.line for e in events if isinstance(e, StepLog) and e.step == step]


SIBLINGS = """
@gl.pipeline("ci")
def ci():
    gl.sh("echo plugged", label="plugged", executor="broken")
    gl.sh("echo sibling", label="sibling", executor="local")
"""


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "plugins"
    directory.mkdir()
    monkeypatch.setenv("GREENLOOP_PLUGIN_PATH", str(directory))
    return directory


@pytest.mark.parametrize(
    ("mode", "kind", "says"),
    [
        ("crash", "crashed", "exited with code 3 during executor.run"),
        ("hang", "timeout", "no answer to executor.run within 1s"),
        ("garbage", "garbage", "hello, I am not JSON"),
        ("shape", "garbage", "not a JSON-RPC 2.0 message"),
        ("invalid", "invalid_result", "exit_code"),
        ("mismatch", "protocol_mismatch", "protocol version 999, this greenloop speaks version 1"),
        ("wrongkind", "invalid_result", "says it is a 'hook'"),
        ("rpcerror", "error", "no docker here"),
    ],
)
def test_a_broken_plugin_fails_only_its_step(
    store: Store,
    project: Path,
    plugin_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    kind: str,
    says: str,
) -> None:
    monkeypatch.setenv(stdio.TIMEOUT_ENV, "1")
    write_plugin(plugin_dir, "executor", "broken", mode)
    write_pipeline(project, SIBLINGS)
    result, events = run(store, project)
    assert {k: o.status for k, o in result.steps.items()} == {
        "plugged": "failed",
        "sibling": "passed",
    }
    error = result.steps["plugged"].error or ""
    assert error.startswith(f"plugin 'broken' {kind}: "), error
    assert says in error
    assert logs(events, "sibling") == ["sibling"]
    assert_no_leftovers(plugin_dir, "broken")


def test_plugin_stderr_is_passed_through_with_its_name(
    store: Store, project: Path, plugin_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_plugin(plugin_dir, "executor", "broken", "crash")
    write_pipeline(project, SIBLINGS)
    result, events = run(store, project)
    assert result.steps["plugged"].status == "failed"
    assert "[broken] about to crash" in capsys.readouterr().err
    # What it logged before dying still arrived.
    assert logs(events, "plugged") == ["started"]


def test_plugin_that_ignores_cancellation_is_killed(
    store: Store, project: Path, plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stdio.StdioExecutor, "cancel_grace", 0.2)
    write_plugin(plugin_dir, "executor", "broken", "hang")
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci")
        def ci():
            gl.sh("echo plugged", label="plugged", executor="broken")
            gl.sh("until [ -s {plugin_dir}/broken.pids ]; do sleep 0.05; done; exit 1",
                  label="bad", executor="local", sandbox="none")  # it reads a host file
        """,
    )
    result, events = run(store, project, fail_fast=True)
    assert result.steps["plugged"].status == "cancelled"
    assert any("did not stop" in line for line in logs(events, "plugged"))
    assert_no_leftovers(plugin_dir, "broken")


def test_bad_timeout_setting_fails_the_step_clearly(
    store: Store, project: Path, plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(stdio.TIMEOUT_ENV, "soon")
    write_plugin(plugin_dir, "executor", "broken")
    write_pipeline(project, SIBLINGS)
    result, _ = run(store, project)
    assert result.steps["sibling"].status == "passed"
    assert "GREENLOOP_PLUGIN_TIMEOUT must be a positive number" in (
        result.steps["plugged"].error or ""
    )


def test_run_timeout_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    step = CommandStep(key="s", label="s", command="true")
    monkeypatch.delenv(stdio.TIMEOUT_ENV, raising=False)
    assert stdio.run_timeout("p", step) == stdio.DEFAULT_RUN_TIMEOUT
    monkeypatch.setenv(stdio.TIMEOUT_ENV, "12.5")
    assert stdio.run_timeout("p", step) == 12.5
    timed = step.model_copy(update={"timeout_seconds": 60.0})
    assert stdio.run_timeout("p", timed) == 60.0 + stdio.RUN_GRACE


def test_a_well_behaved_plugin_passes_and_exits(
    store: Store, project: Path, plugin_dir: Path
) -> None:
    write_plugin(plugin_dir, "executor", "broken", "ok")
    write_pipeline(project, SIBLINGS)
    result, events = run(store, project)
    assert result.status == "passed"
    assert logs(events, "plugged") == ["started"]
    assert_no_leftovers(plugin_dir, "broken")


def _run_started() -> RunStarted:
    return RunStarted(run_id=uuid.uuid4(), pipeline="ci", at=time.time())


def test_stdio_hook_answers_each_event_from_one_process(plugin_dir: Path) -> None:
    write_plugin(plugin_dir, "hook", "friday")
    [hook] = [h for h in discovery.hooks() if h.name == "friday"]
    assert isinstance(hook, stdio.StdioHook)
    try:
        assert hook.handle(_run_started()) == HookVerdict(veto="not on a Friday")
        step = StepStarted(run_id=uuid.uuid4(), step="a", label="a", executor="local")
        assert hook.handle(step) == HookVerdict(veto=None)
        assert len(recorded_pids(plugin_dir, "friday")) == 1
    finally:
        hook.close()
    assert_no_leftovers(plugin_dir, "friday")


def test_stdio_hook_vetoes_a_run(store: Store, project: Path, plugin_dir: Path) -> None:
    write_plugin(plugin_dir, "hook", "friday")
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo hi", label="hi")\n')
    hooks = discovery.hooks()
    try:
        result, events = run(store, project, hooks=hooks)
    finally:
        for hook in hooks:
            if isinstance(hook, stdio.StdioHook):
                hook.close()
    assert result.status == "failed" and result.steps == {}
    [finished] = [e for e in events if isinstance(e, RunFinished)]
    assert finished.error == "vetoed by hook 'friday': not on a Friday"
    assert_no_leftovers(plugin_dir, "friday")


def test_a_crashing_stdio_hook_does_not_stop_the_run(
    store: Store, project: Path, plugin_dir: Path
) -> None:
    write_plugin(plugin_dir, "hook", "fragile", "crash")
    hook = discovery.load("hook", "fragile")()
    with pytest.raises(PluginFailure) as failure:
        hook.handle(_run_started())
    assert failure.value.error.plugin == "fragile" and failure.value.error.kind == "crashed"
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo hi", label="hi")\n')
    result, events = run(store, project, hooks=[hook])
    assert result.status == "passed"
    assert any("hook 'fragile' failed" in line for line in logs(events, "greenloop"))
    # Restarted a few times, then given up on: not one process per event.
    assert len(recorded_pids(plugin_dir, "fragile")) == 1 + stdio.StdioHook.max_restarts
    assert_no_leftovers(plugin_dir, "fragile")


THREE_STEPS = """
@gl.pipeline("ci")
def ci():
    gl.sh("echo 1", label="one").sh("echo 2", label="two").sh("echo 3", label="three")
"""


def test_a_hanging_stdio_hook_costs_one_budget_per_run_then_is_disabled(
    store: Store, project: Path, plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_plugin(plugin_dir, "hook", "sleepy", "hang")
    write_pipeline(project, THREE_STEPS)
    monkeypatch.setenv(stdio.HOOK_BUDGET_ENV, "1")
    hooks = discovery.hooks()
    try:
        result, events = run(store, project, hooks=hooks)
    finally:
        for hook in hooks:
            if isinstance(hook, stdio.StdioHook):
                hook.close()
    assert result.status == "passed"
    assert [logs(events, s) for s in ("one", "two", "three")] == [["1"], ["2"], ["3"]]
    # Eight events (run and step starts and ends); the first one used up the
    # budget, and the hook was neither restarted nor asked again.
    [warning] = [line for line in logs(events, "greenloop") if "sleepy" in line]
    assert "time budget of 1s" in warning and "disabled for the rest of the run" in warning
    assert len(recorded_pids(plugin_dir, "sleepy")) == 1
    assert_no_leftovers(plugin_dir, "sleepy")


def test_a_hook_given_up_on_warns_once(store: Store, project: Path, plugin_dir: Path) -> None:
    write_plugin(plugin_dir, "hook", "fragile", "crash")
    write_pipeline(project, THREE_STEPS)
    result, events = run(store, project, hooks=[discovery.load("hook", "fragile")()])
    assert result.status == "passed"
    warnings = [line for line in logs(events, "greenloop") if "fragile" in line]
    # One warning per start that crashed, the last saying it is given up on.
    assert len(warnings) == 1 + stdio.StdioHook.max_restarts, warnings
    assert "disabled for the rest of the run" in warnings[-1]
    assert_no_leftovers(plugin_dir, "fragile")


def test_a_bad_hook_budget_is_a_usage_error(project: Path, plugin_dir: Path) -> None:
    write_plugin(plugin_dir, "hook", "friday")
    write_pipeline(project, THREE_STEPS)
    done = cli("run", cwd=project, env={stdio.HOOK_BUDGET_ENV: "soon", "GREENLOOP_NO_DAEMON": "1"})
    assert done.returncode == 2
    assert f"{stdio.HOOK_BUDGET_ENV} must be a positive number" in done.stderr, done.stderr


def test_stdio_formatter_writes_what_the_plugin_renders(plugin_dir: Path) -> None:
    write_plugin(plugin_dir, "formatter", "tags")
    out = io.StringIO()
    formatter = discovery.load("formatter", "tags")(out)
    try:
        run_id = uuid.uuid4()
        formatter(RunStarted(run_id=run_id, pipeline="ci", at=0.0))
        formatter(RunFinished(run_id=run_id, status="passed", duration_s=0.1))
    finally:
        formatter.close()
    assert out.getvalue() == "<run_started>\n<run_finished>\n"
    assert_no_leftovers(plugin_dir, "tags")


def test_stdio_formatter_with_wrong_protocol_is_refused_up_front(plugin_dir: Path) -> None:
    write_plugin(plugin_dir, "formatter", "old", "mismatch")
    with pytest.raises(PluginFailure) as failure:
        discovery.load("formatter", "old")(io.StringIO())
    assert failure.value.error.kind == "protocol_mismatch"
    assert_no_leftovers(plugin_dir, "old")
