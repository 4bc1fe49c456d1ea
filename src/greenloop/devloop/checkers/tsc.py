"""``tsc``: ``tsc --noEmit --pretty false`` for TypeScript projects, authoritative."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from greenloop.devloop.checkers.base import Builtin, Invocation
from greenloop.devloop.checkers.formats import (
    Found,
    Lines,
    OutputFormat,
    both_streams,
    found_at,
    severity_of,
)
from greenloop.devloop.config import Format, Kind, Role

_TSC_AT = re.compile(
    r"^(?P<path>.+?)\((?P<line>\d+),(?P<col>\d+)\): (?P<sev>error|warning|message) "
    r"(?P<code>TS\d+): (?P<msg>.*)$"
)
_TSC_GLOBAL = re.compile(r"^(?P<sev>error|warning|message) (?P<code>TS\d+): (?P<msg>.*)$")


def tsc(stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """``tsc --pretty false``: ``file(line,col): error TSxxxx: message`` plus indented detail."""
    # Held back until the next line shows whether it elaborates this one.
    pending: Found | None = None
    for line in both_streams(stdout, stderr):
        if line[:1].isspace() and pending is not None and line.strip():
            # Elaboration of the previous diagnostic ("Type 'x' is not assignable…").
            pending = pending._replace(message=f"{pending.message} {line.strip()}")
            continue
        if match := _TSC_AT.match(line):
            path, row, col = match["path"], int(match["line"]), int(match["col"])
        elif match := _TSC_GLOBAL.match(line):
            path, row, col = "tsconfig.json", 1, 1
        else:
            continue
        if pending is not None:
            yield pending
        pending = found_at(
            path, row, col, severity_of(match["sev"]), match["msg"], source, base, match["code"]
        )
    if pending is not None:
        yield pending


def _arguments(run: Invocation) -> tuple[list[str], Format]:
    return ["--noEmit", "--pretty", "false"], Format.TSC


CHECKER = Builtin(
    name="tsc",
    program="tsc",
    role=Role.AUTHORITATIVE,
    source="tsc",
    format=Format.TSC,
    install="npm install --save-dev typescript",
    arguments=_arguments,
    kind=Kind.TYPESCRIPT,
    outputs={Format.TSC: OutputFormat(tsc)},
)
"""The built-in ``tsc`` checker."""
