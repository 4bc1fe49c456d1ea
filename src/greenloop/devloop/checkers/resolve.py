"""Resolving the checkers to run: the chosen ones (:mod:`.choose`), every program found.

This is the one place programs are looked up and asked their version; the
built-in checkers' modules only say what to make of them. A checker whose
program is missing is a :class:`~greenloop.protocol.SetupError`, never a silent
green. Every checker has a timeout (``checkers.NAME.timeout_s``, else
``checker_timeout_s``); the runner kills one that exceeds it.
:func:`explain_checkers` says what was chosen and why, and what each would run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greenloop.devloop.checkers.base import Checker, Evidence, Invocation
from greenloop.devloop.checkers.choose import Choice, Selection, choose_checkers
from greenloop.devloop.checkers.table import BUILTINS, INSTALL_HINTS
from greenloop.devloop.config import (
    PYPROJECT,
    CheckerSettings,
    Config,
    ConfigError,
    Format,
    Kind,
    Role,
    Settings,
)
from greenloop.devloop.programs import LOCAL_BIN_DIRS, find_program, program_version
from greenloop.protocol import SetupError


def default_checkers(root: Path, kinds: list[Kind]) -> list[str]:
    """The built-in checkers ``root`` gets for ``kinds`` with no settings, in report order."""
    return [c.name for c in choose_checkers(root, Config(Settings(kinds=kinds))).chosen]


def resolve_checkers(root: Path, config: Config) -> list[Checker]:
    """The checkers to run at ``root``, every program found.

    Raises :class:`SetupError` naming each missing program and how to install it,
    when nothing would check the project, or when no checker is authoritative.
    """
    checkers: list[Checker] = []
    missing: list[str] = []
    for choice in choose_checkers(root, config).chosen:
        checker = _resolve(root, config, choice)
        if isinstance(checker, str):
            missing.append(checker)
        else:
            checkers.append(checker)
    if missing:
        raise SetupError("; ".join(missing))
    if not checkers:
        raise SetupError(
            f"nothing to check in {root}: no Cargo.toml, pyproject.toml, setup.py, *.py or "
            "tsconfig.json, no linter a package.json project declares, and no checkers "
            "configured (see docs/devloop.md; `greenloop check --explain-checkers` says more)"
        )
    if not any(c.role is Role.AUTHORITATIVE for c in checkers):
        raise SetupError(
            "no authoritative checker is enabled ("
            + ", ".join(c.name for c in checkers)
            + " are advisory), so the tree could never turn green"
        )
    return checkers


@dataclass(frozen=True)
class Explanation:
    """What :func:`explain_checkers` found: the selection, and what each chosen checker runs.

    ``runs`` maps each chosen checker to its argv, or to why it cannot run
    (its program is missing).
    """

    root: Path
    selection: Selection
    runs: dict[str, tuple[str, ...] | str]

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready description (``greenloop check --explain-checkers --json``)."""
        chosen = []
        for choice in self.selection.chosen:
            runs = self.runs[choice.name]
            chosen.append(
                {
                    "name": choice.name,
                    "kind": choice.kind.value if choice.kind else None,
                    "role": choice.role.value,
                    "why": choice.why,
                    "evidence": [_evidence(e) for e in choice.evidence],
                    "arguments": list(choice.declared),
                    "arguments_from": _evidence(choice.arguments_from)
                    if choice.arguments_from
                    else None,
                    "command": list(runs) if isinstance(runs, tuple) else None,
                    "missing": runs if isinstance(runs, str) else None,
                }
            )
        return {
            "root": str(self.root),
            "kinds": {kind.value: marker for kind, marker in self.selection.kinds.items()},
            "chosen": chosen,
            "skipped": [
                {"name": s.name, "why": s.why, "evidence": [_evidence(e) for e in s.evidence]}
                for s in self.selection.skipped
            ],
            "not_followed": [
                {**_evidence(u.evidence), "why": u.why} for u in self.selection.unfollowed
            ],
            "problems": list(self.selection.problems),
        }


def explain_checkers(root: Path, config: Config) -> Explanation:
    """Which checkers would run at ``root`` and why, each program looked up but none run.

    Unlike :func:`resolve_checkers`, a missing program is reported, not raised.
    """
    selection = choose_checkers(root, config)
    runs: dict[str, tuple[str, ...] | str] = {}
    for choice in selection.chosen:
        checker = _resolve(root, config, choice)
        runs[choice.name] = checker if isinstance(checker, str) else checker.argv
    return Explanation(root, selection, runs)


def _evidence(evidence: Evidence) -> dict[str, Any]:
    command = list(evidence.command) if evidence.command is not None else None
    return {"file": evidence.file, "key": evidence.key, "command": command}


def _resolve(root: Path, config: Config, choice: Choice) -> Checker | str:
    name = choice.name
    override = config.settings.checkers.get(name, CheckerSettings())
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
        run = Invocation(
            root, program, config, functools.partial(program_version, program), choice.declared
        )
        args, fmt = default.arguments(run)
        argv = [program, *args]
        fmt = override.format or fmt
        guard = default.cache_guard(run) if default.cache_guard is not None else None
    return Checker(
        name=name,
        argv=tuple(argv),
        format=fmt,
        role=override.role or choice.role,
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
