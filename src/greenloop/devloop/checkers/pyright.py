"""``pyright``: ``pyright --outputjson``, authoritative, for Python projects that configure it.

Never a default: it runs where the project configures pyright
(``pyrightconfig.json``, ``[tool.pyright]``) or runs it (a pre-commit hook, a
script, CI), keeping its paths and options; beside mypy when the project has both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from greenloop.devloop.checkers.base import Builtin, Claimed, Evidence, Invocation
from greenloop.devloop.checkers.commands import Options, carry
from greenloop.devloop.checkers.detect import config_files, pyproject_table
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


_OPTIONS = Options(
    keep={
        "-p": True,
        "--project": True,
        "--pythonpath": True,
        "--pythonplatform": True,
        "--pythonversion": True,
        "--venvpath": True,
        "-v": True,
        "-t": True,
        "--typeshedpath": True,
        "--level": True,
        "--warnings": False,
        "--skipunannotated": False,
    },
    valued=frozenset({"--threads", "--verifytypes"}),
)


def configs(root: Path) -> list[Evidence]:
    """Where the project configures pyright."""
    return config_files(root, ("pyrightconfig.json",)) + pyproject_table(root, "pyright")


def _claims(argv: Sequence[str]) -> Claimed | None:
    # `pyright --verifytypes PKG` checks a library's public types, not the project.
    if not argv or argv[0] != "pyright" or "--verifytypes" in argv:
        return None
    return Claimed(carry(argv[1:], _OPTIONS))


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
    return ["--outputjson", *run.declared], Format.PYRIGHT_JSON


CHECKER = Builtin(
    name="pyright",
    program="pyright",
    role=Role.AUTHORITATIVE,
    source="pyright",
    format=Format.PYRIGHT_JSON,
    install=INSTALL,
    arguments=_arguments,
    kind=Kind.PYTHON,
    configs=configs,
    hooks={"pyright": ("pyright",)},
    claims=_claims,
    outputs={Format.PYRIGHT_JSON: OutputFormat(pyright_json)},
)
"""The built-in ``pyright`` checker."""
