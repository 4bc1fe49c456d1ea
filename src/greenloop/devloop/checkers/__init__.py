"""Which checkers vouch for a project: detected defaults, overridden by the settings.

A built-in checker is one module, as a language is in pre-commit: its
arguments, output parser, detection, install hint and the use it makes of its
program's version, as one :class:`~greenloop.devloop.checkers.base.Builtin`
named ``CHECKER`` — ``cargo``, ``ruff``, ``ruff_format``, ``flake8``, ``mypy``,
``pyright``, ``tsc``, ``eslint``, ``biome`` and ``pyright_lsp``
(``pyright-langserver --stdio``, only when ``[checkers.pyright-lsp]`` asks for
it). What they share lives beside them:

- ``base``: the definition type, the evidence a project gives for a checker,
  and the resolved :class:`Checker`;
- ``formats``: the pieces every parser is built from, and the generic ``gnu``
  and LSP formats;
- ``detect``: the project kinds at the root, and readers of tools' configs;
- ``commands``: reading a project's command lines (shell split, launchers off,
  the arguments a checker keeps);
- ``declared``: the commands and pre-commit hooks a project declares, wherever;
- ``table``: the built-in table assembled from the modules, and reading a
  checker's output in its format;
- ``choose``: which checkers run and why — what the project declares, else
  its kinds' defaults, then the settings;
- ``resolve``: the chosen checkers with every program found.
"""

from greenloop.devloop.checkers.base import Builtin, Checker
from greenloop.devloop.checkers.resolve import (
    Explanation,
    default_checkers,
    explain_checkers,
    resolve_checkers,
)
from greenloop.devloop.checkers.table import BUILTINS

__all__ = [
    "BUILTINS",
    "Builtin",
    "Checker",
    "Explanation",
    "default_checkers",
    "explain_checkers",
    "resolve_checkers",
]
