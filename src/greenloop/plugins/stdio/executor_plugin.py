"""An executor plugin: one process per step, serving the plugin's calls back to the host."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Literal, TextIO
from uuid import UUID

from pydantic import BaseModel, Field

from greenloop._fs import remove_orphans
from greenloop.plugins.jsonrpc import INVALID_PARAMS, Handler, RpcError
from greenloop.plugins.spec import Host
from greenloop.plugins.stdio.plugin_process import (
    CANCEL_GRACE,
    EVENT_TIMEOUT,
    Cancelled,
    Plugin,
    env_seconds,
    failure,
    parse_params,
)
from greenloop.plugins.stdio.uploads import UPLOADS_DIR, ArtifactUploads
from greenloop.protocol.executor import EXIT_INTERRUPTED, ExecutorInput, SnapshotRef, StepResult
from greenloop.protocol.ir import CommandStep
from greenloop.store import Store

RUN_GRACE = 30.0
"""Seconds ``executor.run`` may take beyond the step's own timeout."""
DEFAULT_RUN_TIMEOUT = 3600.0
"""Seconds ``executor.run`` may take when the step has no timeout."""
TIMEOUT_ENV = "GREENLOOP_PLUGIN_TIMEOUT"
"""Environment variable replacing :data:`DEFAULT_RUN_TIMEOUT` (seconds)."""
MAX_READ = 4 << 20
"""Largest ``archive.read`` chunk served (bigger requests get this much)."""


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
            remove_orphans(store.root / UPLOADS_DIR)

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
        plugin = Plugin(self.name, "executor", self.path, handlers, self._stderr)
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
            except Cancelled:
                host.log(
                    request.step_id,
                    "stderr",
                    f"greenloop: executor {self.name!r} did not stop within "
                    f"{self.cancel_grace:g}s of cancellation; killed",
                )
                return StepResult(exit_code=EXIT_INTERRUPTED)
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
        plugin = Plugin(self.name, "executor", self.path, None, self._stderr)
        try:
            plugin.handshake()
            plugin.call("executor.discard", {"snapshots": list(snapshots)}, EVENT_TIMEOUT)
        except BaseException:
            plugin.kill()
            raise
        plugin.close()


def run_timeout(name: str, step: CommandStep) -> float:
    """How long ``executor.run`` may take for ``step`` (see the module constants)."""
    if step.timeout_seconds is not None:
        return step.timeout_seconds + RUN_GRACE
    try:
        return env_seconds(TIMEOUT_ENV, DEFAULT_RUN_TIMEOUT)
    except ValueError as e:
        raise failure(name, "error", str(e)) from None


def _host_handlers(
    request: ExecutorInput, host: Host, uploads: ArtifactUploads | None = None
) -> dict[str, Handler]:
    """The plugin→host methods, served for one step from ``host`` (and ``uploads``)."""

    def read(params: Any) -> dict[str, str]:
        p = parse_params(_ArchiveRead, params)
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
        p = parse_params(_Log, params)
        host.log(own_step(p.step_id), p.stream, p.line)

    def cancelled(params: Any) -> bool:
        return bool(host.cancelled(own_step(parse_params(_Cancel, params).step_id)))

    handlers: dict[str, Handler] = {"archive.read": read, "log": log, "cancelled": cancelled}
    if uploads is not None:
        handlers["artifact.put"] = uploads.put
    return handlers
