"""``greenloop explain``: which steps the cache would answer, and why the others run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from greenloop.cli._common import (
    echo_json,
    fail,
    file_option,
    json_option,
    load_pipelines,
    parse_env_values,
    pipeline_named,
)
from greenloop.cli._common import open_store as _open_store
from greenloop.engine.explain import explain as _explain
from greenloop.engine.run import Run, RunOptions
from greenloop.engine.workspace import pack
from greenloop.plugins import discovery
from greenloop.protocol import PluginFailure, SetupError

_MARKS = {"hit": "↺", "miss": "▶", "always": "▶"}


@click.command()
@click.argument("pipeline", default="ci")
@click.argument("step", required=False)
@file_option
@click.option("--executor", default=None, help="As `run --executor`: the executor is in the key.")
@click.option("-e", "--env", "env_values", multiple=True, metavar="KEY=VAL", help="As `run -e`.")
@json_option
def explain(
    pipeline: str,
    step: str | None,
    pipeline_file: Path | None,
    executor: str | None,
    env_values: tuple[str, ...],
    as_json: bool,
) -> None:
    """Say, for each step of PIPELINE (or STEP alone), whether `greenloop run` would answer
    it from the cache and, for a miss, which input changed since the entry it last wrote:
    command, env (names only, never values), image or parent snapshot, policy, the watched
    files that changed (on_change), the entry's age (ttl) or, for a step that runs this
    machine's tools, the tool folders that changed. Runs nothing."""
    document, root = load_pipelines(pipeline_file)
    selected = pipeline_named(document, pipeline)
    selected = selected.model_copy(update={"env": {**selected.env, **parse_env_values(env_values)}})
    if step is not None and step not in {s.key for s in selected.steps}:
        keys = ", ".join(s.key for s in selected.steps)
        fail(f"pipeline {pipeline!r} has no step {step!r} (its steps: {keys})")

    store = _open_store()
    try:
        # A run that is never executed knows how each step's key names its executor
        # (with its variant: the local executor's sandbox mode).
        planned = Run(
            store,
            selected,
            root,
            discovery.Executors(store),
            lambda event: None,
            RunOptions(executor=executor),
        )
        found = _explain(
            store,
            planned.pipeline,
            pack(root, store, git=planned.pipeline.wants_git),
            planned.keyed_as,
            planned.host_tools,
        )
    except SetupError as e:
        fail(str(e))
    except PluginFailure as e:
        fail(e.error.message if e.error.kind == "not_found" else str(e.error))
    finally:
        store.close()
    if step is not None:
        found = [e for e in found if e.step == step]
    if as_json:
        echo_json([dataclasses.asdict(e) for e in found])
        return
    for item in found:
        word = {"hit": "cached", "miss": "runs", "always": "runs"}[item.outcome]
        click.echo(f"{_MARKS[item.outcome]} {item.step}: {word}")
        for reason in item.reasons:
            click.echo(f"    {reason}")
