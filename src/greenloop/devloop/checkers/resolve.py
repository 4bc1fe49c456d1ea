"""Which checkers vouch for a project: detected defaults, overridden by the settings.

Built-in checkers and their roles:

============  ==========================================================  =============
name          command                                                     role
============  ==========================================================  =============
``cargo``     ``cargo check --message-format=json --workspace             authoritative
              --all-targets``
``ruff``      ``ruff check --output-format=json --no-fix``                advisory
``mypy``      ``mypy -O json`` (text format before mypy 1.11)             authoritative
``pyright``   ``pyright --outputjson`` (when the project configures it)   authoritative
``tsc``       ``tsc --noEmit --pretty false``                             authoritative
``pyright-    ``pyright-langserver --stdio``, kept warm between rounds     advisory
lsp``         (only when ``[checkers.pyright-lsp]`` asks for it)
============  ==========================================================  =============

A checker whose program is missing is a :class:`~greenloop.protocol.SetupError`,
never a silent green. Every checker has a timeout (``checkers.NAME.timeout_s``,
else ``checker_timeout_s``); the runner kills one that exceeds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from greenloop.devloop.config import (
    DEFAULT_CHECKER_TIMEOUT_S,
    DEFAULT_MAX_DIAGNOSTICS,
    PYPROJECT,
    CheckerSettings,
    Config,
    ConfigError,
    Format,
    Kind,
    Role,
)
from greenloop.devloop.detect import (
    detect_kinds,
    mypy_has_targets,
    mypy_supports_json,
    python_type_checker,
)
from greenloop.devloop.ignores import Ignores
from greenloop.devloop.mypy_cache import CacheGuard, cache_dir
from greenloop.devloop.programs import INSTALL_HINTS, LOCAL_BIN_DIRS, find_program, program_version
from greenloop.devloop.treestate import state_dir
from greenloop.protocol import SetupError

_MAX_LISTED_FILES = 5_000
"""Above this many Python files mypy is pointed at the folder instead of each file."""


@dataclass(frozen=True)
class Checker:
    """A checker ready to run: its argv (program resolved), output format, role and source.

    ``cache_guard`` protects an incremental cache greenloop owns (mypy's);
    ``builtin`` is True for greenloop's own command line, whose program may be
    asked ``--version`` (anything else is identified by its bytes instead);
    ``timeout_s`` is how long it may run before its process group is killed.
    """

    name: str
    argv: tuple[str, ...]
    format: Format
    role: Role
    source: str
    cache_guard: CacheGuard | None = None
    builtin: bool = False
    timeout_s: float = DEFAULT_CHECKER_TIMEOUT_S
    max_diagnostics: int = DEFAULT_MAX_DIAGNOSTICS
    """How many of its diagnostics a report keeps; the rest are counted (``max_diagnostics``)."""

    @property
    def program(self) -> str:
        """Absolute path of the program this checker runs."""
        return self.argv[0]


@dataclass(frozen=True)
class _Default:
    program: str
    role: Role
    source: str
    format: Format
    # (root, resolved program) -> (arguments after the program, output format)
    arguments: Callable[[Path, str, Config], tuple[list[str], Format]]


def _cargo(root: Path, program: str, config: Config) -> tuple[list[str], Format]:
    args = ["check", "--message-format=json", "--workspace", "--all-targets", "--color", "never"]
    return args, Format.CARGO_JSON


def _ruff(root: Path, program: str, config: Config) -> tuple[list[str], Format]:
    # --no-fix: a project's `fix = true` must never let a check rewrite the tree; nor
    # may ruff's cache land in it (a project's own linter would trip over it).
    cache = str(state_dir(root) / "ruff")
    return ["check", "--output-format=json", "--no-fix", "--cache-dir", cache], Format.RUFF_JSON


def _mypy(root: Path, program: str, config: Config) -> tuple[list[str], Format]:
    if mypy_supports_json(program_version(program)):
        args, fmt = ["-O", "json"], Format.MYPY_JSON
    else:
        args = ["--show-column-numbers", "--show-error-codes", "--no-error-summary"]
        fmt = Format.GNU
    args += ["--no-color-output", "--no-pretty", "--cache-dir", str(cache_dir(root))]
    if not mypy_has_targets(root):
        # The project's own file list honours .gitignore, which mypy's folder crawl does not.
        files = _python_files(root, config)
        args += files if len(files) <= _MAX_LISTED_FILES else ["."]
    return args, fmt


def _python_files(root: Path, config: Config) -> list[str]:
    return [p for p in Ignores(root, config.settings.ignore).files() if p.endswith((".py", ".pyi"))]


def _pyright(root: Path, program: str, config: Config) -> tuple[list[str], Format]:
    return ["--outputjson"], Format.PYRIGHT_JSON


def _tsc(root: Path, program: str, config: Config) -> tuple[list[str], Format]:
    return ["--noEmit", "--pretty", "false"], Format.TSC


def _language_server(root: Path, program: str, config: Config) -> tuple[list[str], Format]:
    return ["--stdio"], Format.LSP


BUILTINS: dict[str, _Default] = {
    "cargo": _Default("cargo", Role.AUTHORITATIVE, "rustc", Format.CARGO_JSON, _cargo),
    "ruff": _Default("ruff", Role.ADVISORY, "ruff", Format.RUFF_JSON, _ruff),
    "mypy": _Default("mypy", Role.AUTHORITATIVE, "mypy", Format.MYPY_JSON, _mypy),
    "pyright": _Default("pyright", Role.AUTHORITATIVE, "pyright", Format.PYRIGHT_JSON, _pyright),
    "tsc": _Default("tsc", Role.AUTHORITATIVE, "tsc", Format.TSC, _tsc),
    # Not detected: a resident node process is the user's call (`[checkers.pyright-lsp]`).
    "pyright-lsp": _Default(
        "pyright-langserver", Role.ADVISORY, "pyright", Format.LSP, _language_server
    ),
}
"""The checkers greenloop knows, by name."""


def default_checkers(root: Path, kinds: list[Kind]) -> list[str]:
    """Names of the built-in checkers for ``kinds``, in the order they are reported."""
    names: list[str] = []
    for kind in kinds:
        if kind is Kind.RUST:
            names.append("cargo")
        elif kind is Kind.PYTHON:
            names += ["ruff", python_type_checker(root)]
        elif kind is Kind.TYPESCRIPT:
            names.append("tsc")
    return names


def resolve_checkers(root: Path, config: Config) -> list[Checker]:
    """The checkers to run at ``root``, every program found.

    Raises :class:`SetupError` naming each missing program and how to install it,
    when nothing would check the project, or when no checker is authoritative.
    """
    settings = config.settings
    kinds = settings.kinds if settings.kinds is not None else detect_kinds(root)
    names = default_checkers(root, kinds)
    names += [n for n in settings.checkers if n not in names]
    checkers: list[Checker] = []
    missing: list[str] = []
    for name in names:
        override = settings.checkers.get(name, CheckerSettings())
        if not override.enabled:
            continue
        checker = _resolve(root, config, name, override)
        if isinstance(checker, str):
            missing.append(checker)
        else:
            checkers.append(checker)
    if missing:
        raise SetupError("; ".join(missing))
    if not checkers:
        raise SetupError(
            f"nothing to check in {root}: no Cargo.toml, pyproject.toml, setup.py, *.py or "
            "tsconfig.json, and no checkers configured (see docs/devloop.md)"
        )
    if not any(c.role is Role.AUTHORITATIVE for c in checkers):
        raise SetupError(
            "no authoritative checker is enabled ("
            + ", ".join(c.name for c in checkers)
            + " are advisory), so the tree could never turn green"
        )
    return checkers


def _resolve(root: Path, config: Config, name: str, override: CheckerSettings) -> Checker | str:
    default = BUILTINS.get(name)
    if default is None and override.command is None:
        raise ConfigError(
            f"{config.source}: checker {name!r} is not built in, so it needs a `command`"
        )
    wanted = override.command[0] if override.command else default.program if default else name
    program = find_program(wanted, root)
    if program is None:
        hint = override.install or INSTALL_HINTS.get(wanted) or f"install {wanted}"
        where = ", ".join(LOCAL_BIN_DIRS)
        return (
            f"checker {name!r} needs the program {wanted!r}, which is not in {where} or on "
            f"PATH — {hint}; or turn it off with `enabled = false` in "
            f"{_table(config, name)}"
        )
    if override.command is not None:
        argv = [program, *override.command[1:]]
        # The user's own command: never probed, so its format is theirs to state.
        fmt = override.format or (default.format if default else Format.GNU)
    else:
        assert default is not None  # a non-built-in without a command was refused above
        args, fmt = default.arguments(root, program, config)
        argv = [program, *args]
        fmt = override.format or fmt
    guard = None
    if name == "mypy" and override.command is None:
        guard = CacheGuard(cache_dir(root), tuple(_python_files(root, config)))
    return Checker(
        name=name,
        argv=tuple(argv),
        format=fmt,
        role=override.role or (default.role if default else Role.AUTHORITATIVE),
        source=override.source or (default.source if default else name),
        cache_guard=guard,
        # A language server has no `--version` to ask: it is identified by its bytes.
        builtin=default is not None and override.command is None and fmt is not Format.LSP,
        timeout_s=(
            override.timeout_s
            if override.timeout_s is not None
            else config.settings.checker_timeout_s
        ),
        max_diagnostics=config.settings.max_diagnostics,
    )


def _table(config: Config, name: str) -> str:
    if config.source is not None and config.source.name == PYPROJECT:
        return f"[tool.greenloop.checkers.{name}] in pyproject.toml"
    return f"[checkers.{name}] in greenloop.toml"
