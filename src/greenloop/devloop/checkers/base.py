"""The two shapes of a checker: a built-in definition, and one resolved and ready to run."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from greenloop.devloop.checkers.formats import OutputFormat
from greenloop.devloop.config import (
    DEFAULT_CHECKER_TIMEOUT_S,
    DEFAULT_MAX_DIAGNOSTICS,
    Config,
    Format,
    Kind,
    Role,
)
from greenloop.devloop.mypy_cache import CacheGuard


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
class Invocation:
    """What a built-in checker's command line is worked out from.

    ``version`` asks the program its version (cached while the executable is
    unchanged); it runs only when a checker calls it, so checkers whose
    arguments never depend on it cost no ``--version`` at resolution.
    """

    root: Path
    program: str
    """The absolute path of the program that was found."""
    config: Config
    version: Callable[[], str]
    declared: tuple[str, ...] = ()
    """The arguments carried over from the project's own command for this tool (its
    paths and the options that change what is checked); empty when there is none."""


@dataclass(frozen=True)
class Evidence:
    """One place a project declares a tool: ``file`` (relative to the root) and ``key`` in it.

    ``command`` is the project's own command line for the tool there, launchers
    taken off (``("flake8", "src")``), when the place is a command and not a config.
    """

    file: str
    key: str
    command: tuple[str, ...] | None = None

    def __str__(self) -> str:
        where = f"{self.file} {self.key}".strip()
        return f"{where}: {' '.join(self.command)}" if self.command else where


class Claimed(NamedTuple):
    """A project's command recognised as a checker's: what to carry over, and if it is a fixer.

    ``fixes`` is True for a command that rewrites files (``ruff check --fix``,
    ``eslint --fix``, ``ruff format`` without ``--check``): in a pre-commit hook
    that still fails when it changed something, but elsewhere it is no check.
    """

    args: tuple[str, ...]
    fixes: bool = False


Claim = Callable[[Sequence[str]], Claimed | None]
"""``(a project's command, launchers off) -> what it carries over``; None if not this tool's."""


def _nothing(root: Path) -> list[Evidence]:
    return []


def _no_claim(argv: Sequence[str]) -> Claimed | None:
    return None


@dataclass(frozen=True)
class Builtin:
    """A checker greenloop knows: everything about it but where its program is.

    ``arguments`` gives what follows the program and the output format it then
    prints (mypy's depends on its version, and any checker's on the arguments
    carried over from the project's own command); ``format`` is the format a
    user's own ``command`` for it is read as unless they say otherwise.

    Its detection: ``kind`` is the kind of project it checks (None: only when
    ``[checkers.NAME]`` names it). It runs where the project declares it —
    ``configs`` finds its own config files at the root, ``hooks`` maps the
    pre-commit hook ids that run it to the command each stands for, and
    ``claims`` recognises the project's commands that run it (a CI step, a tox
    line, a ``package.json`` script) and keeps their arguments. ``default``
    makes it one of its kind's checkers for a project that declares none.

    ``outputs`` are the parsers of the formats it brings; ``cache_guard``, the
    cache greenloop keeps honest for it.
    """

    name: str
    program: str
    role: Role
    source: str
    format: Format
    install: str
    """How to get ``program``, shown when it is missing."""
    arguments: Callable[[Invocation], tuple[list[str], Format]]
    kind: Kind | None = None
    default: bool = False
    configs: Callable[[Path], list[Evidence]] = _nothing
    hooks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    claims: Claim = _no_claim
    outputs: Mapping[Format, OutputFormat] = field(default_factory=dict)
    cache_guard: Callable[[Invocation], CacheGuard] | None = None
