"""``ruff-format``: ``ruff format --check``, advisory, where the project checks its formatting.

Never a default: it runs where the project does — the ``ruff-format``
pre-commit hook (which fails when it reformatted a file), or ``ruff format
--check``/``--diff`` in its scripts, tox, nox or CI. A plain ``ruff format``
there rewrites files and checks nothing, so it is not followed. Each file that
would be reformatted is one error at its first changed line (code
``unformatted``). ruff prints that as JSON from 0.16 (earlier versions either
refuse ``--output-format`` or, before its preview ended, ignore it), so the
parser reads JSON or the ``Would reformat: PATH`` lines alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from greenloop.devloop.checkers.base import Builtin, Claimed, Invocation
from greenloop.devloop.checkers.commands import Options, carry
from greenloop.devloop.checkers.formats import Found, Lines, OutputFormat, both_streams, found_at
from greenloop.devloop.checkers.ruff import SHARED_OPTIONS, ruff_json
from greenloop.devloop.config import Format, Kind, Role
from greenloop.devloop.treestate import state_dir
from greenloop.protocol import Severity

_OPTIONS = Options(
    keep=SHARED_OPTIONS,
    valued=frozenset({"--output-format", "--cache-dir", "--stdin-filename", "--range"}),
)
_WOULD_REFORMAT = re.compile(r"^Would reformat: (?P<path>.+)$")
_JSON_SINCE = (0, 14)
"""The first ruff that accepts ``format --output-format`` (ignored until its preview ended)."""


def ruff_format(stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """``ruff format --check``: its JSON violations, or ``Would reformat: PATH`` lines."""
    lines = list(stdout)
    if any(line.lstrip().startswith("[") for line in lines[:1]):
        yield from ruff_json(lines, [], base, source)
        return
    for line in both_streams(lines, stderr):
        if match := _WOULD_REFORMAT.match(line):
            yield found_at(
                match["path"],
                1,
                1,
                Severity.ERROR,
                "File would be reformatted",
                source,
                base,
                "unformatted",
            )


def _claims(argv: Sequence[str]) -> Claimed | None:
    if len(argv) < 2 or argv[0] != "ruff" or argv[1] != "format":
        return None
    args = argv[2:]
    checks = any(a in ("--check", "--diff") for a in args)
    return Claimed(carry(args, _OPTIONS), fixes=not checks)


def _version(text: str) -> tuple[int, int]:
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def _arguments(run: Invocation) -> tuple[list[str], Format]:
    args = ["format", "--check", "--cache-dir", str(state_dir(run.root) / "ruff")]
    if _version(run.version()) >= _JSON_SINCE:
        args.append("--output-format=json")
    return [*args, *run.declared], Format.RUFF_FORMAT


CHECKER = Builtin(
    name="ruff-format",
    program="ruff",
    role=Role.ADVISORY,
    source="ruff",
    format=Format.RUFF_FORMAT,
    install="pip install ruff (in the project's .venv or on PATH)",
    arguments=_arguments,
    kind=Kind.PYTHON,
    hooks={"ruff-format": ("ruff", "format")},
    claims=_claims,
    outputs={Format.RUFF_FORMAT: OutputFormat(ruff_format)},
)
"""The built-in ``ruff-format`` checker."""
