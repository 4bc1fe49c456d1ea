"""Reading checkers' output: what every parser is built from, and the generic formats.

Parsers are pure: they get the captured output, as lines, and the folder
relative paths are relative to, and never fail — output they cannot read is
simply not a diagnostic (the runner turns a failing exit status with no error
into one). They read their input as a stream and yield :class:`Found`
tuples, not :class:`Diagnostic` models: a checker may print a million of
them, and only the first few (see :func:`greenloop.devloop.runner.collect`)
are worth a validated model; the rest are only counted.

A checker's own format lives in its module (``cargo.py`` has ``cargo_json``);
what any checker may print — ``gnu`` lines, LSP diagnostics — lives here.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from greenloop.protocol import Diagnostic, Severity

Lines = Iterable[str]
"""A stream's text, one line at a time (line ends may be kept)."""


class Found(NamedTuple):
    """A diagnostic as a parser found it: the fields of :class:`Diagnostic`, unvalidated."""

    path: str
    line: int
    col: int
    severity: Severity
    message: str
    code: str | None
    source: str

    def diagnostic(self) -> Diagnostic:
        """The validated contract value."""
        return Diagnostic(
            path=self.path,
            line=self.line,
            col=self.col,
            severity=self.severity,
            code=self.code,
            message=self.message,
            source=self.source,
        )


Parser = Callable[[Lines, Lines, Path, str], Iterator[Found]]
"""``(stdout lines, stderr lines, base, source) -> what was found, in output order``."""


@dataclass(frozen=True)
class OutputFormat:
    """How to read one format: its parser, and the folder its relative paths start from."""

    parser: Parser
    base: Callable[[Path, str], Path] | None = None
    """``(root, program) -> base`` where paths are not relative to the root (cargo's)."""


_SEVERITY_WORDS = {
    "error": Severity.ERROR,
    "fatal error": Severity.ERROR,
    "fatal": Severity.ERROR,
    "warning": Severity.WARNING,
    "warn": Severity.WARNING,
    "note": Severity.INFO,
    "info": Severity.INFO,
    "information": Severity.INFO,
    "message": Severity.INFO,
    "remark": Severity.INFO,
    "help": Severity.HINT,
    "hint": Severity.HINT,
}


def severity_of(word: str | None, default: Severity = Severity.ERROR) -> Severity:
    """The severity a tool's word for it means (``warn``, ``fatal error``…), else ``default``."""
    if not word:
        return default
    return _SEVERITY_WORDS.get(word.strip().lower(), default)


def as_int(value: object, default: int) -> int:
    """``value`` as a number (a JSON int or a numeric string), else ``default``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return default
    try:
        return int(value)
    except ValueError:
        return default


def as_mapping(value: object) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (so lookups can be chained)."""
    return value if isinstance(value, dict) else {}


def as_text(value: object) -> str | None:
    """``value`` as text, or None when it is missing or empty (a code that is not there)."""
    return str(value) if value not in (None, "") else None


@functools.lru_cache(maxsize=4096)
def _absolute(path: str, base: Path) -> str:
    # Cached: a flood of diagnostics names the same few files over and over.
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(base, path))


def found_at(
    path: str,
    line: int,
    col: int,
    severity: Severity,
    message: str,
    source: str,
    base: Path,
    code: str | None = None,
) -> Found:
    """A :class:`Found` with ``path`` made absolute against ``base`` and a 1-based position."""
    # Tools use 0 or -1 for "the whole file"; the contract is 1-based.
    return Found(
        _absolute(path, base),
        max(line, 1),
        max(col, 1),
        severity,
        message.strip() or "(no message)",
        code or None,
        source,
    )


def both_streams(stdout: Lines, stderr: Lines) -> Iterator[str]:
    """Every line of stdout, then of stderr, without line ends."""
    for stream in (stdout, stderr):
        for line in stream:
            yield line.rstrip("\r\n")


def json_lines(lines: Lines) -> Iterator[dict[str, Any]]:
    """The JSON objects among ``lines``, one a line; any other line is skipped."""
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def json_document(lines: Lines) -> Any:
    """The one JSON document in ``lines`` (from its first ``{`` or ``[``), or None."""
    # Read whole: a document (ruff's array, pyright's object) is not split into lines.
    text = "".join(lines)
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None
    try:
        return json.loads(text[start:])
    except ValueError:
        return None


def lsp_diagnostics(items: list[Any], path: str, source: str) -> list[Diagnostic]:
    """LSP ``Diagnostic`` objects about the file at ``path`` (0-based ranges, numeric severity)."""
    found: list[Diagnostic] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        start = as_mapping(as_mapping(item.get("range")).get("start"))
        level = item.get("severity")
        found.append(
            found_at(
                path,
                as_int(start.get("line"), 0) + 1,
                as_int(start.get("character"), 0) + 1,
                Severity.from_lsp(level) if isinstance(level, int) else Severity.ERROR,
                str(item.get("message", "")),
                source,
                Path(path).parent,
                as_text(item.get("code")),
            ).diagnostic()
        )
    return found


_GNU = re.compile(
    r"^(?P<path>[^\s:][^:]*):(?P<line>\d+):(?:(?P<col>\d+):)?\s*"
    r"(?:(?P<sev>fatal error|error|warning|warn|note|info|information|hint|help|remark)\s*:)?"
    r"\s*(?P<msg>.*?)\s*$",
    re.IGNORECASE,
)
_TRAILING_CODE = re.compile(r"^(?P<msg>.*?)\s+\[(?P<code>[\w.\-/]+)\]$")


def gnu(stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """``file:line[:col]: [severity:] message [code]`` on either stream; no severity means error."""
    for line in both_streams(stdout, stderr):
        match = _GNU.match(line)
        if match is None:
            continue
        message, code = match["msg"], None
        if tail := _TRAILING_CODE.match(message):
            message, code = tail["msg"], tail["code"]
        yield found_at(
            match["path"],
            int(match["line"]),
            int(match["col"] or 1),
            severity_of(match["sev"]),
            message,
            source,
            base,
            code,
        )
