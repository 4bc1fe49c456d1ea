"""Build events: the stream an orchestrator run emits to formatters, hooks and history."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from greenloop.protocol.executor import ArtifactRef

StepStatus = Literal["passed", "failed", "cached", "skipped", "cancelled"]
RunStatus = Literal["passed", "failed", "cancelled"]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)


class RunStarted(_Event):
    """A run began."""

    type: Literal["run_started"] = "run_started"
    run_id: UUID
    pipeline: str
    at: float


class PlanSummary(_Event):
    """The plan: how many steps, and how many the cache answers."""

    type: Literal["plan_summary"] = "plan_summary"
    run_id: UUID
    steps: int
    cached: int
    to_run: int
    root: str | None = Field(
        default=None, description="The project folder the workspace is packed from."
    )
    planned: dict[str, str] = Field(
        default_factory=dict,
        description="Key -> label of each step the plan predicts will run, in file order.",
    )
    modes: list[str] = Field(
        default_factory=list,
        description="How the steps to run will be isolated, one note per executor mode "
        "(e.g. 'local: bwrap sandbox, overlay snapshots').",
    )


class StepStarted(_Event):
    """A step was handed to its executor."""

    type: Literal["step_started"] = "step_started"
    run_id: UUID
    step: str
    label: str
    executor: str


class StepLog(_Event):
    """One line a step wrote."""

    type: Literal["step_log"] = "step_log"
    run_id: UUID
    step: str
    stream: Literal["stdout", "stderr"]
    line: str


class StepCached(_Event):
    """A step was answered from the cache and did not run."""

    type: Literal["step_cached"] = "step_cached"
    run_id: UUID
    step: str
    label: str


class StepFinished(_Event):
    """A step ended (passed, failed, skipped or cancelled)."""

    type: Literal["step_finished"] = "step_finished"
    run_id: UUID
    step: str
    label: str
    status: StepStatus
    exit_code: int | None = None
    duration_s: float = 0.0
    artifacts: list[ArtifactRef] = Field(default_factory=list)
    error: str | None = None


class RunFinished(_Event):
    """A run ended."""

    type: Literal["run_finished"] = "run_finished"
    run_id: UUID
    status: RunStatus
    duration_s: float
    error: str | None = None


BuildEvent = Annotated[
    RunStarted | PlanSummary | StepStarted | StepLog | StepCached | StepFinished | RunFinished,
    Field(discriminator="type", title="BuildEvent"),
]


class HookVerdict(_Event):
    """A hook's answer to an event; ``veto`` (a reason) on ``run_started`` stops the run."""

    veto: str | None = None
