"""Errors that cross the plugin boundary."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

PluginErrorKind = Literal[
    "crashed", "timeout", "garbage", "invalid_result", "protocol_mismatch", "not_found", "error"
]


class PluginError(BaseModel):
    """A plugin failed a step: which plugin, how, and what it (or the host) said."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    plugin: str
    kind: PluginErrorKind = "error"
    message: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} {self.kind}: {self.message}"


class PluginFailure(Exception):
    """Raised by the host when a plugin fails; carries the :class:`PluginError`."""

    def __init__(self, error: PluginError) -> None:
        super().__init__(str(error))
        self.error = error


class SetupError(Exception):
    """The environment cannot run what was asked: no engine, a missing image or program.

    Commands report it and exit 2 before anything runs.
    """
