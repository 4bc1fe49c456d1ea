"""The host's cache decision for a step about to run, and the entry a passed step leaves.

The host decides every outcome (``Hit``, ``MissBuildAs``, ``MissNoCommit``)
just before a step runs, once its parent's snapshot is known; executors only
honour it. A step with a policy commits under a fresh snapshot tag and its
result becomes an entry (in the store's index, and on the remote cache when
there is one); a step without a policy commits only when steps are chained
after it, under a run-scoped tag that goes when the run ends.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from uuid import UUID

from greenloop.engine.keys import answers
from greenloop.engine.outcomes import RemoteCache, StepOutcome
from greenloop.plugins.spec import Executor
from greenloop.protocol import (
    ArtifactRef,
    CacheDecision,
    CommandStep,
    Hit,
    MissBuildAs,
    MissNoCommit,
)
from greenloop.store import CacheEntry, Store


class Decided(NamedTuple):
    """A step's executor, parent snapshot, key (and its parts), cache decision, the entry
    of a hit and the stamp of the host's tools it was decided under."""

    name: str
    parent_snapshot: str | None
    parts: dict[str, Any]
    key: str
    decision: CacheDecision
    entry: CacheEntry | None
    host: str | None


class Decisions:
    """Cache decisions for one run's steps."""

    def __init__(
        self,
        store: Store,
        run_id: UUID,
        *,
        use_cache: bool,
        remote: RemoteCache | None,
        with_children: set[str],
    ) -> None:
        """Decide for run ``run_id``; ``with_children`` are the steps others are chained after."""
        self._store = store
        self._run_id = run_id
        self._use_cache = use_cache
        self._remote = remote
        self._with_children = with_children
        self._lock = threading.Lock()
        self.run_scoped: list[tuple[str, str]] = []
        """(executor, tag) of every run-scoped snapshot handed out, to discard at the end."""

    def decide(
        self, step: CommandStep, key: str, executor: str, host: str | None
    ) -> tuple[CacheDecision, CacheEntry | None]:
        """What ``executor`` is to do with ``step`` (keyed ``key``; ``host``: the stamp of
        the host's tools it may run, if any), and the entry of a hit."""
        if step.cache is not None:
            entry = self._store.index.get_entry(key) if self._use_cache else None
            # A local entry made with other tools may be the one this machine once
            # published: the remote would give it back.
            if entry is None and self._use_cache and self._remote is not None:
                entry = self._remote.lookup(key)
            if entry is not None and answers(entry, step.cache, host, time.time()):
                if host is not None and entry.host is None:
                    # Taken on its word (the remote's, an import's): from now on it
                    # answers only while this machine's tools are as they are now.
                    entry = dataclasses.replace(entry, host=host)
                    self._store.index.put_entry(entry)
                return Hit(tag=entry.snapshot), entry
            return MissBuildAs(tag=f"greenloop-snap:{key[:24]}-{uuid.uuid4().hex[:8]}"), None
        if step.key in self._with_children:
            slug = re.sub(r"[^A-Za-z0-9_.-]", "-", step.key)[:80]
            tag = f"greenloop-run:{self._run_id.hex[:12]}-{slug}"
            with self._lock:
                self.run_scoped.append((executor, tag))
            return MissBuildAs(tag=tag), None
        return MissNoCommit(), None

    def discard_run_scoped(
        self, executors: Callable[[str], Executor], warn: Callable[[str], None]
    ) -> None:
        """Have each executor drop the run-scoped snapshots it was handed (``warn`` says
        which could not be: cleanup must never turn a result into a crash)."""
        by_executor: dict[str, list[str]] = {}
        for name, tag in self.run_scoped:
            by_executor.setdefault(name, []).append(tag)
        for name, tags in by_executor.items():
            try:
                executors(name).discard(tags)
            except Exception as e:
                warn(f"could not discard run snapshots with {name!r}: {e}")

    def remember(
        self,
        pipeline: str,
        step: CommandStep,
        key: str,
        parts: dict[str, Any],
        *,
        executor: str,
        snapshot: str,
        artifacts: list[ArtifactRef],
        log: str | None,
        host: str | None,
    ) -> None:
        """Store a passed ``step``'s result as the entry for ``key`` (and what the key
        was made of, for ``explain``; ``host``: the stamp it was decided under); publish
        it to the remote cache."""
        assert step.cache is not None
        now = time.time()
        entry = CacheEntry(
            key=key,
            snapshot=snapshot,
            executor=executor,
            tree=None,
            artifacts=artifacts,
            created_at=now,
            last_used=now,
            policy=step.cache.model_dump_json(),
            log=log,
            host=host,
        )
        self._store.index.put_entry(entry)
        self._store.index.put_key_parts(pipeline, step.key, key, json.dumps(parts, sort_keys=True))
        if self._remote is not None:
            self._remote.publish(entry)


def lost_entries(
    step: CommandStep,
    outcomes: Mapping[str, StepOutcome],
    by_key: Mapping[str, CommandStep],
    store: Store,
) -> list[CommandStep]:
    """The cached steps ``step`` boots from whose entries the store has dropped since
    (it drops every entry that needs a damaged or vanished object), nearest first."""
    lost: list[CommandStep] = []
    up = step.builds_in
    while up is not None:
        done = outcomes[up]
        cached = done.status == "cached" and done.cache_key is not None
        if not cached or store.index.get_entry(done.cache_key or ""):
            break
        lost.append(by_key[up])
        up = by_key[up].builds_in
    return lost
