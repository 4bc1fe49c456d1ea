"""Garbage collection: expire cache entries, then delete objects nothing refers to.

The index is the only source of roots. An object is live when a cache entry,
an artifact or a step of the run history (its log) refers to it, directly,
through a named ref (an executor's snapshot tag), or as a blob inside a
referenced tree. A ref no cache entry
names is dropped once older than the grace period.
Unreferenced objects are deleted only once older than a grace period: a
concurrent run writes its objects before it records the index entry that
refers to them, and the grace period keeps those in-flight objects alive.
Temp files go after the grace period too, or at once when the process whose
pid their name records is gone (a killed writer's leftovers).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from greenloop.store.hashing import is_digest
from greenloop.store.index import Index
from greenloop.store.objects import ObjectDir, ObjectFile
from greenloop.store.records import CacheEntry
from greenloop.store.trees import read_manifest


@dataclass(frozen=True)
class GcReport:
    """What one garbage collection removed."""

    entries_removed: int
    objects_removed: int
    bytes_freed: int
    temp_files_removed: int
    checkouts_removed: int = 0
    """Tree checkouts (overlay lower layers) removed: their tree went, they were old,
    or the store had to fit ``--max-size-mb``."""


def collect_garbage(
    objects: ObjectDir,
    index: Index,
    *,
    max_age: timedelta | None,
    max_bytes: int | None,
    grace: timedelta,
) -> GcReport:
    """Expire entries by age and size budget, then sweep unreferenced objects and temp files."""
    now = time.time()
    cutoff = now - grace.total_seconds()
    refs = _References(objects, index)
    entries_removed = 0

    if max_age is not None:
        entries_removed += index.expire_entries(before=now - max_age.total_seconds())
    entries = index.entries()

    files = list(objects.scan())
    if max_bytes is not None and sum(f.size for f in files) > max_bytes:
        sizes = {f.digest: f.size for f in files if f.digest is not None}
        entries_removed += _evict_lru(index, entries, refs, sizes, max_bytes)

    # Re-read the roots just before sweeping so that entries recorded by a
    # concurrent run while we were scanning are honoured too.
    live = set(_artifact_roots(index, refs)) | index.step_logs()
    entries = index.entries()
    named = {entry.snapshot for entry in entries}
    for entry in entries:
        live |= refs.of_entry(entry)
    for name, (digest, updated_at) in index.refs().items():
        if name in named or updated_at > cutoff:
            live |= refs.of_root(digest)
        else:
            index.delete_ref(name)

    objects_removed = bytes_freed = temps_removed = 0
    for found in files:
        if found.abandoned:
            # Its writer was killed: nobody will ever rename it, so no grace is due.
            removed = _remove(found)
        else:
            garbage = found.is_temp or (found.digest is not None and found.digest not in live)
            removed = garbage and found.mtime <= cutoff and _remove_if_still_old(found, cutoff)
        if not removed:
            continue
        if found.is_temp:
            temps_removed += 1
        else:
            objects_removed += 1
            bytes_freed += found.size
    return GcReport(entries_removed, objects_removed, bytes_freed, temps_removed)


def _evict_lru(
    index: Index,
    entries: list[CacheEntry],
    refs: _References,
    sizes: dict[str, int],
    max_bytes: int,
) -> int:
    # Objects shared by several entries count once, and only stop counting
    # when the last entry referring to them is gone.
    counts: Counter[str] = Counter()
    pinned = set(_artifact_roots(index, refs))
    counts.update(pinned)
    per_entry = {e.key: refs.of_entry(e) for e in entries}
    for digests in per_entry.values():
        counts.update(digests)
    referenced = sum(sizes.get(d, 0) for d in counts)
    removed = 0
    for entry in sorted(entries, key=lambda e: (e.last_used, e.key)):
        if referenced <= max_bytes:
            break
        index.delete_entry(entry.key)
        removed += 1
        for digest in per_entry[entry.key]:
            counts[digest] -= 1
            if counts[digest] == 0:
                del counts[digest]
                referenced -= sizes.get(digest, 0)
    return removed


def _artifact_roots(index: Index, refs: _References) -> Iterable[str]:
    for meta in index.artifacts():
        yield from refs.of_root(meta.tree)


def _remove_if_still_old(found: ObjectFile, cutoff: float) -> bool:
    # A writer that reuses an existing object refreshes its mtime; checking
    # again right before unlinking narrows the window in which we could delete
    # an object someone has just decided to rely on.
    try:
        if found.path.stat().st_mtime > cutoff:
            return False
    except FileNotFoundError:
        return False
    return _remove(found)


def _remove(found: ObjectFile) -> bool:
    try:
        found.path.unlink()
    except FileNotFoundError:
        return False
    return True


class _References:
    """Expands roots to the objects they keep alive, remembering trees already read."""

    def __init__(self, objects: ObjectDir, index: Index) -> None:
        self._objects = objects
        self._named = {name: digest for name, (digest, _) in index.refs().items()}
        self._cache: dict[str, frozenset[str]] = {}

    def of_entry(self, entry: CacheEntry) -> set[str]:
        out: set[str] = set()
        # The snapshot is opaque to the store (a docker tag, say), but an
        # executor may well use a tree digest there; keeping it alive when it
        # names an object costs nothing and never loses a live snapshot.
        snapshot = self._named.get(entry.snapshot, entry.snapshot)
        roots = [entry.tree, snapshot, entry.log, *(a.key for a in entry.artifacts)]
        for root in roots:
            if root is not None:
                out |= self.of_root(root)
        return out

    def of_root(self, digest: str) -> frozenset[str]:
        if not is_digest(digest):
            return frozenset()
        cached = self._cache.get(digest)
        if cached is None:
            cached = self._expand(digest)
            self._cache[digest] = cached
        return cached

    def _expand(self, digest: str) -> frozenset[str]:
        try:
            with open(self._objects.path_for(digest), "rb") as fh:
                entries = read_manifest(fh)
        except FileNotFoundError:
            return frozenset()
        if entries is None:
            return frozenset({digest})
        return frozenset({digest, *(e.blob for e in entries if e.blob is not None)})
