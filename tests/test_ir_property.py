"""Property tests: the IR loader turns any input into a document or a clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenloop.protocol.ir import IRDocument, parse_document
from tests.conftest import cli

VALID: dict[str, Any] = {
    "version": 1,
    "pipelines": [
        {
            "name": "ci",
            "env": {"CI": "1"},
            "steps": [
                {"key": "a", "label": "a", "command": "true", "cache": {"kind": "forever"}},
                {
                    "key": "b",
                    "label": "b",
                    "command": "echo b",
                    "builds_in": "a",
                    "cache": {"kind": "on_change", "globs": ["*.lock"]},
                },
            ],
        }
    ],
}

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``value``, the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    target = copy
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = new
    return copy


def _parses_or_refuses(data: bytes | str) -> None:
    """The loader's whole contract: a valid document that round-trips, or a ValueError."""
    try:
        document = parse_document(data)
    except ValueError as e:  # pydantic's ValidationError is one too
        assert str(e)
        return
    assert isinstance(document, IRDocument)
    assert parse_document(document.model_dump_json()) == document


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_a_document_or_a_value_error(data: bytes) -> None:
    _parses_or_refuses(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_valid_document_with_any_part_replaced(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(_paths(VALID)))
    _parses_or_refuses(json.dumps(_replace(VALID, path, data.draw(_json))))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_a_valid_document_cut_anywhere(data: st.DataObject) -> None:
    text = json.dumps(VALID)
    cut = data.draw(st.integers(min_value=0, max_value=len(text)))
    _parses_or_refuses(text[:cut])


def test_a_repeated_key_is_refused_wherever_it_is() -> None:
    text = json.dumps(VALID)
    twice = text.replace('"command": "true"', '"command": "true", "command": "rm -rf x"')
    with pytest.raises(ValueError, match="duplicate key 'command'"):
        parse_document(twice)
    assert parse_document(text).pipelines[0].steps[0].command == "true"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"pipelines": [{"name": "ci", "steps": [{"key": "a", "label": "a",'
            b' "command": "a", "command": "b"}]}]}',
            "duplicate key 'command' in one JSON object",
        ),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"pipelines": [', "not JSON"),
        (b'{"pipelines": [{"name": "ci", "steps": [], "colour": 1}]}', "colour"),
    ],
)
def test_run_ir_refuses_a_bad_document_with_exit_2(
    tmp_path: Path, content: bytes, message: str
) -> None:
    (tmp_path / "ir.json").write_bytes(content)
    result = cli("run", "--ir", "ir.json", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
