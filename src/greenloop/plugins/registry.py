"""One registry for every plugin kind, found through entry points.

Built-in plugins are registered through the same entry points as third-party
ones (see ``pyproject.toml``), so there is exactly one way in.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

from greenloop.plugins.spec import Executor
from greenloop.protocol import PluginError, PluginFailure
from greenloop.store import Store

PluginKind = Literal["executor", "hook", "formatter"]
GROUPS: dict[PluginKind, str] = {
    "executor": "greenloop.executors",
    "hook": "greenloop.hooks",
    "formatter": "greenloop.formatters",
}


@dataclass(frozen=True)
class PluginInfo:
    """A plugin found on this machine."""

    name: str
    kind: PluginKind
    transport: Literal["in-process", "stdio"]
    version: str
    target: str


def _entry_points(kind: PluginKind) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUPS[kind])}


def available(kind: PluginKind) -> list[str]:
    """Names of the installed plugins of ``kind``."""
    return sorted(_entry_points(kind))


def load(kind: PluginKind, name: str) -> Any:
    """The object a plugin's entry point names; unknown names raise ``PluginFailure``."""
    found = _entry_points(kind)
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise PluginFailure(
            PluginError(
                plugin=name, kind="not_found", message=f"no {kind} named {name!r} (known: {known})"
            )
        )
    try:
        return found[name].load()
    except Exception as e:
        raise PluginFailure(
            PluginError(plugin=name, kind="crashed", message=f"failed to load: {e}")
        ) from e


def plugins() -> list[PluginInfo]:
    """Every plugin found, of every kind."""
    infos = []
    for kind in GROUPS:
        for name, ep in sorted(_entry_points(kind).items()):
            version = ep.dist.version if ep.dist is not None else "?"
            infos.append(PluginInfo(name, kind, "in-process", version, ep.value))
    return infos


class Executors:
    """Creates each executor a run needs once, on first use, and caches it."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._made: dict[str, Executor] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str) -> Executor:
        """The executor called ``name`` (``PluginFailure`` if there is none)."""
        with self._lock:
            if name not in self._made:
                factory = load("executor", name)
                self._made[name] = factory(self._store)
            return self._made[name]
