"""The :class:`Store` facade: objects, trees, index and gc behind one handle."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, BinaryIO

from greenloop.store.cache_folders import CacheDirs
from greenloop.store.exceptions import CorruptObject, StoreError
from greenloop.store.gc import GcReport, collect_garbage
from greenloop.store.hashing import digest_file, is_digest
from greenloop.store.index import Index
from greenloop.store.layout import INDEX_NAME, OBJECTS_DIR, default_root, init_root
from greenloop.store.materialize import (
    CHECKOUTS_DIR,
    adopt_checkout,
    checked_out,
    checkout_sizes,
    materialize_entries,
    sweep_checkouts,
)
from greenloop.store.objects import ObjectDir
from greenloop.store.scan import Exclude, scan_directory
from greenloop.store.trees import (
    TreeEntry,
    canonicalize,
    decode_manifest,
    encode_manifest,
    read_manifest,
)

Fetcher = Callable[[list[str]], None]
"""Brings absent objects into a store on demand (see :meth:`Store.set_fetcher`).

It receives digests none of which is stored, and returns once every one of
them is -- each put with :meth:`Store.put_bytes` or :meth:`Store.put_file`
after its bytes were checked against its digest -- or raises
:class:`StoreError` saying why it could not.
"""


@dataclass(frozen=True)
class Leftover:
    """A temp file in the store (see :meth:`Store.leftovers`)."""

    path: str
    """Where, relative to the store root."""
    size: int
    """Its size in bytes."""
    in_progress: bool
    """True unless its writer is known to be gone (then it is a killed write's leftover)."""


class Store:
    """A content-addressed store with a SQLite index, rooted at one directory.

    Safe to share between processes: object writes are atomic renames and the
    index is SQLite in WAL mode. Obtain one with :meth:`open`.

    Objects may be *lazy*: a cache entry imported from a remote cache can name
    objects that are not here yet. The read paths (:meth:`open_blob`,
    :meth:`read_bytes`, :meth:`blob_path`, :meth:`get_tree`,
    :meth:`materialize`) ask the :data:`Fetcher` set with :meth:`set_fetcher`
    for an absent object before giving up; :meth:`has`, :meth:`is_tree`,
    :meth:`verify`, :meth:`gc` and the write paths only ever look at what is
    on this disk.
    """

    root: Path
    """The store directory (holds the marker, ``objects/`` and ``index.sqlite``)."""
    index: Index
    """Cache entries, artifacts and run history."""

    def __init__(self, root: Path, index: Index) -> None:
        """Wrap an already initialised store; prefer :meth:`open`."""
        self.root = root
        self.index = index
        self._objects = ObjectDir(root / OBJECTS_DIR)
        self._fetcher: Fetcher | None = None
        # Objects this handle found damaged and removed, with what was said of each:
        # a concurrent reader that then finds one absent reports the damage, not a
        # mysteriously missing object.
        self._damaged: dict[str, str] = {}
        self.cache_dirs = CacheDirs(root)
        """The folders steps keep across runs (``cache_dirs=``)."""
        self._damage_lock = threading.Lock()

    @classmethod
    def open(cls, root: Path | None = None) -> Store:
        """Open the store at ``root`` (default: :func:`default_root`), creating it if needed.

        A missing or empty directory becomes a new store. A non-empty directory
        without the store marker raises :class:`StoreError`.
        """
        root = default_root() if root is None else root
        init_root(root)
        return cls(root, Index(root / INDEX_NAME))

    def close(self) -> None:
        """Release the index connection."""
        self.index.close()

    def __enter__(self) -> Store:
        """Use the store as a context manager that closes it on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""
        self.close()

    # -- blobs ---------------------------------------------------------------

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; return its SHA-256 hex digest."""
        return self._objects.put_bytes(data)

    def put_file(self, path: Path, *, verify_existing: bool = False) -> str:
        """Store the file at ``path``, streamed in chunks; return its digest.

        ``verify_existing`` checks a copy already stored and replaces it when it
        is damaged: for an object about to be read through :meth:`blob_path`,
        which does not check.
        """
        return self._objects.put_file(path, verify_existing=verify_existing)

    def adopt_files(self, paths: Sequence[Path]) -> list[str]:
        """Store files nobody will write again by linking them in (no copy); their digests.

        For a finished step's upper layer: see :meth:`ObjectDir.adopt_files`.
        """
        return self._objects.adopt_files(paths)

    def put_stream(self, stream: BinaryIO) -> str:
        """Store everything read from ``stream``, in chunks; return its digest."""
        return self._objects.put_stream(stream)

    def has(self, digest: str) -> bool:
        """True when the object ``digest`` is stored on this disk (never fetches)."""
        return self._objects.has(digest)

    def blob_path(self, digest: str) -> Path:
        """The on-disk path of object ``digest``, for reading only.

        Fetches it if absent (see :meth:`set_fetcher`); raises
        :class:`StoreError` if it is not stored and cannot be fetched. Never
        write to it: copy it instead (objects are shared by every entry that
        has the same bytes). Reading it so is not checked against ``digest``,
        as :meth:`open_blob` is.
        """
        try:
            return self._objects.existing_path(digest)
        except StoreError:
            if not self._fetch_absent([digest]):
                raise
        return self._objects.existing_path(digest)

    def open_blob(self, digest: str) -> BinaryIO:
        """Open object ``digest`` for reading (fetched if absent); the caller closes it.

        A read to the end checks the bytes against ``digest``. A damaged object
        is removed, with every cache entry that needs it, and the read raises
        :class:`~greenloop.store.exceptions.CorruptObject`: as a miss, those steps
        are rebuilt instead of running on wrong bytes.
        """
        try:
            return self._objects.open(digest, self._corrupt)
        except StoreError:
            if not self._fetch_absent([digest]):
                raise
        return self._objects.open(digest, self._corrupt)

    def read_bytes(self, digest: str) -> bytes:
        """The whole content of object ``digest``."""
        with self.open_blob(digest) as fh:
            return fh.read()

    # -- trees ---------------------------------------------------------------

    def put_tree(self, directory: Path, *, exclude: Exclude | None = None) -> str:
        """Store ``directory`` and everything below it; return the tree's digest.

        ``exclude`` receives each POSIX relative path; returning True leaves that
        path out (and, for a directory, everything under it). Symlinks are stored
        as their targets, never followed.
        """
        entries = scan_directory(directory, self.put_file, exclude)
        return self.put_bytes(encode_manifest(entries))

    def put_tree_entries(self, entries: list[TreeEntry]) -> str:
        """Store a tree built from ``entries`` whose blobs are already stored; return its digest.

        Modes are normalised and missing parent directories added, so the result
        equals :meth:`put_tree` of the same content on disk.
        """
        canonical = canonicalize(entries)
        for entry in canonical:
            if entry.blob is not None and not self.has(entry.blob):
                raise StoreError(f"tree entry {entry.path!r} refers to missing blob {entry.blob}")
        return self.put_bytes(encode_manifest(canonical))

    def get_tree(self, digest: str) -> list[TreeEntry]:
        """The entries of tree ``digest``, sorted by path; :class:`StoreError` if not a tree.

        Fetches the manifest if absent, not the blobs it lists.
        """
        data = self.read_bytes(digest)
        try:
            return decode_manifest(data)
        except StoreError as exc:
            raise StoreError(f"{digest} is not a tree: {exc}") from exc

    def is_tree(self, digest: str) -> bool:
        """True when object ``digest`` is stored and is a tree manifest."""
        if not self.has(digest):
            return False
        with self.open_blob(digest) as fh:
            return read_manifest(fh) is not None

    def materialize(self, tree: str, dest: Path) -> None:
        """Recreate tree ``tree`` under ``dest`` (which may already exist).

        Files are written as copies, never hardlinks, so nothing done in
        ``dest`` can alter the store. See
        :func:`~greenloop.store.materialize.materialize_entries` for how
        existing content and path safety are handled. Absent objects are
        fetched first, all in one request to the fetcher, so nothing is
        written to ``dest`` when one of them cannot be had.
        """
        entries = self.get_tree(tree)
        # One stat per blob, a few percent of copying it: the price of failing
        # before writing anything, with every absent blob known at once.
        self._fetch_absent([e.blob for e in entries if e.blob is not None])
        materialize_entries(entries, dest, self.open_blob)

    def checkout(self, tree: str) -> AbstractContextManager[Path]:
        """A read-only folder holding tree ``tree``, shared by everyone who asks, for
        the ``with`` block (built once, like :meth:`materialize`; gc removes it once
        the tree is gone or unused). Never write into it."""
        return checked_out(
            self.root / CHECKOUTS_DIR, tree, lambda dest: self.materialize(tree, dest)
        )

    def adopt_checkout(self, tree: str, prepared: Path) -> bool:
        """Move ``prepared`` -- a folder on the store's filesystem holding exactly tree
        ``tree``, modes normalised -- into place as its checkout, unless one exists;
        True when it was moved (see :meth:`checkout`)."""
        return adopt_checkout(self.root / CHECKOUTS_DIR, tree, prepared)

    # -- lazy objects ----------------------------------------------------------

    def set_fetcher(self, fetcher: Fetcher | None) -> None:
        """Fetch absent objects with ``fetcher`` from now on (None: never fetch).

        The remote cache client sets itself here while it is open, so objects
        of entries it imported without downloading them arrive when something
        first reads them. Only the read paths use it; see the class docstring.
        """
        self._fetcher = fetcher

    @property
    def fetcher(self) -> Fetcher | None:
        """The fetcher :meth:`set_fetcher` installed, or None."""
        return self._fetcher

    def _fetch_absent(self, digests: Iterable[str]) -> bool:
        """Fetch those of ``digests`` not stored; False when none was absent.

        When an absent object cannot be had, every cache entry whose objects
        include it is dropped before :class:`StoreError` is raised: such an
        entry can no longer be reproduced here, and as a hit it would fail
        each later run the same way, while as a miss the next run rebuilds it.
        """
        absent = [d for d in dict.fromkeys(digests) if not self.has(d)]
        if not absent:
            return False
        fetcher = self._fetcher
        reason = "no remote cache is configured to fetch it from"
        if fetcher is not None:
            try:
                fetcher(absent)
            except StoreError as exc:
                reason = str(exc)
            else:
                reason = "the fetcher returned without storing it"
            absent = [d for d in absent if not self.has(d)]
            if not absent:
                return True
        with self._damage_lock:
            for digest in absent:
                if digest in self._damaged:
                    raise CorruptObject(digest, self._damaged[digest])
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        message = f"object {absent[0]}{more} is not in the store at {self.root}: {reason}"
        raise StoreError(message + _dropped(self._drop_entries_needing(set(absent))))

    def _corrupt(self, digest: str) -> str:
        """Remove damaged object ``digest`` and the cache entries needing it; say so."""
        with self._damage_lock:
            if digest not in self._damaged:
                self._objects.discard_corrupt(digest)
                self._damaged[digest] = (
                    f"object {digest} in the store at {self.root} does not match its hash "
                    "(damaged on disk); removed it"
                ) + _dropped(self._drop_entries_needing({digest}))
            return self._damaged[digest]

    def _drop_entries_needing(self, absent: set[str]) -> int:
        # Only what is on this disk is read: fetching is what just failed. A
        # chain's snapshots list their ancestors' blobs too, so a broken chain
        # goes at once, not one step per failed run.
        listed: dict[str, frozenset[str]] = {}
        doomed: list[str] = []
        dropped = 0
        try:
            named = {name: digest for name, (digest, _) in self.index.refs().items()}
            for entry in self.index.entries():
                roots = [
                    named.get(entry.snapshot, entry.snapshot),
                    entry.tree,
                    *(a.key for a in entry.artifacts),
                ]
                for root in roots:
                    if root is None or not is_digest(root):
                        continue
                    if root not in listed:
                        listed[root] = self._local_tree_blobs(root)
                    if root in absent or not absent.isdisjoint(listed[root]):
                        doomed.append(entry.key)
                        break
            for key in doomed:
                self.index.delete_entry(key)
                dropped += 1
        except (StoreError, OSError):
            pass  # the read's own error is the one worth reporting
        return dropped

    def _local_tree_blobs(self, digest: str) -> frozenset[str]:
        """The blobs tree ``digest`` lists, if it is a tree stored here (empty otherwise)."""
        try:
            with open(self._objects.path_for(digest), "rb") as fh:
                entries = read_manifest(fh)
        except FileNotFoundError:
            return frozenset()
        return frozenset(e.blob for e in entries or () if e.blob is not None)

    # -- refs ------------------------------------------------------------------

    def set_ref(self, name: str, digest: str) -> None:
        """Name object ``digest`` (typically a snapshot tree) ``name``; gc keeps it while
        a cache entry's snapshot names it (or for the grace period).

        ``digest`` must be stored here (a tree's blobs need not be: they can be lazy).
        """
        if not self.has(digest):
            raise StoreError(f"cannot point ref {name!r} at missing object {digest}")
        self.index.set_ref(name, digest)

    def get_ref(self, name: str) -> str | None:
        """The digest ref ``name`` points at, or None when there is no such ref."""
        return self.index.get_ref(name)

    def delete_ref(self, name: str) -> None:
        """Drop ref ``name``; its objects go at a later gc unless something else holds them."""
        self.index.delete_ref(name)

    # -- maintenance ---------------------------------------------------------

    def verify(self) -> list[str]:
        """Problems found in the object directory, sorted.

        Each item is either the digest of an object whose bytes do not hash to
        its name, or the store-relative path of a stray file (a name that is not
        a digest). Temp files are no problem: see :meth:`leftovers`.
        """
        problems: list[str] = []
        for found in self._objects.scan():
            if found.is_temp:
                continue
            if found.digest is None:
                problems.append(found.path.relative_to(self.root).as_posix())
                continue
            try:
                actual = digest_file(found.path)
            except FileNotFoundError:
                continue  # collected by a concurrent gc while we looked
            if actual != found.digest:
                problems.append(found.digest)
        return sorted(problems)

    def leftovers(self) -> list[Leftover]:
        """The temp files in the object directory, sorted by path.

        A temp file is a write in progress, or what a writer killed mid-write
        left; it never becomes an object (renaming it is the write's last act),
        and gc removes it.
        """
        found = [
            Leftover(f.path.relative_to(self.root).as_posix(), f.size, not f.abandoned)
            for f in self._objects.scan()
            if f.is_temp
        ]
        return sorted(found, key=lambda leftover: leftover.path)

    def scratch_file(self, suffix: str = "") -> IO[bytes]:
        """A temp file on the store's filesystem, deleted when closed (gc sweeps a killed
        writer's)."""
        return self._objects.scratch_file(suffix)

    def gc(
        self,
        *,
        max_age: timedelta | None = None,
        max_bytes: int | None = None,
        grace: timedelta = timedelta(hours=1),
    ) -> GcReport:
        """Expire cache entries and delete what nothing refers to.

        Entries unused for longer than ``max_age`` go first; then, while the
        store exceeds ``max_bytes``, the least recently used entries go until
        what remains referenced fits. Finally unreferenced objects and ``.tmp-``
        files older than ``grace`` are deleted; the grace period protects
        objects a concurrent run has written but not yet recorded. Temp files
        whose writer is gone are deleted whatever their age. Checkouts
        (see :meth:`checkout`) of trees no longer stored, or unused for longer
        than ``max_age``, go too.
        """
        checkouts = self.root / CHECKOUTS_DIR
        unused_for = None if max_age is None else max_age.total_seconds()
        swept = 0
        if max_bytes is not None:
            # Checkouts only repeat stored trees, and are rebuilt on demand: they
            # make room before any cache entry has to.
            swept = sweep_checkouts(
                checkouts,
                self.has,
                unused_for=unused_for,
                grace=grace.total_seconds(),
                max_bytes=max(0, max_bytes - self.size_bytes()),
            )
            max_bytes = max(0, max_bytes - self.checkout_bytes())
        report = collect_garbage(
            self._objects, self.index, max_age=max_age, max_bytes=max_bytes, grace=grace
        )
        # A checkout lives as long as its tree (and, with an age limit, while it is used).
        swept += sweep_checkouts(
            checkouts, self.has, unused_for=unused_for, grace=grace.total_seconds()
        )
        return dataclasses.replace(report, checkouts_removed=swept)

    def size_bytes(self) -> int:
        """Total bytes of every file in the object directory."""
        return sum(found.size for found in self._objects.scan())

    def checkout_bytes(self) -> int:
        """Total bytes of the tree checkouts overlay snapshots boot from (see :meth:`checkout`)."""
        return sum(checkout_sizes(self.root / CHECKOUTS_DIR).values())


def _dropped(count: int) -> str:
    """The end of a message about an object, saying how many cache entries went with it."""
    if count == 1:
        return "; dropped the cache entry that needs it, so that step is rebuilt"
    if count:
        return f"; dropped {count} cache entries that need it, so those steps are rebuilt"
    return ""
