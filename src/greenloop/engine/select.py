"""Step selection: run part of a pipeline (``--only``, ``--from``, ``--failed``).

A selected step always brings the chain it builds in (its ``builds_in``
ancestors), since it boots from their filesystem; those are answered from the
cache where they can be. Ordering edges (``wait``) to steps left out are
dropped: a step after ``wait()`` starts from a clean filesystem and needs
nothing of them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from greenloop.protocol import CommandStep, Pipeline
from greenloop.protocol.ir import parents


class SelectionError(ValueError):
    """A pattern matched no step key (or nothing was selected)."""


def matching(pipeline: Pipeline, patterns: Iterable[str]) -> set[str]:
    """Keys matching any of ``patterns``: exact keys, or globs where ``*`` and ``?`` are
    wildcards and brackets are literal (``test[*]``: every cell of ``test``).

    Raises :class:`SelectionError` for a pattern that matches no key.
    """
    keys = [s.key for s in pipeline.steps]
    found: set[str] = set()
    for pattern in patterns:
        glob = _literal_brackets(pattern)
        hits = {pattern} if pattern in keys else set(fnmatch.filter(keys, glob))
        if not hits:
            raise SelectionError(
                f"no step of pipeline {pipeline.name!r} matches {pattern!r} "
                f"(its steps: {', '.join(keys)}; `greenloop pipelines --steps` lists them)"
            )
        found |= hits
    return found


def downstream(pipeline: Pipeline, keys: set[str]) -> set[str]:
    """``keys`` and every step that builds in or waits for one of them, transitively."""
    chosen = set(keys)
    grew = True
    while grew:
        grew = False
        for step in pipeline.steps:
            if step.key not in chosen and any(p in chosen for p in parents(step)):
                chosen.add(step.key)
                grew = True
    return chosen


def subset(pipeline: Pipeline, keys: set[str]) -> Pipeline:
    """The pipeline cut down to ``keys`` plus the chains they build in, in file order."""
    by_key = {s.key: s for s in pipeline.steps}
    needed: set[str] = set()
    for key in keys:
        step: CommandStep | None = by_key[key]
        while step is not None and step.key not in needed:
            needed.add(step.key)
            step = by_key[step.builds_in] if step.builds_in else None
    if not needed:
        raise SelectionError(f"nothing of pipeline {pipeline.name!r} is selected")
    steps = [
        s.model_copy(update={"depends_on": [d for d in s.depends_on if d in needed]})
        for s in pipeline.steps
        if s.key in needed
    ]
    return pipeline.model_copy(update={"steps": steps})


def _literal_brackets(pattern: str) -> str:
    # Only * and ? are wildcards: brackets belong to keys (matrix cells read
    # ``test[python=3.11]``), so ``test[*]`` means every cell of ``test``.
    return pattern.replace("[", "[[]")
