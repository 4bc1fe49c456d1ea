"""Reading the commands a project runs: shell lines split, wrappers taken off, options kept.

A project says how it checks itself in command lines (a CI step's ``run``, a
tox ``commands`` line, a ``package.json`` script, a pre-commit hook's ``entry``
and ``args``). Greenloop runs the same tool itself, with its own machine-readable
output flags, so from such a line it needs three things, all here:

- :func:`shell_commands`: the simple commands in a piece of shell
  (``ruff check . && mypy src`` is two);
- :func:`unwrap`: the tool under its launchers (``python -m``, ``uv run``,
  ``npx``…), named by its program's base name;
- :func:`carry`: the arguments of the project's command that decide *what* is
  checked and *how strictly* (paths, ``--config``, ``--max-line-length``…),
  per an allow-list the checker's module gives; anything else (``--fix``,
  output formats, caches) is dropped, so the project's line can never make a
  check rewrite the tree or print what greenloop cannot read.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from greenloop.devloop.checkers.base import Claim, Claimed

_SEPARATORS = frozenset({"&&", "||", ";", ";;", "|", "|&", "&", "(", ")", "{", "}"})
_SHELL_WORDS = frozenset(
    {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "esac", "!"}
    | {"time", "exec", "command"}
)
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"^python[0-9.]*$")

# Launchers that run their first non-option argument as the tool, and the options of
# theirs that take a value (so the value is not mistaken for the tool).
_RUNNERS: dict[tuple[str, ...], frozenset[str]] = {
    ("uv", "run"): frozenset(
        {"--with", "--group", "--extra", "--python", "-p", "--directory", "--project", "--package"}
    ),
    ("uv", "tool", "run"): frozenset({"--from", "--with", "--python", "-p"}),
    ("uvx",): frozenset({"--from", "--with", "--python", "-p"}),
    ("poetry", "run"): frozenset({"--directory", "-C", "--project", "-P"}),
    ("pdm", "run"): frozenset({"-p", "--project"}),
    ("pipenv", "run"): frozenset(),
    ("rye", "run"): frozenset(),
    ("pipx", "run"): frozenset({"--spec", "--python"}),
    ("npx",): frozenset({"-p", "--package"}),
    ("pnpx",): frozenset(),
    ("bunx",): frozenset(),
    ("npm", "exec"): frozenset({"-p", "--package", "-w", "--workspace"}),
    ("pnpm", "exec"): frozenset(),
    ("pnpm", "dlx"): frozenset(),
    ("yarn", "exec"): frozenset(),
    ("yarn", "dlx"): frozenset(),
    ("bun", "x"): frozenset(),
    ("env",): frozenset({"-u", "--unset", "-C", "--chdir"}),
}
_PACKAGE_PROGRAMS = {"@biomejs/biome": "biome"}
"""npm packages whose name is not their program's (``npx @biomejs/biome check``)."""
_MAX_UNWRAP = 8
"""Launchers peeled off one command at most (``uv run python -m mypy`` is two)."""


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands in ``script``: one argv per command, in order.

    Lines are joined at a trailing backslash; ``&&``, ``||``, ``;``, pipes and
    subshell parentheses separate commands; ``#`` starts a comment. A line the
    shell could not parse either (an unclosed quote) is skipped.
    """
    commands: list[list[str]] = []
    for line in script.replace("\\\r\n", " ").replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        try:
            for token in lexer:
                if token in _SEPARATORS:
                    if current:
                        commands.append(current)
                    current = []
                else:
                    current.append(token)
        except ValueError:
            continue
        if current:
            commands.append(current)
    return commands


def unwrap(argv: Sequence[str]) -> list[str]:
    """``argv`` with its launchers taken off, its program named by its base name.

    ``FOO=1 uv run python -m mypy src`` is ``["mypy", "src"]``;
    ``./node_modules/.bin/eslint .`` is ``["eslint", "."]``; ``npx @biomejs/biome
    check`` is ``["biome", "check"]``. A command with no tool left is ``[]``.
    """
    args = list(argv)
    for _ in range(_MAX_UNWRAP):
        while args and (args[0] in _SHELL_WORDS or _ASSIGNMENT.match(args[0])):
            args = args[1:]
        if not args:
            return []
        name = program_name(args[0])
        if _PYTHON.match(name) and len(args) >= 3 and args[1] == "-m":
            args = args[2:]
            continue
        runner = next(
            (
                (words, valued)
                for words, valued in _RUNNERS.items()
                if (name, *args[1 : len(words)]) == words
            ),
            None,
        )
        if runner is None:
            break
        words, valued = runner
        args = _skip_options(args[len(words) :], valued)
    if args:
        args[0] = program_name(args[0])
    return args


def program_name(word: str) -> str:
    """The tool a command word names: ``.venv/bin/ruff`` → ``ruff``, ``eslint@9`` → ``eslint``."""
    if word.startswith("@"):
        # An npm package, @scope/name[@version], named after the program it brings.
        package = word if word.count("@") == 1 else word[: word.index("@", 1)]
        return _PACKAGE_PROGRAMS.get(package, package)
    return re.split(r"[@=<>~!]", PurePosixPath(word).name, maxsplit=1)[0]


def _skip_options(args: list[str], valued: frozenset[str]) -> list[str]:
    # A launcher's own options come before the tool; `--` ends them.
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] == "--":
            return args[i + 1 :]
        i += 2 if args[i] in valued else 1
    return args[i:]


@dataclass(frozen=True)
class Options:
    """Which of a tool's arguments a checker keeps from the project's command.

    ``keep`` maps each kept option to whether it takes a value; ``valued`` names
    the dropped options that take one, so their value is not taken for a path.
    ``prefixes`` keeps every option starting with one of them (mypy's many
    ``--warn-…``/``--disallow-…`` flags), as flags without a value unless given
    as ``--opt=value``. Positional arguments (paths, modules) are always kept.
    """

    keep: Mapping[str, bool] = field(default_factory=dict)
    valued: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    fixes: frozenset[str] = frozenset()
    """Options that make the tool rewrite files (``--fix``, ``--write``); always dropped."""


def carry(args: Sequence[str], options: Options) -> tuple[str, ...]:
    """The arguments of ``args`` (a tool's, after its name) that ``options`` keeps."""
    kept: list[str] = []
    it: Iterator[str] = iter(args)
    for arg in it:
        if arg == "--":
            kept.extend(it)
            break
        if not arg.startswith("-") or arg == "-":
            kept.append(arg)
            continue
        name, has_value, _ = arg.partition("=")
        if name in options.keep:
            kept.append(arg)
            if options.keep[name] and not has_value:
                value = next(it, None)
                if value is not None:
                    kept.append(value)
        elif any(name.startswith(p) for p in options.prefixes):
            kept.append(arg)
        elif name in options.valued and not has_value:
            next(it, None)
    return tuple(kept)


def claims_for(program: str, options: Options) -> Claim:
    """The usual ``claims``: a command running ``program``, its arguments kept per ``options``."""

    def claims(argv: Sequence[str]) -> Claimed | None:
        if not argv or argv[0] != program:
            return None
        return Claimed(carry(argv[1:], options), fixes(argv[1:], options))

    return claims


def fixes(args: Sequence[str], options: Options) -> bool:
    """True when ``args`` ask the tool to rewrite files."""
    return any(arg.partition("=")[0] in options.fixes for arg in args)


def positional(args: Sequence[str], options: Options) -> list[str]:
    """The positional arguments among ``args`` (carried ones): the paths a tool is pointed at."""
    found: list[str] = []
    it = iter(args)
    for arg in it:
        if not arg.startswith("-") or arg == "-":
            found.append(arg)
        elif "=" not in arg and options.keep.get(arg):
            next(it, None)
    return found
