"""Pipeline commands: ``run``, ``render``, ``pipelines``, ``init``, ``runs``."""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import click

from greenloop.cli import _templates
from greenloop.cli._common import (
    echo_json,
    fail,
    file_option,
    json_option,
    load_ir,
    load_pipelines,
)
from greenloop.cli._common import open_store as _open_store
from greenloop.engine.run import Run, RunOptions
from greenloop.plugins import registry
from greenloop.protocol import IRDocument, PluginFailure, SetupError
from greenloop.protocol.ir import SandboxMode
from greenloop.store.remote import MODES, REMOTE_CACHE_ENV, REMOTE_CACHE_MODE_ENV, open_remote

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


@click.command()
@click.argument("pipeline", default="ci")
@file_option
@click.option(
    "--ir",
    "ir_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Run an IR document (as `greenloop render` prints) instead of the pipeline file; "
    "the project root is the current directory.",
)
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help="Parallel steps.")
@click.option("--fail-fast", is_flag=True, help="Stop every step at the first failure.")
@click.option("--executor", default=None, help="Run every step with this executor.")
@click.option("--no-cache", is_flag=True, help="Run every step; still record cache entries.")
@click.option(
    "--sandbox",
    type=click.Choice(["bwrap", "none"]),
    default=None,
    help="Isolate every local step this way (default: as the pipeline says, else bwrap "
    "where it works here).",
)
@click.option("--hermetic", is_flag=True, help="Run every local step under bwrap, offline.")
@click.option(
    "--format",
    "fmt",
    default=None,
    help="Output formatter: terminal, plain, json (default: terminal on a TTY, else plain).",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option(
    "--remote-cache",
    "remote_url",
    envvar=REMOTE_CACHE_ENV,
    default=None,
    metavar="URL",
    help="Share the cache through this Bazel remote-cache HTTP server "
    f"(env {REMOTE_CACHE_ENV}; an empty value turns it off).",
)
@click.option(
    "--remote-cache-mode",
    "remote_mode",
    envvar=REMOTE_CACHE_MODE_ENV,
    type=click.Choice(MODES),
    default="readwrite",
    show_default=True,
    help=f"read: only look entries up; readwrite: also upload (env {REMOTE_CACHE_MODE_ENV}).",
)
def run(
    pipeline: str,
    pipeline_file: Path | None,
    ir_file: Path | None,
    jobs: int | None,
    fail_fast: bool,
    executor: str | None,
    no_cache: bool,
    sandbox: SandboxMode | None,
    hermetic: bool,
    fmt: str | None,
    as_json: bool,
    remote_url: str | None,
    remote_mode: str,
) -> None:
    """Run PIPELINE (default: ci) on the working tree.

    Exit 0 when every step passed or was cached, 1 when a step failed, 2 for a
    broken pipeline file or setup problem, 130 when interrupted.
    """
    if hermetic and sandbox == "none":
        fail("--hermetic needs the bwrap sandbox; drop --sandbox none")
    if ir_file is not None:
        document, root = load_ir(ir_file), Path.cwd()
    else:
        document, root = load_pipelines(pipeline_file)
    try:
        selected = document.pipeline(pipeline)
    except KeyError:
        names = ", ".join(p.name for p in document.pipelines)
        fail(f"no pipeline named {pipeline!r} (defined: {names})")
    name = "json" if as_json else fmt or ("terminal" if sys.stdout.isatty() else "plain")
    try:
        formatter = registry.load("formatter", name)(sys.stdout)
    except PluginFailure as e:
        fail(e.error.message)
    store = _open_store()
    try:
        remote = open_remote(store, remote_url or "", remote_mode)
    except ValueError as e:
        store.close()
        fail(str(e))
    options = RunOptions(
        fail_fast=fail_fast,
        executor=executor,
        use_cache=not no_cache,
        sandbox=sandbox,
        hermetic=hermetic,
    )
    if jobs is not None:
        options = dataclasses.replace(options, jobs=jobs)
    the_run = Run(
        store,
        selected,
        root,
        registry.Executors(store),
        formatter,
        options,
        hooks=registry.hooks(),
        remote=remote,
    )

    def interrupt(signum: int, frame: FrameType | None) -> None:
        the_run.cancel()

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = the_run.execute()
    except SetupError as e:
        fail(str(e))
    except PluginFailure as e:
        fail(e.error.message if e.error.kind == "not_found" else str(e.error))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if remote is not None:
            remote.close()  # already done unless the run stopped early; records its stats
        store.close()
    if result.status == "cancelled":
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(0 if result.status == "passed" else EXIT_FAILED)


@click.command()
@click.argument("pipeline", required=False)
@file_option
def render(pipeline: str | None, pipeline_file: Path | None) -> None:
    """Print the IR (versioned JSON) of PIPELINE, or of every pipeline with no name."""
    document, _ = load_pipelines(pipeline_file)
    if pipeline is not None:
        try:
            document = IRDocument(pipelines=[document.pipeline(pipeline)])
        except KeyError:
            fail(f"no pipeline named {pipeline!r}")
    click.echo(document.model_dump_json(indent=2))


@click.command()
@file_option
@json_option
def pipelines(pipeline_file: Path | None, as_json: bool) -> None:
    """List the pipelines the pipeline file defines."""
    document, _ = load_pipelines(pipeline_file)
    rows = [{"name": p.name, "steps": len(p.steps)} for p in document.pipelines]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['name']}\t{row['steps']} steps")


@click.command()
@click.option(
    "--template",
    type=click.Choice(sorted(_templates.TEMPLATES)),
    default=None,
    help="Starter to write (default: detected from the project's files).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing pipeline file.")
@json_option
def init(template: str | None, force: bool, as_json: bool) -> None:
    """Write a starter .greenloop/pipeline.py for the project in this directory."""
    root = Path.cwd()
    chosen = template or _templates.detect(root)
    target = root / ".greenloop" / "pipeline.py"
    if target.exists() and not force:
        fail(f"{target} exists; use --force to overwrite it")
    _templates.write(root, chosen)
    if as_json:
        echo_json({"path": str(target), "template": chosen})
        return
    click.echo(f"wrote {target} ({chosen} template); run it with `greenloop run ci`")


@click.command()
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, help="How many runs.")
@click.option("--run", "run_id", default=None, help="Show the steps of one run (id prefix).")
@json_option
def runs(limit: int, run_id: str | None, as_json: bool) -> None:
    """List recent runs (newest first), or the steps of one run."""
    store = _open_store()
    try:
        records = store.index.runs(limit=limit if run_id is None else 10_000)
        if run_id is not None:
            matches = [r for r in records if r.run_id.replace("-", "").startswith(run_id)]
            if not matches:
                fail(f"no run with id {run_id!r}")
            steps = store.index.steps(matches[0].run_id)
            if as_json:
                echo_json([s.__dict__ for s in steps])
                return
            for s in steps:
                code = "" if s.exit_code is None else f" exit {s.exit_code}"
                click.echo(f"{s.status:<9} {s.duration_s:7.2f}s  {s.label}{code}")
            return
    finally:
        store.close()
    if as_json:
        echo_json([r.__dict__ for r in records])
        return
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started_at))
        took = f"{r.finished_at - r.started_at:.2f}s" if r.finished_at else "-"
        click.echo(
            f"{r.run_id.replace('-', '')[:12]}  {when}  {r.pipeline:<12} {r.status:<9} "
            f"{took:>8}  {r.steps} steps, {r.cached} cached"
        )
