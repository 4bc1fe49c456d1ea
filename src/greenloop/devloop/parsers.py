"""Turning each checker's output into diagnostics (absolute paths, 1-based).

Parsers are pure: they get the captured output, as lines, and the folder
relative paths are relative to, and never fail — output they cannot read is
simply not a diagnostic (the runner turns a failing exit status with no error
into one). They read their input as a stream and yield :class:`Found`
tuples, not :class:`Diagnostic` models: a checker may print a million of
them, and only the first few (see :func:`greenloop.devloop.runner.collect`)
are worth a validated model; the rest are only counted.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from greenloop.devloop.config import Format
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


def parse(fmt: Format, stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """Diagnostics in a checker's output, read as ``fmt``, as they come."""
    return _PARSERS[fmt](stdout, stderr, base, source)


def _severity(word: str | None, default: Severity = Severity.ERROR) -> Severity:
    if not word:
        return default
    return _SEVERITY_WORDS.get(word.strip().lower(), default)


def _int(value: object, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return default
    try:
        return int(value)
    except ValueError:
        return default


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


@functools.lru_cache(maxsize=4096)
def _absolute(path: str, base: Path) -> str:
    # Cached: a flood of diagnostics names the same few files over and over.
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(base, path))


def _diagnostic(
    path: str,
    line: int,
    col: int,
    severity: Severity,
    message: str,
    source: str,
    base: Path,
    code: str | None = None,
) -> Found:
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


def _both(stdout: Lines, stderr: Lines) -> Iterator[str]:
    """Every line of stdout, then of stderr, without line ends."""
    for stream in (stdout, stderr):
        for line in stream:
            yield line.rstrip("\r\n")


def _json_lines(lines: Lines) -> Iterator[dict[str, Any]]:
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


def _json_document(lines: Lines) -> Any:
    # One JSON document (ruff's array, pyright's object) is read whole.
    text = "".join(lines)
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None
    try:
        return json.loads(text[start:])
    except ValueError:
        return None


def cargo_json(stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """``cargo --message-format=json``: compiler messages at their primary span."""
    for record in _json_lines(stdout):
        message = record.get("message")
        if record.get("reason") != "compiler-message" or not isinstance(message, dict):
            continue
        found = _rustc_message(message, record.get("manifest_path"), base, source)
        if found is not None:
            yield found


def _rustc_message(
    message: dict[str, Any], manifest: object, base: Path, source: str
) -> Found | None:
    level = str(message.get("level", "error"))
    text = str(message.get("message", ""))
    code = message.get("code")
    code_text = str(code.get("code")) if isinstance(code, dict) and code.get("code") else None
    severity = Severity.ERROR if level.startswith("error") else _severity(level, Severity.INFO)
    spans = [s for s in message.get("spans") or [] if isinstance(s, dict)]
    primary = next((s for s in spans if s.get("is_primary")), spans[0] if spans else None)
    if primary is None:
        # Span-less messages are summaries ("aborting due to…", "N warnings emitted",
        # "For more information…") except for real errors such as a missing crate root.
        if severity is not Severity.ERROR or text.startswith("aborting due to"):
            return None
        path = str(manifest) if isinstance(manifest, str) else str(base / "Cargo.toml")
        return _diagnostic(path, 1, 1, severity, text, source, base, code_text)
    label = primary.get("label")
    if label:
        text = f"{text} ({label})"
    return _diagnostic(
        str(primary.get("file_name", "")),
        _int(primary.get("line_start"), 1),
        _int(primary.get("column_start"), 1),
        severity,
        text,
        source,
        base,
        code_text,
    )


def ruff_json(stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """``ruff check --output-format=json``: one array of violations."""
    document = _json_document(stdout)
    if not isinstance(document, list):
        return
    for item in document:
        if not isinstance(item, dict):
            continue
        location = _mapping(item.get("location"))
        yield (
            _diagnostic(
                str(item.get("filename", "")),
                _int(location.get("row"), 1),
                _int(location.get("column"), 1),
                _severity(item.get("severity"), Severity.ERROR),
                str(item.get("message", "")),
                source,
                base,
                _text(item.get("code")),
            )
        )


def mypy_json(stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """``mypy -O json``: one object a line, 0-based columns."""
    for item in _json_lines(stdout):
        if "file" not in item or "message" not in item:
            continue
        message = str(item["message"])
        if item.get("hint"):
            message = f"{message}; {item['hint']}"
        yield (
            _diagnostic(
                str(item["file"]),
                _int(item.get("line"), 1),
                _int(item.get("column"), 0) + 1,
                _severity(item.get("severity")),
                message,
                source,
                base,
                _text(item.get("code")),
            )
        )


def pyright_json(stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """``pyright --outputjson``: ``generalDiagnostics`` with 0-based LSP ranges."""
    document = _json_document(stdout)
    if not isinstance(document, dict):
        return
    for item in document.get("generalDiagnostics") or []:
        if not isinstance(item, dict):
            continue
        start = _mapping(_mapping(item.get("range")).get("start"))
        yield (
            _diagnostic(
                str(item.get("file", "")),
                _int(start.get("line"), 0) + 1,
                _int(start.get("character"), 0) + 1,
                _severity(item.get("severity")),
                str(item.get("message", "")),
                source,
                base,
                _text(item.get("rule")),
            )
        )


def lsp_diagnostics(items: list[Any], path: str, source: str) -> list[Diagnostic]:
    """LSP ``Diagnostic`` objects about the file at ``path`` (0-based ranges, numeric severity)."""
    found: list[Diagnostic] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        start = _mapping(_mapping(item.get("range")).get("start"))
        severity = item.get("severity")
        found.append(
            _diagnostic(
                path,
                _int(start.get("line"), 0) + 1,
                _int(start.get("character"), 0) + 1,
                Severity.from_lsp(severity) if isinstance(severity, int) else Severity.ERROR,
                str(item.get("message", "")),
                source,
                Path(path).parent,
                _text(item.get("code")),
            ).diagnostic()
        )
    return found


_TSC_AT = re.compile(
    r"^(?P<path>.+?)\((?P<line>\d+),(?P<col>\d+)\): (?P<sev>error|warning|message) "
    r"(?P<code>TS\d+): (?P<msg>.*)$"
)
_TSC_GLOBAL = re.compile(r"^(?P<sev>error|warning|message) (?P<code>TS\d+): (?P<msg>.*)$")


def tsc(stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """``tsc --pretty false``: ``file(line,col): error TSxxxx: message`` plus indented detail."""
    # Held back until the next line shows whether it elaborates this one.
    pending: Found | None = None
    for line in _both(stdout, stderr):
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
        pending = _diagnostic(
            path, row, col, _severity(match["sev"]), match["msg"], source, base, match["code"]
        )
    if pending is not None:
        yield pending


_GNU = re.compile(
    r"^(?P<path>[^\s:][^:]*):(?P<line>\d+):(?:(?P<col>\d+):)?\s*"
    r"(?:(?P<sev>fatal error|error|warning|warn|note|info|information|hint|help|remark)\s*:)?"
    r"\s*(?P<msg>.*?)\s*$",
    re.IGNORECASE,
)
_TRAILING_CODE = re.compile(r"^(?P<msg>.*?)\s+\[(?P<code>[\w.\-/]+)\]$")


def gnu(stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """``file:line[:col]: [severity:] message [code]`` on either stream; no severity means error."""
    for line in _both(stdout, stderr):
        match = _GNU.match(line)
        if match is None:
            continue
        message, code = match["msg"], None
        if tail := _TRAILING_CODE.match(message):
            message, code = tail["msg"], tail["code"]
        yield _diagnostic(
            match["path"],
            int(match["line"]),
            int(match["col"] or 1),
            _severity(match["sev"]),
            message,
            source,
            base,
            code,
        )


_PARSERS: dict[Format, Parser] = {
    Format.CARGO_JSON: cargo_json,
    Format.RUFF_JSON: ruff_json,
    Format.MYPY_JSON: mypy_json,
    Format.PYRIGHT_JSON: pyright_json,
    Format.TSC: tsc,
    Format.GNU: gnu,
}
