"""The index's SQLite schema, version by version, and the migrations between them."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

SCHEMA_VERSION = 4
"""The index schema this code reads and writes."""

SCHEMA_V1 = """
CREATE TABLE cache_entries (
    key        TEXT PRIMARY KEY,
    snapshot   TEXT NOT NULL,
    executor   TEXT NOT NULL,
    tree       TEXT,
    artifacts  TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_used  REAL NOT NULL,
    policy     TEXT NOT NULL
);
CREATE INDEX cache_entries_last_used ON cache_entries (last_used);
CREATE TABLE artifacts (
    input_hash TEXT PRIMARY KEY,
    meta       TEXT NOT NULL
);
CREATE TABLE runs (
    run_id      TEXT PRIMARY KEY,
    pipeline    TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL,
    steps       INTEGER NOT NULL,
    cached      INTEGER NOT NULL
);
CREATE INDEX runs_started_at ON runs (started_at);
CREATE TABLE steps (
    run_id     TEXT NOT NULL,
    key        TEXT NOT NULL,
    label      TEXT NOT NULL,
    status     TEXT NOT NULL,
    exit_code  INTEGER,
    duration_s REAL NOT NULL,
    cached     INTEGER NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE refs (
    name       TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE remote_stats (
    run_id           TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    mode             TEXT NOT NULL,
    recorded_at      REAL NOT NULL,
    lookups          INTEGER NOT NULL,
    hits             INTEGER NOT NULL,
    errors           INTEGER NOT NULL,
    published        INTEGER NOT NULL,
    blobs_uploaded   INTEGER NOT NULL,
    bytes_uploaded   INTEGER NOT NULL,
    blobs_downloaded INTEGER NOT NULL,
    bytes_downloaded INTEGER NOT NULL,
    warning          TEXT
);
"""

# A run records its process, so one killed before it could record its end reads as such.
_SCHEMA_V2 = """
ALTER TABLE runs ADD COLUMN pid INTEGER;
ALTER TABLE runs ADD COLUMN pid_start TEXT
"""

# Each step keeps its log, key and artifacts; each (pipeline, step) the parts of
# its last key, so `greenloop explain` can say which input changed.
_SCHEMA_V3 = """
ALTER TABLE steps ADD COLUMN cache_key TEXT;
ALTER TABLE steps ADD COLUMN log TEXT;
ALTER TABLE steps ADD COLUMN artifacts TEXT;
ALTER TABLE steps ADD COLUMN artifact_paths TEXT;
ALTER TABLE cache_entries ADD COLUMN log TEXT;
CREATE TABLE key_parts (
    pipeline    TEXT NOT NULL,
    step        TEXT NOT NULL,
    key         TEXT NOT NULL,
    parts       TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (pipeline, step)
)
"""

# An entry made by a step that runs the host's tools keeps their stamp: it answers
# only while they are unchanged (greenloop.executors.host_tools).
_SCHEMA_V4 = """
ALTER TABLE cache_entries ADD COLUMN host TEXT
"""

# _MIGRATIONS[n] brings a schema at version n to version n + 1.
_MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    lambda conn: _run_script(conn, SCHEMA_V1),
    lambda conn: _run_script(conn, _SCHEMA_V2),
    lambda conn: _run_script(conn, _SCHEMA_V3),
    lambda conn: _run_script(conn, _SCHEMA_V4),
]
assert len(_MIGRATIONS) == SCHEMA_VERSION


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a schema at ``version`` to :data:`SCHEMA_VERSION` (inside the caller's transaction)."""
    for step in range(version, SCHEMA_VERSION):
        _MIGRATIONS[step](conn)


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT our open transaction; run statements one by one.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)
