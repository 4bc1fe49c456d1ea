"""``greenloop daemon start|stop|status``: the resident process commands fork from."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any

import click

from greenloop._fs import pid_alive
from greenloop.cli._common import echo_json, fail, json_option
from greenloop.daemon import DaemonPaths
from greenloop.daemon.client import ask
from greenloop.daemon.server import DEFAULT_IDLE_TIMEOUT, AlreadyRunning, Server

START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0


@click.group()
def daemon() -> None:
    """Keep greenloop loaded so every command starts in milliseconds.

    While a daemon runs, each `greenloop` command (from this interpreter, with
    the same Python settings) is forked from it instead of starting Python and
    importing greenloop again; it behaves exactly as it would otherwise. Set
    GREENLOOP_NO_DAEMON=1 to run a command in its own process anyway.
    """


@daemon.command()
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0),
    default=DEFAULT_IDLE_TIMEOUT,
    show_default=True,
    help="Exit after this many seconds without a command.",
)
@click.option("--foreground", is_flag=True, help="Serve from this process until stopped.")
@json_option
def start(idle_timeout: float, foreground: bool, as_json: bool) -> None:
    """Start the daemon (nothing to do when one is already running)."""
    if not (hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")):
        fail("the daemon needs Linux 5.3 or newer (pidfd_open, SCM_RIGHTS)")
    where = DaemonPaths()
    if foreground:
        try:
            Server(where, idle_timeout).serve()
        except AlreadyRunning:
            fail(f"a daemon is already running at {where.socket}")
        return
    status = ask({"status": True})
    if status is None:
        os.makedirs(where.folder, mode=0o700, exist_ok=True)
        with open(where.log, "ab") as log:
            command = [sys.executable, "-m", "greenloop.daemon.server"]
            process = subprocess.Popen(
                [*command, "--idle-timeout", str(idle_timeout)],
                cwd=where.folder,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        status = _wait_for_start(process)
    if as_json:
        echo_json(status)
    else:
        click.echo(f"greenloop daemon running (pid {status['pid']}, socket {status['socket']})")


def _wait_for_start(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        status = ask({"status": True})
        if status is not None:
            return status
        if process.poll() is not None:
            # Lost a race with another `daemon start`: that one serves.
            status = ask({"status": True})
            if status is not None:
                return status
            fail(f"the daemon exited with status {process.returncode}; see {DaemonPaths().log}")
        time.sleep(0.05)
    process.kill()
    fail(f"the daemon did not start within {START_TIMEOUT:g}s; see {DaemonPaths().log}")


@daemon.command()
@json_option
def stop(as_json: bool) -> None:
    """Stop the daemon once the commands it is running have finished."""
    reply = ask({"stop": True})
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
    """Say whether a daemon serves this interpreter, since when, and how much it ran."""
    reply = ask({"status": True}) or {"running": False, "socket": DaemonPaths().socket}
    if as_json:
        echo_json(reply)
    elif not reply["running"]:
        click.echo("no greenloop daemon is running (start one with `greenloop daemon start`)")
    else:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(reply["started_at"]))
        click.echo(
            f"greenloop daemon {reply['version']} running: pid {reply['pid']}, "
            f"since {started}, {reply['served']} commands served, "
            f"{reply['in_flight']} running\nsocket {reply['socket']}"
        )
