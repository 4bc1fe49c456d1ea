"""The remote cache client: lookups, lazy fetches and uploads, and what a failure means.

See :mod:`greenloop.store.remote` for the protocol, what travels and how
failures are handled; the HTTP itself is :mod:`greenloop.store.remote.transport`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from pydantic import ValidationError

from greenloop.store.exceptions import StoreError
from greenloop.store.hashing import is_digest
from greenloop.store.records import CacheEntry, RemoteStats
from greenloop.store.remote.closure import closure, tree_blobs
from greenloop.store.remote.download import Downloads, Incomplete
from greenloop.store.remote.entry import RemoteEntry, ac_key
from greenloop.store.remote.fanout import Fanout
from greenloop.store.remote.refused import RefusedBlobs
from greenloop.store.remote.settings import (
    DEFAULT_JOBS,
    DEFAULT_TIMEOUT_S,
    RemoteMode,
    Warn,
    check_mode,
)
from greenloop.store.remote.transport import (
    HttpTransport,
    TooLarge,
    Unavailable,
    Untrusted,
    WritesRefused,
)
from greenloop.store.store import Store

_MAX_ENTRY_BYTES = 4 << 20
"""Entry documents are a few KB; a larger body is refused rather than read."""


class HttpRemoteCache:
    """A remote cache client over the Bazel HTTP protocol; implements the engine's ``RemoteCache``.

    Lookups run on the caller's thread with blob downloads fanned out over a
    small pool; publishing is queued and runs in the background, so a step
    never waits for its upload, and :meth:`close` waits for the queue to drain.

    While open, the client is its store's fetcher (:meth:`Store.set_fetcher`):
    a hit's snapshot blobs stay on the server until a step boots from that
    snapshot, and are downloaded, verified and stored then.
    """

    url: str
    """The server's base URL with any credentials removed (safe to print)."""
    mode: RemoteMode
    """``read`` or ``readwrite``."""

    def __init__(
        self,
        store: Store,
        url: str,
        *,
        mode: RemoteMode = "readwrite",
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        jobs: int = DEFAULT_JOBS,
        warn: Warn | None = None,
        fetcher: bool = True,
    ) -> None:
        """Prepare a client for ``url`` (``http(s)://[user:pass@]host[:port][/instance]``).

        Raises :class:`ValueError` for a URL, mode or timeout that cannot work;
        nothing is sent (or even imported) until the first lookup or publish.
        ``fetcher=False`` leaves the store's fetcher alone: a second client on the
        same store (an executor moving snapshots, say) that only pushes and pulls.
        """
        self.mode = check_mode(mode)
        if not timeout > 0:
            raise ValueError(f"remote cache timeout must be positive: {timeout!r}")
        self._jobs = max(1, jobs)
        self._net = HttpTransport(
            url, token=token or None, timeout=timeout, connections=self._jobs + 2
        )
        self.url = self._net.url
        self._store = store
        self._warn = warn or _print_warning
        # A dead server outranks a bad blob: it decides whether to keep trying.
        self._fanout = Fanout(self._jobs, (Unavailable, WritesRefused, Untrusted, Incomplete))
        # One publisher thread: entries upload in commit order, and two entries
        # sharing blobs never race to upload the same one.
        self._publisher = ThreadPoolExecutor(1, thread_name_prefix="greenloop-publish")
        self._lock = threading.Lock()
        self._stats = RemoteStats(run_id="", url=self.url, mode=self.mode, recorded_at=0.0)
        self._run_id: str | None = None
        self._warned = False
        self._down: str | None = None
        self._writes_off = False
        self._on_server: set[str] = set()
        self._tmp: Path | None = None
        self._downloads = Downloads(
            self._net,
            store,
            RefusedBlobs(store.root, self.url),
            count=self._count,
            seen=self._seen,
            scratch=self._tempdir,
        )
        self._closed = False
        if fetcher:
            store.set_fetcher(self._provide)

    # -- the engine's RemoteCache interface ----------------------------------

    def lookup(self, key: str) -> CacheEntry | None:
        """Import entry ``key`` into the local store and return it; None on a miss.

        The entry's artifacts and its snapshot's manifest are downloaded and
        verified now; the snapshot's other blobs only once the server has
        confirmed it holds them, and they are fetched when a step boots from
        the snapshot. Never raises: a failing or lying server reads as a miss
        (with one warning per run).
        """
        if self._closed or not is_digest(key):
            return None
        self._count("lookups")
        if self._down is not None:
            return None
        try:
            document = self._get_entry(key)
            if document is None:
                return None
            self._fetch(document)
            entry = self._import(document)
        except Incomplete:
            return None
        except Unavailable as e:
            self._fail(str(e), down=True)
            return None
        except (Untrusted, StoreError, OSError) as e:
            self._fail(f"entry {key[:12]} rejected ({e})")
            return None
        except Exception as e:  # the contract: a remote problem is never the run's problem
            self._fail(f"lookup failed ({type(e).__name__}: {e})")
            return None
        self._count("hits")
        return entry

    def publish(self, entry: CacheEntry) -> None:
        """Queue ``entry`` and the objects it references for upload; returns at once.

        Does nothing in ``read`` mode, after :meth:`close`, or for an entry
        whose snapshot is not a store tree (a docker image tag).
        """
        if self._closed or self.mode == "read":
            return
        try:
            document = self._document(entry)
            if document is not None:
                self._publisher.submit(self._upload, document)
        except ValidationError:
            return  # an executor's own artifact keys: nothing another machine could use
        except RuntimeError:
            return  # closed while we were preparing; the run is over
        except Exception as e:  # an upload problem must never fail the run
            self._fail(f"publish failed ({type(e).__name__}: {e})")

    def push(self, roots: list[str]) -> None:
        """Upload ``roots`` and, for trees, every blob they list, skipping what the server
        already has; returns once all of it is there.

        Unlike :meth:`publish` this writes no entry and fails loudly: it raises
        :class:`StoreError` when the objects could not all be uploaded (for whoever
        needs them on the server now, e.g. a step about to boot from them elsewhere).
        """
        if self._closed:
            raise StoreError(f"remote cache {self.url} is closed")
        try:
            objects = closure(self._store, roots)
            with self._lock:
                missing = [d for d in objects if d not in self._on_server]
            self._fanout.run(self._ensure_on_server, missing)
        except (Unavailable, WritesRefused, Untrusted) as e:
            raise StoreError(f"remote cache {self.url}: could not upload: {e}") from e

    def pull(self, digests: list[str]) -> None:
        """Download (and verify against its name) each of ``digests`` not in the local store.

        Raises :class:`StoreError` when one cannot be had: the server is down, no
        longer has it or serves it corrupt.
        """
        if self._closed:
            raise StoreError(f"remote cache {self.url} is closed")
        absent = [d for d in dict.fromkeys(digests) if not self._store.has(d)]
        try:
            self._fanout.run(self._downloads.download, absent)
        except Incomplete as e:
            raise StoreError(f"remote cache {self.url} does not have blob {e}") from e
        except (Unavailable, Untrusted) as e:
            raise StoreError(f"remote cache {self.url}: could not download: {e}") from e

    def close(self) -> None:
        """Wait for queued uploads, release connections and record this run's statistics.

        The store stops fetching through this client: an object still on the
        server is then read as absent (see :meth:`Store.set_fetcher`).
        """
        if self._closed:
            return
        self._closed = True
        if self._store.fetcher == self._provide:
            self._store.set_fetcher(None)
        self._publisher.shutdown(wait=True)
        self._fanout.shutdown()
        self._net.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        if self._run_id is not None:
            try:
                self._store.index.record_remote_stats(replace(self.stats, recorded_at=time.time()))
            except StoreError as e:
                self._fail(f"could not record remote cache statistics ({e})")

    def bind_run(self, run_id: object) -> None:
        """Record this client's statistics under run ``run_id`` when it closes."""
        self._run_id = str(run_id)
        with self._lock:
            self._stats.run_id = self._run_id

    @property
    def stats(self) -> RemoteStats:
        """A copy of what this client has exchanged with the server so far."""
        with self._lock:
            return replace(self._stats)

    # -- lookup ------------------------------------------------------------------

    def _get_entry(self, key: str) -> RemoteEntry | None:
        body = bytearray()
        try:
            with self._net.get(f"ac/{ac_key(key)}", _MAX_ENTRY_BYTES) as chunks:
                if chunks is None:
                    return None
                for chunk in chunks:
                    body += chunk
                    if len(body) > _MAX_ENTRY_BYTES:
                        raise TooLarge(f"is larger than {_MAX_ENTRY_BYTES} bytes")
        except TooLarge as e:
            raise Untrusted(f"entry document {e}") from e
        finally:
            self._count("bytes_downloaded", len(body))
        try:
            document = RemoteEntry.model_validate_json(bytes(body))
        except ValidationError as e:
            raise Untrusted(f"invalid entry document: {_first_error(e)}") from e
        if document.key != key:
            raise Untrusted("the entry document names another key")
        return document

    def _fetch(self, document: RemoteEntry) -> None:
        """Bring in what a hit must have at once; make sure the server has the rest.

        Artifacts (and the rarely used ``tree``) come whole: the engine hands
        them to its caller, which may read them after the run, when this
        client is closed. The snapshot is only needed if a child step runs,
        so its manifest comes now (the ref must name a stored tree, and it
        proves the snapshot is one) and its blobs are merely checked with
        ``HEAD``: a blob the server has lost makes this lookup a quiet miss,
        as an eager download would, instead of failing a child step later.
        """
        roots = document.roots()
        self._downloads.bound(roots, document.max_object_bytes)
        self._fanout.run(self._downloads.download, [d for d in roots if not self._store.has(d)])
        snapshot = tree_blobs(self._store, document.snapshot_tree)
        if snapshot is None:
            raise Untrusted("its snapshot is not a tree")
        needed: dict[str, None] = {}
        for root in [*(a.key for a in document.artifacts), document.tree]:
            if root is not None:
                needed.update(dict.fromkeys(tree_blobs(self._store, root) or []))
        self._downloads.bound(needed, document.max_object_bytes)
        self._fanout.run(self._downloads.download, [d for d in needed if not self._store.has(d)])
        deferred = [d for d in snapshot if d not in needed and not self._store.has(d)]
        # Kept for the lazy fetch, which knows only digests.
        self._downloads.bound(deferred, document.max_object_bytes)
        self._fanout.run(self._check_on_server, deferred)

    def _check_on_server(self, digest: str) -> None:
        if self._downloads.is_corrupt(digest):
            raise Untrusted(f"blob {digest[:12]} was served corrupt before")
        with self._lock:
            if digest in self._on_server:
                return
        if not self._net.head(f"cas/{digest}"):
            raise Incomplete(digest)
        with self._lock:
            self._on_server.add(digest)

    def _provide(self, digests: list[str]) -> None:
        """The store's fetcher: download objects a read found absent (see :class:`Store`)."""
        what = f"blob {digests[0]}" if len(digests) == 1 else f"{len(digests)} blobs"
        try:
            if self._closed:
                raise StoreError(f"remote cache {self.url} was closed at the end of its run")
            self._fanout.run(self._downloads.download, digests)
        except Unavailable as e:
            self._fail(f"{e}, fetching {what}", down=True, fatal=True)
            raise StoreError(f"remote cache {self.url} is unavailable: {e}") from e
        except Incomplete as e:
            self._fail(f"blob {e} is no longer on the server", fatal=True)
            raise StoreError(f"remote cache {self.url} no longer has blob {e}") from e
        except Untrusted as e:
            self._fail(f"{e}; refused", fatal=True)
            raise StoreError(f"remote cache {self.url} served bad data: {e}; refused") from e
        except StoreError:
            raise
        except Exception as e:  # whatever it was, the read fails with a StoreError
            self._fail(f"fetching {what} failed ({type(e).__name__}: {e})", fatal=True)
            raise StoreError(f"remote cache {self.url}: {type(e).__name__}: {e}") from e

    def _import(self, document: RemoteEntry) -> CacheEntry:
        tree = document.snapshot_tree
        existing = self._store.get_ref(document.snapshot)
        if existing is not None and existing != tree:
            # Never repoint a local snapshot: entries here may boot from it.
            raise Untrusted(f"snapshot {document.snapshot!r} already names another tree here")
        self._store.set_ref(document.snapshot, tree)
        now = time.time()
        entry = document.as_entry(now)
        self._store.index.put_entry(entry)
        return entry

    # -- publish -----------------------------------------------------------------

    def _document(self, entry: CacheEntry) -> RemoteEntry | None:
        tree = self._store.get_ref(entry.snapshot)
        if tree is None or not self._store.is_tree(tree):
            return None
        return RemoteEntry.describing(entry, tree)  # _upload measures its objects

    def _upload(self, document: RemoteEntry) -> None:
        if self._down is not None or self._writes_off:
            return
        try:
            objects = closure(self._store, document.roots())
            sizes = {
                d: self._store.blob_path(d).stat().st_size for d in objects if self._store.has(d)
            }
            # A lazy blob (the server has it; this store does not, yet) is measured with
            # HEAD rather than downloaded just to learn its size.
            lazy = [d for d in objects if d not in sizes]
            self._fanout.run(lambda d: sizes.__setitem__(d, self._size_on_server(d)), lazy)
            largest = max(sizes.values())
            with self._lock:
                missing = [d for d in objects if d not in self._on_server]
            self._fanout.run(self._ensure_on_server, missing)
            # The entry goes last, so whoever can read it finds its blobs.
            sized = document.model_copy(update={"max_object_bytes": largest})
            body = sized.model_dump_json().encode()
            self._net.put(f"ac/{ac_key(document.key)}", body, len(body), entry=True)
            self._count("bytes_uploaded", len(body))
            self._count("published")
        except Unavailable as e:
            self._fail(str(e), down=True)
        except WritesRefused as e:
            self._fail(str(e), writes=True)
        except Exception as e:  # an upload problem must never fail the run
            self._fail(f"publish failed ({type(e).__name__}: {e})")

    def _size_on_server(self, digest: str) -> int:
        """The size of ``digest``, a blob the server has and this store may not."""
        present, size = self._net.stat(f"cas/{digest}")
        if present and size is not None:
            with self._lock:
                self._on_server.add(digest)
            return size
        # No size given (or gone): the bytes themselves say it, fetched if need be.
        return self._store.blob_path(digest).stat().st_size

    def _ensure_on_server(self, digest: str) -> None:
        if self._writes_off:
            raise WritesRefused("uploads refused earlier")
        with self._lock:
            if digest in self._on_server:
                return
        suspect = self._downloads.is_corrupt(digest)
        path = f"cas/{digest}"
        # A blob the server once served corrupt is rewritten without asking:
        # HEAD would say it exists and leave the damage in place forever.
        if not suspect and self._net.head(path):
            with self._lock:
                self._on_server.add(digest)
            return
        with self._store.open_blob(digest) as fh:
            size = os.fstat(fh.fileno()).st_size
            self._net.put(path, fh, size)
        self._count("bytes_uploaded", size)
        self._count("blobs_uploaded")
        with self._lock:
            self._on_server.add(digest)
        if suspect:
            self._downloads.healed(digest)

    # -- plumbing ----------------------------------------------------------------

    def _tempdir(self) -> Path:
        with self._lock:
            if self._tmp is None:
                self._tmp = Path(tempfile.mkdtemp(prefix="greenloop-remote-"))
            return self._tmp

    def _seen(self, digest: str) -> None:
        with self._lock:
            self._on_server.add(digest)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self._stats, name, getattr(self._stats, name) + amount)

    def _fail(
        self, message: str, *, down: bool = False, writes: bool = False, fatal: bool = False
    ) -> None:
        """Count a problem and print the run's one warning line if it is the first.

        ``down`` gives the server up for the rest of the run, ``writes`` stops
        uploads, and ``fatal`` says the step that needed an object fails (a
        lazy fetch), rather than that a lookup missed.
        """
        suffix = "using the local cache only" if down else "treated as a miss"
        if writes:
            suffix = "not uploading for the rest of the run"
        if fatal:
            suffix = "the cache entries that need it are dropped, so those steps run again" + (
                "; " + suffix if down else ""
            )
        line = " ".join(f"remote cache {self.url}: {message}; {suffix}".split())
        with self._lock:
            self._stats.errors += 1
            if down and self._down is None:
                self._down = message
                self._net.give_up(message)
            if writes:
                self._writes_off = True
            first = not self._warned
            self._warned = True
            if first:
                self._stats.warning = line
        if first:
            self._warn(line)


def _print_warning(line: str) -> None:
    print(f"greenloop: warning: {line}", file=sys.stderr, flush=True)


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(document)"
    return f"{where}: {first['msg']}"
