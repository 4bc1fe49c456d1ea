"""The SQLite index beside the object store: cache entries, artifacts and run history.

One connection per :class:`Index`, in WAL mode with a busy timeout, so several
processes can read and write the same file at once; SQLite serialises the
writers. The schema version lives in ``PRAGMA user_version`` and is migrated
forward on open.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from greenloop.store.exceptions import StoreError
from greenloop.store.migrations import SCHEMA_VERSION, migrate
from greenloop.store.records import (
    ENTRY_COLUMNS,
    REMOTE_COLUMNS,
    RUN_COLUMNS,
    STEP_COLUMNS,
    CacheEntry,
    RemoteStats,
    RunRecord,
    StepRecord,
    artifact_from_json,
    artifact_refs,
    entry_from_row,
    remote_stats_from_row,
    run_from_row,
    step_from_row,
)

if TYPE_CHECKING:
    # The dev-loop types load only when an artifact is read (the CI path never does).
    from greenloop.protocol.devloop import ArtifactMeta

_BUSY_TIMEOUT_S = 30.0
"""How long a writer waits for another process's transaction before giving up."""
_FULL_BELOW = 1 << 20
"""Free bytes under which a failing disk write is put down to a full disk."""


class Index:
    """The store's SQLite index. Thread-safe; one connection per instance."""

    def __init__(self, path: Path) -> None:
        """Open (creating and migrating as needed) the index database at ``path``."""
        self.path = path
        self._lock = threading.Lock()
        try:
            # isolation_level=None: we issue BEGIN ourselves, so each write is
            # exactly one short transaction and readers never hold a lock open.
            self._conn = sqlite3.connect(
                path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store index {path}: {_cause(exc, path)}") from exc
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
            _enable_wal(self._conn, path)
            # NORMAL is crash-safe in WAL mode; a power cut may lose the last
            # commits, never corrupt the file -- an acceptable cost for a cache.
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(f"cannot open the store index {path}: {_cause(exc, path)}") from exc
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        """Close the connection; the index cannot be used afterwards."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Index:
        """Use the index as a context manager that closes it on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the index."""
        self.close()

    # -- cache entries -------------------------------------------------------

    def put_entry(self, e: CacheEntry) -> None:
        """Insert or replace the cache entry ``e.key``."""
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO cache_entries ({ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET snapshot = excluded.snapshot,"
                " executor = excluded.executor, tree = excluded.tree,"
                " artifacts = excluded.artifacts, created_at = excluded.created_at,"
                " last_used = excluded.last_used, policy = excluded.policy,"
                " log = excluded.log, host = excluded.host",
                (
                    e.key,
                    e.snapshot,
                    e.executor,
                    e.tree,
                    artifact_refs().dump_json(e.artifacts).decode(),
                    e.created_at,
                    e.last_used,
                    e.policy,
                    e.log,
                    e.host,
                ),
            )

    def get_entry(self, key: str) -> CacheEntry | None:
        """The cache entry ``key``, or None."""
        rows = self._read(f"SELECT {ENTRY_COLUMNS} FROM cache_entries WHERE key = ?", (key,))
        return entry_from_row(rows[0]) if rows else None

    def touch_entry(self, key: str, when: float) -> None:
        """Record that entry ``key`` was used at ``when`` (unix seconds); no-op if absent."""
        with self._write() as conn:
            conn.execute("UPDATE cache_entries SET last_used = ? WHERE key = ?", (when, key))

    def delete_entry(self, key: str) -> None:
        """Remove entry ``key`` if present. Its objects go at the next gc."""
        with self._write() as conn:
            conn.execute("DELETE FROM cache_entries WHERE key = ?", (key,))

    def expire_entries(self, *, before: float) -> int:
        """Delete every entry last used before ``before`` (unix seconds); return how many."""
        # One conditional DELETE, so an entry another process touches while we
        # run is judged by its new last_used rather than a stale read.
        with self._write() as conn:
            return conn.execute("DELETE FROM cache_entries WHERE last_used < ?", (before,)).rowcount

    def entries(self) -> list[CacheEntry]:
        """Every cache entry, ordered by key."""
        rows = self._read(f"SELECT {ENTRY_COLUMNS} FROM cache_entries ORDER BY key", ())
        return [entry_from_row(row) for row in rows]

    # -- named refs -----------------------------------------------------------

    def set_ref(self, name: str, digest: str) -> None:
        """Point ref ``name`` (an executor's snapshot tag, say) at object ``digest``."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO refs (name, digest, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET digest = excluded.digest,"
                " updated_at = excluded.updated_at",
                (name, digest, time.time()),
            )

    def get_ref(self, name: str) -> str | None:
        """The digest ref ``name`` points at, or None."""
        rows = self._read("SELECT digest FROM refs WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def delete_ref(self, name: str) -> None:
        """Remove ref ``name`` if present; what it pointed at goes at the next gc."""
        with self._write() as conn:
            conn.execute("DELETE FROM refs WHERE name = ?", (name,))

    def refs(self) -> dict[str, tuple[str, float]]:
        """Every ref: name -> (digest, updated_at)."""
        rows = self._read("SELECT name, digest, updated_at FROM refs", ())
        return {str(n): (str(d), float(t)) for n, d, t in rows}

    # -- dev-loop artifacts --------------------------------------------------

    def put_artifact(self, meta: ArtifactMeta) -> None:
        """Insert or replace the artifact metadata for ``meta.input_hash``."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO artifacts (input_hash, meta) VALUES (?, ?)"
                " ON CONFLICT (input_hash) DO UPDATE SET meta = excluded.meta",
                (meta.input_hash, meta.model_dump_json()),
            )

    def get_artifact(self, input_hash: str) -> ArtifactMeta | None:
        """The artifact built from ``input_hash``, or None."""
        rows = self._read("SELECT meta FROM artifacts WHERE input_hash = ?", (input_hash,))
        return artifact_from_json(rows[0][0]) if rows else None

    def delete_artifact(self, input_hash: str) -> None:
        """Forget the artifact built from ``input_hash``. Its objects go at the next gc."""
        with self._write() as conn:
            conn.execute("DELETE FROM artifacts WHERE input_hash = ?", (input_hash,))

    def artifacts(self) -> list[ArtifactMeta]:
        """Every recorded artifact, ordered by input hash."""
        rows = self._read("SELECT meta FROM artifacts ORDER BY input_hash", ())
        return [artifact_from_json(row[0]) for row in rows]

    # -- run history ---------------------------------------------------------

    def record_run(self, run: RunRecord) -> None:
        """Insert or update a run (record it at start, then again when it finishes)."""
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO runs ({RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET pipeline = excluded.pipeline,"
                " status = excluded.status, started_at = excluded.started_at,"
                " finished_at = excluded.finished_at, steps = excluded.steps,"
                " cached = excluded.cached, pid = excluded.pid, pid_start = excluded.pid_start",
                (
                    run.run_id,
                    run.pipeline,
                    run.status,
                    run.started_at,
                    run.finished_at,
                    run.steps,
                    run.cached,
                    run.pid,
                    run.pid_start,
                ),
            )

    def record_step(self, step: StepRecord) -> None:
        """Insert or update one step of a run; steps keep their first-recorded order."""
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO steps ({STEP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, key) DO UPDATE SET label = excluded.label,"
                " status = excluded.status, exit_code = excluded.exit_code,"
                " duration_s = excluded.duration_s, cached = excluded.cached,"
                " cache_key = excluded.cache_key, log = excluded.log,"
                " artifacts = excluded.artifacts, artifact_paths = excluded.artifact_paths",
                (
                    step.run_id,
                    step.key,
                    step.label,
                    step.status,
                    step.exit_code,
                    step.duration_s,
                    int(step.cached),
                    step.cache_key,
                    step.log,
                    artifact_refs().dump_json(step.artifacts).decode(),
                    json.dumps(step.artifact_paths),
                ),
            )

    def runs(self, limit: int = 20, *, pipeline: str | None = None) -> list[RunRecord]:
        """The ``limit`` most recently started runs (of ``pipeline``, if given), newest first.

        A run recorded ``running`` whose process is gone (killed before it could
        record its end) reads as ``interrupted``.
        """
        where, params = ("WHERE pipeline = ?", (pipeline,)) if pipeline is not None else ("", ())
        rows = self._read(
            f"SELECT {RUN_COLUMNS} FROM runs {where} ORDER BY started_at DESC, rowid DESC LIMIT ?",
            (*params, limit),
        )
        return [run_from_row(row) for row in rows]

    def latest_step(
        self, key: str, *, pipeline: str | None = None, status: str | None = None
    ) -> tuple[RunRecord, StepRecord] | None:
        """Step ``key`` of the newest run that has one (of ``pipeline``, with ``status``)."""
        where = ["s.key = ?"]
        params: list[object] = [key]
        if pipeline is not None:
            where.append("r.pipeline = ?")
            params.append(pipeline)
        if status is not None:
            where.append("s.status = ?")
            params.append(status)
        run_columns = ", ".join(f"r.{c.strip()}" for c in RUN_COLUMNS.split(","))
        step_columns = ", ".join(f"s.{c.strip()}" for c in STEP_COLUMNS.split(","))
        rows = self._read(
            f"SELECT {run_columns}, {step_columns} FROM steps s JOIN runs r USING (run_id)"
            f" WHERE {' AND '.join(where)}"
            " ORDER BY r.started_at DESC, r.rowid DESC LIMIT 1",
            tuple(params),
        )
        if not rows:
            return None
        split = RUN_COLUMNS.count(",") + 1
        return run_from_row(rows[0][:split]), step_from_row(rows[0][split:])

    def steps(self, run_id: str) -> list[StepRecord]:
        """The steps of run ``run_id`` in the order they were first recorded."""
        rows = self._read(
            f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ? ORDER BY rowid", (run_id,)
        )
        return [step_from_row(row) for row in rows]

    def step_logs(self) -> set[str]:
        """The digest of every log the run history refers to (gc keeps them)."""
        rows = self._read("SELECT DISTINCT log FROM steps WHERE log IS NOT NULL", ())
        return {str(log) for (log,) in rows}

    # -- the parts of each step's last cache key (for `greenloop explain`) -----

    def put_key_parts(self, pipeline: str, step: str, key: str, parts: str) -> None:
        """Remember ``parts`` (JSON) as what the last key of ``pipeline``'s ``step`` was made of."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO key_parts (pipeline, step, key, parts, recorded_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (pipeline, step) DO UPDATE SET"
                " key = excluded.key, parts = excluded.parts, recorded_at = excluded.recorded_at",
                (pipeline, step, key, parts, time.time()),
            )

    def key_parts(self, pipeline: str, step: str) -> tuple[str, str] | None:
        """(key, parts JSON) last recorded for ``pipeline``'s ``step``, or None."""
        rows = self._read(
            "SELECT key, parts FROM key_parts WHERE pipeline = ? AND step = ?", (pipeline, step)
        )
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    # -- remote cache statistics ---------------------------------------------

    def record_remote_stats(self, stats: RemoteStats) -> None:
        """Insert or replace what run ``stats.run_id`` exchanged with its remote cache."""
        with self._write() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO remote_stats ({REMOTE_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    stats.run_id,
                    stats.url,
                    stats.mode,
                    stats.recorded_at,
                    stats.lookups,
                    stats.hits,
                    stats.errors,
                    stats.published,
                    stats.blobs_uploaded,
                    stats.bytes_uploaded,
                    stats.blobs_downloaded,
                    stats.bytes_downloaded,
                    stats.warning,
                ),
            )

    def remote_stats(self, run_ids: list[str]) -> list[RemoteStats]:
        """The remote statistics recorded for ``run_ids`` (runs without a remote have none)."""
        out: list[RemoteStats] = []
        # SQLite caps bound parameters per statement; ask in slices.
        for start in range(0, len(run_ids), 500):
            chunk = run_ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self._read(
                f"SELECT {REMOTE_COLUMNS} FROM remote_stats WHERE run_id IN ({marks})"
                " ORDER BY recorded_at DESC",
                tuple(chunk),
            )
            out.extend(remote_stats_from_row(row) for row in rows)
        return out

    # -- plumbing ------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                # IMMEDIATE takes the write lock up front, so a busy database
                # is waited on via busy_timeout instead of failing mid-transaction.
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(
                    f"store index write failed ({self.path}): {_cause(exc, self.path)}"
                ) from exc

    def _read(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                rows: list[tuple[Any, ...]] = self._conn.execute(sql, params).fetchall()
                return rows
            except sqlite3.Error as exc:
                raise StoreError(
                    f"store index read failed ({self.path}): {_cause(exc, self.path)}"
                ) from exc

    def _migrate(self) -> None:
        # Fast path: an up-to-date index needs no write lock to open.
        if self._read("PRAGMA user_version", ())[0][0] == SCHEMA_VERSION:
            return
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the store index {self.path} has schema {version}, newer than this "
                    f"greenloop understands ({SCHEMA_VERSION}); upgrade greenloop"
                )
            migrate(conn, version)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _enable_wal(conn: sqlite3.Connection, path: Path) -> None:
    # Switching a fresh database to WAL needs an exclusive lock, and SQLite
    # reports SQLITE_BUSY for it without consulting the busy handler when
    # several processes create the store at once; so retry here ourselves.
    # WAL is persistent, so this only ever contends on a brand-new index.
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
            continue
        if str(mode).lower() != "wal":
            raise StoreError(f"the store index {path} cannot use WAL mode (got {mode!r})")
        return


def _cause(exc: sqlite3.Error, path: Path) -> str:
    """SQLite's complaint about ``path``, with the likely reason when it is a full disk.

    SQLite reports a full disk as a mere "disk I/O error" when it cannot create
    its WAL or shared-memory file, so the free space is looked at.
    """
    try:
        full = shutil.disk_usage(path.parent).free < _FULL_BELOW
    except OSError:
        full = False
    return f"{exc} (no space left on the disk it is on)" if full else str(exc)
