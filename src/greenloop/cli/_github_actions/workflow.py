"""A GitHub Actions workflow as data: finding it, loading its YAML, its values as text."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class WorkflowError(Exception):
    """The workflow cannot be read, or is not a GitHub Actions workflow."""


@dataclass(frozen=True)
class Translation:
    """A pipeline file's source, and what of the workflow it could not translate."""

    source: str
    not_translated: list[str]


def find_workflow(root: Path) -> Path:
    """The one workflow in ``root/.github/workflows``; :class:`WorkflowError` if not one."""
    folder = root / ".github" / "workflows"
    found = sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")])
    if not found:
        raise WorkflowError(
            f"no workflow in {folder} (*.yml, *.yaml): name one, "
            "`greenloop init --from-github-actions PATH`"
        )
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(root)) for p in found)
        raise WorkflowError(
            f"{len(found)} workflows in {folder}: {names}; name the one to translate, "
            "`greenloop init --from-github-actions PATH`"
        )
    return found[0]


def load(path: Path) -> dict[str, Any]:
    """The workflow at ``path`` as YAML data, checked to have jobs with steps."""
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WorkflowError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        doc = yaml.safe_load(source)
    except (yaml.YAMLError, ValueError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise WorkflowError(f"{path} is not YAML{where}: {problem}") from None
    if not isinstance(doc, dict):
        raise WorkflowError(
            f"{path} is not a GitHub Actions workflow: expected a mapping with jobs:, "
            f"got {_kind(doc)}"
        )
    jobs = doc.get("jobs")
    if not isinstance(jobs, dict) or not jobs:
        raise WorkflowError(f"{path} has no jobs: a GitHub Actions workflow needs a jobs: mapping")
    for job_id, job in jobs.items():
        if not isinstance(job, dict):
            raise WorkflowError(f"{path}: job {job_id!r} is {_kind(job)}, not a mapping")
        steps = job.get("steps", [])
        if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
            raise WorkflowError(f"{path}: the steps of job {job_id!r} are not a list of mappings")
        needs = job.get("needs", [])
        for need in [needs] if isinstance(needs, str) else needs:
            if need not in jobs:
                raise WorkflowError(f"{path}: job {job_id!r} needs {need!r}, which is no job")
    return doc


def _kind(value: object) -> str:
    return "nothing" if value is None else f"a {type(value).__name__}"


def yaml_text(value: object) -> str:
    """A YAML scalar as the text GitHub would put in its place."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value)


def mapping(value: object) -> dict[str, Any]:
    """``value`` if it is a mapping, else an empty one (a workflow's optional parts)."""
    return value if isinstance(value, dict) else {}


def needs_of(job: Mapping[str, Any]) -> list[str]:
    """The jobs ``job`` needs (``needs:`` is a name or a list of them)."""
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else [str(n) for n in needs]


def run_defaults(scope: Mapping[str, Any]) -> dict[str, str]:
    """The ``defaults.run`` (shell, working-directory) of a workflow or job."""
    defaults = scope.get("defaults")
    run = defaults.get("run") if isinstance(defaults, dict) else None
    return {str(k): yaml_text(v) for k, v in run.items()} if isinstance(run, dict) else {}


def timeout_seconds(value: object) -> float | None:
    """``timeout-minutes`` in seconds; ``None`` for no number (an expression)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value) * 60
