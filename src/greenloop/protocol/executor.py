"""Wire types passed to and returned by step-executor plugins.

These mirror the step-executor contract (seed ``000``): the host packs the
workspace once, decides every step's cache outcome itself, and hands the
executor an :class:`ExecutorInput`; the executor answers with a
:class:`StepResult`.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from greenloop.protocol.ir import CommandStep

PROTOCOL_VERSION = 1
"""Version of the executor wire protocol; both sides must agree on it."""

EXIT_TIMEOUT = 124
"""The exit code of a step, or a run, stopped at its timeout (as ``timeout(1)`` exits)."""
EXIT_INTERRUPTED = 130
"""The exit code of a cancelled step, and of a command stopped by Ctrl-C or SIGTERM."""

SECRETS_DIR = "/run/secrets"
"""Where the bundled executors put a step's secret files in its sandbox or container
(BuildKit's place for them)."""

ArchiveId = Annotated[
    UUID,
    Field(
        title="ArchiveId",
        description="Opaque workspace archive handle; the plugin streams bytes "
        "with archive.read(id, offset, max).",
    ),
]

SnapshotRef = Annotated[
    str,
    Field(
        title="SnapshotRef",
        min_length=1,
        description="Opaque snapshot reference. For the docker executor an image tag; "
        "other executors encode their own format. The host never inspects it.",
    ),
]


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)


class ArtifactRef(_Wire):
    """An artifact a step produced, stored in the content-addressed store."""

    key: str
    mime: str
    size_bytes: int = Field(ge=0)


class Hit(_Wire):
    """Boot from ``tag``; skip running the command."""

    kind: Literal["hit"] = "hit"
    tag: SnapshotRef


class MissBuildAs(_Wire):
    """Run the command; on success commit to ``tag`` and report it back."""

    kind: Literal["miss_build_as"] = "miss_build_as"
    tag: SnapshotRef


class MissNoCommit(_Wire):
    """Run the command; do not commit a snapshot."""

    kind: Literal["miss_no_commit"] = "miss_no_commit"


CacheDecision = Annotated[
    Hit | MissBuildAs | MissNoCommit,
    Field(
        discriminator="kind",
        title="CacheDecision",
        description="Host-decided cache outcome. The executor honours it; it never re-decides.",
    ),
]


class ExecutorInput(_Wire):
    """Everything an executor needs to run one step."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    step: CommandStep
    workspace_archive_id: ArchiveId
    env: dict[str, str]
    workdir: str
    run_id: UUID
    step_id: UUID
    cache_lookup: CacheDecision
    parent_snapshot: SnapshotRef | None = Field(
        default=None,
        description="Snapshot of the upstream step in this chain or of the fork parent. "
        "When set, the executor boots from it rather than from step.image.",
    )
    keep_failed_as: SnapshotRef | None = Field(
        default=None,
        description="When the command fails (not when it is cancelled), keep the step's "
        "filesystem as it was, workspace included, under this tag for `greenloop debug`; "
        "an executor that cannot may ignore it.",
    )
    secrets: dict[str, str] = Field(
        default_factory=dict,
        repr=False,
        description="Secret values by the env variable the step reads them from: set them "
        "in the command's environment like env, but never log, store, snapshot or echo "
        "them. The host masks them in the step's output.",
    )
    secret_files: dict[str, str] = Field(
        default_factory=dict,
        repr=False,
        description="Secret values the step reads from files, by the env variable that "
        "gets each file's path: write each to a file only the step can read, outside the "
        "tree it commits (the bundled executors use SECRETS_DIR/<VARIABLE>), set the "
        "variable to its path, and remove the file when the step ends. Never log, store, "
        "snapshot or echo them.",
    )


class StepResult(_Wire):
    """What an executor reports after running (or skipping) a step."""

    exit_code: int
    committed_snapshot: SnapshotRef | None = Field(
        default=None,
        description="Set when the executor wrote a snapshot (normally only on miss_build_as).",
    )
    artifacts: list[ArtifactRef] = Field(default_factory=list)
