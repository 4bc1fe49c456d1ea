"""``pyright-lsp``: ``pyright-langserver --stdio``, advisory, kept warm between rounds.

Never detected: a resident node process is the user's call, so it runs only
when ``[checkers.pyright-lsp]`` names it. Its format is ``lsp`` (see
:mod:`greenloop.devloop.lsp`), which no parser reads.
"""

from __future__ import annotations

from greenloop.devloop.checkers import pyright
from greenloop.devloop.checkers.base import Builtin, Invocation
from greenloop.devloop.config import Format, Role


def _arguments(run: Invocation) -> tuple[list[str], Format]:
    return ["--stdio"], Format.LSP


CHECKER = Builtin(
    name="pyright-lsp",
    program="pyright-langserver",
    role=Role.ADVISORY,
    source="pyright",
    format=Format.LSP,
    install=pyright.INSTALL,
    arguments=_arguments,
)
"""The built-in ``pyright-lsp`` checker."""
