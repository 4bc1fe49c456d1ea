"""Each step's log kept with the run: spooled while it prints, one blob when it ends.

``greenloop logs`` reads them back; a cached step points at the log of the run
that produced its cache entry.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import IO

from greenloop.store import Store


class StepLogs:
    """Spools every step's lines to a scratch file; :meth:`seal` stores one as a blob."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._open: dict[str, IO[bytes]] = {}
        self._sealed: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def add(self, step: str, stream: str, line: str) -> None:
        """Append one line ``step`` printed (stderr lines are marked, as in the terminal)."""
        data = (line if stream == "stdout" else f"[stderr] {line}") + "\n"
        with self._lock:
            if step in self._sealed:
                return  # a line after the step ended (a straggling pump): not part of it
            spool = self._open.get(step)
            if spool is None:
                spool = self._open[step] = self._store.scratch_file(suffix=".log")
            spool.write(data.encode("utf-8", "surrogateescape"))

    def seal(self, step: str) -> str | None:
        """Store ``step``'s log and return its digest (None if it printed nothing); idempotent."""
        with self._lock:
            if step in self._sealed:
                return self._sealed[step]
            spool = self._open.pop(step, None)
            digest = None
            if spool is not None:
                spool.flush()
                digest = self._store.put_file(Path(spool.name))
                spool.close()
            self._sealed[step] = digest
            return digest

    def close(self) -> None:
        """Drop what was never sealed (a run that stopped early)."""
        with self._lock:
            for spool in self._open.values():
                spool.close()
            self._open.clear()
