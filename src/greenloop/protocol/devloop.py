"""The dev-loop contract (seed ``003``): verdicts, build identity, build results.

Data flows one way: watcher → checkers → model ─StateEvent→ everyone; on a
became-green edge the model emits a :class:`BuildTrigger`, the builder answers
with a :class:`BuildResult`, and the publisher records a
:class:`~greenloop.protocol.pointer.PublishedArtifact`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from enum import Enum, StrEnum
from pathlib import PurePath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from greenloop._sha256 import SHA256_PATTERN

ContentHash = Annotated[
    str,
    Field(title="ContentHash", pattern=SHA256_PATTERN, description="SHA-256, lowercase hex."),
]
InputHash = Annotated[
    str,
    Field(
        title="InputHash",
        pattern=SHA256_PATTERN,
        description="The CAS key of a build: a digest of its BuildIdentity.",
    ),
]
TargetTriple = Annotated[
    str,
    Field(
        title="TargetTriple",
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="What a build is produced for, e.g. x86_64-unknown-linux-gnu or web.",
    ),
]
UnixSeconds = Annotated[
    int, Field(title="UnixSeconds", ge=0, description="Seconds since the Unix epoch (UTC).")
]


class Profile(StrEnum):
    """Build profile; a release build can never alias a dev artifact."""

    DEV = "dev"
    RELEASE = "release"


class Severity(StrEnum):
    """Diagnostic severity, in LSP order (1=error … 4=hint)."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    HINT = "hint"

    @classmethod
    def from_lsp(cls, value: int) -> Severity:
        """Map an LSP ``DiagnosticSeverity`` integer; unknown values read as errors."""
        return {1: cls.ERROR, 2: cls.WARNING, 3: cls.INFO, 4: cls.HINT}.get(value, cls.ERROR)


class _Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class Diagnostic(_Contract):
    """One actionable diagnostic at an absolute path, 1-based line:col."""

    path: str
    line: int = Field(ge=1)
    col: int = Field(ge=1)
    severity: Severity
    code: str | None = None
    message: str
    source: str = Field(description="The checker that said it, verbatim (e.g. rustc, ruff).")

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not PurePath(v).is_absolute():
            raise ValueError(f"diagnostic path must be absolute, got {v!r}")
        return v

    def render(self) -> str:
        """``severity[code; source]: path:line:col: message`` — the one-line form."""
        tag = f"{self.code}; {self.source}" if self.code else self.source
        return f"{self.severity.value}[{tag}]: {self.path}:{self.line}:{self.col}: {self.message}"


class FileState(StrEnum):
    """Per-file verdict."""

    UNCHECKED = "unchecked"
    GREEN = "green"
    RED = "red"


class TreeState(StrEnum):
    """Aggregate verdict for the whole tree. Never green before a full authoritative check."""

    UNKNOWN = "unknown"
    GREEN = "green"
    RED = "red"


class BuildIdentity(_Contract):
    """The complete set of inputs whose identity determines a build artifact."""

    source_tree: ContentHash
    lockfiles: ContentHash
    toolchain: ContentHash
    config: ContentHash
    pipeline: ContentHash
    target: TargetTriple
    profile: Profile

    def input_hash(self) -> str:
        """A length-prefixed SHA-256 over every field, so shifted characters cannot collide."""
        h = hashlib.sha256(b"greenloop-build-identity/v1\0")
        for name in type(self).model_fields:
            value = getattr(self, name)
            for part in (name, value.value if isinstance(value, Enum) else str(value)):
                raw = part.encode()
                h.update(len(raw).to_bytes(8, "big"))
                h.update(raw)
        return h.hexdigest()


class BuildTrigger(_Contract):
    """Request to make a green input set servable; only a became-green edge sends one."""

    identity: BuildIdentity
    input_hash: InputHash

    @classmethod
    def for_identity(cls, identity: BuildIdentity) -> BuildTrigger:
        """The trigger for ``identity`` with its input hash filled in."""
        return cls(identity=identity, input_hash=identity.input_hash())


class Deduplicated(_Contract):
    """The exact input was already built; nothing ran."""

    kind: Literal["deduplicated"] = "deduplicated"


class Compiled(_Contract):
    """The build ran and produced a fresh artifact."""

    kind: Literal["compiled"] = "compiled"


class Failed(_Contract):
    """The build failed; nothing was published."""

    kind: Literal["failed"] = "failed"
    reason: str


BuildOutcome = Annotated[
    Deduplicated | Compiled | Failed, Field(discriminator="kind", title="BuildOutcome")
]


class ArtifactMeta(_Contract):
    """Metadata stored beside every cached artifact; what the dev server reloads on."""

    input_hash: InputHash
    identity: BuildIdentity
    tree: ContentHash = Field(description="Store tree hash of the artifact directory.")
    size_bytes: int = Field(ge=0)
    built_at: UnixSeconds
    build_duration_ms: int = Field(ge=0)


class BuildResult(_Contract):
    """The builder's answer to a :class:`BuildTrigger`."""

    input_hash: InputHash
    outcome: BuildOutcome
    artifact: ArtifactMeta | None = None

    @property
    def servable(self) -> bool:
        """True when the outcome produced (or found) an artifact to serve."""
        return not isinstance(self.outcome, Failed)

    @model_validator(mode="after")
    def _artifact_iff_servable(self) -> BuildResult:
        if self.servable != (self.artifact is not None):
            raise ValueError("artifact must be present exactly when the outcome is servable")
        return self


class FileVerdict(_Contract):
    """Level-triggered: the current verdict of one file (safe to resend)."""

    kind: Literal["file_verdict"] = "file_verdict"
    path: str
    state: FileState
    diagnostics: list[Diagnostic] = Field(default_factory=list)


class BecameGreen(_Contract):
    """Edge-triggered: the tree turned green after a completed authoritative check."""

    kind: Literal["became_green"] = "became_green"
    identity: BuildIdentity


class BecameRed(_Contract):
    """Edge-triggered: the tree turned red."""

    kind: Literal["became_red"] = "became_red"
    diagnostics: list[Diagnostic] = Field(default_factory=list)


StateEvent = Annotated[
    FileVerdict | BecameGreen | BecameRed, Field(discriminator="kind", title="StateEvent")
]


class CheckResult(_Contract):
    """A one-shot verdict with every diagnostic needed to fix a red tree."""

    state: TreeState
    diagnostics: list[Diagnostic] = Field(default_factory=list)
    checkers: list[str] = Field(default_factory=list)
    duration_ms: int = Field(default=0, ge=0)
    omitted: dict[Severity, int] = Field(
        default_factory=dict,
        description=(
            "Diagnostics not listed, per severity: each checker's report keeps its first "
            "max_diagnostics (errors first) and only counts the rest. Omitted errors still "
            "make the tree red."
        ),
    )


def sorted_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Diagnostics in the one order every view shows them (path, line, column, then
    severity, source and message), with exact duplicates dropped."""
    unique = {d.model_dump_json(): d for d in diagnostics}
    return sorted(
        unique.values(),
        key=lambda d: (d.path, d.line, d.col, d.severity.value, d.source, d.message),
    )
