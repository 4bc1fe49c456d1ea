"""``ruff``: ``ruff check --output-format=json --no-fix`` for Python projects, advisory.

``--no-fix``: a project's ``fix = true`` must never let a check rewrite the
tree; nor may ruff's cache land in it (a project's own linter would trip over it).
A default for Python projects that declare no checker; otherwise it runs where
the project configures ruff (``ruff.toml``, ``.ruff.toml``, ``[tool.ruff]``) or
runs ``ruff check`` (its paths and rule options are kept).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from greenloop.devloop.checkers.base import Builtin, Claimed, Evidence, Invocation
from greenloop.devloop.checkers.commands import Options, carry, fixes
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
from greenloop.devloop.treestate import state_dir
from greenloop.protocol import Severity


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


CONFIG_FILES = ("ruff.toml", ".ruff.toml")
"""ruff's own config files (``[tool.ruff]`` in ``pyproject.toml`` is the third place)."""

SUBCOMMANDS = frozenset(
    {"check", "format", "rule", "config", "linter", "clean", "version", "help", "server", "analyze"}
)
"""ruff's subcommands; anything else after ``ruff`` is the pre-0.5 spelling of ``ruff check``."""

SHARED_OPTIONS: dict[str, bool] = {
    "--config": True,
    "--exclude": True,
    "--line-length": True,
    "--target-version": True,
    "--preview": False,
    "--no-preview": False,
    "--isolated": False,
    "--respect-gitignore": False,
    "--no-respect-gitignore": False,
    "--force-exclude": False,
    "--no-force-exclude": False,
}
"""The options ``ruff check`` and ``ruff format`` share that change what is checked, and if
each takes a value."""

# What decides what is checked: paths, the config, rule selection, exclusions.
_OPTIONS = Options(
    keep={
        **SHARED_OPTIONS,
        "--select": True,
        "--extend-select": True,
        "--ignore": True,
        "--extend-ignore": True,
        "--per-file-ignores": True,
        "--extend-per-file-ignores": True,
        "--extend-exclude": True,
    },
    valued=frozenset({"--output-format", "--format", "--cache-dir", "-o", "--output-file"}),
    fixes=frozenset({"--fix", "--unsafe-fixes", "--fix-only", "--add-noqa"}),
)


def configs(root: Path) -> list[Evidence]:
    """Where the project configures ruff."""
    return config_files(root, CONFIG_FILES) + pyproject_table(root, "ruff")


def _claims(argv: Sequence[str]) -> Claimed | None:
    if not argv or argv[0] != "ruff":
        return None
    args = list(argv[1:])
    if args and args[0] == "check":
        args = args[1:]
    elif args and args[0] in SUBCOMMANDS:
        return None
    return Claimed(carry(args, _OPTIONS), fixes(args, _OPTIONS))


def _arguments(run: Invocation) -> tuple[list[str], Format]:
    cache = str(state_dir(run.root) / "ruff")
    args = ["check", "--output-format=json", "--no-fix", "--cache-dir", cache, *run.declared]
    return args, Format.RUFF_JSON


CHECKER = Builtin(
    name="ruff",
    program="ruff",
    role=Role.ADVISORY,
    source="ruff",
    format=Format.RUFF_JSON,
    install="pip install ruff (in the project's .venv or on PATH)",
    arguments=_arguments,
    kind=Kind.PYTHON,
    default=True,
    configs=configs,
    hooks={"ruff": ("ruff", "check"), "ruff-check": ("ruff", "check")},
    claims=_claims,
    outputs={Format.RUFF_JSON: OutputFormat(ruff_json)},
)
"""The built-in ``ruff`` checker."""
