"""A hook plugin: one long-lived process per run, within a time budget for the whole run."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TextIO

from greenloop.plugins.stdio.plugin_process import (
    EVENT_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    Plugin,
    env_seconds,
    failure,
)
from greenloop.protocol.errors import PluginFailure
from greenloop.protocol.events import BuildEvent, HookVerdict

HOOK_BUDGET = 10.0
"""Seconds a hook has for all of one run's events, its start included; then it is disabled."""
HOOK_BUDGET_ENV = "GREENLOOP_HOOK_BUDGET"
"""Environment variable replacing :data:`HOOK_BUDGET` (seconds)."""


class StdioHook:
    """A hook plugin run as one long-lived process, started on the first event.

    A run creates its hooks, so one instance lives for one run, and has
    :attr:`budget_s` seconds for all of that run's events, its start
    included: each call may take what is left (at most :data:`EVENT_TIMEOUT`).
    A process that dies is restarted on the next event, up to
    :attr:`max_restarts` times. A hook that uses up its budget, dies once too
    often or fails its handshake is disabled: that failure is raised, saying
    so (the run's one warning about it), and every later event is ignored
    without starting anything.
    """

    max_restarts: int = 3
    """How many times a hook process that died is started again."""

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        stderr: TextIO | None = None,
        budget_s: float | None = None,
    ) -> None:
        """Prepare hook ``name`` at ``path``; nothing starts before the first event.

        ``budget_s`` defaults to :func:`hook_budget`, which raises
        :class:`ValueError` for a bad ``GREENLOOP_HOOK_BUDGET``.
        """
        self.name = name
        self.path = path
        self.budget_s = hook_budget() if budget_s is None else budget_s
        self._stderr = stderr
        self._plugin: Plugin | None = None
        self._disabled = False
        self._unstartable = False
        self._spent = 0.0
        self._starts = 0
        self._lock = threading.Lock()

    def handle(self, event: BuildEvent) -> HookVerdict | None:
        """Send ``event`` to the plugin and return its verdict (``PluginFailure`` if it fails).

        Returns None without a word once the hook is disabled.
        """
        with self._lock:
            if self._disabled:
                return None
            started = time.monotonic()
            deadline = started + self.budget_s - self._spent
            try:
                return self._handle(event, deadline)
            except PluginFailure as e:
                reason = self._why_disable(deadline)
                if reason is None:
                    raise
                self._disabled = True
                if self._plugin is not None:
                    self._plugin.kill()
                    self._plugin = None
                message = f"{e.error.message}; {reason}: disabled for the rest of the run"
                raise failure(self.name, e.error.kind, message) from None
            finally:
                self._spent += time.monotonic() - started

    def close(self) -> None:
        """Shut the plugin process down."""
        with self._lock:
            if self._plugin is not None:
                self._plugin.close()
                self._plugin = None

    def _handle(self, event: BuildEvent, deadline: float) -> HookVerdict | None:
        plugin = self._running(deadline)
        raw = plugin.call(
            "hook.event", {"event": event.model_dump(mode="json")}, _left(deadline, EVENT_TIMEOUT)
        )
        if raw is None:
            return None
        return plugin.validate(HookVerdict, raw, "hook.event")

    def _why_disable(self, deadline: float) -> str | None:
        """Why a failure just now disables the hook, or None when the next event may try again."""
        if time.monotonic() >= deadline:
            return f"its time budget of {self.budget_s:g}s for this run is used up"
        if self._unstartable:
            return "it could not be started"
        dead = self._plugin is None or not self._plugin.alive
        if dead and self._starts > self.max_restarts:
            return f"it was started {self._starts} times"
        return None

    def _running(self, deadline: float) -> Plugin:
        if self._plugin is None or not self._plugin.alive:
            self._starts += 1
            plugin = Plugin(self.name, "hook", self.path, None, self._stderr)
            try:
                plugin.handshake(_left(deadline, HANDSHAKE_TIMEOUT))
            except PluginFailure:
                plugin.kill()
                self._unstartable = True
                raise
            except BaseException:
                plugin.kill()
                raise
            self._plugin = plugin
        return self._plugin


def _left(deadline: float, most: float) -> float:
    """Seconds until ``deadline``, at most ``most`` (a call with none left times out at once)."""
    return max(0.0, min(most, deadline - time.monotonic()))


def hook_budget() -> float:
    """:data:`HOOK_BUDGET`, or ``GREENLOOP_HOOK_BUDGET`` seconds when set (ValueError if bad)."""
    return env_seconds(HOOK_BUDGET_ENV, HOOK_BUDGET)
