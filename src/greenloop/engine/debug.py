"""Where a failed step's filesystem is kept, for ``greenloop debug`` and ``--shell-on-failure``.

The host asks every executor to keep a failed step's filesystem, as it was when
the command ended (the workspace and what the step wrote), under a tag named
after the run and the step; the executor that ran it opens a shell there. A
kept filesystem lasts until the next ``greenloop cache gc`` after an hour.
"""

from __future__ import annotations

import re
from uuid import UUID

from greenloop.store import RunRecord, Store


def kept_as(run_id: str | UUID, step: str) -> str:
    """The tag a failed ``step`` of run ``run_id`` is kept under."""
    hex_id = run_id.hex if isinstance(run_id, UUID) else run_id.replace("-", "")
    slug = re.sub(r"[^A-Za-z0-9_.-]", "-", step)[:80]
    return f"greenloop-debug:{hex_id[:12]}-{slug}"


def last_failure(store: Store, pipeline: str, step: str) -> RunRecord | None:
    """The newest run of ``pipeline`` in which ``step`` failed, or None."""
    found = store.index.latest_step(step, pipeline=pipeline, status="failed")
    return None if found is None else found[0]
