"""The record of blobs a remote served corrupt, kept in the store across runs.

A snapshot blob is fetched after its entry was reported a hit, so a corrupt
one fails a step, and a lookup that trusted ``HEAD`` again would fail the next
run the same way. Remembering the refusal makes that entry a miss instead:
the step is rebuilt, and its upload rewrites the blob (in ``readwrite``
mode), which heals the server. The expiry lets a ``read``-mode machine try
again once someone else has healed it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from greenloop._fs import write_atomically
from greenloop.store.hashing import is_digest
from greenloop.store.layout import TEMP_PREFIX

REFUSED_FILE = "remote-refused.json"
"""In the store directory: blobs each remote served corrupt, and when."""
REFUSED_FOR_S = 7 * 86400.0
"""How long a refused blob makes this machine miss entries that need it."""


class RefusedBlobs:
    """One server's entries in a store's :data:`REFUSED_FILE`.

    Not locked: the caller serialises this process's writers; another process
    racing us can lose one record, which costs one more failed step, never a
    wrong result.
    """

    def __init__(self, store_root: Path, url: str) -> None:
        """The record for server ``url`` in the store at ``store_root``."""
        self._path = store_root / REFUSED_FILE
        self._url = url

    def recent(self) -> list[str]:
        """The blobs this server served corrupt within :data:`REFUSED_FOR_S`."""
        cutoff = time.time() - REFUSED_FOR_S
        return [d for d, when in self._read().get(self._url, {}).items() if when > cutoff]

    def remember(self, digest: str, *, refused: bool) -> None:
        """Record that ``digest`` was refused now, or (``refused=False``) that it healed."""
        try:
            data = self._read()
            mine = data.setdefault(self._url, {})
            if refused:
                mine[digest] = time.time()
            elif mine.pop(digest, None) is None:
                return
            cutoff = time.time() - REFUSED_FOR_S
            kept = {
                url: {d: when for d, when in blobs.items() if when > cutoff}
                for url, blobs in data.items()
            }
            body = json.dumps({u: b for u, b in kept.items() if b}, indent=1, sort_keys=True)
            write_atomically(self._path, body.encode(), prefix=TEMP_PREFIX)
        except OSError:
            pass

    def _read(self) -> dict[str, dict[str, float]]:
        try:
            raw = json.loads(self._path.read_bytes())
        except (OSError, ValueError):
            return {}  # none yet, or damaged: forgetting costs at most one more failed step
        if not isinstance(raw, dict):
            return {}
        return {
            url: {
                d: float(when)
                for d, when in blobs.items()
                if is_digest(d) and isinstance(when, int | float)
            }
            for url, blobs in raw.items()
            if isinstance(url, str) and isinstance(blobs, dict)
        }
