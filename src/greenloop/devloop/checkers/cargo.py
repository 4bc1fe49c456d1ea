"""``cargo``: ``cargo check --message-format=json --workspace --all-targets`` for Rust projects.

Authoritative, source ``rustc``. rustc names files relative to the workspace
root, which may sit above the project root (a member crate), so the output
format asks ``cargo locate-project --workspace`` where that is.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from greenloop.devloop.checkers.base import Builtin, Evidence, Invocation
from greenloop.devloop.checkers.detect import config_files
from greenloop.devloop.checkers.formats import (
    Found,
    Lines,
    OutputFormat,
    as_int,
    found_at,
    json_lines,
    severity_of,
)
from greenloop.devloop.config import Format, Kind, Role
from greenloop.protocol import Severity


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


def workspace_root(root: Path, program: str) -> Path:
    """The folder of the cargo workspace ``root`` belongs to (``root`` if cargo cannot say)."""
    try:
        done = subprocess.run(
            [program, "locate-project", "--workspace", "--message-format", "plain"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return root
    manifest = done.stdout.strip()
    return Path(manifest).parent if done.returncode == 0 and manifest else root


def configs(root: Path) -> list[Evidence]:
    """The crate's (or workspace's) ``Cargo.toml``, which is also what makes a Rust project."""
    return config_files(root, ("Cargo.toml",))


def _arguments(run: Invocation) -> tuple[list[str], Format]:
    args = ["check", "--message-format=json", "--workspace", "--all-targets", "--color", "never"]
    return args, Format.CARGO_JSON


CHECKER = Builtin(
    name="cargo",
    program="cargo",
    role=Role.AUTHORITATIVE,
    source="rustc",
    format=Format.CARGO_JSON,
    install="install the Rust toolchain with rustup",
    arguments=_arguments,
    kind=Kind.RUST,
    default=True,
    configs=configs,
    outputs={Format.CARGO_JSON: OutputFormat(cargo_json, base=workspace_root)},
)
"""The built-in ``cargo`` checker."""
