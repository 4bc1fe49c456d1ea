"""``greenloop daemon``: commands forked from a resident process behave exactly as
commands started on their own, and the daemon never outlives what it should."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import greenloop.daemon.wire
from greenloop._fs import pid_alive
from tests.conftest import cli, wait_until, write_pipeline

GREENLOOP = [sys.executable, "-m", "greenloop"]


def _status(cwd: Path) -> dict[str, Any]:
    result = cli("daemon", "status", "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    status: dict[str, Any] = json.loads(result.stdout)
    return status


def _pid_gone(pid: int) -> bool:
    return not pid_alive(pid)  # a zombie nobody reaped yet counts as gone


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[dict[str, Any]]:
    started = cli("daemon", "start", "--json", cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    status: dict[str, Any] = json.loads(started.stdout)
    try:
        yield status
    finally:
        cli("daemon", "stop", cwd=tmp_path)
        with contextlib.suppress(ProcessLookupError):
            os.kill(status["pid"], signal.SIGKILL)


def _normalise(text: str) -> str:
    # Run ids and durations differ from run to run; nothing else may.
    return re.sub(r"\([0-9a-f]{12}\)|\d+\.\d+s", "<x>", text)


def test_a_command_in_the_daemon_matches_one_in_its_own_process(
    daemon: dict[str, Any], project: Path, tmp_path: Path
) -> None:
    write_pipeline(
        project,
        """\
        import os, sys

        @gl.pipeline("ci")
        def ci():
            gl.sh("echo greeting " + os.environ["GREETING"], label="hello")
            gl.sh("echo stdin " + sys.stdin.readline().strip(), label="stdin")
            gl.sh("umask", label="umask")
        """,
    )
    env = {"GREETING": "from the client"}
    own = cli(
        "run",
        "--format",
        "plain",
        cwd=project,
        input="typed\n",
        env={**env, "GREENLOOP_NO_DAEMON": "1", "GREENLOOP_CACHE_DIR": str(tmp_path / "c1")},
    )
    forked = cli(
        "run",
        "--format",
        "plain",
        cwd=project,
        input="typed\n",
        env={**env, "GREENLOOP_CACHE_DIR": str(tmp_path / "c2")},
    )
    assert _status(project)["served"] == 1
    assert forked.returncode == own.returncode == 0, forked.stderr
    # The steps run in parallel: their lines may interleave either way.
    assert sorted(_normalise(forked.stdout).splitlines()) == sorted(
        _normalise(own.stdout).splitlines()
    )
    assert forked.stderr == own.stderr
    for expected in ("greeting from the client", "stdin typed", f"{os.umask(0o22):04o}"):
        assert expected in forked.stdout


def test_exit_codes_and_errors_come_back_unchanged(daemon: dict[str, Any], project: Path) -> None:
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("exit 3")\n')
    failed = cli("run", cwd=project)
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    1/0\n')
    broken = cli("run", cwd=project)
    usage = cli("run", "--no-such-option", cwd=project)
    helped = cli("run", "--help", cwd=project)
    assert _status(project)["served"] >= 4
    # Regression: a forked --help read "Usage: python -m greenloop.daemon.greenloop".
    assert helped.stdout.startswith("Usage: greenloop run [OPTIONS]"), helped.stdout
    assert failed.returncode == 1
    assert broken.returncode == 2
    assert f"{project.resolve()}/.greenloop/pipeline.py:5: ZeroDivisionError" in broken.stderr
    assert usage.returncode == 2 and "No such option" in usage.stderr


def test_each_command_gets_its_own_folder(daemon: dict[str, Any], tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    for root, name in ((first, "alpha"), (second, "beta")):
        (root / ".greenloop").mkdir(parents=True)
        write_pipeline(root, f'@gl.pipeline("{name}")\ndef p():\n    gl.sh("true")\n')
    assert cli("pipelines", cwd=first).stdout.startswith("alpha")
    assert cli("pipelines", cwd=second).stdout.startswith("beta")
    assert _status(tmp_path)["served"] == 2


def _sleeping_run(project: Path, **popen: Any) -> tuple[subprocess.Popen[str], int]:
    """``greenloop run`` of one step that sleeps; the client and, once it runs, the step's pid."""
    marker = project.parent / "started"
    write_pipeline(
        project,
        # Unsandboxed: the test reads the step's pid from a host file.
        f'@gl.pipeline("ci", sandbox="none")\ndef ci():\n'
        f'    gl.sh("echo $$ > {marker}; exec sleep 60")\n',
    )
    run = [*GREENLOOP, "run", "--format", "plain"]
    proc = subprocess.Popen(run, cwd=project, text=True, **popen)
    wait_until(
        lambda: marker.exists() and marker.read_text().strip(), what="the step to start", timeout=60
    )
    return proc, int(marker.read_text())


def test_ctrl_c_reaches_the_command(daemon: dict[str, Any], project: Path) -> None:
    proc, step = _sleeping_run(project, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "cancelled" in out
    assert _pid_gone(step)
    assert _status(project)["served"] == 1


def test_a_killed_client_stops_its_command(daemon: dict[str, Any], project: Path) -> None:
    proc, step = _sleeping_run(project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.kill()
    proc.wait()
    wait_until(lambda: _pid_gone(step), what="the step to be stopped", timeout=60)
    wait_until(lambda: _status(project)["in_flight"] == 0, what="the command to end", timeout=60)
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true")\n')
    assert cli("run", cwd=project).returncode == 0
    assert _status(project)["served"] == 2


def test_changed_code_is_never_run_stale(daemon: dict[str, Any], project: Path) -> None:
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true")\n')
    assert cli("run", cwd=project).returncode == 0
    module = Path(greenloop.daemon.wire.__file__)
    stat = module.stat()
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        # The daemon declines (the command runs in its own process, correctly)...
        assert cli("run", cwd=project).returncode == 0
        # ...and comes back with the new code, its counters fresh.
        wait_until(
            lambda: _status(project).get("served") == 0, what="the daemon to restart", timeout=60
        )
        assert _status(project)["pid"] == daemon["pid"]  # it re-executes itself in place
        assert cli("run", cwd=project).returncode == 0
        assert _status(project)["served"] == 1
    finally:
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_other_python_settings_are_not_served(daemon: dict[str, Any], project: Path) -> None:
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true")\n')
    result = cli("run", cwd=project, env={"PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0
    assert _status(project)["served"] == 0


def test_start_twice_stop_and_status(tmp_path: Path) -> None:
    assert "no greenloop daemon" in cli("daemon", "status", cwd=tmp_path).stdout
    first = json.loads(cli("daemon", "start", "--json", cwd=tmp_path).stdout)
    try:
        second = json.loads(cli("daemon", "start", "--json", cwd=tmp_path).stdout)
        assert second["pid"] == first["pid"]
        assert f"pid {first['pid']}" in cli("daemon", "status", cwd=tmp_path).stdout
        stopped = cli("daemon", "stop", "--json", cwd=tmp_path)
        assert json.loads(stopped.stdout) == {"stopped": True, "pid": first["pid"]}
        assert _pid_gone(first["pid"])
        assert not Path(first["socket"]).exists()
        assert _status(tmp_path) == {"running": False, "socket": first["socket"]}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(first["pid"], signal.SIGKILL)


def test_an_idle_daemon_exits(tmp_path: Path) -> None:
    started = json.loads(
        cli("daemon", "start", "--idle-timeout", "0.5", "--json", cwd=tmp_path).stdout
    )
    wait_until(lambda: _pid_gone(started["pid"]), what="the idle daemon to exit", timeout=60)
    assert not Path(started["socket"]).exists()
