"""Which checkers run, and why: what the project declares, else its kind's defaults.

The rules, for each kind of project found at the root (or named in ``kinds``):

1. A checker the project declares — its tool's config file, a pre-commit hook,
   a command in a ``lint``/``typecheck`` script, tox, nox, the greenloop
   pipeline or CI — runs. Declaring mypy and pyright runs both.
2. Once a project declares any checker of a kind, the others of that kind do
   not run: a project that lints with flake8 is not also held to ruff's
   defaults it never chose.
3. A kind whose project declares none gets that kind's defaults (ruff and mypy
   for Python, tsc for TypeScript, cargo for Rust; JavaScript has none), which
   is how a project with no configuration was always checked.
4. ``[checkers.NAME]`` in the settings adds (or, with ``enabled = false``,
   removes) a checker, whatever was found.
5. When nothing chosen is authoritative (a project whose only checks are
   linters), the chosen linters are: they are what the project's own checks
   come to, so they decide green.

The project's command for a tool also gives the arguments greenloop keeps
(its paths and the options that change the verdict), from the first place
that runs it (see :func:`~greenloop.devloop.checkers.declared.read_declarations`
for the order). :class:`Selection` keeps every reason, for ``greenloop check
--explain-checkers``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path

from greenloop.devloop.checkers.base import Builtin, Claimed, Evidence
from greenloop.devloop.checkers.commands import unwrap
from greenloop.devloop.checkers.declared import Command, Hook, read_declarations
from greenloop.devloop.checkers.detect import KIND_MARKERS, kind_markers
from greenloop.devloop.checkers.table import BUILTINS
from greenloop.devloop.config import CheckerSettings, Config, Kind, Role

_NO_CHECKS = frozenset(
    {"npm", "yarn", "pnpm", "bun", "node", "echo", "printf", "exit", "true", "false", "test"}
    | {"[", "cd", "set", "export", "rm", "mkdir", "cp", "mv", "run-s", "run-p", "npm-run-all"}
)
"""Programs in a lint script that check nothing themselves (a script runner, the shell's
own words), so not following them is not worth saying."""


@dataclass(frozen=True)
class Choice:
    """A checker that runs: why, on what evidence, and with which of the project's arguments.

    ``role`` is the one detection gives it (a ``role`` setting still overrides
    it); ``declared`` are the arguments carried over from ``arguments_from``.
    """

    name: str
    kind: Kind | None
    role: Role
    why: str
    evidence: tuple[Evidence, ...] = ()
    declared: tuple[str, ...] = ()
    arguments_from: Evidence | None = None


@dataclass(frozen=True)
class Skip:
    """A checker considered and not run, and why (with any evidence that was found for it)."""

    name: str
    why: str
    evidence: tuple[Evidence, ...] = ()


@dataclass(frozen=True)
class Unfollowed:
    """A check the project declares that greenloop does not run, and why."""

    evidence: Evidence
    why: str


@dataclass(frozen=True)
class Selection:
    """The checkers chosen for a project, those skipped, and what could not be followed.

    ``kinds`` maps each kind checked to what shows it (a marker file, or
    ``settings`` when ``kinds`` names it); ``problems`` are sources that could
    not be read.
    """

    kinds: dict[Kind, str]
    chosen: tuple[Choice, ...]
    skipped: tuple[Skip, ...]
    unfollowed: tuple[Unfollowed, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass
class _Found:
    """What the project declares, per built-in checker."""

    evidence: dict[str, list[Evidence]]
    carried: dict[str, tuple[tuple[str, ...], Evidence]] = field(default_factory=dict)
    unfollowed: list[Unfollowed] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def choose_checkers(root: Path, config: Config) -> Selection:
    """The checkers to run at ``root`` under ``config``, with the reasons (module docstring)."""
    settings = config.settings
    if settings.kinds is not None:
        kinds = {kind: "settings" for kind in settings.kinds}
    else:
        kinds = kind_markers(root)
    found = _declared(root)
    chosen: list[Choice] = []
    skipped: list[Skip] = []
    for kind in kinds:
        _choose_kind(kind, found, chosen, skipped)
    for builtin in BUILTINS.values():
        if builtin.kind not in kinds:
            skipped.append(_elsewhere(builtin, found, settings.kinds is not None))
    _apply_settings(config, found, chosen, skipped)
    return Selection(
        kinds=kinds,
        chosen=tuple(_promoted(chosen, config)),
        skipped=tuple(skipped),
        unfollowed=tuple(found.unfollowed),
        problems=tuple(found.problems),
    )


def _choose_kind(kind: Kind, found: _Found, chosen: list[Choice], skipped: list[Skip]) -> None:
    members = [b for b in BUILTINS.values() if b.kind is kind]
    declared = [b.name for b in members if found.evidence[b.name]]
    for builtin in members:
        if declared and builtin.name in declared:
            chosen.append(_choice(builtin, found, "the project declares it"))
        elif declared:
            names = ", ".join(declared)
            skipped.append(
                Skip(
                    builtin.name,
                    f"the project declares its {kind} checkers ({names}), not this one",
                )
            )
        elif builtin.default:
            why = f"a default for {kind} projects, as this one declares no {kind} checker"
            chosen.append(_choice(builtin, found, why))
        else:
            why = f"not declared by the project, and no default for {kind} projects"
            skipped.append(Skip(builtin.name, why))


def _choice(builtin: Builtin, found: _Found, why: str) -> Choice:
    declared, source = found.carried.get(builtin.name, ((), None))
    return Choice(
        name=builtin.name,
        kind=builtin.kind,
        role=builtin.role,
        why=why,
        evidence=tuple(found.evidence.get(builtin.name, ())),
        declared=declared,
        arguments_from=source,
    )


def _elsewhere(builtin: Builtin, found: _Found, by_settings: bool) -> Skip:
    if builtin.kind is None:
        return Skip(builtin.name, f"runs only when [checkers.{builtin.name}] names it")
    evidence = tuple(found.evidence[builtin.name])
    if by_settings:
        return Skip(builtin.name, f"the `kinds` setting leaves out {builtin.kind}", evidence)
    marker = KIND_MARKERS[builtin.kind]
    return Skip(builtin.name, f"no {builtin.kind} project here (no {marker})", evidence)


def _apply_settings(
    config: Config, found: _Found, chosen: list[Choice], skipped: list[Skip]
) -> None:
    """``[checkers.NAME]`` adds a checker, or takes one away with ``enabled = false``."""
    table = _settings_table(config)
    for name, override in config.settings.checkers.items():
        index = next((i for i, c in enumerate(chosen) if c.name == name), None)
        if not override.enabled:
            earlier = chosen.pop(index).evidence if index is not None else ()
            skipped[:] = [s for s in skipped if s.name != name]
            skipped.append(Skip(name, f"turned off in {table} (enabled = false)", earlier))
            continue
        if index is not None:
            continue
        builtin = BUILTINS.get(name)
        skipped[:] = [s for s in skipped if s.name != name]
        where = Evidence(config.source.name if config.source else "settings", f"[{table}.{name}]")
        if builtin is None:
            chosen.append(Choice(name, None, Role.AUTHORITATIVE, "named in the settings", (where,)))
        else:
            choice = _choice(builtin, found, "named in the settings")
            chosen.append(replace(choice, evidence=(where, *choice.evidence)))


def _settings_table(config: Config) -> str:
    if config.source is not None and config.source.name == "pyproject.toml":
        return "tool.greenloop.checkers"
    return "checkers"


def _promoted(chosen: list[Choice], config: Config) -> list[Choice]:
    """Linters made authoritative when nothing chosen is (rule 5 of the module docstring)."""
    overrides = config.settings.checkers

    def role(choice: Choice) -> Role:
        return overrides.get(choice.name, CheckerSettings()).role or choice.role

    if not chosen or any(role(c) is Role.AUTHORITATIVE for c in chosen):
        return chosen
    why = "; authoritative, since no type checker runs: the project's checks are its linters"
    return [
        replace(c, role=Role.AUTHORITATIVE, why=c.why + why)
        if c.kind is not None and overrides.get(c.name, CheckerSettings()).role is None
        else c
        for c in chosen
    ]


def _declared(root: Path) -> _Found:
    """Every built-in checker's evidence at ``root``, and its arguments' first source."""
    declarations = read_declarations(root)
    found = _Found(
        evidence={b.name: list(b.configs(root)) for b in BUILTINS.values()},
        problems=list(declarations.problems),
    )
    for command in declarations.commands:
        _follow(command, found)
    for hook in declarations.hooks:
        runs = _hook_command(hook)
        if runs is None:
            why = f"no built-in checker runs the pre-commit hook `{hook.id}`"
            found.unfollowed.append(Unfollowed(hook.evidence, why))
        else:
            _follow(runs, found)
    return found


def _follow(command: Command, found: _Found) -> None:
    claim: tuple[Builtin, Claimed] | None = None
    for builtin in BUILTINS.values():
        claimed = builtin.claims(command.argv)
        if claimed is not None:
            claim = builtin, claimed
            break
    if claim is None:
        if command.lint and command.argv[0] not in _NO_CHECKS:
            why = (
                f"greenloop has no built-in checker for `{command.argv[0]}`; "
                "a [checkers.NAME] table with its `command` runs it"
            )
            found.unfollowed.append(Unfollowed(command.evidence, why))
        return
    builtin, claimed = claim
    if claimed.fixes and not command.hook:
        # A pre-commit hook that rewrites a file fails; a fixer in a script or CI does not.
        why = "it rewrites files rather than checking them"
        found.unfollowed.append(Unfollowed(command.evidence, why))
        return
    found.evidence[builtin.name].append(command.evidence)
    found.carried.setdefault(builtin.name, (claimed.args, command.evidence))


def _hook_command(hook: Hook) -> Command | None:
    """The command a pre-commit hook runs: a local hook's ``entry``, else the known hook id's."""
    if hook.entry is not None:
        try:
            entry = shlex.split(hook.entry)
        except ValueError:
            return None
        argv = unwrap([*entry, *hook.args])
    else:
        builtin = next((b for b in BUILTINS.values() if hook.id in b.hooks), None)
        if builtin is None:
            return None
        argv = [*builtin.hooks[hook.id], *hook.args]
    if not argv:
        return None
    evidence = Evidence(hook.evidence.file, hook.evidence.key, tuple(argv))
    return Command(tuple(argv), evidence, lint=True, hook=True)
