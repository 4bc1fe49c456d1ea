"""``greenloop daemon start|stop|status``: the resident process commands fork from."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import click

from greenloop._config import ConfigError
from greenloop._config import load as load_config
from greenloop._fs import pid_alive, private_folder
from greenloop.cli._common import echo_json, fail, json_option
from greenloop.daemon import DAEMON_DIR_ENV, DaemonPaths
from greenloop.daemon.client import ask
from greenloop.daemon.server import AlreadyRunning, Server
from greenloop.daemon.spawn import lock_holder, spawn

START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0


@click.group()
def daemon() -> None:
    """Keep greenloop loaded so every command starts in milliseconds.

    The first `greenloop` command that finds no daemon runs in its own process
    and starts one in the background; later commands (from this interpreter,
    with the same Python settings) are forked from it instead of starting
    Python and importing greenloop again, and behave exactly as they would
    otherwise. It exits after 30 minutes without a command
    (`daemon_idle_timeout` in ~/.config/greenloop/config.toml). Set
    GREENLOOP_NO_DAEMON=1, or `daemon = false` in that file, to run commands in
    their own process; under CI (CI=true) none starts unless asked for.
    """


@daemon.command()
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Exit after this many seconds without a command (default: the settings' "
    "daemon_idle_timeout, else 1800).",
)
@click.option("--foreground", is_flag=True, help="Serve from this process until stopped.")
@json_option
def start(idle_timeout: float | None, foreground: bool, as_json: bool) -> None:
    """Start the daemon (nothing to do when one is already running)."""
    if not (hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")):
        fail("the daemon needs Linux 5.3 or newer (pidfd_open, SCM_RIGHTS)")
    try:
        config = load_config()
    except ConfigError as e:
        fail(str(e))
    if config.daemon is False:
        fail(f"the daemon is turned off (daemon = false in {config.path})")
    where = DaemonPaths()
    problem = private_folder(Path(where.folder), DAEMON_DIR_ENV)
    if problem is not None:
        fail(problem)
    if foreground:
        idle = config.daemon_idle_timeout if idle_timeout is None else idle_timeout
        try:
            Server(where, idle, started_by="greenloop daemon start --foreground").serve()
        except AlreadyRunning:
            fail(f"a daemon is already running at {where.socket}")
        return
    status = ask({"status": True})
    if status is None:
        # None: another daemon holds the lock (it is starting, or restarting): wait for it.
        pid = spawn(where, "greenloop daemon start", automatic=False, idle_timeout=idle_timeout)
        status = _wait_for_start(where, pid or lock_holder(where.lock))
    if as_json:
        echo_json(status)
    else:
        click.echo(f"greenloop daemon running (pid {status['pid']}, socket {status['socket']})")


def _wait_for_start(where: DaemonPaths, pid: int | None) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        status = ask({"status": True})
        if status is not None:
            return status
        if pid is None or not pid_alive(pid):
            # It may have lost a race with another `daemon start`: that one serves.
            status = ask({"status": True})
            if status is not None:
                return status
            fail(f"the daemon exited before it served; see {where.log}")
        time.sleep(0.05)
    fail(f"the daemon did not start within {START_TIMEOUT:g}s; see {where.log}")


@daemon.command()
@json_option
def stop(as_json: bool) -> None:
    """Stop the daemon once the commands it is running have finished."""
    reply = ask({"stop": True})
    if reply is None:
        # Not serving yet (loading greenloop, or restarting): it runs no command to wait for.
        starting = lock_holder(DaemonPaths().lock)
        if starting:
            with contextlib.suppress(ProcessLookupError):
                os.kill(starting, signal.SIGTERM)
            reply = {"stopping": starting}
    if reply is not None:
        deadline = time.monotonic() + STOP_TIMEOUT
        while pid_alive(str(reply["stopping"])) and time.monotonic() < deadline:
            time.sleep(0.05)
    if as_json:
        echo_json({"stopped": reply is not None, "pid": (reply or {}).get("stopping")})
    elif reply is None:
        click.echo("no greenloop daemon is running")
    else:
        click.echo(f"greenloop daemon stopped (pid {reply['stopping']})")


@daemon.command()
@json_option
def status(as_json: bool) -> None:
    """Say whether a daemon serves this interpreter, how and since when it runs, and how
    much it ran."""
    reply = ask({"status": True})
    if reply is None:
        where = DaemonPaths()
        reply = {"running": False, "socket": where.socket}
        starting = lock_holder(where.lock)
        if starting is not None:
            reply["starting"] = starting  # loading greenloop, or restarting after an upgrade
    if as_json:
        echo_json(reply)
    elif "starting" in reply:
        click.echo(
            f"a greenloop daemon is starting (pid {reply['starting']}); commands run in "
            "their own process until it serves"
        )
    elif not reply["running"]:
        click.echo(
            "no greenloop daemon is running (the next greenloop command starts one, "
            "or start one with `greenloop daemon start`)"
        )
    else:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(reply["started_at"]))
        how = "automatically by" if reply["automatic"] else "by"
        click.echo(
            f"greenloop daemon {reply['version']} running: pid {reply['pid']}, "
            f"started {how} `{reply['started_by']}` at {started}, "
            f"{_count(reply['served'], 'command')} served, {reply['in_flight']} running, "
            f"exits after {_duration(reply['idle_timeout'])} idle\nsocket {reply['socket']}"
        )


def _count(n: int, noun: str) -> str:
    """``1 command``, ``2 commands``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _duration(seconds: float) -> str:
    """``1800`` as ``30 min``, ``7200`` as ``2 h``, ``90`` as ``90 s``."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
