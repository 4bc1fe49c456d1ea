"""Out-of-process plugins: executables that speak JSON-RPC 2.0 over their stdin/stdout.

The adapters here make such an executable look exactly like an in-process
plugin: :class:`StdioExecutor` is an :class:`~greenloop.plugins.spec.Executor`
(one process per step, so a crash fails only that step), :class:`StdioHook` a
:class:`~greenloop.plugins.spec.Hook` and :class:`StdioFormatter` a
:class:`~greenloop.plugins.spec.Formatter` (one long-lived process each).

Whatever the plugin does wrong — exits mid-call, hangs, writes garbage,
answers with an invalid result, speaks another protocol version — surfaces
as a :class:`~greenloop.protocol.PluginFailure` naming the plugin, and the
process (with its whole process group) is killed and reaped. The wire format
is described in ``docs/plugins.md``.

An executor plugin hands its step's artifacts to the host with ``artifact.put``
(see :class:`ArtifactUploads`): the host keeps them in its own store, so an
artifact from a plugin is the same store object as one from ``local``.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import math
import mimetypes
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, Literal, TextIO, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from greenloop._fs import pid_alive
from greenloop.plugins.jsonrpc import (
    INVALID_PARAMS,
    Connection,
    Handler,
    JsonRpcError,
    ProtocolError,
    RpcError,
)
from greenloop.plugins.spec import Host
from greenloop.protocol.errors import PluginError, PluginErrorKind, PluginFailure
from greenloop.protocol.events import BuildEvent, HookVerdict
from greenloop.protocol.executor import (
    PROTOCOL_VERSION,
    ArtifactRef,
    ExecutorInput,
    SnapshotRef,
    StepResult,
)
from greenloop.protocol.ir import CommandStep
from greenloop.store import Store
from greenloop.store.artifacts import store_artifact

StdioKind = Literal["executor", "hook", "formatter"]

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a plugin has to answer ``initialize``."""
PROBE_TIMEOUT = 3.0
"""Seconds a plugin has to answer ``initialize`` when it is only being listed."""
RUN_GRACE = 30.0
"""Seconds ``executor.run`` may take beyond the step's own timeout."""
DEFAULT_RUN_TIMEOUT = 3600.0
"""Seconds ``executor.run`` may take when the step has no timeout."""
TIMEOUT_ENV = "GREENLOOP_PLUGIN_TIMEOUT"
"""Environment variable replacing :data:`DEFAULT_RUN_TIMEOUT` (seconds)."""
EVENT_TIMEOUT = 30.0
"""Seconds a hook or formatter has to answer one event (and a discard to finish)."""
HOOK_BUDGET = 10.0
"""Seconds a hook has for all of one run's events, its start included; then it is disabled."""
HOOK_BUDGET_ENV = "GREENLOOP_HOOK_BUDGET"
"""Environment variable replacing :data:`HOOK_BUDGET` (seconds)."""
CANCEL_GRACE = 5.0
"""Seconds an executor has to return once its step is cancelled."""
SHUTDOWN_TIMEOUT = 5.0
"""Seconds a plugin has to answer ``shutdown`` and then to exit."""
TERM_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL when a plugin is killed."""
MAX_READ = 4 << 20
"""Largest ``archive.read`` chunk served (bigger requests get this much)."""
MAX_PUT = 4 << 20
"""Largest ``artifact.put`` chunk accepted, in bytes after base64 decoding."""
UPLOADS_DIR = "uploads"
"""Folder of the store where ``artifact.put`` chunks wait for their last one."""
EXIT_CANCELLED = 130
"""Exit code reported for a step whose plugin had to be killed after cancellation."""

_POLL = 0.1  # seconds between checks on a call in flight (process alive? cancelled?)
_DRAIN = 0.5  # seconds an exited plugin's last output has to arrive
_STDERR_LINE = 64 * 1024  # longer stderr lines are passed through in pieces

_Model = TypeVar("_Model", bound=BaseModel)


class _Cancelled(Exception):
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


class _ArchiveRead(BaseModel):
    archive_id: UUID
    offset: int = Field(ge=0)
    max: int = Field(ge=0)


class _Log(BaseModel):
    step_id: UUID
    stream: Literal["stdout", "stderr"]
    line: str


class _Cancel(BaseModel):
    step_id: UUID


class _ArtifactPut(BaseModel):
    step_id: UUID
    path: str
    kind: Literal["file", "directory"]
    data: str = ""
    offset: int = Field(default=0, ge=0)
    final: bool = True
    mime: str | None = Field(default=None, min_length=1)


class _FormatterOutput(BaseModel):
    output: str


class _Plugin:
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
            raise _failure(name, "crashed", f"cannot start {path}: {e}") from e
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
        returns True, and running out of that raises :class:`_Cancelled`.
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
                    raise _Cancelled
                raise self.fail("timeout", f"no answer to {method} within {timeout:.3g}s; killed")
            # End of input alone cannot tell us the plugin died: anything it started
            # inherits its stdout and keeps the pipe open. So watch the process too,
            # leaving a moment for an answer it wrote just before exiting to arrive.
            if exited_at is None and _peek_exit(self._proc) is not None:
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
            raise _failure(self.name, "error", f"{method} failed: {e}{detail}") from None
        except ProtocolError as e:
            raise self.fail("garbage", f"wrote garbage on stdout during {method}: {e}") from None
        except JsonRpcError as e:  # ConnectionClosed, or a timeout raced with the answer
            raise self.fail("crashed", f"{self._ended()} during {method}") from e

    def validate(self, model: type[_Model], raw: Any, method: str) -> _Model:
        """``raw`` as ``model``, or a ``PluginFailure`` (invalid_result) saying what is off."""
        try:
            return model.model_validate(raw, strict=True)
        except ValidationError as e:
            raise _failure(
                self.name, "invalid_result", f"invalid {method} result: {_summary(e)}"
            ) from None

    def fail(self, kind: PluginErrorKind, message: str) -> PluginFailure:
        """Kill the process and return the failure to raise."""
        self.kill()
        return _failure(self.name, kind, message)

    def close(self) -> None:
        """Ask the plugin to shut down and exit; kill it if it does not."""
        if self._dead:
            return
        if self._rpc.failure is None:
            with contextlib.suppress(PluginFailure):  # it is being stopped either way
                self.call("shutdown", None, SHUTDOWN_TIMEOUT)
        if not self._dead:
            self._rpc.close()  # end of input: the plugin's cue to exit
            _wait_exit(self._proc, SHUTDOWN_TIMEOUT)
            self.kill()

    def kill(self) -> None:
        """Stop the process and its whole group (SIGTERM, then SIGKILL) and reap it."""
        with self._lock:
            if self._dead:
                return
            self._dead = True
        proc = self._proc
        if _peek_exit(proc) is None:
            _signal_group(proc, signal.SIGTERM)
            _wait_exit(proc, TERM_GRACE)
        # The leader is a zombie (not reaped) until proc.wait() below, so its group id
        # cannot have been reused: this reaches exactly what the plugin left running.
        _signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
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
        _wait_exit(self._proc, 1.0)
        return _peek_exit(self._proc) or "closed its stdout"

    def _sink(self) -> TextIO:
        return self._stderr or sys.stderr

    def _bad_notification(self, method: str, error: BaseException) -> None:
        message = f"ignored a bad {method!r} notification: {error}"
        _write_line(self._sink(), f"[{self.name}] greenloop: {message}")


class StdioExecutor:
    """An executor plugin run as a separate process, one process per step.

    Created like every executor, as ``factory(store)``. The plugin keeps its
    snapshots its own way; with a store, it can put its step's artifacts into
    it (``artifact.put``), and every artifact it reports must be in it.
    """

    cancel_grace: float = CANCEL_GRACE
    """Seconds the plugin has to return after its step is cancelled."""

    def __init__(
        self, name: str, path: Path, store: Store | None = None, *, stderr: TextIO | None = None
    ) -> None:
        self.name = name
        self.path = path
        self.store = store
        self._stderr = stderr
        if store is not None:
            _sweep_uploads(store.root / UPLOADS_DIR)

    def run(self, request: ExecutorInput, host: Host) -> StepResult:
        """Start the plugin, hand it the step, serve its calls, and return its result."""
        timeout = run_timeout(self.name, request.step)
        uploads = ArtifactUploads(self.store, request) if self.store is not None else None
        try:
            return self._run(request, host, timeout, uploads)
        finally:
            if uploads is not None:
                uploads.close()

    def _run(
        self, request: ExecutorInput, host: Host, timeout: float, uploads: ArtifactUploads | None
    ) -> StepResult:
        handlers = _host_handlers(request, host, uploads)
        plugin = _Plugin(self.name, "executor", self.path, handlers, self._stderr)
        try:
            plugin.handshake()
            try:
                raw = plugin.call(
                    "executor.run",
                    {"input": request.model_dump(mode="json")},
                    timeout,
                    cancelled=lambda: host.cancelled(request.step_id),
                    cancel_grace=self.cancel_grace,
                )
            except _Cancelled:
                host.log(
                    request.step_id,
                    "stderr",
                    f"greenloop: executor {self.name!r} did not stop within "
                    f"{self.cancel_grace:g}s of cancellation; killed",
                )
                return StepResult(exit_code=EXIT_CANCELLED)
            result = plugin.validate(StepResult, raw, "executor.run")
            if self.store is not None:
                # Whatever reads the result (cache hits, materializing) looks these keys
                # up in the store: a key the plugin made up must fail here, not there.
                for artifact in result.artifacts:
                    if not self.store.has(artifact.key):
                        raise plugin.fail(
                            "invalid_result",
                            f"artifact {artifact.key!r} is not in greenloop's store "
                            "(send artifacts with artifact.put)",
                        )
        except BaseException:
            plugin.kill()
            raise
        plugin.close()
        return result

    def discard(self, snapshots: list[SnapshotRef]) -> None:
        """Start the plugin and ask it to forget ``snapshots``."""
        if not snapshots:
            return
        plugin = _Plugin(self.name, "executor", self.path, None, self._stderr)
        try:
            plugin.handshake()
            plugin.call("executor.discard", {"snapshots": list(snapshots)}, EVENT_TIMEOUT)
        except BaseException:
            plugin.kill()
            raise
        plugin.close()


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
        self._plugin: _Plugin | None = None
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
                raise _failure(self.name, e.error.kind, message) from None
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

    def _running(self, deadline: float) -> _Plugin:
        if self._plugin is None or not self._plugin.alive:
            self._starts += 1
            plugin = _Plugin(self.name, "hook", self.path, None, self._stderr)
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
    return _env_seconds(HOOK_BUDGET_ENV, HOOK_BUDGET)


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
        self._plugin: _Plugin | None = _Plugin(name, "formatter", path, None, stderr)
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
                _write_line(self._stderr or sys.stderr, f"greenloop: {e.error}{stops}")
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


def probe(name: str, kind: StdioKind, path: Path, timeout: float = PROBE_TIMEOUT) -> Hello:
    """Start the plugin, do the handshake, shut it down; ``PluginFailure`` if it cannot."""
    plugin = _Plugin(name, kind, path)
    try:
        hello = plugin.handshake(timeout)
    except BaseException:
        plugin.kill()
        raise
    plugin.close()
    return hello


def run_timeout(name: str, step: CommandStep) -> float:
    """How long ``executor.run`` may take for ``step`` (see the module constants)."""
    if step.timeout_seconds is not None:
        return step.timeout_seconds + RUN_GRACE
    try:
        return _env_seconds(TIMEOUT_ENV, DEFAULT_RUN_TIMEOUT)
    except ValueError as e:
        raise _failure(name, "error", str(e)) from None


def _env_seconds(variable: str, default: float) -> float:
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


def _host_handlers(
    request: ExecutorInput, host: Host, uploads: ArtifactUploads | None = None
) -> dict[str, Handler]:
    """The plugin→host methods, served for one step from ``host`` (and ``uploads``)."""

    def read(params: Any) -> dict[str, str]:
        p = _params(_ArchiveRead, params)
        # A plugin reads the workspace of its own step and nothing else.
        if p.archive_id != request.workspace_archive_id:
            raise RpcError(INVALID_PARAMS, f"unknown archive {p.archive_id}")
        data = host.read_archive(p.archive_id, p.offset, min(p.max, MAX_READ))
        return {"data": base64.b64encode(data).decode("ascii")}

    def own_step(step_id: UUID) -> UUID:
        # A plugin speaks for its own step only, never into another step's log.
        if step_id != request.step_id:
            raise RpcError(INVALID_PARAMS, f"step {step_id} is not this plugin's step")
        return step_id

    def log(params: Any) -> None:
        p = _params(_Log, params)
        host.log(own_step(p.step_id), p.stream, p.line)

    def cancelled(params: Any) -> bool:
        return bool(host.cancelled(own_step(_params(_Cancel, params).step_id)))

    handlers: dict[str, Handler] = {"archive.read": read, "log": log, "cancelled": cancelled}
    if uploads is not None:
        handlers["artifact.put"] = uploads.put
    return handlers


class ArtifactUploads:
    """Serves ``artifact.put`` for one step: the plugin's artifacts go into the host's store.

    An artifact arrives in one or more chunks, each at most :data:`MAX_PUT`
    bytes: a file as its bytes, a directory as an uncompressed tar of its
    contents. Chunks are spooled to a file under the store (never held in
    memory whole); ``offset`` 0 starts (or restarts) the upload of a path and
    every later chunk must continue exactly where the last one ended. The
    ``final`` chunk stores the artifact and answers with its ``ArtifactRef``;
    earlier chunks are answered with ``null``. Only the step's declared
    artifacts may be sent, and a tar may hold only relative paths that stay
    inside the directory (no ``..``, no absolute names, no links leading
    out, no devices).
    """

    def __init__(self, store: Store, request: ExecutorInput) -> None:
        self._store = store
        self._step_id = request.step_id
        self._declared = list(request.step.artifacts)
        self._folder = store.root / UPLOADS_DIR / f"{os.getpid()}-{request.step_id}"
        self._spools: dict[str, tuple[str, BinaryIO, int]] = {}  # path -> kind, file, size
        self._lock = threading.Lock()
        self._closed = False

    def put(self, params: Any) -> dict[str, Any] | None:
        """Handle one ``artifact.put`` call (see the class docstring)."""
        p = _params(_ArtifactPut, params)
        if p.step_id != self._step_id:
            raise RpcError(INVALID_PARAMS, f"step {p.step_id} is not this plugin's step")
        if p.path not in self._declared:
            declared = ", ".join(repr(d) for d in self._declared) or "none"
            raise RpcError(
                INVALID_PARAMS,
                f"{p.path!r} is not an artifact of this step (declared: {declared})",
            )
        try:
            data = base64.b64decode(p.data, validate=True)
        except binascii.Error as e:
            raise RpcError(INVALID_PARAMS, f"data is not base64: {e}") from None
        if len(data) > MAX_PUT:
            raise RpcError(INVALID_PARAMS, f"a chunk may hold at most {MAX_PUT} bytes")
        with self._lock:
            if self._closed:
                raise RpcError(INVALID_PARAMS, "the step is over")
            spool = self._chunk(p.path, p.kind, p.offset)
            try:
                spool.write(data)
            except BaseException:
                spool.close()  # e.g. a full disk: this upload is over
                raise
            if not p.final:
                self._spools[p.path] = (p.kind, spool, p.offset + len(data))
                return None
            self._spools.pop(p.path, None)
            work = Path(tempfile.mkdtemp(dir=self._folder))
        try:
            with spool:
                spool.flush()
                spool.seek(0)
                ref = self._keep(p.path, p.kind, p.mime, spool, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return ref.model_dump(mode="json")

    def close(self) -> None:
        """Drop every upload that never got its final chunk; refuse any later call."""
        with self._lock:
            self._closed = True
            spools, self._spools = self._spools, {}
        for _, spool, _ in spools.values():
            spool.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _chunk(self, path: str, kind: str, offset: int) -> BinaryIO:
        """The spool the chunk at ``offset`` of ``path`` goes to (a new one at offset 0)."""
        current = self._spools.pop(path, None)
        if offset == 0:
            if current is not None:
                current[1].close()
            self._folder.mkdir(parents=True, exist_ok=True)
            # Unnamed: it vanishes on close, whatever happens to this upload.
            return tempfile.TemporaryFile(dir=self._folder)
        if current is None or current[0] != kind or current[2] != offset:
            had = f"{current[2]} bytes of a {current[0]}" if current else "nothing"
            if current is not None:
                current[1].close()
            raise RpcError(
                INVALID_PARAMS,
                f"artifact {path!r}: a {kind} chunk at offset {offset}, but {had} received "
                "(start again at offset 0)",
            )
        return current[1]

    def _keep(
        self, path: str, kind: str, mime: str | None, spool: BinaryIO, work: Path
    ) -> ArtifactRef:
        """Store the finished upload; sizes and MIME types are worked out as ``local`` does."""
        if kind == "file":
            key = self._store.put_stream(spool)
            size = spool.tell()
            guessed = mimetypes.guess_type(PurePosixPath(path).name)[0]
            return ArtifactRef(
                key=key, mime=mime or guessed or "application/octet-stream", size_bytes=size
            )
        tree = work / "tree"
        tree.mkdir()
        try:
            with tarfile.open(fileobj=spool, mode="r:") as tar:
                members = tar.getmembers()
                for member in members:
                    name = PurePosixPath(member.name)
                    if name.is_absolute() or ".." in name.parts:
                        raise RpcError(
                            INVALID_PARAMS,
                            f"artifact {path!r}: unsafe tar member {member.name!r}",
                        )
                # The data filter refuses links leading out of the tree and devices.
                tar.extractall(tree, members=members, filter="data")
        except (tarfile.TarError, OSError) as e:
            raise RpcError(
                INVALID_PARAMS, f"artifact {path!r}: cannot unpack the tar: {e}"
            ) from None
        return store_artifact(self._store, tree)


def _sweep_uploads(folder: Path) -> None:
    """Remove uploads a killed greenloop process left behind (named ``<pid>-<step id>``)."""
    if not folder.is_dir():
        return
    for upload in folder.iterdir():
        if not pid_alive(upload.name.split("-", 1)[0]):
            shutil.rmtree(upload, ignore_errors=True)


def _params(model: type[_Model], params: Any) -> _Model:
    try:
        return model.model_validate(params)
    except ValidationError as e:
        raise RpcError(INVALID_PARAMS, f"invalid params: {_summary(e)}") from None


def _failure(name: str, kind: PluginErrorKind, message: str) -> PluginFailure:
    return PluginFailure(PluginError(plugin=name, kind=kind, message=message))


def _summary(error: ValidationError, limit: int = 3) -> str:
    parts = []
    for item in error.errors()[:limit]:
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- processes ------------------------------------------------------------------------------


def _peek_exit(proc: subprocess.Popen[bytes]) -> str | None:
    """How the process ended, or ``None`` while it runs — without reaping it."""
    if proc.returncode is not None:
        return _describe(proc.returncode)
    if not hasattr(os, "waitid"):  # e.g. macOS: fall back to reaping
        code = proc.poll()
        return None if code is None else _describe(code)
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return "exited"
    if info is None:
        return None
    if info.si_code == os.CLD_EXITED:
        return f"exited with code {info.si_status}"
    return f"was killed by {_signal_name(info.si_status)}"


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _peek_exit(proc) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _describe(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {_signal_name(-returncode)}"
    return f"exited with code {returncode}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(proc.pid, sig)


def _relay(stream: IO[bytes], prefix: str, sink: Callable[[], TextIO]) -> None:
    """Copy the plugin's stderr to ours, each line prefixed with the plugin's name."""
    try:
        # Bounded reads: a plugin spewing one endless line must not eat our memory.
        for raw in iter(lambda: stream.readline(_STDERR_LINE), b""):
            _write_line(sink(), prefix + raw.decode("utf-8", "replace").rstrip("\r\n"))
    except (OSError, ValueError):
        pass  # the pipe was closed under us: the plugin is being stopped


def _write_line(sink: TextIO, line: str) -> None:
    try:
        sink.write(line + "\n")
        sink.flush()
    except (OSError, ValueError):
        pass  # our stderr is gone (interpreter shutdown); nothing useful left to do


class _Live:
    """Every plugin process still running, so none outlives the host."""

    def __init__(self) -> None:
        self._plugins: set[_Plugin] = set()
        self._lock = threading.Lock()

    def add(self, plugin: _Plugin) -> None:
        with self._lock:
            self._plugins.add(plugin)

    def discard(self, plugin: _Plugin) -> None:
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
