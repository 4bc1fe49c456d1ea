"""Helpers every command shares: finding the project, opening the store, failing clearly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from greenloop.cli._exit import EXIT_SETUP as EXIT_SETUP
from greenloop.cli._exit import fail as fail
from greenloop.plugins.discovery import spare_pydantic_its_plugin_scan
from greenloop.protocol import IRDocument, Pipeline
from greenloop.protocol.ir import parse_document
from greenloop.sdk.loader import PipelineFileError, find_pipeline_file, load, project_root
from greenloop.store import Store, StoreError

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
file_option = click.option(
    "--file",
    "-f",
    "pipeline_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Pipeline file (default: the nearest .greenloop/pipeline.py). The project root "
    "is the folder holding its .greenloop/ folder, or, for a file elsewhere, the file's "
    "own folder; the plan line names it.",
)


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON."""
    click.echo(json.dumps(data, indent=2, default=str))


def load_pipelines(pipeline_file: Path | None) -> tuple[IRDocument, Path]:
    """Load the pipeline file (or exit 2 naming the file:line at fault); returns IR and root."""
    spare_pydantic_its_plugin_scan()  # before the loader builds the first validator
    path = pipeline_file or find_pipeline_file(Path.cwd())
    if path is None:
        fail("no .greenloop/pipeline.py here or above; create one with `greenloop init`")
    try:
        return load(path), project_root(path)
    except PipelineFileError as e:
        fail(f"{e.where}: {e.message}" if e.where else e.message)


def pipeline_named(document: IRDocument, name: str) -> Pipeline:
    """The pipeline ``name`` of ``document``, or exit 2 listing those it defines."""
    try:
        return document.pipeline(name)
    except KeyError:
        defined = ", ".join(p.name for p in document.pipelines)
        fail(f"no pipeline named {name!r} (defined: {defined})")


def load_ir(path: Path) -> IRDocument:
    """Load an IR JSON document (or exit 2 listing what is wrong with it, field by field)."""
    spare_pydantic_its_plugin_scan()
    try:
        return parse_document(path.read_bytes())
    except OSError as e:
        fail(f"cannot read IR file {path}: {e.strerror}")
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(document)'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in e.errors()[:5]
        )
        fail(f"invalid IR in {path}: {problems}")
    except ValueError as e:  # not JSON, or a key given twice
        fail(f"invalid IR in {path}: {e}")


def open_store() -> Store:
    """Open the default store (or exit 2 saying why not)."""
    try:
        return Store.open()
    except StoreError as e:
        fail(str(e))


def parse_env_values(pairs: tuple[str, ...]) -> dict[str, str]:
    """``KEY=VALUE`` pairs from ``-e`` as a dict (exit 2 for a malformed one)."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not key.replace("_", "a").isalnum() or key[0].isdigit():
            fail(f"-e {pair!r}: expected KEY=VALUE with KEY a variable name")
        env[key] = value
    return env
