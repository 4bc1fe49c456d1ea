"""Running one piece of work per blob on a small pool, without the pool waiting on itself."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor


class Fanout:
    """A thread pool for blob transfers whose first error says what went wrong.

    Work run from inside one of the pool's own threads (an upload reading a
    lazy object fetches it, say) runs inline: a pool thread waiting on work
    queued behind it could deadlock the pool.
    """

    def __init__(self, jobs: int, ranking: tuple[type[Exception], ...]) -> None:
        """``jobs`` threads; of several errors, the first kind in ``ranking`` is raised."""
        self._pool = ThreadPoolExecutor(jobs, thread_name_prefix="greenloop-remote")
        self._ranking = ranking
        self._worker = threading.local()

    def run(self, work: Callable[[str], None], items: Iterable[str]) -> None:
        """``work(item)`` for every item, in parallel; raise the most telling error."""
        todo = list(items)
        if len(todo) <= 1 or getattr(self._worker, "busy", False):
            for item in todo:
                work(item)
            return
        futures = [self._pool.submit(self._as_worker, work, item) for item in todo]
        errors = [e for e in (f.exception() for f in futures) if e is not None]
        for kind in self._ranking:
            for error in errors:
                if isinstance(error, kind):
                    raise error
        if errors:
            raise errors[0]

    def shutdown(self) -> None:
        """Wait for running work and stop the threads."""
        self._pool.shutdown(wait=True)

    def _as_worker(self, work: Callable[[str], None], item: str) -> None:
        self._worker.busy = True
        try:
            work(item)
        finally:
            self._worker.busy = False
