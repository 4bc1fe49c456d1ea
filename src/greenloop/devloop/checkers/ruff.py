"""``ruff``: ``ruff check --output-format=json --no-fix`` for Python projects, advisory.

``--no-fix``: a project's ``fix = true`` must never let a check rewrite the
tree; nor may ruff's cache land in it (a project's own linter would trip over it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from greenloop.devloop.checkers.base import Builtin, Invocation
from greenloop.devloop.checkers.formats import (
    Found,
    Lines,
    OutputFormat,
    as_int,
    as_mapping,
    as_text,
    found_at,
    json_document,
    severity_of,
)
from greenloop.devloop.config import Format, Kind, Role
from greenloop.devloop.treestate import state_dir
from greenloop.protocol import Severity


def ruff_json(stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """``ruff check --output-format=json``: one array of violations."""
    document = json_document(stdout)
    if not isinstance(document, list):
        return
    for item in document:
        if not isinstance(item, dict):
            continue
        location = as_mapping(item.get("location"))
        yield (
            found_at(
                str(item.get("filename", "")),
                as_int(location.get("row"), 1),
                as_int(location.get("column"), 1),
                severity_of(item.get("severity"), Severity.ERROR),
                str(item.get("message", "")),
                source,
                base,
                as_text(item.get("code")),
            )
        )


def _arguments(run: Invocation) -> tuple[list[str], Format]:
    cache = str(state_dir(run.root) / "ruff")
    return ["check", "--output-format=json", "--no-fix", "--cache-dir", cache], Format.RUFF_JSON


CHECKER = Builtin(
    name="ruff",
    program="ruff",
    role=Role.ADVISORY,
    source="ruff",
    format=Format.RUFF_JSON,
    install="pip install ruff (in the project's .venv or on PATH)",
    arguments=_arguments,
    kind=Kind.PYTHON,
    outputs={Format.RUFF_JSON: OutputFormat(ruff_json)},
)
"""The built-in ``ruff`` checker."""
