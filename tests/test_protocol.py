"""The contract types: validation, tagging, schemas."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import TypeAdapter, ValidationError

from greenloop.protocol import (
    ArtifactMeta,
    BuildIdentity,
    BuildResult,
    CacheDecision,
    CommandStep,
    Compiled,
    Diagnostic,
    ExecutorInput,
    Failed,
    Hit,
    MissNoCommit,
    Profile,
    Severity,
    StateEvent,
    StepResult,
)
from greenloop.protocol.schema import WIRE_TYPES, all_schemas

H = "a" * 64


def identity(**changes: str) -> BuildIdentity:
    fields = dict(
        source_tree=H, lockfiles=H, toolchain=H, config=H, pipeline=H, target="web", profile="dev"
    )
    fields.update(changes)
    return BuildIdentity.model_validate(fields)


def executor_input(**extra: object) -> dict[str, object]:
    return {
        "step": {"key": "test", "label": "test", "command": "true"},
        "workspace_archive_id": str(uuid.uuid4()),
        "env": {},
        "workdir": "/workspace",
        "run_id": str(uuid.uuid4()),
        "step_id": str(uuid.uuid4()),
        "cache_lookup": {"kind": "miss_no_commit"},
        **extra,
    }


def test_executor_input_defaults_parent_snapshot_to_null() -> None:
    parsed = ExecutorInput.model_validate(executor_input())
    assert parsed.parent_snapshot is None
    assert isinstance(parsed.cache_lookup, MissNoCommit)


def test_executor_input_rejects_unknown_field_by_name() -> None:
    with pytest.raises(ValidationError) as err:
        ExecutorInput.model_validate(executor_input(surprise=1))
    assert "surprise" in str(err.value)


@pytest.mark.parametrize(
    ("wire", "kind"),
    [
        ({"kind": "hit", "tag": "t:1"}, "hit"),
        ({"kind": "miss_build_as", "tag": "t:1"}, "miss_build_as"),
        ({"kind": "miss_no_commit"}, "miss_no_commit"),
    ],
)
def test_cache_decision_is_tagged_by_kind(wire: dict[str, str], kind: str) -> None:
    adapter: TypeAdapter[CacheDecision] = TypeAdapter(CacheDecision)
    decision = adapter.validate_python(wire)
    assert decision.kind == kind
    assert json.loads(adapter.dump_json(decision)) == wire


def test_cache_decision_rejects_unknown_kind_and_missing_tag() -> None:
    adapter: TypeAdapter[CacheDecision] = TypeAdapter(CacheDecision)
    with pytest.raises(ValidationError):
        adapter.validate_python({"kind": "maybe"})
    with pytest.raises(ValidationError):
        adapter.validate_python({"kind": "hit"})


def test_step_result_round_trips() -> None:
    result = StepResult(exit_code=0, committed_snapshot="snap", artifacts=[])
    assert StepResult.model_validate_json(result.model_dump_json()) == result
    assert Hit(tag="x").kind == "hit"


def test_input_hash_is_length_prefixed() -> None:
    # Moving a character from one field to the next must change the hash.
    a = identity(target="ab", profile="dev")
    b = identity(target="a", profile="dev")
    assert a.input_hash() != b.input_hash()
    assert identity().input_hash() == identity().input_hash()
    assert identity(profile="release").input_hash() != identity().input_hash()


def test_build_result_artifact_present_exactly_when_servable() -> None:
    meta = ArtifactMeta(
        input_hash=H, identity=identity(), tree=H, size_bytes=1, built_at=1, build_duration_ms=1
    )
    BuildResult(input_hash=H, outcome=Compiled(), artifact=meta)
    BuildResult(input_hash=H, outcome=Failed(reason="boom"))
    with pytest.raises(ValidationError):
        BuildResult(input_hash=H, outcome=Compiled())
    with pytest.raises(ValidationError):
        BuildResult(input_hash=H, outcome=Failed(reason="x"), artifact=meta)


def test_diagnostic_requires_absolute_one_based_position() -> None:
    d = Diagnostic(
        path="/p/a.py", line=1, col=2, severity=Severity.ERROR, code="E1", message="m", source="x"
    )
    assert d.render() == "error[E1; x]: /p/a.py:1:2: m"
    with pytest.raises(ValidationError):
        Diagnostic(path="a.py", line=1, col=1, severity="error", message="m", source="x")
    with pytest.raises(ValidationError):
        Diagnostic(path="/a.py", line=0, col=1, severity="error", message="m", source="x")


def test_state_events_are_tagged() -> None:
    adapter: TypeAdapter[StateEvent] = TypeAdapter(StateEvent)
    event = adapter.validate_python({"kind": "became_green", "identity": identity().model_dump()})
    assert event.kind == "became_green"
    assert Severity.from_lsp(2) is Severity.WARNING
    assert Profile("release") is Profile.RELEASE


def test_every_wire_type_has_a_schema() -> None:
    schemas = all_schemas()
    assert set(schemas) == set(WIRE_TYPES)
    for name, schema in schemas.items():
        assert schema.get("title") == name or "$defs" in schema or "type" in schema
    step = schemas["CommandStep"]
    assert step["additionalProperties"] is False
    assert "parent_snapshot" in schemas["ExecutorInput"]["properties"]
    assert CommandStep.model_validate({"key": "a", "label": "a", "command": "true"})
