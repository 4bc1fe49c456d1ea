"""``greenloop debug STEP`` (and ``run --shell-on-failure``): a shell where a step failed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from greenloop.cli._common import fail, file_option, load_pipelines, open_store, pipeline_named
from greenloop.engine.debug import kept_as, last_failure
from greenloop.engine.run import DEFAULT_EXECUTOR, RunOptions, with_sandboxes
from greenloop.plugins import discovery
from greenloop.protocol import Pipeline, PluginFailure, SetupError
from greenloop.store import Store


@click.command()
@click.argument("step")
@click.option("--pipeline", "pipeline_name", default="ci", show_default=True, help="Its pipeline.")
@click.option(
    "--run",
    "run_id",
    default=None,
    metavar="ID",
    help="That run (default: the newest in which STEP failed).",
)
@click.option("--executor", default=None, help="As given to `run --executor`, if it was.")
@file_option
def debug(
    step: str,
    pipeline_name: str,
    run_id: str | None,
    executor: str | None,
    pipeline_file: Path | None,
) -> None:
    """Open a shell in the filesystem STEP left when it failed: its parent's snapshot, the
    workspace and everything the step wrote, in its sandbox or container, at its workdir,
    with its env (and its secrets, when given as for `run`). Changes are thrown away."""
    from greenloop.cli._history import find_run

    document, _ = load_pipelines(pipeline_file)
    pipeline = pipeline_named(document, pipeline_name)
    store = open_store()
    try:
        run = find_run(store, run_id) if run_id else last_failure(store, pipeline.name, step)
        if run is None:
            fail(f"step {step!r} has not failed in any recorded run of {pipeline.name!r}")
        code = open_shell(store, pipeline, step, run.run_id, executor)
    finally:
        store.close()
    sys.exit(code)


def open_shell(
    store: Store, pipeline: Pipeline, key: str, run_id: str, executor: str | None
) -> int:
    """Open the debug shell of step ``key`` of run ``run_id``; return its exit status."""
    steps = {s.key: s for s in with_sandboxes(pipeline, RunOptions()).steps}
    if key not in steps:
        fail(f"pipeline {pipeline.name!r} has no step {key!r} (its steps: {', '.join(steps)})")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        fail("a debug shell needs a terminal (stdin and stdout are not one)")
    step = steps[key]
    name = executor or step.executor or pipeline.executor or DEFAULT_EXECUTOR
    env = {**pipeline.env, **step.env}
    for use in step.secrets:
        if use.name in os.environ:
            env[use.env] = os.environ[use.name]
    try:
        shell = getattr(discovery.Executors(store)(name), "shell", None)
        if shell is None:
            fail(f"the {name!r} executor cannot open a debug shell")
        click.echo(
            f"greenloop: a shell where {key!r} failed (run {run_id.replace('-', '')[:12]}, "
            f"{name}, {step.workdir})\ngreenloop: changes here are thrown away; exit to leave",
            err=True,
        )
        code: int = shell(kept_as(run_id, key), step, env)
    except (SetupError, PluginFailure) as e:
        fail(e.error.message if isinstance(e, PluginFailure) else str(e))
    return code
