"""Blobs coming from the server: one download per blob, each verified before it is stored.

A blob is stored only if its bytes hash to its name and are no larger than
the entry documents that named it allow; a blob the server served corrupt is
remembered (for this client, and across runs in :mod:`.refused`) and not asked
for again.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import IO

from greenloop.store.hashing import CHUNK_SIZE
from greenloop.store.remote.refused import RefusedBlobs
from greenloop.store.remote.transport import HttpTransport, TooLarge, Untrusted
from greenloop.store.store import Store

_SPOOL_BYTES = CHUNK_SIZE
"""Blobs up to this size are verified in memory; larger ones go through a temp file."""


class Incomplete(Exception):
    """An entry refers to a blob the server no longer has (evicted); a quiet miss."""


class Downloads:
    """Downloads into ``store`` over ``net``, for one remote cache client.

    ``count(name, amount)`` adds to the client's statistics, ``seen(digest)``
    tells it the server has a blob, ``scratch()`` gives a folder for temp files.
    """

    def __init__(
        self,
        net: HttpTransport,
        store: Store,
        refusals: RefusedBlobs,
        *,
        count: Callable[[str, int], None],
        seen: Callable[[str], None],
        scratch: Callable[[], Path],
    ) -> None:
        """Start with the blobs ``refusals`` recently recorded as served corrupt."""
        self._net = net
        self._store = store
        self._refusals = refusals
        self._count = count
        self._seen = seen
        self._scratch = scratch
        self._lock = threading.Lock()
        self._corrupt: set[str] = set(refusals.recent())
        self._inflight: dict[str, threading.Event] = {}
        # The size each blob may have, from the entry documents that named it.
        self._limits: dict[str, int] = {}

    def bound(self, digests: Iterable[str], size: int) -> None:
        """Record that each of ``digests`` is at most ``size`` bytes (the largest claim wins)."""
        with self._lock:
            for digest in digests:
                self._limits[digest] = max(size, self._limits.get(digest, 0))

    def is_corrupt(self, digest: str) -> bool:
        """Whether the server served ``digest`` corrupt (recently, or in this run)."""
        with self._lock:
            return digest in self._corrupt

    def healed(self, digest: str) -> None:
        """The server was sent good bytes for ``digest``: forget that it served it corrupt."""
        with self._lock:
            self._corrupt.discard(digest)
            self._refusals.remember(digest, refused=False)

    def download(self, digest: str) -> None:
        """Download and store blob ``digest``, unless another thread is already at it.

        Raises :class:`Incomplete` when the server does not have it and
        :class:`Untrusted` when what it serves is refused.
        """
        while True:
            with self._lock:
                if digest in self._corrupt:
                    # It would only be refused again; the first refusal was reported.
                    raise Untrusted(f"blob {digest[:12]} does not match its hash")
                running = self._inflight.get(digest)
                if running is None:
                    done = self._inflight[digest] = threading.Event()
                    break
            running.wait()
            if self._store.has(digest):
                return
            # That download failed; try ours, which reports its own error.
        try:
            if not self._store.has(digest):
                self._download_now(digest)
        finally:
            with self._lock:
                del self._inflight[digest]
            done.set()

    def _download_now(self, digest: str) -> None:
        received = 0
        with self._lock:
            # None: a lazy fetch in a later run, whose entry document is long gone;
            # the hash still guards what is stored.
            limit = self._limits.get(digest)
        h = hashlib.sha256()
        small = bytearray()
        try:
            with ExitStack() as stack:
                try:
                    chunks = stack.enter_context(self._net.get(f"cas/{digest}", limit))
                except TooLarge as e:
                    raise self._refuse(digest, str(e)) from e
                if chunks is None:
                    raise Incomplete(digest)
                spill: IO[bytes] | None = None
                for chunk in chunks:
                    h.update(chunk)
                    received += len(chunk)
                    if limit is not None and received > limit:
                        raise self._refuse(digest, f"is larger than {limit} bytes")
                    if spill is None and received <= _SPOOL_BYTES:
                        small += chunk
                        continue
                    if spill is None:
                        # Deleted when the stack closes, stored or not.
                        spill = stack.enter_context(
                            tempfile.NamedTemporaryFile(dir=self._scratch())
                        )
                        spill.write(small)
                        small.clear()
                    spill.write(chunk)
                if h.hexdigest() != digest:
                    raise self._refuse(digest, "does not match its hash")
                if spill is None:
                    stored = self._store.put_bytes(bytes(small))
                else:
                    spill.flush()
                    stored = self._store.put_file(Path(spill.name))
                if stored != digest:  # the temp file changed under us
                    raise Untrusted(f"blob {digest[:12]} changed while being stored")
        finally:
            self._count("bytes_downloaded", received)
        self._count("blobs_downloaded", 1)
        self._seen(digest)

    def _refuse(self, digest: str, why: str) -> Untrusted:
        """Remember that the server served ``digest`` corrupt; the error to raise."""
        with self._lock:
            self._corrupt.add(digest)
            self._refusals.remember(digest, refused=True)
        return Untrusted(f"blob {digest[:12]} {why}")
