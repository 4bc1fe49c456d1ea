"""What the index stores, as Python values: cache entries, runs, steps, remote statistics.

Also the column lists the index selects them by and the row decoders, so a
record's fields and its columns are described in one place.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from greenloop._fs import process_alive
from greenloop.protocol.executor import ArtifactRef
from greenloop.store.exceptions import StoreError

if TYPE_CHECKING:
    # The dev-loop types load only when an artifact is read (the CI path never does).
    from greenloop.protocol.devloop import ArtifactMeta


@functools.cache
def artifact_refs() -> TypeAdapter[list[ArtifactRef]]:
    """The validator of a stored artifact list."""
    # Built on first use: building a validator at import time costs every command.
    return TypeAdapter(list[ArtifactRef])


@dataclass(frozen=True)
class CacheEntry:
    """A cached step outcome: what the engine needs to reuse a step without running it."""

    key: str
    snapshot: str
    executor: str
    tree: str | None
    artifacts: list[ArtifactRef]
    created_at: float
    last_used: float
    policy: str
    """The cache policy that produced the entry, as JSON text."""
    log: str | None = None
    """The digest of the log the step printed when it produced the entry."""
    host: str | None = None
    """The stamp of the host's tools the step could run, when its executor gives one
    (see :mod:`greenloop.executors.host_tools`): the entry answers only while it holds."""


INTERRUPTED = "interrupted"
"""The status a run reads as when it is recorded ``running`` but its process is gone."""


@dataclass
class RunRecord:
    """One pipeline run, as shown by the history commands."""

    run_id: str
    pipeline: str
    status: str
    """``running`` until it ends; ``interrupted`` when read after its process died."""
    started_at: float
    finished_at: float | None
    steps: int
    cached: int
    pid: int | None = None
    """The process running it (None: not recorded, so a ``running`` run stays so)."""
    pid_start: str | None = None
    """When that process started (:func:`greenloop._fs.process_start`), so a reused pid
    is not taken for it."""


@dataclass
class StepRecord:
    """One step of a recorded run."""

    run_id: str
    key: str
    label: str
    status: str
    exit_code: int | None
    duration_s: float
    cached: bool
    cache_key: str | None = None
    """The step's cache key in this run (None when it never got as far as one)."""
    log: str | None = None
    """The digest of its log: this run's, or for a cached step the producing run's."""
    artifacts: list[ArtifactRef] = field(default_factory=list)
    """The artifacts it declared, as stored."""
    artifact_paths: list[str] = field(default_factory=list)
    """The path each of ``artifacts`` was declared as."""


@dataclass
class RemoteStats:
    """What one run exchanged with a remote cache (see :mod:`greenloop.store.remote`)."""

    run_id: str
    url: str
    """The remote's URL with any credentials removed."""
    mode: str
    """``read`` or ``readwrite``."""
    recorded_at: float
    """When the run's client closed (unix seconds)."""
    lookups: int = 0
    """Local misses the remote was asked about."""
    hits: int = 0
    """Lookups the remote answered with a usable, verified entry."""
    errors: int = 0
    """Requests that failed or returned data that did not check out."""
    published: int = 0
    """Cache entries written to the remote."""
    blobs_uploaded: int = 0
    """Blobs sent with PUT (those the server already had are not counted)."""
    bytes_uploaded: int = 0
    """Body bytes sent, blobs and entry documents."""
    blobs_downloaded: int = 0
    """Blobs received, verified and stored."""
    bytes_downloaded: int = 0
    """Body bytes received, including any that failed verification."""
    warning: str | None = None
    """The one warning the run printed about the remote, if any."""

    @property
    def misses(self) -> int:
        """Lookups the remote could not answer (including failed ones)."""
        return self.lookups - self.hits


ENTRY_COLUMNS = "key, snapshot, executor, tree, artifacts, created_at, last_used, policy, log, host"
STEP_COLUMNS = (
    "run_id, key, label, status, exit_code, duration_s, cached, cache_key, log, artifacts,"
    " artifact_paths"
)
RUN_COLUMNS = "run_id, pipeline, status, started_at, finished_at, steps, cached, pid, pid_start"
REMOTE_COLUMNS = (
    "run_id, url, mode, recorded_at, lookups, hits, errors, published,"
    " blobs_uploaded, bytes_uploaded, blobs_downloaded, bytes_downloaded, warning"
)


def entry_from_row(row: tuple[Any, ...]) -> CacheEntry:
    """A ``cache_entries`` row (in :data:`ENTRY_COLUMNS` order) as an entry."""
    key, snapshot, executor, tree, artifacts, created_at, last_used, policy, log, host = row
    try:
        refs = artifact_refs().validate_json(artifacts)
    except ValidationError as exc:
        raise StoreError(f"cache entry {key!r} has corrupt artifacts: {exc}") from exc
    return CacheEntry(
        key, snapshot, executor, tree, refs, float(created_at), float(last_used), policy, log, host
    )


def step_from_row(row: tuple[Any, ...]) -> StepRecord:
    """A ``steps`` row (in :data:`STEP_COLUMNS` order) as a record."""
    run_id, key, label, status, exit_code, duration_s, cached, cache_key, log, *stored = row
    try:
        refs = artifact_refs().validate_json(stored[0]) if stored[0] else []
        paths = [str(p) for p in json.loads(stored[1])] if stored[1] else []
    except (ValidationError, ValueError, TypeError) as exc:
        raise StoreError(f"step {key!r} of run {run_id} has corrupt artifacts: {exc}") from exc
    return StepRecord(
        run_id,
        key,
        label,
        status,
        exit_code,
        float(duration_s),
        bool(cached),
        cache_key,
        log,
        refs,
        paths,
    )


def run_from_row(row: tuple[Any, ...]) -> RunRecord:
    """A ``runs`` row (in :data:`RUN_COLUMNS` order) as a record; a dead ``running`` one reads
    as :data:`INTERRUPTED`."""
    run_id, pipeline, status, started_at, finished_at, steps, cached, pid, pid_start = row
    if status == "running" and pid is not None and not process_alive(pid, pid_start):
        status = INTERRUPTED
    return RunRecord(
        run_id,
        pipeline,
        status,
        float(started_at),
        None if finished_at is None else float(finished_at),
        steps,
        cached,
        pid,
        pid_start,
    )


def remote_stats_from_row(row: tuple[Any, ...]) -> RemoteStats:
    """A ``remote_stats`` row (in :data:`REMOTE_COLUMNS` order) as statistics."""
    run_id, url, mode, recorded_at, lookups, hits, errors, published, *moved, warning = row
    blobs_up, bytes_up, blobs_down, bytes_down = (int(n) for n in moved)
    return RemoteStats(
        run_id=run_id,
        url=url,
        mode=mode,
        recorded_at=float(recorded_at),
        lookups=int(lookups),
        hits=int(hits),
        errors=int(errors),
        published=int(published),
        blobs_uploaded=blobs_up,
        bytes_uploaded=bytes_up,
        blobs_downloaded=blobs_down,
        bytes_downloaded=bytes_down,
        warning=warning,
    )


def artifact_from_json(raw: str) -> ArtifactMeta:
    """Stored artifact metadata; :class:`StoreError` when it does not parse."""
    from greenloop.protocol.devloop import ArtifactMeta

    try:
        return ArtifactMeta.model_validate_json(raw)
    except ValidationError as exc:
        raise StoreError(f"corrupt artifact metadata in the store index: {exc}") from exc
