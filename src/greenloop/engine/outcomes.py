"""What a run is asked to do and what it reports: options, per-step outcomes, the result."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

from greenloop.protocol import ArtifactRef, CommandStep, Pipeline, StepFinished
from greenloop.protocol.events import RunStatus, StepStatus
from greenloop.protocol.ir import Sandbox, SandboxMode, parents
from greenloop.store import CacheEntry, StepRecord


class RemoteCache(Protocol):
    """A shared cache the host consults after a local miss and feeds after a commit.

    Failures never propagate: a remote that is down, slow or lying reads as a miss.
    """

    def bind_run(self, run_id: UUID) -> None:
        """The run this client serves, for its statistics."""
        ...

    def lookup(self, key: str) -> CacheEntry | None:
        """The entry for ``key`` from the remote, imported into the local store, or None."""
        ...

    def publish(self, entry: CacheEntry) -> None:
        """Share ``entry`` (and the objects it references) with the remote."""
        ...

    def close(self) -> None:
        """Finish pending uploads and release connections."""
        ...


@dataclass(frozen=True)
class RunOptions:
    """How to run a pipeline."""

    jobs: int = field(default_factory=lambda: os.cpu_count() or 2)
    fail_fast: bool = False
    executor: str | None = None
    use_cache: bool = True
    sandbox: SandboxMode | None = None
    """Run every local step in this sandbox (None: as the pipeline and steps say)."""
    hermetic: bool = False
    """Run every local step under bwrap without network."""


@dataclass
class StepOutcome:
    """How one step ended."""

    key: str
    label: str
    status: StepStatus
    exit_code: int | None = None
    duration_s: float = 0.0
    snapshot: str | None = None
    artifacts: list[ArtifactRef] = field(default_factory=list)
    error: str | None = None
    cache_key: str | None = None
    """The step's cache key (for a cached step, that of the entry that answered it)."""
    log: str | None = None
    """The digest of the step's log in the store (a cached step's: the producing run's)."""

    def record(self, run_id: UUID, declared: list[str]) -> StepRecord:
        """The step's line in the run history (``declared``: the step's artifact paths)."""
        return StepRecord(
            str(run_id),
            self.key,
            self.label,
            self.status,
            self.exit_code,
            self.duration_s,
            self.status == "cached",
            self.cache_key,
            self.log,
            self.artifacts,
            declared if self.artifacts else [],
        )

    def event(self, run_id: UUID) -> StepFinished:
        """The ``step_finished`` event that announces it."""
        return StepFinished(
            run_id=run_id,
            step=self.key,
            label=self.label,
            status=self.status,
            exit_code=self.exit_code,
            duration_s=self.duration_s,
            artifacts=self.artifacts,
            error=self.error,
        )


@dataclass
class RunResult:
    """How a whole run ended."""

    run_id: UUID
    status: RunStatus
    steps: dict[str, StepOutcome]
    duration_s: float
    timed_out: bool = False
    """The pipeline's own timeout ran out (the run is ``failed``)."""


_PAST: dict[StepStatus, str] = {
    "failed": "failed",
    "cancelled": "was cancelled",
    "skipped": "was skipped",
    "passed": "passed",
    "cached": "was cached",
}


def blocked_by(step: CommandStep, outcomes: dict[str, StepOutcome]) -> str | None:
    """Why ``step`` cannot run now that what it waits for has ended (``None``: it can)."""
    # A step after wait(..., continue_on_failure=True) needs only its filesystem's
    # parent to have passed.
    if step.runs_after_failure:
        needed = [step.builds_in] if step.builds_in else []
    else:
        needed = parents(step)
    bad = [u for u in needed if outcomes[u].status not in ("passed", "cached")]
    return f"{bad[0]} {_PAST[outcomes[bad[0]].status]}" if bad else None


def run_status(outcomes: dict[str, StepOutcome], *, vetoed: bool, interrupted: bool) -> RunStatus:
    """How a run with these step outcomes ended."""
    if vetoed:
        return "failed"
    if interrupted and any(o.status == "cancelled" for o in outcomes.values()):
        return "cancelled"
    if all(o.status in ("passed", "cached") for o in outcomes.values()):
        return "passed"
    return "failed"


def with_sandboxes(pipeline: Pipeline, options: RunOptions) -> Pipeline:
    """``pipeline`` with each step's sandbox settled: the run's options over the step's,
    over the pipeline's; None still leaves the choice to the executor."""
    steps = []
    for step in pipeline.steps:
        sandbox = step.sandbox or pipeline.sandbox
        if options.sandbox is not None:
            sandbox = (sandbox or Sandbox(mode=options.sandbox)).model_copy(
                update={"mode": options.sandbox}
            )
        if options.hermetic:
            sandbox = (sandbox or Sandbox(mode="bwrap")).model_copy(
                update={"mode": "bwrap", "network": False}
            )
        steps.append(
            step if sandbox is step.sandbox else step.model_copy(update={"sandbox": sandbox})
        )
    return pipeline.model_copy(update={"steps": steps})
