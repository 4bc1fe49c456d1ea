"""Pipeline commands: ``run``, ``render``, ``pipelines``."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from greenloop.cli._artifacts import check_out_dir, export_run_artifacts
from greenloop.cli._common import (
    echo_json,
    fail,
    file_option,
    json_option,
    load_ir,
    load_pipelines,
    parse_env_values,
    pipeline_named,
)
from greenloop.cli._common import open_store as _open_store
from greenloop.engine import select
from greenloop.engine.run import Run, RunOptions, RunResult
from greenloop.engine.select import SelectionError
from greenloop.plugins import discovery
from greenloop.protocol import BuildEvent, IRDocument, Pipeline, PluginFailure, SetupError
from greenloop.protocol.executor import EXIT_INTERRUPTED, EXIT_TIMEOUT
from greenloop.protocol.ir import SandboxMode
from greenloop.store import Store
from greenloop.store.remote.settings import MODES, REMOTE_CACHE_ENV, REMOTE_CACHE_MODE_ENV

if TYPE_CHECKING:
    from greenloop.cli._reports import Report
    from greenloop.store.remote import HttpRemoteCache

EXIT_FAILED = 1
_PASSED = ("passed", "cached")


@click.command()
@click.argument("pipeline", default="ci")
@file_option
@click.option(
    "--event",
    default=None,
    metavar="EVENT",
    help="Run every pipeline triggered by EVENT (`on=[...]` in @gl.pipeline), one after another.",
)
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
@click.option(
    "--ray-address",
    envvar="RAY_ADDRESS",
    default=None,
    metavar="ADDR",
    help="The Ray cluster the ray executor sends steps to (env RAY_ADDRESS; default: the "
    "one `ray start` started on this machine).",
)
@click.option(
    "--junit",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE",
    help="Write a JUnit XML report: a testcase per step, plus the JUnit files steps "
    "declared as artifacts.",
)
@click.option(
    "--summary",
    "summary_file",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE",
    help="Write a Markdown summary (the shape of a GitHub Actions job summary).",
)
@click.option(
    "--only",
    multiple=True,
    metavar="KEY",
    help="Run only this step (a key or a glob: 'test[*]'), with the chain it builds in; "
    "repeatable.",
)
@click.option(
    "--from",
    "from_keys",
    multiple=True,
    metavar="KEY",
    help="Run this step and everything after it (with the chains they build in).",
)
@click.option(
    "--failed",
    is_flag=True,
    help="Run the steps that did not pass in the last run of this pipeline (with their chains).",
)
@click.option(
    "-e",
    "--env",
    "env_values",
    multiple=True,
    metavar="KEY=VAL",
    help="Set an env value for every step (part of each step's cache key); repeatable.",
)
@click.option(
    "--secret",
    "secret_files",
    multiple=True,
    metavar="NAME=@FILE",
    help="Read secret NAME from FILE (one trailing newline dropped); repeatable. By default "
    "a secret is read from the variable of its name.",
)
@click.option(
    "--secret-env",
    "secret_vars",
    multiple=True,
    metavar="NAME=VAR",
    help="Read secret NAME from the environment variable VAR; repeatable.",
)
@click.option(
    "--shell-on-failure",
    is_flag=True,
    help="When a step fails, open a shell in the filesystem it left (needs a terminal).",
)
@click.option(
    "--artifacts-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Export every declared artifact (cached steps' too) into DIR/<step key>/.",
)
def run(
    pipeline: str,
    pipeline_file: Path | None,
    event: str | None,
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
    ray_address: str | None,
    junit: Path | None,
    summary_file: Path | None,
    only: tuple[str, ...],
    from_keys: tuple[str, ...],
    failed: bool,
    env_values: tuple[str, ...],
    secret_files: tuple[str, ...],
    secret_vars: tuple[str, ...],
    shell_on_failure: bool,
    artifacts_dir: Path | None,
) -> None:
    """Run PIPELINE (default: ci) on the working tree.

    Exit 0 when every step passed or was cached, 1 when a step failed, 2 for a
    broken pipeline file or setup problem, 124 when the pipeline's timeout ran
    out, 130 when interrupted.
    """
    if hermetic and sandbox == "none":
        fail("--hermetic needs the bwrap sandbox; drop --sandbox none")
    if ir_file is not None:
        document, root = load_ir(ir_file), Path.cwd()
    else:
        document, root = load_pipelines(pipeline_file)
    named = click.get_current_context().get_parameter_source("pipeline")
    chosen = _choose(document, pipeline, event, named == ParameterSource.COMMANDLINE)
    if shell_on_failure and not (sys.stdin.isatty() and sys.stdout.isatty()):
        fail("--shell-on-failure needs a terminal (stdin and stdout are not one)")
    # Executors that move snapshots through the remote cache (ray) read these settings
    # where the variables keep them; the flags win over the variables.
    if ray_address:
        os.environ["RAY_ADDRESS"] = ray_address
    given = click.get_current_context().get_parameter_source
    if given("remote_url") == ParameterSource.COMMANDLINE:
        os.environ[REMOTE_CACHE_ENV] = remote_url or ""
    if given("remote_mode") == ParameterSource.COMMANDLINE:
        os.environ[REMOTE_CACHE_MODE_ENV] = remote_mode
    extra_env = parse_env_values(env_values)
    chosen = [p.model_copy(update={"env": {**p.env, **extra_env}}) for p in chosen]
    name = "json" if as_json else fmt or ("terminal" if sys.stdout.isatty() else "plain")
    try:
        formatter = discovery.load("formatter", name)(sys.stdout)
    except PluginFailure as e:
        fail(e.error.message)
    store = _open_store()
    if only or from_keys or failed:
        try:
            chosen = [_select(store, p, only, from_keys, failed) for p in chosen]
        except SelectionError as e:
            store.close()
            fail(str(e))
    if artifacts_dir is not None:
        check_out_dir(artifacts_dir, store)
    emit = _until_output_closes(formatter)
    reports: list[Report] = []
    if junit is not None or summary_file is not None:
        # Imported only when asked for: a plain run does not pay for the XML parser.
        from greenloop.cli._reports import open_reports, tee

        try:
            reports = open_reports(junit, summary_file, store)
        except ValueError as e:
            store.close()
            fail(str(e))
        emit = tee(emit, *reports)
    options = RunOptions(
        fail_fast=fail_fast,
        executor=executor,
        use_cache=not no_cache,
        sandbox=sandbox,
        hermetic=hermetic,
    )
    if jobs is not None:
        options = dataclasses.replace(options, jobs=jobs)
    ended: list[RunResult] = []
    try:
        for selected in chosen:
            secrets = _secret_values(selected, secret_files, secret_vars)
            result = _execute(
                store, selected, root, emit, options, remote_url, remote_mode, secrets
            )
            ended.append(result)
            if artifacts_dir is not None:
                export_run_artifacts(store, selected, result, artifacts_dir)
            failed_steps = [k for k, o in result.steps.items() if o.status == "failed"]
            if shell_on_failure and failed_steps:
                from greenloop.cli._debug import open_shell

                open_shell(store, selected, failed_steps[0], str(result.run_id), executor)
                break
            if result.status == "cancelled" or (result.status == "failed" and fail_fast):
                break
    finally:
        store.close()
    for report in reports:
        if report.error is not None:
            fail(report.error)
    if any(r.status == "cancelled" for r in ended):
        sys.exit(EXIT_INTERRUPTED)
    if any(r.timed_out for r in ended):
        sys.exit(EXIT_TIMEOUT)
    sys.exit(EXIT_FAILED if any(r.status == "failed" for r in ended) else 0)


def _choose(document: IRDocument, pipeline: str, event: str | None, named: bool) -> list[Pipeline]:
    """The pipelines to run: the one named, or (``--event``) every one triggered by ``event``."""
    if event is not None:
        if named:
            fail(f"give a pipeline or --event {event}, not both")
        chosen = document.triggered_by(event)
        if not chosen:
            fail(
                f'no pipeline runs on {event!r}: declare one with @gl.pipeline(..., on=["{event}"])'
            )
        return chosen
    return [pipeline_named(document, pipeline)]


def _execute(
    store: Store,
    selected: Pipeline,
    root: Path,
    emit: Callable[[BuildEvent], None],
    options: RunOptions,
    remote_url: str | None,
    remote_mode: str,
    secrets: dict[str, str],
) -> RunResult:
    """Run one pipeline to its end; a setup problem exits 2."""
    # The remote cache's client (and its HTTP and TLS stack, ~7 ms of imports) is
    # loaded only for a run that names a server: an empty URL turns the remote off.
    remote: HttpRemoteCache | None = None
    if remote_url:
        from greenloop.store.remote import open_remote

        try:
            remote = open_remote(store, remote_url, remote_mode)
        except ValueError as e:
            fail(str(e))
    try:
        hooks = discovery.hooks()  # fresh for each run: a hook's time budget is per run
    except ValueError as e:  # a bad GREENLOOP_HOOK_BUDGET
        if remote is not None:
            remote.close()
        fail(str(e))
    the_run = Run(
        store,
        selected,
        root,
        discovery.Executors(store),
        emit,
        options,
        hooks=hooks,
        remote=remote,
        secrets=secrets,
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
    return result


def _secret_values(
    pipeline: Pipeline, files: tuple[str, ...], variables: tuple[str, ...]
) -> dict[str, str]:
    """The value of every secret the pipeline reads that is given; the engine names the rest."""
    given: dict[str, str] = {}
    for pair in files:
        name, sep, path = pair.partition("=@")
        if not sep or not name or not path:
            fail(f"--secret {pair!r}: expected NAME=@FILE (a value is never given inline)")
        try:
            given[name] = Path(path).expanduser().read_text().removesuffix("\n")
        except (OSError, UnicodeDecodeError) as e:
            fail(f"--secret {name}: cannot read {path}: {getattr(e, 'strerror', None) or e}")
    for pair in variables:
        name, sep, variable = pair.partition("=")
        if not sep or not name or not variable:
            fail(f"--secret-env {pair!r}: expected NAME=VARIABLE")
        if variable not in os.environ:
            fail(f"--secret-env {name}: the variable {variable} is not set")
        given[name] = os.environ[variable]
    wanted = {use.name for step in pipeline.steps for use in step.secrets}
    for name in wanted - given.keys():
        if name in os.environ:
            given[name] = os.environ[name]
    return {name: value for name, value in given.items() if name in wanted}


def _select(
    store: Store, pipeline: Pipeline, only: tuple[str, ...], froms: tuple[str, ...], failed: bool
) -> Pipeline:
    keys = select.matching(pipeline, only) | select.downstream(
        pipeline, select.matching(pipeline, froms)
    )
    if failed:
        last = next(iter(store.index.runs(limit=1, pipeline=pipeline.name)), None)
        if last is None:
            raise select.SelectionError(f"--failed: pipeline {pipeline.name!r} has not run yet")
        missed = {s.key for s in store.index.steps(last.run_id) if s.status not in _PASSED}
        missed &= {s.key for s in pipeline.steps}
        if not missed:
            raise select.SelectionError(
                f"--failed: every step passed in the last run of {pipeline.name!r} "
                f"({last.run_id.replace('-', '')[:12]}, {last.status})"
            )
        keys |= missed
    return select.subset(pipeline, keys)


def _until_output_closes(formatter: Callable[[BuildEvent], None]) -> Callable[[BuildEvent], None]:
    """``formatter``, fallen silent once stdout is closed (``greenloop run | head``).

    The run itself goes on to its end and is recorded; only its output stops.
    """
    closed = False

    def emit(event: BuildEvent) -> None:
        nonlocal closed
        if closed:
            return
        try:
            formatter(event)
        except BrokenPipeError:
            closed = True
            # Python flushes stdout again at exit; give it somewhere to go.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)

    return emit


@click.command()
@click.argument("pipeline", required=False)
@file_option
def render(pipeline: str | None, pipeline_file: Path | None) -> None:
    """Print the IR (versioned JSON) of PIPELINE, or of every pipeline with no name."""
    document, _ = load_pipelines(pipeline_file)
    if pipeline is not None:
        document = IRDocument(pipelines=[pipeline_named(document, pipeline)])
    click.echo(document.model_dump_json(indent=2))


@click.command()
@file_option
@click.option("--steps", "with_steps", is_flag=True, help="List each pipeline's step keys.")
@json_option
def pipelines(pipeline_file: Path | None, with_steps: bool, as_json: bool) -> None:
    """List the pipelines the pipeline file defines."""
    document, _ = load_pipelines(pipeline_file)
    if with_steps:
        listed = [
            {"name": p.name, "steps": [{"key": s.key, "label": s.label} for s in p.steps]}
            for p in document.pipelines
        ]
        if as_json:
            echo_json(listed)
            return
        for pipeline in document.pipelines:
            click.echo(pipeline.name)
            for step in pipeline.steps:
                after = f"  (in {step.builds_in})" if step.builds_in else ""
                click.echo(f"  {step.key}{after}")
        return
    rows = [{"name": p.name, "steps": len(p.steps), "on": p.on} for p in document.pipelines]
    if as_json:
        echo_json(rows)
        return
    for p in document.pipelines:
        on = f"\ton {', '.join(p.on)}" if p.on else ""
        click.echo(f"{p.name}\t{len(p.steps)} steps{on}")
