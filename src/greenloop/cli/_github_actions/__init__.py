"""``greenloop init --from-github-actions``: a pipeline file from a GitHub Actions workflow.

Each job becomes a chain of its ``run:`` steps (jobs run in parallel, as forks
do), ``needs:`` a ``gl.wait(...)`` before the job's first step, ``strategy.matrix``
a loop over the cells, ``services:`` ``gl.service(...)``, ``env:`` env and
``${{ secrets.X }}`` ``gl.secret("X")``. Whatever has no equivalent (an action
other than checkout, setup-python, setup-node and cache; a GitHub expression;
an ``if:``) is named in a comment where it was and in the list at the top of the
file: never silently dropped.
"""

from __future__ import annotations

from pathlib import Path

from greenloop.cli._github_actions.translator import Translator
from greenloop.cli._github_actions.workflow import Translation, WorkflowError, find_workflow, load

__all__ = ["Translation", "WorkflowError", "find_workflow", "load", "translate"]


def translate(path: Path, shown: str) -> Translation:
    """Translate the workflow at ``path`` (named ``shown`` in the file it writes)."""
    return Translator(load(path), shown).run()
