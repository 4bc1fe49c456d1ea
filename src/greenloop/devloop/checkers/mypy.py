"""``mypy``: ``mypy -O json`` (text format before mypy 1.11), authoritative, for Python projects.

A default for Python projects that declare no checker; otherwise it runs where
the project configures mypy (``mypy.ini``, ``.mypy.ini``, ``[tool.mypy]``,
``[mypy]`` in ``setup.cfg``) or runs it — beside pyright when the project has
both. What it checks: the targets of the project's own ``mypy`` command (its
paths, ``-p``, ``-m``, with its strictness flags); else, when mypy's config
names no ``files``/``packages``/``modules``, the project's Python files, which
honours ``.gitignore`` (mypy's folder crawl does not). It runs with a private
cache that :class:`~greenloop.devloop.mypy_cache.CacheGuard` keeps honest.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from greenloop.devloop.checkers.base import Builtin, Evidence, Invocation
from greenloop.devloop.checkers.commands import Options, claims_for, positional
from greenloop.devloop.checkers.detect import (
    config_files,
    ini_section,
    ini_sections,
    pyproject_table,
    pyproject_tool,
)
from greenloop.devloop.checkers.formats import (
    Found,
    Lines,
    OutputFormat,
    as_int,
    as_text,
    found_at,
    json_lines,
    severity_of,
)
from greenloop.devloop.config import Config, Format, Kind, Role
from greenloop.devloop.ignores import Ignores
from greenloop.devloop.mypy_cache import CacheGuard, cache_dir

_MAX_LISTED_FILES = 5_000
"""Above this many Python files mypy is pointed at the folder instead of each file."""


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


def mypy_supports_json(version: str) -> bool:
    """mypy gained ``-O json`` in 1.11; older (or unknown) versions get the text format."""
    match = re.search(r"(\d+)\.(\d+)", version)
    return match is not None and (int(match[1]), int(match[2])) >= (1, 11)


def mypy_has_targets(root: Path) -> bool:
    """True when mypy's own config (the file mypy would read) says what to check."""
    keys = ("files", "packages", "modules")
    for name in ("mypy.ini", ".mypy.ini"):
        section = ini_section(root / name, "mypy")
        if section is not None:
            return any(k in section for k in keys)
    mypy = pyproject_tool(root).get("mypy")
    if isinstance(mypy, dict):
        return any(k in mypy for k in keys)
    section = ini_section(root / "setup.cfg", "mypy")
    return section is not None and any(k in section for k in keys)


CONFIG_FILES = ("mypy.ini", ".mypy.ini")
"""mypy's own config files, read before ``[tool.mypy]`` and ``setup.cfg``."""

# Targets, the config, and what changes the verdict (strictness, imports, codes).
_OPTIONS = Options(
    keep={
        "--config-file": True,
        "-p": True,
        "--package": True,
        "-m": True,
        "--module": True,
        "--python-version": True,
        "--platform": True,
        "--exclude": True,
        "--follow-imports": True,
        "--enable-error-code": True,
        "--disable-error-code": True,
        "--always-true": True,
        "--always-false": True,
        "--plugins": True,
        "--strict": False,
        "--check-untyped-defs": False,
        "--ignore-missing-imports": False,
        "--explicit-package-bases": False,
        "--namespace-packages": False,
        "--no-implicit-reexport": False,
        "--implicit-reexport": False,
        "--no-implicit-optional": False,
        "--local-partial-types": False,
        "--strict-equality": False,
        "--extra-checks": False,
    },
    valued=frozenset(
        {"-O", "--output", "--cache-dir", "--junit-xml", "--html-report", "--txt-report"}
        | {"--xml-report", "--linecount-report", "--any-exprs-report", "--cobertura-xml-report"}
        | {"--lineprecision-report", "--xslt-html-report", "--xslt-txt-report", "-c"}
    ),
    prefixes=("--disallow-", "--allow-", "--warn-", "--no-warn-", "--strict-"),
)
_TARGET_OPTIONS = ("-p", "--package", "-m", "--module")


def configs(root: Path) -> list[Evidence]:
    """Where the project configures mypy."""
    return (
        config_files(root, CONFIG_FILES)
        + pyproject_table(root, "mypy")
        + ini_sections(root, "mypy", ("setup.cfg",))
    )


def _names_targets(declared: Sequence[str]) -> bool:
    """True when the project's own mypy command says what to check."""
    return bool(positional(declared, _OPTIONS)) or any(
        arg.partition("=")[0] in _TARGET_OPTIONS for arg in declared
    )


def _python_files(root: Path, config: Config) -> list[str]:
    return [p for p in Ignores(root, config.settings.ignore).files() if p.endswith((".py", ".pyi"))]


def _arguments(run: Invocation) -> tuple[list[str], Format]:
    if mypy_supports_json(run.version()):
        args, fmt = ["-O", "json"], Format.MYPY_JSON
    else:
        args = ["--show-column-numbers", "--show-error-codes", "--no-error-summary"]
        fmt = Format.GNU
    args += ["--no-color-output", "--no-pretty", "--cache-dir", str(cache_dir(run.root))]
    args += run.declared
    if not _names_targets(run.declared) and not mypy_has_targets(run.root):
        # The project's own file list honours .gitignore, which mypy's folder crawl does not.
        files = _python_files(run.root, run.config)
        args += files if len(files) <= _MAX_LISTED_FILES else ["."]
    return args, fmt


def _cache_guard(run: Invocation) -> CacheGuard:
    return CacheGuard(cache_dir(run.root), tuple(_python_files(run.root, run.config)))


CHECKER = Builtin(
    name="mypy",
    program="mypy",
    role=Role.AUTHORITATIVE,
    source="mypy",
    format=Format.MYPY_JSON,
    install="pip install mypy (in the project's .venv or on PATH)",
    arguments=_arguments,
    kind=Kind.PYTHON,
    default=True,
    configs=configs,
    hooks={"mypy": ("mypy",)},
    claims=claims_for("mypy", _OPTIONS),
    outputs={Format.MYPY_JSON: OutputFormat(mypy_json)},
    cache_guard=_cache_guard,
)
"""The built-in ``mypy`` checker (its text format before 1.11 is the generic ``gnu``)."""
