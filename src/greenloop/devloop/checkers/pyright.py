"""``pyright``: ``pyright --outputjson``, authoritative, for Python projects that configure it.

A Python project gets one type checker: pyright when it has
``pyrightconfig.json`` or ``[tool.pyright]``, else mypy (:func:`python_type_checker`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from greenloop.devloop.checkers.base import Builtin, Invocation
from greenloop.devloop.checkers.detect import pyproject_tool
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

INSTALL = "npm install --save-dev pyright (or pip install pyright)"
"""How to get pyright's programs (``pyright`` and ``pyright-langserver`` come together)."""


def python_type_checker(root: Path) -> str:
    """``pyright`` when the project configures pyright, else ``mypy``."""
    if (root / "pyrightconfig.json").is_file() or "pyright" in pyproject_tool(root):
        return "pyright"
    return "mypy"


def pyright_json(stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """``pyright --outputjson``: ``generalDiagnostics`` with 0-based LSP ranges."""
    document = json_document(stdout)
    if not isinstance(document, dict):
        return
    for item in document.get("generalDiagnostics") or []:
        if not isinstance(item, dict):
            continue
        start = as_mapping(as_mapping(item.get("range")).get("start"))
        yield (
            found_at(
                str(item.get("file", "")),
                as_int(start.get("line"), 0) + 1,
                as_int(start.get("character"), 0) + 1,
                severity_of(item.get("severity")),
                str(item.get("message", "")),
                source,
                base,
                as_text(item.get("rule")),
            )
        )


def _arguments(run: Invocation) -> tuple[list[str], Format]:
    return ["--outputjson"], Format.PYRIGHT_JSON


CHECKER = Builtin(
    name="pyright",
    program="pyright",
    role=Role.AUTHORITATIVE,
    source="pyright",
    format=Format.PYRIGHT_JSON,
    install=INSTALL,
    arguments=_arguments,
    kind=Kind.PYTHON,
    wanted=lambda root: python_type_checker(root) == "pyright",
    outputs={Format.PYRIGHT_JSON: OutputFormat(pyright_json)},
)
"""The built-in ``pyright`` checker."""
