"""Which steps the cache will answer, predicted before a run from the local index alone.

A step is predicted a hit when its entry is in the index and fresh and, if it
builds in a parent, that parent is predicted a hit too: a parent that runs
makes a new snapshot, so its children's keys are unknown until then. ``run``
plans with this (its plan line, and which executors it must check), and
``explain`` says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from greenloop.engine.git import GitMetadata
from greenloop.engine.keys import answers, digest, key_parts
from greenloop.protocol import CommandStep, Pipeline, PlanSummary
from greenloop.protocol.ir import topological
from greenloop.store import CacheEntry, Store


@dataclass(frozen=True)
class Prediction:
    """One step's predicted cache outcome."""

    step: CommandStep
    hit: bool
    key: str | None = None
    """The step's cache key; None without a policy or when its parent will run."""
    parts: dict[str, Any] | None = None
    """What ``key`` is made of (see :func:`~greenloop.engine.keys.key_parts`)."""
    entry: CacheEntry | None = None
    """The entry the index has for ``key``, fresh or not."""
    host: str | None = None
    """The stamp of the host's tools the step may run, when its executor gives one."""


def predict(
    store: Store,
    pipeline: Pipeline,
    files: dict[str, str],
    keyed_as: Callable[[CommandStep], str],
    host_tools: Callable[[CommandStep], str | None],
    *,
    use_cache: bool = True,
    now: float | None = None,
    git: GitMetadata | None = None,
) -> list[Prediction]:
    """Every step of ``pipeline``, parents first; ``keyed_as(step)`` names its executor as
    its key does, ``host_tools(step)`` stamps the host's tools it may run (see
    :func:`~greenloop.engine.keys.answers`), ``files`` are the workspace's (path to digest)."""
    now = time.time() if now is None else now
    snapshots: dict[str, str | None] = {}  # step -> its snapshot when predicted to hit
    found = []
    for step in topological(pipeline.steps):
        parent = step.builds_in
        if (
            step.cache is None
            or not use_cache
            or (parent is not None and snapshots[parent] is None)
        ):
            snapshots[step.key] = None
            found.append(Prediction(step, hit=False))
            continue
        parent_snapshot = snapshots[parent] if parent is not None else None
        parts = key_parts(step, pipeline, keyed_as(step), parent_snapshot, files, git)
        key = digest(parts)
        entry = store.index.get_entry(key)
        host = host_tools(step)
        hit = entry is not None and answers(entry, step.cache, host, now)
        snapshots[step.key] = entry.snapshot if hit and entry is not None else None
        found.append(Prediction(step, hit, key, parts, entry, host))
    return found


def plan(
    pipeline: Pipeline,
    predictions: list[Prediction],
    run_id: UUID,
    root: Path,
    note: Callable[[CommandStep], str | None],
) -> tuple[PlanSummary, list[CommandStep]]:
    """A run's plan from its steps' predictions, and the steps it will run;
    ``note(step)`` says how a step will run (``local: bwrap sandbox, ...``), if it says."""
    hits = {p.step.key for p in predictions if p.hit}
    to_run = [s for s in pipeline.steps if s.key not in hits]
    summary = PlanSummary(
        run_id=run_id,
        steps=len(pipeline.steps),
        cached=len(hits),
        to_run=len(to_run),
        root=str(root),
        planned={s.key: s.label for s in to_run},
        modes=sorted({n for n in map(note, to_run) if n is not None}),
    )
    return summary, to_run
