"""Contract types: everything that crosses a component or process boundary.

Nothing in here does work; it only names and validates data. See
``greenloop schema`` for the JSON Schema of every wire type.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from greenloop.protocol.devloop import (
        ArtifactMeta,
        BecameGreen,
        BecameRed,
        BuildIdentity,
        BuildOutcome,
        BuildResult,
        BuildTrigger,
        CheckResult,
        Compiled,
        ContentHash,
        Deduplicated,
        Diagnostic,
        Failed,
        FileState,
        FileVerdict,
        InputHash,
        Profile,
        Severity,
        StateEvent,
        TargetTriple,
        TreeState,
        UnixSeconds,
    )
    from greenloop.protocol.errors import PluginError, PluginFailure, SetupError
    from greenloop.protocol.events import (
        BuildEvent,
        HookVerdict,
        PlanSummary,
        RunFinished,
        RunStarted,
        StepCached,
        StepFinished,
        StepLog,
        StepStarted,
    )
    from greenloop.protocol.executor import (
        PROTOCOL_VERSION,
        ArchiveId,
        ArtifactRef,
        CacheDecision,
        ExecutorInput,
        Hit,
        MissBuildAs,
        MissNoCommit,
        SnapshotRef,
        StepResult,
    )
    from greenloop.protocol.ir import (
        IR_VERSION,
        CachePolicy,
        CommandStep,
        Compose,
        Forever,
        IRDocument,
        OnChange,
        Pipeline,
        Ttl,
    )
    from greenloop.protocol.pointer import PointerFormatError, PublishedArtifact

# Importing the whole contract costs pydantic model construction for every type;
# commands load only the modules they use (PEP 562 lazy attributes).
_MODULES: dict[str, str] = {
    "ArtifactMeta": "devloop",
    "BecameGreen": "devloop",
    "BecameRed": "devloop",
    "BuildIdentity": "devloop",
    "BuildOutcome": "devloop",
    "BuildResult": "devloop",
    "BuildTrigger": "devloop",
    "CheckResult": "devloop",
    "Compiled": "devloop",
    "ContentHash": "devloop",
    "Deduplicated": "devloop",
    "Diagnostic": "devloop",
    "Failed": "devloop",
    "FileState": "devloop",
    "FileVerdict": "devloop",
    "InputHash": "devloop",
    "Profile": "devloop",
    "Severity": "devloop",
    "StateEvent": "devloop",
    "TargetTriple": "devloop",
    "TreeState": "devloop",
    "UnixSeconds": "devloop",
    "PluginError": "errors",
    "PluginFailure": "errors",
    "SetupError": "errors",
    "BuildEvent": "events",
    "HookVerdict": "events",
    "PlanSummary": "events",
    "RunFinished": "events",
    "RunStarted": "events",
    "StepCached": "events",
    "StepFinished": "events",
    "StepLog": "events",
    "StepStarted": "events",
    "ArchiveId": "executor",
    "ArtifactRef": "executor",
    "CacheDecision": "executor",
    "ExecutorInput": "executor",
    "Hit": "executor",
    "MissBuildAs": "executor",
    "MissNoCommit": "executor",
    "PROTOCOL_VERSION": "executor",
    "SnapshotRef": "executor",
    "StepResult": "executor",
    "CachePolicy": "ir",
    "CommandStep": "ir",
    "Compose": "ir",
    "Forever": "ir",
    "IRDocument": "ir",
    "IR_VERSION": "ir",
    "OnChange": "ir",
    "Pipeline": "ir",
    "Ttl": "ir",
    "PointerFormatError": "pointer",
    "PublishedArtifact": "pointer",
}

__all__ = [
    "IR_VERSION",
    "PROTOCOL_VERSION",
    "ArchiveId",
    "ArtifactMeta",
    "ArtifactRef",
    "BecameGreen",
    "BecameRed",
    "BuildEvent",
    "BuildIdentity",
    "BuildOutcome",
    "BuildResult",
    "BuildTrigger",
    "CacheDecision",
    "CachePolicy",
    "CheckResult",
    "CommandStep",
    "Compiled",
    "Compose",
    "ContentHash",
    "Deduplicated",
    "Diagnostic",
    "ExecutorInput",
    "Failed",
    "FileState",
    "FileVerdict",
    "Forever",
    "Hit",
    "HookVerdict",
    "IRDocument",
    "InputHash",
    "MissBuildAs",
    "MissNoCommit",
    "OnChange",
    "Pipeline",
    "PlanSummary",
    "PluginError",
    "PluginFailure",
    "PointerFormatError",
    "Profile",
    "PublishedArtifact",
    "RunFinished",
    "RunStarted",
    "SetupError",
    "Severity",
    "SnapshotRef",
    "StateEvent",
    "StepCached",
    "StepFinished",
    "StepLog",
    "StepResult",
    "StepStarted",
    "TargetTriple",
    "TreeState",
    "Ttl",
    "UnixSeconds",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'greenloop.protocol' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"greenloop.protocol.{module}"), name)
    globals()[name] = value
    return value
