"""Starting a daemon in the background: detached, race-safe, without waiting for it.

Used by a command that found no daemon (it starts one for the next command and
goes on running in its own process) and by ``greenloop daemon start``.

Race-safe: the starter takes the daemon's lock (``flock``) before it forks, and
the daemon inherits that very lock (the same open file, passed as a descriptor)
and holds it for its whole life. A second command starting at the same moment
finds the lock taken and starts nothing; so does every command while a daemon
is starting or restarting. When the daemon dies, however it dies, the kernel
drops the lock and the next command starts a new one.

Detached: the daemon is a grandchild in a session of its own (double fork), so
it is never the starter's child, never in its process group or on its
terminal, and holds none of its descriptors but the lock: a shell reading the
command's output sees it end when the command ends. Its stdin and stdout are
``/dev/null``, its stderr its log.

Imports only the standard library (and ``fcntl``, a C module) and
:mod:`greenloop._fs` (the same): this may run before a command.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from greenloop._fs import private_folder
from greenloop.daemon import DAEMON_DIR_ENV, SERVER_MODULE, DaemonPaths, interpreter_options

# Descriptors the daemon keeps are moved at least this high first, out of the way
# of the 0, 1 and 2 it is given.
_FIRST_KEPT_FD = 10


def spawn(
    where: DaemonPaths,
    started_by: str,
    *,
    automatic: bool,
    idle_timeout: float | None = None,
) -> int | None:
    """Start a daemon for ``where`` in the background; its pid, or None when none was started.

    None when another daemon holds the lock (serving, starting or restarting),
    or when the folder or the kernel cannot have one. ``started_by`` is the
    command that started it (``greenloop daemon status`` shows it);
    ``automatic`` means a command with nothing to serve it started it, and the
    daemon then waits for that command to end (a few seconds at most) before it
    loads greenloop, so as not to compete with it for the processor.
    ``idle_timeout`` None leaves it to the user's settings.
    """
    if private_folder(Path(where.folder), DAEMON_DIR_ENV) is not None:
        return None
    try:
        lock = os.open(where.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    starter = -1
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return None  # taken: a daemon of these settings is up, starting or restarting
        options = ["--started-by", started_by]
        if idle_timeout is not None:
            options += ["--idle-timeout", repr(idle_timeout)]
        if automatic:
            try:
                starter = os.pidfd_open(os.getpid())
            except OSError:
                return None  # no pidfd_open (Linux < 5.3): the daemon could not run anyway
            options.append("--automatic")
        try:
            pid = os.fork()
        except OSError:
            return None  # out of processes: the command runs on without a daemon
        if pid == 0:  # pragma: no cover - the detached side; the daemon tests see its effect
            _detach(where, lock, starter, options)
        try:  # noqa: SIM105 (contextlib would cost the command its import)
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # SIGCHLD ignored (inherited): the child was reaped for us
        return read_pid(lock)
    finally:
        # The daemon holds the lock through its own copy of this descriptor.
        os.close(lock)
        if starter >= 0:
            os.close(starter)


def lock_holder(lock: str) -> int | None:
    """The pid of the daemon holding the lock file ``lock`` (serving, starting or
    restarting); None when nothing holds it, 0 when its pid is not written yet."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # ours for a moment, so nobody's (closing the file lets it go)
    except OSError:
        return read_pid(fd) or 0  # held: the pid in it is the holder's, not a stale one
    finally:
        os.close(fd)


def read_pid(lock: int | str) -> int | None:
    """The pid written in a daemon's lock file (a path or an open descriptor), if any."""
    try:
        if isinstance(lock, str):
            with open(lock, "rb") as file:
                text = file.read(32)
        else:
            text = os.pread(lock, 32, 0)
        return int(text.strip() or b"0") or None
    except (OSError, ValueError):
        return None


def _detach(where: DaemonPaths, lock: int, starter: int, options: list[str]) -> None:
    """In the forked child: start the daemon as a grandchild in a new session, and leave."""
    code = 1
    try:
        os.setsid()
        pid = os.fork()
        if pid == 0:
            _become_daemon(where, lock, starter, options)
        # The starter reads the daemon's pid from the lock file once this child is gone.
        os.ftruncate(lock, 0)
        os.pwrite(lock, f"{pid}\n".encode(), 0)
        code = 0
    finally:
        os._exit(code)


def _become_daemon(where: DaemonPaths, lock: int, starter: int, options: list[str]) -> None:
    """In the grandchild: keep only the lock and the starter's pidfd, and exec the server."""
    try:
        import signal

        flags = interpreter_options()  # here, not in the starter: it imports subprocess
        kept = [fcntl.fcntl(lock, fcntl.F_DUPFD, _FIRST_KEPT_FD)]
        options = [*options, "--lock-fd", str(kept[0])]
        if starter >= 0:
            kept.append(fcntl.fcntl(starter, fcntl.F_DUPFD, _FIRST_KEPT_FD))
            options += ["--after-fd", str(kept[1])]
        null = os.open(os.devnull, os.O_RDWR)
        log = os.open(where.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(log, 2)
        # Nothing else the starter had open (its pipes, a jobserver) may stay open here.
        low = 3
        for fd in sorted(kept):
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, max(low, os.sysconf("SC_OPEN_MAX")))
        for fd in kept:
            os.set_inheritable(fd, True)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.chdir(where.folder)  # not the starter's folder: never keep a project's disk busy
        os.execv(sys.executable, [sys.executable, *flags, "-m", SERVER_MODULE, *options])
    finally:
        os._exit(127)
