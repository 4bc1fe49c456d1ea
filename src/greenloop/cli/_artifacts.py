"""Getting artifacts out of a run: ``run --artifacts-dir`` (and ``greenloop artifacts``)."""

from __future__ import annotations

from pathlib import Path

from greenloop.cli._common import fail
from greenloop.engine.run import RunResult
from greenloop.protocol import ArtifactRef, Pipeline
from greenloop.store import Store
from greenloop.store.artifacts import export_artifact


def check_out_dir(out: Path, store: Store) -> None:
    """Exit 2 unless ``out`` can hold exported artifacts (a folder outside the store)."""
    resolved = out.resolve()
    if resolved == store.root.resolve() or resolved.is_relative_to(store.root.resolve()):
        fail(f"--artifacts-dir {out}: that is inside greenloop's store")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"--artifacts-dir {out}: cannot create it: {e.strerror or e}")
    if not out.is_dir():
        fail(f"--artifacts-dir {out}: not a folder")


def export_run_artifacts(store: Store, pipeline: Pipeline, result: RunResult, out: Path) -> int:
    """Export every artifact the run's passed or cached steps declared; return how many."""
    count = 0
    for step in pipeline.steps:
        outcome = result.steps.get(step.key)
        if outcome is None or outcome.status not in ("passed", "cached"):
            continue
        pairs = list(zip(step.artifacts, outcome.artifacts, strict=True))
        count += export_step(store, step.key, pairs, out)
    return count


def export_step(store: Store, key: str, artifacts: list[tuple[str, ArtifactRef]], out: Path) -> int:
    """Write ``(declared path, ref)`` pairs of step ``key`` under ``out/<key>/``."""
    base = out / key
    for declared, ref in artifacts:
        dest = base / declared.lstrip("/")
        # The IR refuses paths that climb out; a folder the user planted as a
        # symlink on the way must not lead the write elsewhere either.
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.parent.resolve().is_relative_to(out.resolve()):
            fail(f"cannot export {key}/{declared}: {dest.parent} leads outside {out}")
        export_artifact(store, ref, dest)
    return len(artifacts)
