"""``biome``: ``biome check --reporter=github``, advisory, where the project uses Biome.

Never a default: it runs where the project configures Biome (``biome.json``,
``biome.jsonc``) or runs it (a ``lint`` script, a ``biome-*`` pre-commit hook,
CI). The subcommand is the project's (``lint`` checks rules only; ``check``
and ``ci`` formatting and imports too; ``format`` formatting only), else
``check``; without ``--write`` none of them touches the tree. The ``github``
reporter is read because it is stable across Biome 1.8+ and 2 (the JSON one
is marked experimental) and prints every diagnostic, uncapped by
``--max-diagnostics``; its ``title`` is the code (``lint/suspicious/noDebugger``,
``format``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from greenloop.devloop.checkers.base import Builtin, Claimed, Evidence, Invocation
from greenloop.devloop.checkers.commands import Options, carry, fixes
from greenloop.devloop.checkers.detect import config_files
from greenloop.devloop.checkers.formats import (
    Found,
    Lines,
    OutputFormat,
    as_int,
    both_streams,
    found_at,
    severity_of,
)
from greenloop.devloop.config import Format, Kind, Role
from greenloop.protocol import Severity

SUBCOMMANDS = ("check", "ci", "lint", "format")
"""Biome's subcommands that check the tree (the first is the one run by default)."""

_OPTIONS = Options(
    keep={
        "--config-path": True,
        "--diagnostic-level": True,
        "--error-on-warnings": False,
        "--vcs-enabled": True,
        "--vcs-use-ignore-file": True,
        "--vcs-root": True,
        "--files-ignore-unknown": True,
        "--no-errors-on-unmatched": False,
        "--formatter-enabled": True,
        "--linter-enabled": True,
        "--assist-enabled": True,
        "--enforce-assist": True,
        "--organize-imports-enabled": True,
        "--only": True,
        "--skip": True,
    },
    valued=frozenset(
        {"--reporter", "--max-diagnostics", "--log-level", "--log-kind", "--colors"}
        | {"--stdin-file-path", "--since", "--threads"}
    ),
    fixes=frozenset({"--write", "--fix", "--apply", "--apply-unsafe", "--unsafe"}),
)
_COMMAND = re.compile(r"^::(?P<sev>error|warning|notice|debug)(?: (?P<props>[^:]*))?::(?P<msg>.*)$")


def _unescape(text: str) -> str:
    # GitHub workflow-command escaping: %25 last, so "%250A" stays "%0A".
    for code, char in (("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%")):
        text = text.replace(code, char)
    return text


def biome_github(stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """``biome … --reporter=github``: ``::error title=CODE,file=…,line=…,col=…::message``."""
    for line in both_streams(stdout, stderr):
        match = _COMMAND.match(line)
        if match is None:
            continue
        props = dict(
            (key, _unescape(value))
            for key, _, value in (p.partition("=") for p in (match["props"] or "").split(","))
        )
        yield found_at(
            props.get("file") or str(base),
            as_int(props.get("line"), 1),
            as_int(props.get("col"), 1),
            severity_of(match["sev"], Severity.INFO),
            _unescape(match["msg"]),
            source,
            base,
            props.get("title"),
        )


def configs(root: Path) -> list[Evidence]:
    """Where the project configures Biome."""
    return config_files(root, ("biome.json", "biome.jsonc"))


def _claims(argv: Sequence[str]) -> Claimed | None:
    if len(argv) < 2 or argv[0] != "biome" or argv[1] not in SUBCOMMANDS:
        return None
    return Claimed((argv[1], *carry(argv[2:], _OPTIONS)), fixes(argv[2:], _OPTIONS))


def _arguments(run: Invocation) -> tuple[list[str], Format]:
    subcommand, *rest = run.declared or (SUBCOMMANDS[0],)
    return [subcommand, "--reporter=github", "--colors=off", *rest], Format.BIOME_GITHUB


CHECKER = Builtin(
    name="biome",
    program="biome",
    role=Role.ADVISORY,
    source="biome",
    format=Format.BIOME_GITHUB,
    install="npm install --save-dev --save-exact @biomejs/biome",
    arguments=_arguments,
    kind=Kind.JAVASCRIPT,
    configs=configs,
    hooks={f"biome-{sub}": ("biome", sub) for sub in SUBCOMMANDS},
    claims=_claims,
    outputs={Format.BIOME_GITHUB: OutputFormat(biome_github)},
)
"""The built-in ``biome`` checker."""
