"""``greenloop serve``: take the repository's serve lock, open the socket, run the fleet.

One server per repository: the lock (``flock``, held for the server's life and
dropped by the kernel however it ends) names the pid of the one that holds it,
so a second ``serve`` is refused with that pid. ``serve --port`` adds an HTTP
front (the server layer's, handed in: the fleet does not know HTTP), started
before the fleet so a port in use stops ``serve`` with nothing left running.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Protocol

from greenloop._fs import private_folder
from greenloop.devloop import process
from greenloop.devloop.lsp_shared import DEFAULT_PER_PROGRAM
from greenloop.fleet.endpoint import Endpoint
from greenloop.fleet.fleet import Fleet
from greenloop.fleet.hosted_dev import DevOpener
from greenloop.fleet.place import SERVE_DIR_ENV, ServePlace
from greenloop.protocol import SetupError


class AlreadyServing(SetupError):
    """Another ``greenloop serve`` holds this repository's lock."""


class Front(Protocol):
    """A running HTTP front of the fleet."""

    @property
    def url(self) -> str:
        """Its base URL, e.g. ``http://127.0.0.1:8123/``."""

    def stop(self) -> None:
        """Close its connections and stop serving."""


StartFront = Callable[[Fleet, Path], Front]
"""Starts a front for the fleet whose socket is the path; raises ``SetupError``."""


def serve(
    repo: Path,
    jobs: int,
    stop: threading.Event,
    log: Callable[[str], None],
    front: StartFront | None = None,
    dev: DevOpener | None = None,
    lsp_servers: int = DEFAULT_PER_PROGRAM,
) -> None:
    """Serve every worktree of ``repo``'s repository until ``stop`` is set.

    ``front`` starts the HTTP front (``--port``); ``dev`` opens the ``greenloop dev``
    sessions worktrees ask it to host; ``lsp_servers`` bounds the shared language
    servers of each checker command.

    Raises ``SetupError`` (not a repository, an unusable folder, already served,
    a front that cannot start).
    """
    fleet = Fleet(repo, jobs, log, lsp_servers)
    place = ServePlace.of(fleet.common)
    problem = private_folder(place.socket.parent, SERVE_DIR_ENV, hint_on_create=True)
    if problem is not None:
        raise SetupError(problem)
    lock = _take_lock(place)
    try:
        with ExitStack() as stack:
            if front is not None:
                http = front(fleet, place.socket)
                # Stopped last: its streams have ended by then (the fleet closed the hub).
                stack.callback(http.stop)
                fleet.http = http.url
            endpoint = Endpoint(place.socket, fleet, dev)
            runner = threading.Thread(target=fleet.run, name="greenloop-fleet")
            runner.start()
            endpoint.start()
            log(f"greenloop serve: serving the worktrees of {fleet.common} on {place.socket}")
            if fleet.http is not None:
                log(f"greenloop serve: events on {fleet.http}__greenloop/events")
            try:
                stop.wait()
            finally:
                fleet.stop()
                runner.join()
                endpoint.close()
                process.kill_all()
    finally:
        os.close(lock)


def _take_lock(place: ServePlace) -> int:
    fd = os.open(place.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise AlreadyServing(
            f"a greenloop serve (pid {holder}) already serves {place.common}; stop it first"
        ) from None
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
