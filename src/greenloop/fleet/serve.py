"""``greenloop serve``: take the repository's serve lock, open the socket, run the fleet.

One server per repository: the lock (``flock``, held for the server's life and
dropped by the kernel however it ends) names the pid of the one that holds it,
so a second ``serve`` is refused with that pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable
from pathlib import Path

from greenloop._fs import private_folder
from greenloop.devloop import process
from greenloop.fleet.endpoint import Endpoint
from greenloop.fleet.fleet import Fleet
from greenloop.fleet.hosted_dev import DevOpener
from greenloop.fleet.place import SERVE_DIR_ENV, ServePlace
from greenloop.protocol import SetupError


class AlreadyServing(SetupError):
    """Another ``greenloop serve`` holds this repository's lock."""


def serve(
    repo: Path,
    jobs: int,
    stop: threading.Event,
    log: Callable[[str], None],
    dev: DevOpener | None = None,
) -> None:
    """Serve every worktree of ``repo``'s repository until ``stop`` is set.

    ``dev`` opens the ``greenloop dev`` sessions worktrees ask it to host.

    Raises ``SetupError`` (not a repository, an unusable folder, already served).
    """
    fleet = Fleet(repo, jobs, log)
    place = ServePlace.of(fleet.common)
    problem = private_folder(place.socket.parent, SERVE_DIR_ENV, hint_on_create=True)
    if problem is not None:
        raise SetupError(problem)
    lock = _take_lock(place)
    try:
        endpoint = Endpoint(place.socket, fleet, dev)
        runner = threading.Thread(target=fleet.run, name="greenloop-fleet")
        runner.start()
        endpoint.start()
        log(f"greenloop serve: serving the worktrees of {fleet.common} on {place.socket}")
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
