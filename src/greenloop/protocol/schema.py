"""The registry of wire types that ``greenloop schema`` prints."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from greenloop import protocol as p

WIRE_TYPES: dict[str, Any] = {
    name: getattr(p, name)
    for name in (
        "ArchiveId",
        "SnapshotRef",
        "ArtifactRef",
        "CacheDecision",
        "ExecutorInput",
        "StepResult",
        "CommandStep",
        "CachePolicy",
        "Pipeline",
        "IRDocument",
        "PluginError",
        "BuildEvent",
        "HookVerdict",
        "ContentHash",
        "InputHash",
        "TargetTriple",
        "Profile",
        "UnixSeconds",
        "BuildIdentity",
        "BuildTrigger",
        "BuildOutcome",
        "BuildResult",
        "ArtifactMeta",
        "FileState",
        "TreeState",
        "StateEvent",
        "Severity",
        "Diagnostic",
        "CheckResult",
        "PublishedArtifact",
    )
}
"""Every type that crosses a process boundary, by its contract name."""


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of the wire type ``name`` (raises ``KeyError`` if unknown)."""
    schema: dict[str, Any] = TypeAdapter(WIRE_TYPES[name]).json_schema()
    schema.setdefault("title", name)
    return schema


def all_schemas() -> dict[str, dict[str, Any]]:
    """Every wire type's JSON Schema, keyed by name."""
    return {name: json_schema(name) for name in WIRE_TYPES}
