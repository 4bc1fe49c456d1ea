"""A formatter plugin: one long-lived process rendering every event to a stream."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel

from greenloop.plugins.stdio.plugin_process import EVENT_TIMEOUT, Plugin, write_line
from greenloop.protocol.errors import PluginError, PluginFailure
from greenloop.protocol.events import BuildEvent


class _FormatterOutput(BaseModel):
    output: str


class StdioFormatter:
    """A formatter plugin run as one long-lived process; its output goes to ``stream``.

    The process starts (and must pass its handshake) when the formatter is
    created. A formatter failing mid-run never stops the run: the failure is
    reported once on stderr, kept in :attr:`error`, and if the process died
    its output stops there.
    """

    def __init__(
        self, name: str, path: Path, stream: TextIO, *, stderr: TextIO | None = None
    ) -> None:
        self.name = name
        self.path = path
        self.error: PluginError | None = None
        self._stream = stream
        self._stderr = stderr
        self._lock = threading.Lock()
        self._plugin: Plugin | None = Plugin(name, "formatter", path, None, stderr)
        try:
            self._plugin.handshake()
        except BaseException:
            self._plugin.kill()
            raise

    def __call__(self, event: BuildEvent) -> None:
        """Have the plugin render ``event`` and write what it returns."""
        with self._lock:
            plugin = self._plugin
            if plugin is None:
                return
            try:
                raw = plugin.call(
                    "formatter.event", {"event": event.model_dump(mode="json")}, EVENT_TIMEOUT
                )
                output = plugin.validate(_FormatterOutput, raw, "formatter.event").output
            except PluginFailure as e:
                self.error = e.error
                stops = "" if plugin.alive else "; its output stops here"
                write_line(self._stderr or sys.stderr, f"greenloop: {e.error}{stops}")
                if not plugin.alive:
                    self._plugin = None
                return
            self._stream.write(output)
            self._stream.flush()

    def close(self) -> None:
        """Shut the plugin process down."""
        with self._lock:
            if self._plugin is not None:
                self._plugin.close()
                self._plugin = None
