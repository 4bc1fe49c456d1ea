"""What the parts of a translation share: what it could not translate, the names taken."""

from __future__ import annotations

import builtins
import keyword
import re
from typing import Any

from greenloop.cli._github_actions.scope import Scope

_RESERVED = {"gl", "ci", *keyword.kwlist, *dir(builtins)}
_SHARED = ("str", "loop")
"""Kinds of variable several jobs may each use: a cell's value, the chain in a loop."""


def slug(value: str) -> str:
    """``value`` as a piece of a step key: lower-case words joined by ``-``."""
    return re.sub(r"[^A-Za-z0-9_]+", "-", value).strip("-_").lower()[:60].rstrip("-_")


def identifier(value: str) -> str:
    """``value`` as a Python variable name (before it is made unique)."""
    name = re.sub(r"\W+", "_", value, flags=re.ASCII).strip("_").lower() or "job"
    return f"_{name}" if name[0].isdigit() else name


class Book:
    """What every part of one translation shares: the workflow, what it could not
    translate, and the variables and step keys taken."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.jobs: dict[str, dict[str, Any]] = doc["jobs"]
        self.missed: list[str] = []
        self.names: dict[str, str] = {"cell": "cell", "chain": "loop"}
        """Python variable -> what it holds; only cells' values and loop chains are shared."""
        self.keys: set[str] = set()
        self.services: dict[str, tuple[str, str]] = {}
        """Service name -> (the source of its declaration, its variable)."""

    def _name(self, base: str, kind: str) -> str:
        """A variable for ``kind``, taken by no other kind (``str`` ones are shared)."""
        name, n = base, 2
        while name in _RESERVED or (
            name in self.names and not (self.names[name] == kind and kind in _SHARED)
        ):
            name, n = f"{base}_{n}", n + 1
        self.names[name] = kind
        return name

    def _key(self, job_id: str, label: str) -> str:
        words = slug(label)
        if len(words) > 40:  # a long command's: its first words
            words = words[:40].rsplit("-", 1)[0]
        base = f"{slug(job_id) or 'job'}.{words or 'step'}"
        key, n = base, 2
        while key in self.keys:
            key, n = f"{base}-{n}", n + 1
        self.keys.add(key)
        return key

    def _miss(self, where: str, what: str) -> str:
        """Record ``what`` (at ``where``) as not translated; return the comment marking it."""
        self.missed.append(f"{where}: {what}")
        return f"not translated: {what}"

    def _expressions(
        self, scope: Scope, where: str, within: str, found: list[str] | None = None
    ) -> list[str]:
        """Comments for the expressions ``scope`` could not translate (or ``found``) in
        ``within``."""
        comments = []
        for expr in scope.take()[1] if found is None else found:
            why = scope.hints.get(expr, "a GitHub expression, kept as written")
            comments.append(self._miss(where, f"{expr}{within} ({why})"))
        return comments
