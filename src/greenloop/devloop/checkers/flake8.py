"""``flake8``: ``flake8 --format=default``, advisory, where the project lints with flake8.

Never a default: it runs where the project configures flake8 (``.flake8``,
``[flake8]`` in ``setup.cfg`` or ``tox.ini``) or runs it (a pre-commit hook,
tox, nox, CI), keeping the paths and the options that change what is reported
(``--max-line-length``, ``--select``…). ``--format=default`` undoes a config's
own ``format``, so every line reads ``path:row:col: CODE text``; flake8 fails
on any of them, so each is an error, its code (``E501``, ``F401``) in ``code``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from greenloop.devloop.checkers.base import Builtin, Evidence, Invocation
from greenloop.devloop.checkers.commands import Options, claims_for
from greenloop.devloop.checkers.detect import config_files, ini_sections
from greenloop.devloop.checkers.formats import Found, Lines, OutputFormat, both_streams, found_at
from greenloop.devloop.config import Format, Kind, Role
from greenloop.protocol import Severity

_LINE = re.compile(
    r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+): (?P<code>[A-Z]+[0-9]+) (?P<msg>.*)$"
)

_OPTIONS = Options(
    keep={
        "--config": True,
        "--append-config": True,
        "--isolated": False,
        "--select": True,
        "--extend-select": True,
        "--ignore": True,
        "--extend-ignore": True,
        "--per-file-ignores": True,
        "--exclude": True,
        "--extend-exclude": True,
        "--filename": True,
        "--max-line-length": True,
        "--max-doc-length": True,
        "--max-complexity": True,
        "--indent-size": True,
        "--hang-closing": False,
        "--builtins": True,
        "--doctests": False,
        "--require-plugins": True,
        "--enable-extensions": True,
    },
    valued=frozenset({"--format", "--output-file", "-j", "--jobs", "--stdin-display-name"}),
)


def flake8(stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """``flake8 --format=default``: ``path:row:col: CODE text``, every one an error."""
    for line in both_streams(stdout, stderr):
        if match := _LINE.match(line):
            yield found_at(
                match["path"],
                int(match["line"]),
                int(match["col"]),
                Severity.ERROR,
                match["msg"],
                source,
                base,
                match["code"],
            )


def configs(root: Path) -> list[Evidence]:
    """Where the project configures flake8 (flake8 reads no ``pyproject.toml``)."""
    return config_files(root, (".flake8",)) + ini_sections(root, "flake8", ("setup.cfg", "tox.ini"))


def _arguments(run: Invocation) -> tuple[list[str], Format]:
    return ["--format=default", "--no-show-source", *run.declared], Format.FLAKE8


CHECKER = Builtin(
    name="flake8",
    program="flake8",
    role=Role.ADVISORY,
    source="flake8",
    format=Format.FLAKE8,
    install="pip install flake8 (in the project's .venv or on PATH)",
    arguments=_arguments,
    kind=Kind.PYTHON,
    configs=configs,
    hooks={"flake8": ("flake8",)},
    claims=claims_for("flake8", _OPTIONS),
    outputs={Format.FLAKE8: OutputFormat(flake8)},
)
"""The built-in ``flake8`` checker."""
