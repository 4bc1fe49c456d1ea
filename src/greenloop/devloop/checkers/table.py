"""The built-in checkers, assembled from their modules, and the output formats they bring.

Adding a checker is writing its module (a :class:`~greenloop.devloop.checkers.base.Builtin`
named ``CHECKER``, with its parser) and naming it in ``_CHECKERS``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from greenloop.devloop.checkers import (
    biome,
    cargo,
    eslint,
    flake8,
    mypy,
    pyright,
    pyright_lsp,
    ruff,
    ruff_format,
    tsc,
)
from greenloop.devloop.checkers.base import Builtin, Checker
from greenloop.devloop.checkers.formats import Found, Lines, OutputFormat, gnu
from greenloop.devloop.config import Format

# Table order is report order within a kind (linters before the type checkers).
_CHECKERS = (
    cargo.CHECKER,
    ruff.CHECKER,
    ruff_format.CHECKER,
    flake8.CHECKER,
    mypy.CHECKER,
    pyright.CHECKER,
    tsc.CHECKER,
    eslint.CHECKER,
    biome.CHECKER,
    pyright_lsp.CHECKER,
)

BUILTINS: dict[str, Builtin] = {b.name: b for b in _CHECKERS}
"""The checkers greenloop knows, by name."""

INSTALL_HINTS: dict[str, str] = {b.program: b.install for b in BUILTINS.values()}
"""How to get each built-in checker's program, by program, shown when it is missing."""

OUTPUTS: dict[Format, OutputFormat] = {
    # gnu is no one checker's: mypy before 1.11 prints it, and so do most linters.
    Format.GNU: OutputFormat(gnu),
    **{fmt: output for b in BUILTINS.values() for fmt, output in b.outputs.items()},
}
"""How each format is read, by format (``lsp`` is no output: its servers are spoken to)."""


def parse_output(checker: Checker, root: Path, stdout: Lines, stderr: Lines) -> Iterator[Found]:
    """Diagnostics in what ``checker`` printed, run at ``root``, as they come."""
    output = OUTPUTS[checker.format]
    base = output.base(root, checker.program) if output.base is not None else root
    return output.parser(stdout, stderr, base, checker.source)
