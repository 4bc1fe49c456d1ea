"""Each built-in checker's own output format (the shared pieces are in ``checkers.formats``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from greenloop.devloop.checkers.formats import (
    Found,
    Lines,
    Parser,
    as_int,
    as_mapping,
    as_text,
    both_streams,
    found_at,
    gnu,
    json_document,
    json_lines,
    severity_of,
)
from greenloop.devloop.config import Format
from greenloop.protocol import Severity

__all__ = ["Found", "cargo_json", "gnu", "mypy_json", "parse", "pyright_json", "ruff_json", "tsc"]


def parse(fmt: Format, stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """Diagnostics in a checker's output, read as ``fmt``, as they come."""
    return _PARSERS[fmt](stdout, stderr, base, source)


def cargo_json(stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """``cargo --message-format=json``: compiler messages at their primary span."""
    for record in json_lines(stdout):
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
    severity = Severity.ERROR if level.startswith("error") else severity_of(level, Severity.INFO)
    spans = [s for s in message.get("spans") or [] if isinstance(s, dict)]
    primary = next((s for s in spans if s.get("is_primary")), spans[0] if spans else None)
    if primary is None:
        # Span-less messages are summaries ("aborting due to…", "N warnings emitted",
        # "For more information…") except for real errors such as a missing crate root.
        if severity is not Severity.ERROR or text.startswith("aborting due to"):
            return None
        path = str(manifest) if isinstance(manifest, str) else str(base / "Cargo.toml")
        return found_at(path, 1, 1, severity, text, source, base, code_text)
    label = primary.get("label")
    if label:
        text = f"{text} ({label})"
    return found_at(
        str(primary.get("file_name", "")),
        as_int(primary.get("line_start"), 1),
        as_int(primary.get("column_start"), 1),
        severity,
        text,
        source,
        base,
        code_text,
    )


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


def mypy_json(stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """``mypy -O json``: one object a line, 0-based columns."""
    for item in json_lines(stdout):
        if "file" not in item or "message" not in item:
            continue
        message = str(item["message"])
        if item.get("hint"):
            message = f"{message}; {item['hint']}"
        yield (
            found_at(
                str(item["file"]),
                as_int(item.get("line"), 1),
                as_int(item.get("column"), 0) + 1,
                severity_of(item.get("severity")),
                message,
                source,
                base,
                as_text(item.get("code")),
            )
        )


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


_PARSERS: dict[Format, Parser] = {
    Format.CARGO_JSON: cargo_json,
    Format.RUFF_JSON: ruff_json,
    Format.MYPY_JSON: mypy_json,
    Format.PYRIGHT_JSON: pyright_json,
    Format.TSC: tsc,
    Format.GNU: gnu,
}
