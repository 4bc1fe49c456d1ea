"""One plugin process: starting it, the ``initialize`` handshake, calls with deadlines, stopping it.

Whatever the plugin does wrong — exits mid-call, hangs, writes garbage,
answers with an invalid result, speaks another protocol version — surfaces
as a :class:`~greenloop.protocol.PluginFailure` naming the plugin, and the
process (with its whole process group) is killed and reaped.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, TextIO, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from greenloop._procs import exit_status, stop_group, wait_exit
from greenloop.plugins.jsonrpc import (
    INVALID_PARAMS,
    Connection,
    Handler,
    JsonRpcError,
    ProtocolError,
    RpcError,
)
from greenloop.protocol.errors import PluginError, PluginErrorKind, PluginFailure
from greenloop.protocol.executor import PROTOCOL_VERSION

StdioKind = Literal["executor", "hook", "formatter"]
"""What a plugin says it is in its handshake."""

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a plugin has to answer ``initialize``."""
PROBE_TIMEOUT = 3.0
"""Seconds a plugin has to answer ``initialize`` when it is only being listed."""
EVENT_TIMEOUT = 30.0
"""Seconds a hook or formatter has to answer one event (and a discard to finish)."""
CANCEL_GRACE = 5.0
"""Seconds an executor has to return once its step is cancelled."""
SHUTDOWN_TIMEOUT = 5.0
"""Seconds a plugin has to answer ``shutdown`` and then to exit."""
TERM_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL when a plugin is killed."""

_POLL = 0.1  # seconds between checks on a call in flight (process alive? cancelled?)
_DRAIN = 0.5  # seconds an exited plugin's last output has to arrive
_STDERR_LINE = 64 * 1024  # longer stderr lines are passed through in pieces

Model = TypeVar("Model", bound=BaseModel)


class Cancelled(Exception):
    """The step was cancelled and the plugin did not answer within the grace period."""


@dataclass(frozen=True)
class Hello:
    """A plugin's answer to ``initialize``."""

    name: str
    kind: str
    version: str
    protocol_version: int


class _HelloWire(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    kind: str
    version: str
    protocol_version: int


class Plugin:
    """One running plugin process and the JSON-RPC connection to it."""

    def __init__(
        self,
        name: str,
        kind: StdioKind,
        path: Path,
        handlers: Mapping[str, Handler] | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self._stderr = stderr
        self._lock = threading.Lock()
        self._dead = False
        try:
            self._proc = subprocess.Popen(
                [str(path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                # Its own process group, so killing it takes whatever it started too.
                start_new_session=True,
            )
        except OSError as e:
            raise failure(name, "crashed", f"cannot start {path}: {e}") from e
        assert self._proc.stdin and self._proc.stdout and self._proc.stderr
        _LIVE.add(self)
        self._rpc = Connection(
            self._proc.stdout,
            self._proc.stdin,
            handlers,
            on_notification_error=self._bad_notification,
        )
        self._relay = threading.Thread(
            target=_relay, args=(self._proc.stderr, f"[{name}] ", self._sink), daemon=True
        )
        self._relay.start()
        self._rpc.start()

    @property
    def alive(self) -> bool:
        """False once the process was stopped (closed or killed)."""
        return not self._dead

    def handshake(self, timeout: float = HANDSHAKE_TIMEOUT) -> Hello:
        """``initialize``: check the plugin speaks our protocol version and is a ``kind``."""
        params = {"protocol_version": PROTOCOL_VERSION, "kind": self.kind}
        raw = self.call("initialize", params, timeout)
        theirs = raw.get("protocol_version") if isinstance(raw, dict) else None
        if _is_int(theirs) and theirs != PROTOCOL_VERSION:
            raise self.fail(
                "protocol_mismatch",
                f"plugin speaks protocol version {theirs}, "
                f"this greenloop speaks version {PROTOCOL_VERSION}",
            )
        wire = self.validate(_HelloWire, raw, "initialize")
        if wire.kind != self.kind:
            raise self.fail(
                "invalid_result", f"started as a {self.kind} but says it is a {wire.kind!r}"
            )
        return Hello(wire.name, wire.kind, wire.version, wire.protocol_version)

    def call(
        self,
        method: str,
        params: Any,
        timeout: float,
        *,
        cancelled: Callable[[], bool] | None = None,
        cancel_grace: float = CANCEL_GRACE,
    ) -> Any:
        """Call ``method`` and return its result, or raise ``PluginFailure``.

        Crashes, timeouts and garbage kill the process; an error object the
        plugin answers with does not (the plugin is healthy, the call failed).
        With ``cancelled``, the deadline shrinks to ``cancel_grace`` once it
        returns True, and running out of that raises :class:`Cancelled`.
        """
        pending = self._rpc.call(method, params)
        deadline = time.monotonic() + timeout
        cancel_deadline: float | None = None
        exited_at: float | None = None
        while True:
            limit = deadline if cancel_deadline is None else min(deadline, cancel_deadline)
            if pending.wait(max(0.0, min(limit - time.monotonic(), _POLL))):
                break
            now = time.monotonic()
            if now >= limit:
                self._rpc.abandon(pending)
                if cancel_deadline is not None and limit == cancel_deadline:
                    self.kill()
                    raise Cancelled
                raise self.fail("timeout", f"no answer to {method} within {timeout:.3g}s; killed")
            # End of input alone cannot tell us the plugin died: anything it started
            # inherits its stdout and keeps the pipe open. So watch the process too,
            # leaving a moment for an answer it wrote just before exiting to arrive.
            if exited_at is None and exit_status(self._proc) is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > _DRAIN:
                self._rpc.abandon(pending)
                raise self.fail("crashed", f"{self._ended()} during {method}")
            if cancel_deadline is None and cancelled is not None and cancelled():
                cancel_deadline = now + cancel_grace
        try:
            return pending.result(0)
        except RpcError as e:
            detail = f"; data: {e.data!r}"[:300] if e.data is not None else ""
            raise failure(self.name, "error", f"{method} failed: {e}{detail}") from None
        except ProtocolError as e:
            raise self.fail("garbage", f"wrote garbage on stdout during {method}: {e}") from None
        except JsonRpcError as e:  # ConnectionClosed, or a timeout raced with the answer
            raise self.fail("crashed", f"{self._ended()} during {method}") from e

    def validate(self, model: type[Model], raw: Any, method: str) -> Model:
        """``raw`` as ``model``, or a ``PluginFailure`` (invalid_result) saying what is off."""
        try:
            return model.model_validate(raw, strict=True)
        except ValidationError as e:
            raise failure(
                self.name, "invalid_result", f"invalid {method} result: {summary(e)}"
            ) from None

    def fail(self, kind: PluginErrorKind, message: str) -> PluginFailure:
        """Kill the process and return the failure to raise."""
        self.kill()
        return failure(self.name, kind, message)

    def close(self) -> None:
        """Ask the plugin to shut down and exit; kill it if it does not."""
        if self._dead:
            return
        if self._rpc.failure is None:
            with contextlib.suppress(PluginFailure):  # it is being stopped either way
                self.call("shutdown", None, SHUTDOWN_TIMEOUT)
        if not self._dead:
            self._rpc.close()  # end of input: the plugin's cue to exit
            wait_exit(self._proc, SHUTDOWN_TIMEOUT)
            self.kill()

    def kill(self) -> None:
        """Stop the process and its whole group (SIGTERM, then SIGKILL) and reap it."""
        with self._lock:
            if self._dead:
                return
            self._dead = True
        proc = self._proc
        stop_group(proc, TERM_GRACE)
        self._rpc.close()
        self._rpc.join(timeout=2)
        self._relay.join(timeout=2)
        # The connection's reader closes stdout itself; stderr we close once the relay is
        # done, never under it (closing under a blocked reader can hang). A reader still
        # blocked means something outside the group holds the pipe; its daemon thread
        # ends with us.
        if proc.stderr is not None and not self._relay.is_alive():
            proc.stderr.close()
        _LIVE.discard(self)

    def _ended(self) -> str:
        wait_exit(self._proc, 1.0)
        return exit_status(self._proc) or "closed its stdout"

    def _sink(self) -> TextIO:
        return self._stderr or sys.stderr

    def _bad_notification(self, method: str, error: BaseException) -> None:
        message = f"ignored a bad {method!r} notification: {error}"
        write_line(self._sink(), f"[{self.name}] greenloop: {message}")


def probe(name: str, kind: StdioKind, path: Path, timeout: float = PROBE_TIMEOUT) -> Hello:
    """Start the plugin, do the handshake, shut it down; ``PluginFailure`` if it cannot."""
    plugin = Plugin(name, kind, path)
    try:
        hello = plugin.handshake(timeout)
    except BaseException:
        plugin.kill()
        raise
    plugin.close()
    return hello


def env_seconds(variable: str, default: float) -> float:
    """Seconds from variable ``variable`` (``default`` when unset); ValueError if bad."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{variable} must be a positive number, got {raw!r}")
    return value


def parse_params(model: type[Model], params: Any) -> Model:
    """``params`` of a host method as ``model``, or the JSON-RPC error to answer with."""
    try:
        return model.model_validate(params)
    except ValidationError as e:
        raise RpcError(INVALID_PARAMS, f"invalid params: {summary(e)}") from None


def failure(name: str, kind: PluginErrorKind, message: str) -> PluginFailure:
    """The failure to raise for plugin ``name``."""
    return PluginFailure(PluginError(plugin=name, kind=kind, message=message))


def summary(error: ValidationError, limit: int = 3) -> str:
    """The first ``limit`` problems of ``error``, on one line."""
    parts = []
    for item in error.errors()[:limit]:
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _relay(stream: IO[bytes], prefix: str, sink: Callable[[], TextIO]) -> None:
    """Copy the plugin's stderr to ours, each line prefixed with the plugin's name."""
    try:
        # Bounded reads: a plugin spewing one endless line must not eat our memory.
        for raw in iter(lambda: stream.readline(_STDERR_LINE), b""):
            write_line(sink(), prefix + raw.decode("utf-8", "replace").rstrip("\r\n"))
    except (OSError, ValueError):
        pass  # the pipe was closed under us: the plugin is being stopped


def write_line(sink: TextIO, line: str) -> None:
    """Write one line to ``sink``, quietly giving up when it is gone."""
    try:
        sink.write(line + "\n")
        sink.flush()
    except (OSError, ValueError):
        pass  # our stderr is gone (interpreter shutdown); nothing useful left to do


class _Live:
    """Every plugin process still running, so none outlives the host."""

    def __init__(self) -> None:
        self._plugins: set[Plugin] = set()
        self._lock = threading.Lock()

    def add(self, plugin: Plugin) -> None:
        with self._lock:
            self._plugins.add(plugin)

    def discard(self, plugin: Plugin) -> None:
        with self._lock:
            self._plugins.discard(plugin)

    def stop_all(self) -> None:
        with self._lock:
            plugins = list(self._plugins)
        for plugin in plugins:
            plugin.close()


_LIVE = _Live()
# Long-lived hook and formatter processes end with us: shut down politely at exit.
atexit.register(_LIVE.stop_all)
