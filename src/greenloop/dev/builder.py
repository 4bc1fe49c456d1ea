"""The builder: turn a :class:`BuildTrigger` into a :class:`BuildResult` through the engine.

The build is an ordinary pipeline (``build`` by default) run by the same
orchestrator and store as ``greenloop run``. The store is the single source of
truth for "is this exact input already built": a trigger whose input hash has
an artifact on record is answered ``Deduplicated`` without running anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from greenloop.engine.run import Run, RunOptions
from greenloop.plugins.spec import Executor
from greenloop.protocol import (
    ArtifactMeta,
    ArtifactRef,
    BuildEvent,
    BuildResult,
    BuildTrigger,
    Compiled,
    Deduplicated,
    Failed,
    Pipeline,
)
from greenloop.protocol.ir import parents
from greenloop.store import Store


class Builder:
    """Builds green trees with a pipeline and records their artifacts in the store."""

    def __init__(
        self,
        store: Store,
        root: Path,
        pipeline: Pipeline,
        executors: Callable[[str], Executor],
        emit: Callable[[BuildEvent], None] | None = None,
        options: RunOptions | None = None,
    ) -> None:
        self.store = store
        self.root = root
        self.pipeline = pipeline
        self._executors = executors
        self._emit = emit or (lambda event: None)
        self._options = options or RunOptions()
        self._output_step = output_step(pipeline)

    def build(self, trigger: BuildTrigger) -> BuildResult:
        """Build ``trigger``'s inputs, or find them already built; never raises for a failure."""
        known = self.store.index.get_artifact(trigger.input_hash)
        if known is not None and self.store.has(known.tree):
            return BuildResult(
                input_hash=trigger.input_hash, outcome=Deduplicated(), artifact=known
            )
        started = time.monotonic()
        try:
            run = Run(
                self.store, self.pipeline, self.root, self._executors, self._emit, self._options
            )
            result = run.execute()
        except Exception as e:  # a setup problem fails this build; the loop keeps going
            return _failed(trigger, f"{type(e).__name__}: {e}")
        if result.status != "passed":
            bad = [o for o in result.steps.values() if o.status not in ("passed", "cached")]
            where = f"step {bad[0].label!r} {bad[0].status}" if bad else result.status
            detail = f": {bad[0].error}" if bad and bad[0].error else ""
            return _failed(trigger, f"build pipeline {self.pipeline.name!r}: {where}{detail}")
        artifact = _directory(result.steps[self._output_step].artifacts)
        if artifact is None:
            return _failed(trigger, f"step {self._output_step!r} produced no directory artifact")
        meta = ArtifactMeta(
            input_hash=trigger.input_hash,
            identity=trigger.identity,
            tree=artifact.key,
            size_bytes=artifact.size_bytes,
            built_at=int(time.time()),
            build_duration_ms=int((time.monotonic() - started) * 1000),
        )
        self.store.index.put_artifact(meta)
        return BuildResult(input_hash=trigger.input_hash, outcome=Compiled(), artifact=meta)


def output_step(pipeline: Pipeline) -> str:
    """The key of the step whose first artifact is the build output.

    That is the last step (in dependency order) that declares artifacts; a
    pipeline without one cannot be a build pipeline.
    """
    with_artifacts = {s.key for s in pipeline.steps if s.artifacts}
    if not with_artifacts:
        raise ValueError(
            f"pipeline {pipeline.name!r} declares no artifacts; give its output step "
            'artifacts=["dist"] (the folder to serve)'
        )
    # Prefer a step nothing else waits for: the end of the build.
    waited_on = {p for s in pipeline.steps for p in parents(s)}
    ends = [s.key for s in pipeline.steps if s.key in with_artifacts and s.key not in waited_on]
    return (ends or [s.key for s in pipeline.steps if s.key in with_artifacts])[-1]


def _directory(artifacts: list[ArtifactRef]) -> ArtifactRef | None:
    return next((a for a in artifacts if a.mime == "inode/directory"), None)


def _failed(trigger: BuildTrigger, reason: str) -> BuildResult:
    return BuildResult(input_hash=trigger.input_hash, outcome=Failed(reason=reason))
