"""A cache carried as a folder: ``greenloop cache export DIR`` and ``cache import DIR``.

For CI runners with no cache server between them (save the folder as a CI
cache, restore it on the next runner). The folder holds ``objects/<digest>``
and one manifest, ``greenloop-cache.json``, listing the cache entries with the
tree their snapshot ref named. Import trusts nothing in it: every object is
hashed as it is copied in and a misnamed one is dropped with the entries that
need it; entries the local store already has are kept as they are.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from greenloop.store.exceptions import StoreError
from greenloop.store.remote import RemoteEntry
from greenloop.store.store import Store

MANIFEST = "greenloop-cache.json"
"""The manifest's name inside an exported folder."""


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    greenloop_cache_export: Literal[1] = 1
    entries: list[RemoteEntry]
    """The remote cache's own entry document: one portable form of a cache entry."""


@dataclass
class TransferReport:
    """What an export or import moved."""

    entries: int = 0
    objects: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    """One line per entry left out, saying why."""


def export_cache(store: Store, dest: Path) -> TransferReport:
    """Copy every cache entry whose objects are all here into the folder ``dest``.

    Entries whose snapshot is not a store tree (a docker image tag) cannot travel
    as files and are listed in ``skipped``. An existing export at ``dest`` is
    replaced; any other non-empty folder is refused.
    """
    if dest.exists() and any(dest.iterdir()) and not (dest / MANIFEST).is_file():
        raise StoreError(f"{dest} is not empty and holds no greenloop cache export")
    report = TransferReport()
    entries: list[RemoteEntry] = []
    objects = dest / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    copied: set[str] = set()
    for entry in store.index.entries():
        tree = store.get_ref(entry.snapshot)
        if tree is None:
            report.skipped.append(f"{entry.key[:12]}: snapshot {entry.snapshot} is not a tree")
            continue
        exported = RemoteEntry.describing(entry, tree)
        needed = _closure(store, exported.roots())
        if needed is None:
            report.skipped.append(f"{entry.key[:12]}: some of its objects are not here")
            continue
        largest = max(store.blob_path(d).stat().st_size for d in needed)
        exported = exported.model_copy(update={"max_object_bytes": largest})
        for digest in needed - copied:
            target = objects / digest
            if not target.exists():
                shutil.copyfile(store.blob_path(digest), target)
                report.bytes += target.stat().st_size
                report.objects += 1
            copied.add(digest)
        entries.append(exported)
    document = _Manifest(entries=entries).model_dump_json(indent=1)
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=".tmp-manifest-")
    with os.fdopen(fd, "w") as out:
        out.write(document)
    os.replace(tmp, dest / MANIFEST)
    report.entries = len(entries)
    return report


def import_cache(store: Store, source: Path) -> TransferReport:
    """Bring the entries exported in ``source`` into ``store``, verifying every object.

    Raises :class:`StoreError` for a folder that is no export or a manifest that
    does not parse, before anything is written.
    """
    try:
        manifest = _Manifest.model_validate_json((source / MANIFEST).read_bytes())
    except OSError as e:
        message = f"{source} holds no greenloop cache export ({MANIFEST}: {e.strerror})"
        raise StoreError(message) from None
    except (ValidationError, ValueError) as e:
        raise StoreError(f"{source / MANIFEST} is not a greenloop cache export: {e}") from None
    report = TransferReport()
    good: set[str] = set()
    bad: set[str] = set()
    for entry in manifest.entries:
        if store.index.get_entry(entry.key) is not None:
            continue  # what this machine has, it keeps
        if not _bring_in(store, source / "objects", entry.roots(), good, bad, report):
            report.skipped.append(f"{entry.key[:12]}: an object is missing or damaged")
            continue
        store.set_ref(entry.snapshot, entry.snapshot_tree)
        store.index.put_entry(entry.as_entry(time.time()))
        report.entries += 1
    return report


def _closure(store: Store, roots: list[str]) -> set[str] | None:
    """Every object ``roots`` need (trees with their blobs), or None if one is not here."""
    needed: set[str] = set()
    for root in roots:
        if not store.has(root):
            return None
        needed.add(root)
        if store.is_tree(root):
            for item in store.get_tree(root):
                if item.blob is not None:
                    if not store.has(item.blob):
                        return None
                    needed.add(item.blob)
    return needed


def _bring_in(
    store: Store,
    objects: Path,
    roots: list[str],
    good: set[str],
    bad: set[str],
    report: TransferReport,
) -> bool:
    """Copy ``roots`` and the blobs of the trees among them into the store, checked."""
    pending = list(roots)
    while pending:
        digest = pending.pop()
        if digest in bad:
            return False
        if digest not in good:
            if not store.has(digest):
                path = objects / digest
                try:
                    stored = store.put_file(path)
                except (OSError, StoreError):
                    stored = None
                if stored != digest:
                    bad.add(digest)
                    return False
                report.objects += 1
                report.bytes += path.stat().st_size
            good.add(digest)
        if store.is_tree(digest):
            pending += [e.blob for e in store.get_tree(digest) if e.blob is not None]
    return True
