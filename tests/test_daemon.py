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
from tests.conftest import cli, held_locks, wait_until, write_pipeline

GREENLOOP = [sys.executable, "-m", "greenloop"]


def _status(cwd: Path) -> dict[str, Any]:
    result = cli("daemon", "status", "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    status: dict[str, Any] = json.loads(result.stdout)
    return status


def _pid_gone(pid: int) -> bool:
    return not pid_alive(pid)  # a zombie nobody reaped yet counts as gone


@pytest.fixture(autouse=True)
def _daemon_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # conftest runs every other test's commands in their own process; these test the
    # daemon, in this test's own folder (conftest kills whatever is left there after it).
    monkeypatch.delenv("GREENLOOP_NO_DAEMON")
    monkeypatch.delenv("CI", raising=False)


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


@pytest.mark.parametrize("changed", ["wire.py", "server.py"])  # server.py: its __main__
def test_changed_code_is_never_run_stale(
    daemon: dict[str, Any], project: Path, tmp_path: Path, changed: str
) -> None:
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true")\n')
    assert cli("run", cwd=project).returncode == 0
    module = Path(greenloop.daemon.wire.__file__).with_name(changed)
    stat = module.stat()
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        # The daemon declines (the command runs in its own process, correctly)...
        assert cli("run", cwd=project).returncode == 0
        # ...and restarts: a command meanwhile runs in its own process (or in the daemon
        # back already) and starts no other daemon.
        assert cli("run", cwd=project).returncode == 0
        wait_until(
            lambda: _status(project).get("started_at", 0) > daemon["started_at"],
            what="the daemon to restart",
            timeout=60,
        )
        # It re-executes itself in place, with the new code and fresh counters.
        assert _status(project)["pid"] == daemon["pid"]
        assert _daemons_in(tmp_path / "daemon") == [daemon["pid"]]
        served = _status(project)["served"]
        assert served <= 1
        assert cli("run", cwd=project).returncode == 0
        assert _status(project)["served"] == served + 1
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


def _children(pid: int) -> list[int]:
    """The processes ``pid`` forked that are still there (unreaped ones too)."""
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _waiting_child(daemon: dict[str, Any]) -> int:
    """The child the daemon forked ahead for the next command, once it is there."""
    wait_until(lambda: len(_children(daemon["pid"])) == 1, what="the child forked ahead")
    [child] = _children(daemon["pid"])
    return child


def test_the_next_command_runs_in_the_child_forked_ahead(
    daemon: dict[str, Any], project: Path
) -> None:
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo hi", label="hi")\n')
    waiting = _waiting_child(daemon)
    result = cli("run", "--format", "plain", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "hi passed" in result.stdout
    assert _status(project)["served"] == 1
    # It ran the command and left; another waits for the next one.
    wait_until(lambda: _pid_gone(waiting), what="the command's process to end")
    assert _waiting_child(daemon) != waiting


def test_a_child_forked_ahead_that_is_gone_is_done_without(
    daemon: dict[str, Any], project: Path
) -> None:
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true")\n')
    os.kill(_waiting_child(daemon), signal.SIGKILL)
    result = cli("pipelines", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ci")
    assert _status(project)["served"] == 1


def test_a_command_beside_a_running_one_is_forked_then(
    daemon: dict[str, Any], project: Path
) -> None:
    proc, _ = _sleeping_run(project, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # None waits beside a running command: this one is forked as it comes.
        assert _status(project)["in_flight"] == 1
        beside = cli("--version", cwd=project)
        assert beside.returncode == 0 and "greenloop" in beside.stdout, beside.stderr
        assert _status(project)["served"] == 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert _status(project)["served"] == 2


def _private_dirty(pid: int) -> int:
    """Bytes of memory process ``pid`` has written that are its own (copied from its parent)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no Private_Dirty in smaps_rollup")


def test_the_pages_a_command_wrote_are_copied_ahead_for_the_next(
    daemon: dict[str, Any], project: Path
) -> None:
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true")\n')
    first = _waiting_child(daemon)
    before = _private_dirty(first)  # the first one has nothing to copy: it learns
    assert cli("run", cwd=project).returncode == 0
    wait_until(lambda: _pid_gone(first), what="the first command's process to end")
    # Its successor was sent what that command wrote; it copies a few MiB of them.
    wait_until(
        lambda: _private_dirty(_waiting_child(daemon)) > before + (1 << 20),
        what="the pages to be copied ahead",
    )
    assert cli("run", cwd=project).returncode == 0


def test_the_child_forked_ahead_leaves_with_the_daemon(
    daemon: dict[str, Any], project: Path
) -> None:
    waiting = _waiting_child(daemon)
    # Its own spare loader, forked ahead too.
    wait_until(lambda: len(_children(waiting)) == 1, what="the spare loader forked ahead")
    [loader] = _children(waiting)
    assert cli("daemon", "stop", cwd=project).returncode == 0
    wait_until(lambda: _pid_gone(daemon["pid"]), what="the daemon to stop")
    assert _pid_gone(waiting)
    wait_until(lambda: _pid_gone(loader), what="the spare loader to leave")


def test_an_idle_daemon_exits(tmp_path: Path) -> None:
    started = json.loads(
        cli("daemon", "start", "--idle-timeout", "0.5", "--json", cwd=tmp_path).stdout
    )
    wait_until(lambda: _pid_gone(started["pid"]), what="the idle daemon to exit", timeout=60)
    assert not Path(started["socket"]).exists()


def _normalise_all(text: str) -> str:
    # Ids, times, ages and sizes differ from one invocation to the next; the words may not.
    return re.sub(r"[0-9a-f]{8,}|\d+", "N", text)


EVERY_COMMAND = [
    ("--help",),
    ("--version",),
    ("run", "--format", "plain"),
    ("run", "--format", "plain", "--only", "hello"),
    ("run", "--no-such-option"),
    ("render",),
    ("pipelines", "--steps"),
    ("explain",),
    ("runs",),
    ("logs", "hello"),
    ("artifacts",),
    ("cache", "path"),
    ("cache", "verify"),
    ("schema", "ExecutorInput"),
    ("plugins",),
    ("status",),
    ("check",),
    ("hook",),
    ("no-such-command",),
]


def test_every_command_answers_as_in_its_own_process(daemon: dict[str, Any], project: Path) -> None:
    write_pipeline(
        project,
        '@gl.pipeline("ci")\ndef ci():\n'
        '    gl.sh("echo hi", label="hello", cache=gl.forever()).sh("echo there", label="next")\n',
    )
    assert cli("run", cwd=project, env={"GREENLOOP_NO_DAEMON": "1"}).returncode == 0
    for command in EVERY_COMMAND:
        own = cli(*command, cwd=project, env={"GREENLOOP_NO_DAEMON": "1"})
        forked = cli(*command, cwd=project)
        assert forked.returncode == own.returncode, command
        assert _normalise_all(forked.stdout) == _normalise_all(own.stdout), command
        assert _normalise_all(forked.stderr) == _normalise_all(own.stderr), command
    assert _status(project)["served"] == len(EVERY_COMMAND)
    # `init` writes the same starter through the daemon as without it.
    made = {}
    for name, env in (("own", {"GREENLOOP_NO_DAEMON": "1"}), ("forked", {})):
        folder = project.parent / name
        folder.mkdir()
        (folder / "pyproject.toml").write_text("")
        done = cli("init", cwd=folder, env=env)
        assert done.returncode == 0, done.stderr
        made[name] = ((folder / ".greenloop" / "pipeline.py").read_text(), done.stdout)
    assert made["forked"][0] == made["own"][0]
    assert made["forked"][1].replace("/forked/", "/own/") == made["own"][1]


def _daemons_in(folder: Path) -> list[int]:
    """Pids of the daemon processes serving from ``folder`` (this user's, by their environment);
    not the children a daemon forked (the one waiting for the next command has its command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if b"greenloop.daemon.server" in command and (
            f"GREENLOOP_DAEMON_DIR={folder}".encode() in environ
        ):
            found[int(entry.name)] = parent
    return sorted(pid for pid, parent in found.items() if parent not in found)


def _one_step(project: Path) -> None:
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo hi", label="hello")\n')


def test_the_first_command_starts_a_daemon_for_the_next(project: Path, tmp_path: Path) -> None:
    _one_step(project)
    first = cli("run", "--format", "plain", cwd=project)
    # It ran in its own process and left a daemon starting: nothing of it holds the
    # command's output (cli() read both pipes to their end).
    assert first.returncode == 0, first.stderr
    wait_until(lambda: bool(_daemons_in(tmp_path / "daemon")), what="the daemon", timeout=60)
    [pid] = _daemons_in(tmp_path / "daemon")
    assert os.getsid(pid) != os.getsid(0)  # a session of its own: off this terminal
    early = _status(project)  # it waited for the command to end; it may still be loading
    assert early["running"] or early["starting"] == pid
    wait_until(lambda: _status(project)["running"], what="the daemon to serve", timeout=60)
    status = _status(project)
    assert status["pid"] == pid and status["automatic"] is True
    assert status["started_by"] == "greenloop run" and status["served"] == 0
    assert status["idle_timeout"] == 1800
    second = cli("run", "--format", "plain", cwd=project)
    assert _status(project)["served"] == 1
    assert (second.returncode, _normalise(second.stdout)) == (0, _normalise(first.stdout))
    assert second.stderr == first.stderr
    said = cli("daemon", "status", cwd=project).stdout
    assert "started automatically by `greenloop run`" in said and "30 min idle" in said


def test_stop_stops_a_daemon_still_starting(project: Path, tmp_path: Path) -> None:
    _one_step(project)
    assert cli("run", cwd=project).returncode == 0
    [pid] = held_locks(tmp_path / "daemon").values()
    stopped = json.loads(cli("daemon", "stop", "--json", cwd=project).stdout)
    assert stopped == {"stopped": True, "pid": pid}
    assert _pid_gone(pid) and held_locks(tmp_path / "daemon") == {}


def test_commands_starting_at_once_start_one_daemon(project: Path, tmp_path: Path) -> None:
    _one_step(project)
    run = [*GREENLOOP, "run", "--format", "plain"]
    procs = [subprocess.Popen(run, cwd=project, stdout=subprocess.DEVNULL) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    wait_until(lambda: _status(project)["running"], what="the daemon to serve", timeout=60)
    assert _daemons_in(tmp_path / "daemon") == [_status(project)["pid"]]


def _config(tmp_path: Path, text: str) -> None:
    Path(os.environ["GREENLOOP_CONFIG"]).write_text(text)


@pytest.mark.parametrize(
    ("env", "settings"),
    [
        ({"GREENLOOP_NO_DAEMON": "1"}, ""),
        ({}, "daemon = false\n"),
        ({"CI": "true"}, ""),
        ({"CI": "1"}, "daemon_idle_timeout = 60\n"),
    ],
)
def test_no_daemon_starts_when_off_or_under_ci(
    project: Path, tmp_path: Path, env: dict[str, str], settings: str
) -> None:
    _config(tmp_path, settings)
    _one_step(project)
    for _ in range(2):
        assert cli("run", cwd=project, env=env).returncode == 0
        # A daemon is started before the command goes on, so none can be on its way.
        assert held_locks(tmp_path / "daemon") == {}
    assert _daemons_in(tmp_path / "daemon") == []


def test_turned_off_also_means_a_running_daemon_is_not_used(
    daemon: dict[str, Any], project: Path, tmp_path: Path
) -> None:
    _one_step(project)
    _config(tmp_path, "daemon = false\n")
    assert cli("run", cwd=project).returncode == 0
    refused = cli("daemon", "start", cwd=project)
    assert refused.returncode == 2
    assert f"the daemon is turned off (daemon = false in {os.environ['GREENLOOP_CONFIG']})" in (
        refused.stderr
    )
    assert _status(project)["served"] == 0


def test_under_ci_a_daemon_starts_when_asked(project: Path, tmp_path: Path) -> None:
    _config(tmp_path, 'daemon = true\ndaemon_idle_timeout = "2h"\n')
    _one_step(project)
    assert cli("run", cwd=project, env={"CI": "true"}).returncode == 0
    wait_until(lambda: _status(project)["running"], what="the daemon to serve", timeout=60)
    assert _status(project)["idle_timeout"] == 7200
    assert "exits after 2 h idle" in cli("daemon", "status", cwd=project).stdout


def test_a_self_started_daemon_exits_after_the_idle_time_set(project: Path, tmp_path: Path) -> None:
    _config(tmp_path, "daemon_idle_timeout = 1\n")
    _one_step(project)
    assert cli("run", cwd=project).returncode == 0
    wait_until(lambda: bool(_daemons_in(tmp_path / "daemon")), what="the daemon", timeout=60)
    [pid] = _daemons_in(tmp_path / "daemon")
    wait_until(lambda: _pid_gone(pid), what="the idle daemon to exit", timeout=60)
    assert held_locks(tmp_path / "daemon") == {}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("daemon = maybe\n", "not valid TOML"),
        ('daemon = "no"\n', "daemon must be true or false, not 'no'"),
        ("deamon = false\n", "unknown setting 'deamon' (known: daemon, daemon_idle_timeout)"),
        ('daemon_idle_timeout = "soon"\n', "daemon_idle_timeout must be a number of seconds"),
        ("daemon_idle_timeout = -5\n", "daemon_idle_timeout must be a number of seconds"),
    ],
)
def test_a_broken_settings_file_is_a_setup_error(
    project: Path, tmp_path: Path, settings: str, message: str
) -> None:
    _config(tmp_path, settings)
    _one_step(project)
    for command in (("run",), ("daemon", "start")):
        done = cli(*command, cwd=project)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.startswith(f"error: {os.environ['GREENLOOP_CONFIG']}: "), done.stderr
        assert message in done.stderr
    assert held_locks(tmp_path / "daemon") == {}


def test_a_killed_daemon_is_replaced_by_the_next_command(
    daemon: dict[str, Any], project: Path, tmp_path: Path
) -> None:
    _one_step(project)
    os.kill(daemon["pid"], signal.SIGKILL)
    wait_until(lambda: _pid_gone(daemon["pid"]), what="the daemon to die", timeout=60)
    # Its socket file is left behind, its lock is not: the next command starts another.
    assert Path(daemon["socket"]).exists() and held_locks(tmp_path / "daemon") == {}
    assert cli("run", cwd=project).returncode == 0
    wait_until(lambda: _status(project)["running"], what="a new daemon", timeout=60)
    assert _status(project)["pid"] != daemon["pid"]
    assert cli("run", cwd=project).returncode == 0
    assert _status(project)["served"] == 1


def test_a_command_the_daemon_ran_is_never_run_again_here(
    daemon: dict[str, Any], tmp_path: Path
) -> None:
    # The client sends its request, then nothing more: a command that ends at once may
    # have ended, and the daemon hung up, before the client is scheduled again; a send
    # after that fails, and the client must not take the failure for "run it here".
    # Two busy loops on this machine's cores make that ordering common.
    hogs = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(2)]
    try:
        outputs = [cli("--version", cwd=tmp_path).stdout for _ in range(40)]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert all(out.count("greenloop") == 1 for out in outputs), [
        out for out in outputs if out.count("greenloop") != 1
    ]
    assert _status(tmp_path)["served"] == 40
