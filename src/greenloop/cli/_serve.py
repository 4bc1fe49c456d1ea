"""``greenloop serve``, and ``watch`` when a server answers for the tree.

``serve`` exits 2 for a setup error (not a git repository, already served,
``--port`` taken) and 130 when stopped by Ctrl-C or SIGTERM. A ``watch`` the server answers
prints what a watcher of its own would (the same JSON lines, or the same
verdict lines); it exits 130 when stopped and 2 when the server goes away or
stops serving the tree. A ``dev`` the server answers is hosted in it: the
server builds, publishes and serves the worktree's green trees, and ``dev``
prints what its own session would, until it is stopped (then the session ends).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from greenloop.cli._devloop_output import JsonPrinter, TextPrinter
from greenloop.cli._exit import fail
from greenloop.devloop.loop import Listener
from greenloop.devloop.lsp_shared import DEFAULT_PER_PROGRAM
from greenloop.fleet.client import Stream, ask, follow
from greenloop.fleet.events import Message
from greenloop.fleet.fleet import Fleet, default_jobs
from greenloop.fleet.hosted_dev import DevReports, HostedDev
from greenloop.fleet.messages import STATE_EVENT_KINDS, state_event, verdict_of
from greenloop.protocol import BuildResult, SetupError
from greenloop.protocol.executor import EXIT_INTERRUPTED

if TYPE_CHECKING:
    from greenloop.cli._devloop import BuildReporter
    from greenloop.fleet.serve import Front, StartFront


@click.command()
@click.option(
    "--repo",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=Path("."),
    show_default=True,
    help="Any folder of the repository whose worktrees to serve.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1, max=256),
    default=None,
    help="Rounds checking at once, across every worktree (default: half the cores).",
)
@click.option(
    "--lsp-servers",
    type=click.IntRange(min=1, max=64),
    default=DEFAULT_PER_PROGRAM,
    show_default=True,
    help="Language servers of each checker command (e.g. pyright-lsp) shared by every "
    "worktree, one workspace folder a worktree, whatever their number.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Also serve the event stream and status over HTTP on this port (0 picks a free "
    "one, printed on stderr). Default: no HTTP, the socket only.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to serve HTTP on (with --port).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer HTTP requests for this host name (repeatable; '.example.com' allows "
    "the domain and its subdomains). Loopback names and --host are always allowed; any "
    "other Host is refused with 403 against DNS rebinding.",
)
def serve(
    repo: Path,
    jobs: int | None,
    lsp_servers: int,
    port: int | None,
    host: str,
    allowed_hosts: tuple[str, ...],
) -> None:
    """Watch and check every worktree of the repository from one process.

    Follows `git worktree list` as worktrees come and go. While it runs,
    `greenloop check`, `watch`, `status` and `dev` in a worktree are answered by it;
    `greenloop watch --json --all-worktrees` follows every worktree at once.
    With --port, GET or a WebSocket on /__greenloop/events[?worktree=PATH]
    streams the same events (JSON lines / frames) and /__greenloop/status
    describes the server. Ctrl-C or SIGTERM stop it (exit 130); exit 2 for a
    setup error (not a git repository, already served, the port taken).
    """
    from greenloop.cli._devloop import signals_set
    from greenloop.fleet.serve import serve as run_serve

    front: StartFront | None = None
    if port is not None:
        front = _http_front(host, port, allowed_hosts)
    elif host != "127.0.0.1" or allowed_hosts:
        fail("--host and --allowed-host serve HTTP: give --port too (0 picks a free one)")

    stop, signalled = threading.Event(), threading.Event()
    try:
        with signals_set(stop, signalled):
            run_serve(
                repo.resolve(),
                jobs or default_jobs(),
                stop,
                lambda line: click.echo(line, err=True),
                front,
                dev=_open_dev,
                lsp_servers=lsp_servers,
            )
    except SetupError as e:
        fail(str(e))
    sys.exit(EXIT_INTERRUPTED if signalled.is_set() else 0)


def _open_dev(root: Path, flags: Mapping[str, Any], reports: DevReports) -> HostedDev:
    # The dev stack (builds, the dev server) loads with the first `greenloop dev` served.
    from greenloop.dev.session import open_hosted

    return open_hosted(root, flags, reports)


def _http_front(host: str, port: int, allowed_hosts: tuple[str, ...]) -> StartFront:
    """What starts the HTTP front; a malformed --allowed-host exits 2 before anything runs."""
    from greenloop.server.fleet_app import serve_fleet
    from greenloop.server.hosts import HostPolicy

    try:
        HostPolicy.of(host, allowed_hosts)
    except ValueError as e:
        fail(str(e))

    def start(fleet: Fleet, socket: Path) -> Front:
        try:
            return serve_fleet(fleet, socket, host, port, allowed_hosts)
        except (OSError, RuntimeError) as e:
            raise SetupError(f"greenloop serve cannot serve HTTP on {host}:{port}: {e}") from None

    return start


def watch_served(
    root: Path, as_json: bool, stop: threading.Event, signalled: threading.Event
) -> bool:
    """Follow the server's loop on ``root`` as ``watch`` would print it; False if none serves
    it. Exits when the stream ends."""
    followed = _follow(root, "watch", stop)
    if followed is None:
        return False
    pid, stream = followed
    click.echo(f"greenloop: watching {root} in greenloop serve (pid {pid}; Ctrl-C stops)", err=True)
    _print_loop(root, pid, stream, signalled, JsonPrinter() if as_json else TextPrinter())


def dev_served(
    root: Path,
    flags: dict[str, object],
    reporter: BuildReporter,
    as_json: bool,
    stop: threading.Event,
    signalled: threading.Event,
) -> bool:
    """Run ``dev`` on ``root`` in the server, printing what ``dev`` would; False if none
    serves it. Exits when the stream ends (the session ends when this hangs up)."""
    try:
        answer = ask(root, "dev", stop, dev=flags)
    except SetupError as e:
        fail(str(e))
    if answer is None:
        return False
    first, stream = answer
    if "setup_error" in first:
        stream.close()
        fail(str(first["setup_error"]))
    pid = int(first["serving"])
    click.echo(
        f"greenloop: serving {first['url']} (latest green build of {root}, "
        f"in greenloop serve, pid {pid}; Ctrl-C stops)",
        err=True,
    )

    def told(message: Message) -> None:
        kind = message.get("kind")
        if kind == "build":
            reporter(BuildResult.model_validate(message["result"]), bool(message["published"]))
        elif kind == "app":
            reporter.app_document(message["app"], str(message["line"]))
        elif kind == "app_log":
            click.echo(str(message["line"]), err=True)

    printer = JsonPrinter() if as_json else TextPrinter()
    _print_loop(root, pid, stream, signalled, printer, told)


def _print_loop(
    root: Path,
    pid: int,
    stream: Stream,
    signalled: threading.Event,
    printer: Listener,
    other: Callable[[Message], None] = lambda message: None,
) -> NoReturn:
    """Print a worktree's stream as its own loop's ``printer`` would; exit when it ends."""
    for message in stream:
        kind = message.get("kind")
        if kind in STATE_EVENT_KINDS:
            event = state_event(message)
            (printer.early if message.get("early") else printer.events)([event])
        elif kind == "verdict":
            printer.verdict(verdict_of(message))
        elif kind == "worktree_removed":
            why = f"greenloop serve stopped serving {root}: {message['reason']}"
            _ended(stream, signalled, why)
        else:
            other(message)
    _ended(stream, signalled, f"greenloop serve (pid {pid}) stopped")


def watch_all(root: Path, stop: threading.Event, signalled: threading.Event) -> NoReturn:
    """``watch --json --all-worktrees``: every message of the server, as JSON lines."""
    followed = _follow(root, "events", stop)
    if followed is None:
        fail(
            f"no greenloop serve answers for {root}; start one with `greenloop serve` "
            "(--all-worktrees follows the worktrees it serves)"
        )
    pid, stream = followed
    click.echo(f"greenloop: following every worktree in greenloop serve (pid {pid})", err=True)
    for message in stream:
        click.echo(json.dumps(message, separators=(",", ":")))
    _ended(stream, signalled, f"greenloop serve (pid {pid}) stopped")


def _follow(root: Path, op: str, stop: threading.Event) -> tuple[int, Stream] | None:
    try:
        return follow(root, op, stop)
    except SetupError as e:
        fail(str(e))


def _ended(stream: Stream, signalled: threading.Event, why: str) -> NoReturn:
    stream.close()
    if signalled.is_set():
        sys.exit(EXIT_INTERRUPTED)
    fail(why)
