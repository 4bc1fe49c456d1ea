"""Dev-loop commands: ``check``, ``watch``, ``status``.

Exit codes: ``check`` 0 green, 1 red (or unknown), 2 setup error, 130
interrupted; ``watch`` 2 for a setup error or a live watcher on the tree, 130
when stopped by Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import click

from greenloop.cli._common import echo_json, fail, json_option
from greenloop.cli._devloop_output import (
    JsonPrinter,
    TextPrinter,
    describe_section,
    omitted_line,
    summary_line,
)
from greenloop.devloop import process
from greenloop.devloop.checkers import explain_checkers
from greenloop.devloop.config import load_config
from greenloop.devloop.loop import FanOut, Listener, WatchLoop
from greenloop.devloop.oneshot import Interrupted, check_once
from greenloop.devloop.rounds import Setup
from greenloop.devloop.status import (
    StatusListener,
    StatusWriter,
    WatchLock,
    watcher_section,
)
from greenloop.fleet.client import served_check, served_status
from greenloop.protocol import (
    BuildResult,
    Failed,
    SetupError,
    TreeState,
)
from greenloop.protocol.executor import EXIT_INTERRUPTED

if TYPE_CHECKING:
    from greenloop.server import AppStatus

EXIT_RED = 1
"""``check``: the tree is red (or could not be pinned down while it kept changing)."""


root_option = click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=Path("."),
    show_default=True,
    help="Project root to check.",
)
"""``--root DIR``: the tree the command works on (default: the current directory)."""


@click.command()
@root_option
@json_option
@click.option(
    "--explain-checkers",
    "explain",
    is_flag=True,
    help="Run nothing; say which checkers would run and why (the project's evidence for "
    "each: file and key), which were skipped and why, and what greenloop does not follow.",
)
def check(root: Path, as_json: bool, explain: bool) -> None:
    """Check the tree once: print every diagnostic and the verdict.

    Exit 0 when green, 1 when red (or when the tree kept changing during the
    check), 2 for a setup error such as a missing checker program. With
    --explain-checkers, exit 0 after saying which checkers it picked and why.
    """
    root = root.resolve()
    if explain:
        _explain(root, as_json)
        return
    cancel = threading.Event()
    try:
        with signals_set(cancel):
            # A `greenloop serve` of the repository answers from its warm loop.
            result = served_check(root, cancel)
            if result is None:
                if cancel.is_set():
                    raise Interrupted
                result = check_once(root, cancel)
    except SetupError as e:
        fail(str(e))
    except Interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        for diagnostic in result.diagnostics:
            click.echo(diagnostic.render())
        counts = Counter(d.severity for d in result.diagnostics)
        counts.update(result.omitted)
        if result.omitted:
            click.echo(omitted_line(result.omitted))
        click.echo(summary_line(result.state, counts, result.checkers, result.duration_ms))
    sys.exit(0 if result.state is TreeState.GREEN else EXIT_RED)


@click.command()
@root_option
@json_option
@click.option(
    "--debounce-ms",
    type=click.IntRange(min=0, max=60_000),
    default=None,
    help="Group changes arriving this close together (default: settings, else 120).",
)
@click.option(
    "--all-worktrees",
    is_flag=True,
    help="Follow every worktree the repository's `greenloop serve` serves: its whole "
    "event stream as JSON lines, each naming its worktree (exit 2 when none runs).",
)
def watch(root: Path, as_json: bool, debounce_ms: int | None, all_worktrees: bool) -> None:
    """Watch the tree and print a verdict after every change (JSON lines with --json).

    Keeps a status file for `greenloop status` in the tree's state folder (outside the
    tree; GREENLOOP_STATE_DIR moves it). Refuses to start (exit 2)
    while another watcher is live on the tree; Ctrl-C or SIGTERM stop it (exit 130).
    When the repository's `greenloop serve` serves the tree, follows its loop instead.
    """
    root = root.resolve()
    _watch_served(root, as_json, all_worktrees)
    try:
        setup = Setup.load(root)
        lock = WatchLock.acquire(root)
    except SetupError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot take the watcher slot in {root}: {e}")
    names = ", ".join(c.name for c in setup.checkers)
    click.echo(f"greenloop: watching {root} with {names} (Ctrl-C to stop)", err=True)
    _watch_until_stopped(root, setup, lock, as_json=as_json, debounce_ms=debounce_ms)


DEV_DEBOUNCE_MS = 30
"""`dev`'s own default window, shorter than `watch`'s: the reload is the latency a
user sees, and a burst that outlasts the window costs a cancelled check (the
next batch restarts it), never a wrong page. webpack's watcher waits 20 ms."""


@click.command()
@root_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port to serve on (0 picks a free one).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer requests for this host name (repeatable; '.example.com' allows the "
    "domain and its subdomains). Loopback names and --host are always allowed; any other "
    "Host is refused with 403 against DNS rebinding.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Also keep the latest green build here (a symlink greenloop swaps atomically; "
    "default .greenloop/out).",
)
@click.option(
    "--pipeline",
    "pipeline_name",
    default=None,
    help="The pipeline that builds the site (or the app); its output step's directory is "
    "served (or run from). Default: [dev] build, else 'build' for a site and a snapshot of "
    "the green tree for an app.",
)
@click.option(
    "--app",
    "app_command",
    default=None,
    metavar="CMD",
    help="Run this web app from each green build behind a reverse proxy on --port; {port} "
    "in CMD (and $PORT) is its own loopback port. Default: [dev] app.",
)
@click.option(
    "--ready",
    default=None,
    metavar="PATH|CMD",
    help="When a new app is ready to take over: an HTTP path that answers 2xx/3xx, or a "
    "command that exits 0. Default: [dev] ready, else its port accepts connections.",
)
@click.option(
    "--debounce-ms",
    type=click.IntRange(min=0, max=60_000),
    default=None,
    help=f"Group changes arriving this close together (default: settings, else {DEV_DEBOUNCE_MS}).",
)
@json_option
def dev(
    root: Path,
    host: str,
    port: int,
    allowed_hosts: tuple[str, ...],
    out: Path | None,
    pipeline_name: str | None,
    app_command: str | None,
    ready: str | None,
    debounce_ms: int | None,
    as_json: bool,
) -> None:
    """Watch, build every green tree, and serve the latest green build with live reload.

    A red tree is never built, published or served: the page keeps the last green
    build and shows what is red in an overlay. With an app (--app or [dev] app),
    each green build's app starts on its own port and takes over the proxy once
    ready; until then, and when it fails, the last one keeps serving. Exit 2 for a
    setup error, 130 when stopped by Ctrl-C or SIGTERM.
    """
    # The build and server stack loads only for `dev`, never for `check` or `watch`.
    from greenloop.dev.session import DevFlags

    root = root.resolve()
    reporter = BuildReporter(as_json)
    flags = DevFlags(
        host=host,
        port=port,
        allowed_hosts=allowed_hosts,
        out=os.path.abspath(out) if out is not None else None,
        pipeline_name=pipeline_name,
        app_command=app_command,
        ready=ready,
    )
    _dev_served(root, flags.as_json(), reporter, as_json)
    try:
        setup = Setup.load(root)
        lock = WatchLock.acquire(root)
    except SetupError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot take the watcher slot in {root}: {e}")
    try:
        session = flags.open(
            root,
            setup.config.settings.dev,
            reporter,
            on_app_change=reporter.app,
            app_echo=lambda line: click.echo(line, err=True),
        )
    except SetupError as e:
        lock.release()
        fail(str(e))
    what = "the app of the latest green build" if session.apps else "latest green build"
    click.echo(f"greenloop: serving {session.url} ({what} of {root})", err=True)

    def start_building(writer: StatusWriter) -> None:
        reporter.record_in(writer)
        session.start()

    if debounce_ms is None and "debounce_ms" not in setup.config.settings.model_fields_set:
        debounce_ms = DEV_DEBOUNCE_MS
    _watch_until_stopped(
        root,
        setup,
        lock,
        as_json=as_json,
        debounce_ms=debounce_ms,
        extra=session.builds,
        on_start=start_building,
        on_stop=session.close,
    )


def _watch_served(root: Path, as_json: bool, all_worktrees: bool) -> None:
    """Follow `greenloop serve` when it serves ``root`` (never returns then), else return."""
    from greenloop.cli._serve import watch_all, watch_served

    stop, signalled = threading.Event(), threading.Event()
    with signals_set(stop, signalled):
        if all_worktrees:
            watch_all(root, stop, signalled)
        watch_served(root, as_json, stop, signalled)


def _dev_served(
    root: Path, flags: dict[str, object], reporter: BuildReporter, as_json: bool
) -> None:
    """Run ``dev`` in `greenloop serve` when it serves ``root`` (then never returns)."""
    from greenloop.cli._serve import dev_served

    stop, signalled = threading.Event(), threading.Event()
    with signals_set(stop, signalled):
        dev_served(root, flags, reporter, as_json, stop, signalled)


def _watch_until_stopped(
    root: Path,
    setup: Setup,
    lock: WatchLock,
    *,
    as_json: bool,
    debounce_ms: int | None = None,
    extra: Listener | None = None,
    on_start: Callable[[StatusWriter], None] = lambda writer: None,
    on_stop: Callable[[], None] = lambda: None,
) -> NoReturn:
    """Run the watch loop, with its status file, until Ctrl-C, SIGTERM or a takeover; exit.

    Exit 130 when signalled, 0 when the loop ends by itself, 2 when another watcher
    took the tree over or watching failed. Every checker process group is killed.
    """
    stop, lost, signalled = threading.Event(), threading.Event(), threading.Event()

    def on_lost() -> None:
        lost.set()
        stop.set()

    writer = StatusWriter(lock, on_lost)
    printer: Listener = JsonPrinter() if as_json else TextPrinter()
    listeners = [printer, StatusListener(writer), *([extra] if extra is not None else [])]
    loop = WatchLoop(root, setup, FanOut(*listeners), stop, debounce_ms=debounce_ms)
    try:
        with signals_set(stop, signalled):
            writer.start()
            on_start(writer)
            loop.run()
    except OSError as e:
        fail(f"watching {root} failed: {e}")
    finally:
        stop.set()
        process.kill_all()
        on_stop()
        writer.stop()
        lock.release()
    if lost.is_set():
        fail("another watcher took over this tree")
    sys.exit(EXIT_INTERRUPTED if signalled.is_set() else 0)


class BuildReporter:
    """Says what each build (and app) came to: on stdout, and in the status file once it runs."""

    def __init__(self, as_json: bool) -> None:
        self._as_json = as_json
        self._status: StatusWriter | None = None

    def record_in(self, writer: StatusWriter) -> None:
        """From now on, also record each build in ``writer``'s status file."""
        self._status = writer

    def __call__(self, result: BuildResult, published: bool) -> None:
        """Report one build."""
        if self._status is not None:
            self._status.build(result, published)
        if self._as_json:
            click.echo(result.model_dump_json())
            return
        outcome = result.outcome
        if isinstance(outcome, Failed):
            click.echo(f"  build FAILED: {outcome.reason}")
        elif published:
            click.echo(f"  build {outcome.kind}: published {result.input_hash[:12]}")
        else:
            click.echo(f"  build {outcome.kind}: not published (the tree changed meanwhile)")

    def app(self, status: AppStatus, line: str) -> None:
        """Report a change of the app: a line in the terminal, the status file, JSON."""
        self.app_document(status.model_dump(mode="json"), line)

    def app_document(self, document: dict[str, Any], line: str) -> None:
        """:meth:`app`, from the status as JSON (as `greenloop serve` sends it)."""
        if self._status is not None:
            self._status.update(app=document)
        if self._as_json:
            click.echo(json.dumps({"app": document}, separators=(",", ":")))
        elif line:
            click.echo(f"  {line}")


@click.command()
@root_option
@json_option
def status(root: Path, as_json: bool) -> None:
    """Say whether a watcher is live on the tree and what it last saw."""
    from greenloop.dev.publisher import latest_green_section

    root = root.resolve()
    served = served_status(root)
    sections = {"watcher": watcher_section(root) if served is None else served["watcher"]}
    if served is not None:
        sections["serve"] = served["serve"]
    sections["latest_green"] = latest_green_section(root)
    if as_json:
        echo_json(sections)
        return
    for name, section in sections.items():
        click.echo(f"{name}: {describe_section(name, section)}")


def _explain(root: Path, as_json: bool) -> None:
    """``check --explain-checkers``: the chosen checkers with their evidence, then the rest."""
    try:
        explanation = explain_checkers(root, load_config(root))
    except SetupError as e:
        fail(str(e))
    if as_json:
        echo_json(explanation.as_json())
        return
    selection = explanation.selection
    kinds = ", ".join(f"{kind} ({marker})" for kind, marker in selection.kinds.items())
    click.echo(f"checkers for {root}; kinds: {kinds or 'none'}")
    for choice in selection.chosen:
        click.echo(f"\n{choice.name} ({choice.role}): {choice.why}")
        for evidence in choice.evidence:
            mark = "  <- its arguments" if evidence == choice.arguments_from else ""
            click.echo(f"  {evidence}{mark}")
        runs = explanation.runs[choice.name]
        if isinstance(runs, str):
            click.echo(f"  cannot run: {runs}")
        else:
            click.echo(f"  runs: {shlex.join(runs)}")
    sections = [
        ("skipped", [f"{s.name}: {s.why}" for s in selection.skipped]),
        ("not followed", [f"{u.evidence}: {u.why}" for u in selection.unfollowed]),
        ("could not read", list(selection.problems)),
    ]
    for title, lines in sections:
        if lines:
            click.echo(f"\n{title}:")
            for line in lines:
                click.echo(f"  {line}")


COMMANDS = [check, watch, status, dev]
"""The dev-loop commands, for registration on the ``greenloop`` group."""


@contextmanager
def signals_set(event: threading.Event, signalled: threading.Event | None = None) -> Iterator[None]:
    # Ctrl-C and SIGTERM become a flag the work polls, so children are killed in order.
    def handler(signum: int, frame: FrameType | None) -> None:
        if signalled is not None:
            signalled.set()
        event.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
