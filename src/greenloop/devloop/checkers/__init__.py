"""Which checkers vouch for a project: detected defaults, overridden by the settings.

A built-in checker is one module, as a language is in pre-commit: its
arguments, output parser, detection, install hint and the use it makes of its
program's version, as one :class:`~greenloop.devloop.checkers.base.Builtin`
named ``CHECKER`` — ``cargo``, ``ruff``, ``mypy``, ``pyright``, ``tsc`` and
``pyright_lsp`` (``pyright-langserver --stdio``, only when
``[checkers.pyright-lsp]`` asks for it). What they share lives beside them:

- ``base``: the definition type and the resolved :class:`Checker`;
- ``formats``: the pieces every parser is built from, and the generic ``gnu``
  and LSP formats;
- ``detect``: the project kinds at the root, and readers of tools' configs;
- ``table``: the built-in table assembled from the modules, and reading a
  checker's output in its format;
- ``resolve``: detected defaults plus the settings, every program found.
"""

from greenloop.devloop.checkers.base import Builtin, Checker
from greenloop.devloop.checkers.resolve import default_checkers, resolve_checkers
from greenloop.devloop.checkers.table import BUILTINS

__all__ = ["BUILTINS", "Builtin", "Checker", "default_checkers", "resolve_checkers"]
