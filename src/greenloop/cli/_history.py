"""The run history: ``runs``, ``logs`` and ``artifacts``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from greenloop.cli._artifacts import check_out_dir, export_step
from greenloop.cli._common import echo_json, fail, json_option, open_store
from greenloop.store import RunRecord, StepRecord, Store

run_option = click.option(
    "--run",
    "run_id",
    default=None,
    metavar="ID",
    help="A run id (or a prefix of one, dashed or not; default: the newest run with STEP).",
)


def find_run(store: Store, run_id: str) -> RunRecord:
    """The run whose id starts with ``run_id`` (dashed as `runs --json` prints it, or not)."""
    wanted = run_id.replace("-", "").lower()
    matches = [
        r for r in store.index.runs(limit=100_000) if r.run_id.replace("-", "").startswith(wanted)
    ]
    if not matches or not wanted:
        fail(f"no run with id {run_id!r}")
    if len(matches) > 1:
        fail(f"run id {run_id!r} is ambiguous: {len(matches)} runs start with it")
    return matches[0]


def find_step(store: Store, run_id: str | None, key: str) -> tuple[RunRecord, StepRecord]:
    """Step ``key`` of run ``run_id``, or of the newest run that has a step ``key``."""
    if run_id:
        run = find_run(store, run_id)
        steps = {s.key: s for s in store.index.steps(run.run_id)}
        if key not in steps:
            fail(f"run {run_id} has no step {key!r} (its steps: {', '.join(steps) or 'none'})")
        return run, steps[key]
    found = store.index.latest_step(key)
    if found is None:
        if not store.index.runs(limit=1):
            fail("no run recorded yet; `greenloop run` records one")
        fail(f"no recorded run has a step {key!r}")
    return found


def step_data(step: StepRecord) -> dict[str, Any]:
    """A step record as JSON-ready data."""
    data = dict(step.__dict__)
    data["artifacts"] = [
        {"path": path, **ref.model_dump(mode="json")}
        for path, ref in zip(step.artifact_paths, step.artifacts, strict=False)
    ]
    del data["artifact_paths"]
    return data


@click.command()
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, help="How many runs.")
@click.option("--run", "run_id", default=None, help="Show the steps of one run (id prefix).")
@json_option
def runs(limit: int, run_id: str | None, as_json: bool) -> None:
    """List recent runs (newest first), or the steps of one run (with their cache keys
    and log digests in --json)."""
    store = open_store()
    try:
        if run_id is not None:
            steps = store.index.steps(find_run(store, run_id).run_id)
            if as_json:
                echo_json([step_data(s) for s in steps])
                return
            for s in steps:
                code = "" if s.exit_code is None else f" exit {s.exit_code}"
                click.echo(f"{s.status:<9} {s.duration_s:7.2f}s  {s.label}{code}")
            return
        records = store.index.runs(limit=limit)
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


@click.command()
@click.argument("step")
@run_option
def logs(step: str, run_id: str | None) -> None:
    """Print the log STEP printed (a cached step: the log of the run that produced its
    cache entry). Lines the step wrote to stderr start with [stderr]."""
    store = open_store()
    try:
        run, record = find_step(store, run_id, step)
        if record.log is None:
            click.echo(
                f"{step} printed nothing in run {run.run_id.replace('-', '')[:12]}", err=True
            )
            return
        with store.open_blob(record.log) as blob:
            while chunk := blob.read(1 << 16):
                sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
    finally:
        store.close()


@click.command()
@click.argument("step", required=False)
@run_option
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Export them into OUT/<step key>/<declared path> instead of listing them.",
)
@json_option
def artifacts(step: str | None, run_id: str | None, out: Path | None, as_json: bool) -> None:
    """List (or export with --out) the artifacts of a run's steps, or of STEP alone."""
    store = open_store()
    try:
        if step is not None:
            run, record = find_step(store, run_id, step)
            records = [record]
        else:
            runs = [find_run(store, run_id)] if run_id else store.index.runs(limit=1)
            if not runs:
                fail("no run recorded yet; `greenloop run` records one")
            run = runs[0]
            records = [s for s in store.index.steps(run.run_id) if s.artifacts]
        if out is not None:
            check_out_dir(out, store)
            for record in records:
                pairs = list(zip(record.artifact_paths, record.artifacts, strict=False))
                export_step(store, record.key, pairs, out)
        listed = [{"step": r.key, **a} for r in records for a in step_data(r)["artifacts"]]
    finally:
        store.close()
    if as_json:
        echo_json({"run_id": run.run_id, "out": str(out) if out else None, "artifacts": listed})
        return
    if not listed:
        click.echo(f"run {run.run_id.replace('-', '')[:12]} kept no artifacts", err=True)
    for item in listed:
        where = f" -> {out / item['step'] / item['path'].lstrip('/')}" if out else ""
        click.echo(f"{item['step']}  {item['path']}  {item['size_bytes']} B  {item['mime']}{where}")
