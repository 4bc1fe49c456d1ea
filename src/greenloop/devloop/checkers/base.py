"""The two shapes of a checker: a built-in definition, and one resolved and ready to run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

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


def _always(root: Path) -> bool:
    return True


@dataclass(frozen=True)
class Builtin:
    """A checker greenloop knows: everything about it but where its program is.

    ``arguments`` gives what follows the program and the output format it then
    prints (mypy's depends on its version); ``format`` is the format a user's own
    ``command`` for it is read as unless they say otherwise. ``kind`` and
    ``wanted`` are its detection: it is a default for projects of that kind
    whose root it wants (``kind=None``: only when ``[checkers.NAME]`` names it).
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
    wanted: Callable[[Path], bool] = _always
    outputs: Mapping[Format, OutputFormat] = field(default_factory=dict)
    cache_guard: Callable[[Invocation], CacheGuard] | None = None
