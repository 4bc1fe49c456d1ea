"""``tsc``: ``tsc --noEmit --pretty false`` for TypeScript projects, authoritative.

Its config is ``tsconfig.json``, which is also what makes a TypeScript project;
a ``tsc`` the project runs itself (a ``typecheck`` script) gives its
``--project`` and ``--strict``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from greenloop.devloop.checkers.base import Builtin, Claimed, Evidence, Invocation
from greenloop.devloop.checkers.commands import Options, carry
from greenloop.devloop.checkers.detect import config_files
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


# tsc's positional arguments are files that replace the tsconfig's, which a check never
# wants from a script; its options beyond these are compiler settings the config holds.
_OPTIONS = Options(keep={"-p": True, "--project": True, "--strict": False})


def configs(root: Path) -> list[Evidence]:
    """The project's ``tsconfig.json``."""
    return config_files(root, ("tsconfig.json",))


def _claims(argv: Sequence[str]) -> Claimed | None:
    # `tsc -b` builds project references, and `tsc --init` writes a config: neither is ours.
    if not argv or argv[0] != "tsc" or any(a in ("-b", "--build", "--init") for a in argv):
        return None
    kept: list[str] = []
    carried = iter(carry(argv[1:], _OPTIONS))
    for arg in carried:
        if arg in ("-p", "--project"):
            kept += [arg, next(carried, ".")]
        elif arg.startswith("-"):
            kept.append(arg)
    return Claimed(tuple(kept))


def _arguments(run: Invocation) -> tuple[list[str], Format]:
    return ["--noEmit", "--pretty", "false", *run.declared], Format.TSC


CHECKER = Builtin(
    name="tsc",
    program="tsc",
    role=Role.AUTHORITATIVE,
    source="tsc",
    format=Format.TSC,
    install="npm install --save-dev typescript",
    arguments=_arguments,
    kind=Kind.TYPESCRIPT,
    default=True,
    configs=configs,
    hooks={"tsc": ("tsc",)},
    claims=_claims,
    outputs={Format.TSC: OutputFormat(tsc)},
)
"""The built-in ``tsc`` checker."""
