"""The node side of the ``ray`` executor: what one Ray task does where it lands.

A task gets a :class:`Job` — the step's :class:`~greenloop.protocol.ExecutorInput`
and the digests of its workspace archive and parent tree — and runs the step
with this node's own ``local`` executor, on this node's own store
(``GREENLOOP_CACHE_DIR`` of the ``ray start`` that started the node, else the
user cache folder). Everything moves through the remote cache: the archive
and the parent tree's manifest come first, the parent's blobs as the sandbox
reads them (the remote client is the node store's fetcher for the task), and
the committed tree and the artifacts go back up before the task returns. The
task returns a :class:`Done`; only then does the host record anything, so a
step whose node dies half-way leaves no cache entry anywhere.

Log lines and cancellation travel through one :class:`Relay` actor on the
host's node: the task pushes its lines every :data:`PUSH_INTERVAL_S` and
learns from the answer whether the host has cancelled it. The lines not yet
pushed when the step ends come back in the :class:`Done`, with the count of
those pushed, so the host asks the relay again only when it has not seen them
all: two round trips fewer a step.

This module imports Ray only where a task runs (it is the node's), never at import.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal
from uuid import UUID, uuid4

from greenloop._version import __version__
from greenloop.executors import bwrap
from greenloop.executors.docker import DockerExecutor
from greenloop.executors.local import LocalExecutor
from greenloop.protocol import PROTOCOL_VERSION, ExecutorInput, SetupError, StepResult
from greenloop.store import Store, StoreError
from greenloop.store.remote import HttpRemoteCache

PUSH_INTERVAL_S = 0.1
"""How often a running task sends its new log lines (and hears about a cancel)."""

Line = tuple[Literal["stdout", "stderr"], str]
Relayed = tuple[str, Literal["stdout", "stderr"], str]
"""A line as the relay hands it to the host: the attempt that sent it, its stream, its text."""
Engine = Literal["local", "docker"]
"""What runs a step on its node: the node's ``local`` executor or its Docker engine."""


class SnapshotGone(StoreError):
    """The parent's snapshot is an image this node's engine no longer has."""


class Relay:
    """Log lines from the tasks to the host, cancellations back; run as a Ray actor.

    Threaded (the actor takes calls concurrently), so every method holds the lock.
    """

    def __init__(self) -> None:
        """An empty relay."""
        self._lock = threading.Lock()
        self._lines: dict[str, list[Relayed]] = {}
        self._cancelled: set[str] = set()

    def push(self, step_id: str, attempt: str, lines: list[Line]) -> bool:
        """Queue ``lines`` of step ``step_id`` sent by task attempt ``attempt``; True once
        the host has cancelled the step."""
        with self._lock:
            if lines:
                queued = self._lines.setdefault(step_id, [])
                queued.extend((attempt, stream, line) for stream, line in lines)
            return step_id in self._cancelled

    def drain(self) -> dict[str, list[Relayed]]:
        """Every line queued since the last drain, by step, in the order pushed."""
        with self._lock:
            lines, self._lines = self._lines, {}
            return lines

    def cancel(self, step_id: str) -> None:
        """Tell step ``step_id``'s task to stop, at its next push."""
        with self._lock:
            self._cancelled.add(step_id)

    def forget(self, step_id: str) -> None:
        """Drop what is kept for a finished step."""
        with self._lock:
            self._cancelled.discard(step_id)
            self._lines.pop(step_id, None)


@dataclass(frozen=True)
class CacheSettings:
    """How a node reaches the remote cache (the host's settings, sent with each task)."""

    url: str
    token: str | None
    timeout: float


@dataclass(frozen=True)
class Job:
    """One step for a node: the request and where its inputs are in the remote cache."""

    request: str
    """The step's :class:`ExecutorInput` as JSON (the node's sandbox already chosen)."""
    archive: str
    """The workspace archive's digest."""
    parent_tree: str | None
    """The tree ``request.parent_snapshot`` names on the host (a root step's: the empty
    tree), on the server; None when the step boots from no tree (an image)."""
    cache: CacheSettings
    engine: Engine = "local"
    protocol: int = PROTOCOL_VERSION
    version: str = __version__


@dataclass(frozen=True)
class Done:
    """What a task returns: the step's result and where it ran."""

    result: str
    """The :class:`StepResult` as JSON."""
    tree: str | None
    """The tree committed under ``result.committed_snapshot``, now on the remote cache."""
    node_id: str
    node_ip: str
    attempt: str = ""
    """This attempt at the task (Ray retries one whose node died), as its lines name it."""
    pushed: int = 0
    """How many log lines this attempt pushed to the relay."""
    tail: tuple[Line, ...] = ()
    """The lines after those, in order."""


def run_job(job: Job, relay: Any) -> Done:
    """Run ``job``'s step on this node (the body of the Ray task); ``relay`` is the actor."""
    import ray

    context = ray.get_runtime_context()
    node_id = context.get_node_id()
    node_ip = ray_node_ip()
    request = ExecutorInput.model_validate_json(job.request)
    outbox = _Outbox(relay, str(request.step_id))
    try:
        outbox.add("stderr", f"greenloop: ray: on node {node_id} ({node_ip})")
        if job.protocol != PROTOCOL_VERSION:
            raise SetupError(
                f"node {node_ip} runs greenloop {__version__} (protocol {PROTOCOL_VERSION}); "
                f"the host runs {job.version} (protocol {job.protocol}): install the same one"
            )
        store = _store()
        remote = HttpRemoteCache(
            store, job.cache.url, token=job.cache.token, timeout=job.cache.timeout
        )
        try:
            result, tree = _run(store, remote, job, request, outbox)
        finally:
            remote.close()
    except BaseException:
        # No result to carry them: the host reads every line before it sees the error.
        outbox.close(push=True)
        raise
    tail = outbox.close(push=False)
    return Done(
        result.model_dump_json(), tree, node_id, node_ip, outbox.attempt, outbox.pushed, tuple(tail)
    )


def _run(
    store: Store, remote: HttpRemoteCache, job: Job, request: ExecutorInput, outbox: _Outbox
) -> tuple[StepResult, str | None]:
    if job.engine == "docker":
        return _run_docker(store, remote, job, request, outbox), None
    sandbox = request.step.sandbox
    if sandbox is not None and sandbox.mode == "bwrap":
        why = bwrap.unavailable(store.root / "sandboxes")
        if why is not None:
            raise SetupError(f"the bwrap sandbox cannot run on this node: {why}")
    remote.pull([job.archive])
    if job.parent_tree is not None and request.parent_snapshot is not None:
        store.get_tree(job.parent_tree)  # the manifest now; its blobs as they are read
        store.set_ref(request.parent_snapshot, job.parent_tree)
    # Read by path: the pulled copy was verified on its way in, and reads seek.
    with open(store.blob_path(job.archive), "rb") as archive:
        result = _local(store).run(request, _NodeHost(archive, outbox))
    tree = store.get_ref(result.committed_snapshot) if result.committed_snapshot else None
    # The parent's tree (what a step that changed nothing commits) is on the server already.
    roots = [a.key for a in result.artifacts] + ([tree] if tree and tree != job.parent_tree else [])
    if roots:
        remote.push(roots)
    return result, tree


def _run_docker(
    store: Store, remote: HttpRemoteCache, job: Job, request: ExecutorInput, outbox: _Outbox
) -> StepResult:
    """Run the step in this node's Docker engine; its snapshot stays an image here."""
    executor = _docker(store)
    if request.parent_snapshot is not None and not _has_image(executor, request.parent_snapshot):
        raise SnapshotGone(
            f"snapshot {request.parent_snapshot} is no longer an image on the Ray node "
            f"{ray_node_ip()}'s Docker engine"
        )
    remote.pull([job.archive])
    with open(store.blob_path(job.archive), "rb") as archive:
        result = executor.run(request, _NodeHost(archive, outbox))
    if result.artifacts:
        remote.push([a.key for a in result.artifacts])
    return result


def _has_image(executor: DockerExecutor, tag: str) -> bool:
    import docker.errors

    try:
        executor.client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def discard_images(tags: list[str]) -> None:
    """Remove run-scoped snapshot images from this node's engine (a task on that node)."""
    _docker(_store()).discard(tags)


def ray_node_ip() -> str:
    """This node's address, as the cluster knows it."""
    import ray

    ip: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    return ip


@functools.cache
def _docker(store: Store) -> DockerExecutor:
    return DockerExecutor(store)


@functools.cache
def _store() -> Store:
    """This node's store, opened once per worker process."""
    return Store.open()


@functools.cache
def _local(store: Store) -> LocalExecutor:
    return LocalExecutor(store)


class _NodeHost:
    """The :class:`~greenloop.plugins.spec.Host` a node's local executor talks to."""

    def __init__(self, archive: BinaryIO, outbox: _Outbox) -> None:
        self._archive = archive
        self._outbox = outbox
        self._lock = threading.Lock()

    def read_archive(self, archive_id: UUID, offset: int, max_bytes: int) -> bytes:
        """A chunk of the workspace archive, from the node's store."""
        with self._lock:
            self._archive.seek(offset)
            return self._archive.read(max_bytes)

    def log(self, step_id: UUID, stream: Literal["stdout", "stderr"], line: str) -> None:
        """Queue a line for the host."""
        self._outbox.add(stream, line)

    def cancelled(self, step_id: UUID) -> bool:
        """Whether the host has cancelled the step (as of the last push)."""
        return self._outbox.cancelled


class _Outbox:
    """A task's log lines on their way to the relay, pushed in order by one thread."""

    def __init__(self, relay: Any, step_id: str) -> None:
        self._relay = relay
        self._step_id = step_id
        self.attempt = uuid4().hex
        self._lock = threading.Lock()
        self._lines: list[Line] = []
        self._stop = threading.Event()
        self.cancelled = False
        self.pushed = 0
        self._thread = threading.Thread(target=self._loop, daemon=True, name="greenloop-relay")
        self._thread.start()

    def add(self, stream: Literal["stdout", "stderr"], line: str) -> None:
        with self._lock:
            self._lines.append((stream, line))

    def close(self, *, push: bool) -> list[Line]:
        """Stop pushing; push what is left (``push``), or return it to travel with the result."""
        self._stop.set()
        self._thread.join()
        if push:
            self._push()
            return []
        with self._lock:
            lines, self._lines = self._lines, []
        return lines

    def _loop(self) -> None:
        while not self._stop.wait(PUSH_INTERVAL_S):
            self._push()

    def _push(self) -> None:
        import ray

        with self._lock:
            lines, self._lines = self._lines, []
        if ray.get(self._relay.push.remote(self._step_id, self.attempt, lines)):
            self.cancelled = True
        self.pushed += len(lines)
