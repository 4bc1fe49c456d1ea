"""What a plugin is: the interfaces executors (and the host serving them) implement.

An executor receives an :class:`~greenloop.protocol.ExecutorInput` and a
:class:`Host`, runs one step, and returns a :class:`~greenloop.protocol.StepResult`.
Everything it needs from the host — workspace bytes, logging, cancellation —
goes through the :class:`Host`, so the same interface works in process and
over JSON-RPC.
"""

from __future__ import annotations

import io
from typing import Literal, NamedTuple, Protocol, runtime_checkable
from uuid import UUID

from greenloop.protocol import (
    BuildEvent,
    CommandStep,
    ExecutorInput,
    HookVerdict,
    SnapshotRef,
    StepResult,
)

ARCHIVE_CHUNK = 1 << 20
"""Default size of one workspace-archive read."""


class Host(Protocol):
    """Services the host offers an executor while a step runs."""

    def read_archive(self, archive_id: UUID, offset: int, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of the workspace archive from ``offset`` (empty at the end)."""
        ...

    def log(self, step_id: UUID, stream: Literal["stdout", "stderr"], line: str) -> None:
        """Report one line of the step's output."""
        ...

    def cancelled(self, step_id: UUID) -> bool:
        """True once the step should stop (Ctrl-C, fail-fast, the run ending)."""
        ...


@runtime_checkable
class Executor(Protocol):
    """A step executor plugin."""

    name: str

    def run(self, request: ExecutorInput, host: Host) -> StepResult:
        """Run (or, on a cache hit, skip) one step and report what happened."""
        ...

    def discard(self, snapshots: list[SnapshotRef]) -> None:
        """Forget run-scoped snapshots the host no longer needs."""
        ...


class Variant(NamedTuple):
    """How an executor will run a step, where the IR alone does not say it.

    An executor may offer ``variant(step: CommandStep) -> Variant``; the host
    then keys the step's cache entry on ``key`` as well (outputs can differ
    between variants) and names ``note`` in the run's plan line.
    """

    key: str
    note: str


def variant_of(executor: Executor, step: CommandStep) -> Variant | None:
    """``executor``'s :class:`Variant` for ``step``, or None when it offers none."""
    describe = getattr(executor, "variant", None)
    return describe(step) if describe is not None else None


class ArchiveReader(io.RawIOBase):
    """A read-only file object over the workspace archive, fetched chunk by chunk."""

    def __init__(self, host: Host, archive_id: UUID, chunk: int = ARCHIVE_CHUNK) -> None:
        self._host = host
        self._id = archive_id
        self._chunk = chunk
        self._offset = 0

    def readable(self) -> bool:
        """Always readable."""
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        """Fill ``buffer`` from the next chunk of the archive."""
        data = self._host.read_archive(self._id, self._offset, min(len(buffer), self._chunk))
        buffer[: len(data)] = data
        self._offset += len(data)
        return len(data)


@runtime_checkable
class Hook(Protocol):
    """A hook plugin: sees every build event; may veto a run on ``run_started``.

    ``run_started`` / ``run_finished`` are before/after run, ``step_started`` /
    ``step_finished`` before/after step. Returning a :class:`HookVerdict` with
    ``veto`` set in answer to ``run_started`` stops the run before any step runs;
    a veto on any other event is ignored.
    """

    name: str

    def handle(self, event: BuildEvent) -> HookVerdict | None:
        """React to ``event``."""
        ...


@runtime_checkable
class Formatter(Protocol):
    """An output formatter: called with each build event, writes what it likes."""

    def __call__(self, event: BuildEvent) -> None:
        """Render ``event``."""
        ...
