"""Resolving the checkers to run: detected built-ins plus the settings, every program found.

This is the one place programs are looked up and asked their version; the
built-in checkers' modules only say what to make of them. A checker whose
program is missing is a :class:`~greenloop.protocol.SetupError`, never a silent
green. Every checker has a timeout (``checkers.NAME.timeout_s``, else
``checker_timeout_s``); the runner kills one that exceeds it.
"""

from __future__ import annotations

import functools
from pathlib import Path

from greenloop.devloop.checkers.base import Checker, Invocation
from greenloop.devloop.checkers.detect import detect_kinds
from greenloop.devloop.checkers.table import BUILTINS, INSTALL_HINTS
from greenloop.devloop.config import (
    PYPROJECT,
    CheckerSettings,
    Config,
    ConfigError,
    Format,
    Kind,
    Role,
)
from greenloop.devloop.programs import LOCAL_BIN_DIRS, find_program, program_version
from greenloop.protocol import SetupError


def default_checkers(root: Path, kinds: list[Kind]) -> list[str]:
    """Names of the built-in checkers for ``kinds``, in the order they are reported."""
    return [
        b.name for kind in kinds for b in BUILTINS.values() if b.kind is kind and b.wanted(root)
    ]


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
    guard = None
    if override.command is not None:
        argv = [program, *override.command[1:]]
        # The user's own command: never probed, so its format is theirs to state.
        fmt = override.format or (default.format if default else Format.GNU)
    else:
        assert default is not None  # a non-built-in without a command was refused above
        # Bound here rather than imported by the checker: probing programs stays in this module.
        run = Invocation(root, program, config, functools.partial(program_version, program))
        args, fmt = default.arguments(run)
        argv = [program, *args]
        fmt = override.format or fmt
        guard = default.cache_guard(run) if default.cache_guard is not None else None
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
