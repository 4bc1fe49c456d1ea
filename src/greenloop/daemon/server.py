"""The daemon process: imports greenloop once, then forks a child per command.

One thread, one ``selectors`` loop over the listening socket, each client's
connection and each child's pidfd, so forking never races another thread.
A child becomes what a fresh ``greenloop`` process would be: its own process
group, the client's stdio, cwd, environment, umask and argv; it runs the
command line and exits with its status, which the daemon sends back.

The next command's child is forked ahead, while no command runs (a fork of a
process that has imported greenloop takes milliseconds): it waits, its own
group and none of the daemon's descriptors, for the request the daemon hands
it. A command that finds none waiting (several at once) is forked then.

The daemon declines a command (the client then runs it itself) once any file
it imported has changed on disk, finishes what is running, and re-executes
itself (keeping its lock) so the next command gets the new code. It exits
after ``idle_timeout`` seconds without a command, or on ``stop`` / SIGTERM
(after the commands in flight end).

    python -m greenloop.daemon.server [--idle-timeout SECONDS] [--started-by COMMAND]

:mod:`greenloop.daemon.spawn` starts it with ``--lock-fd`` (the lock it took
for it) and, when a command started it by itself, ``--automatic``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import os
import select
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from greenloop._config import ConfigError
from greenloop._config import load as load_config
from greenloop._fs import private_folder
from greenloop._procs import close_all_but, signal_group
from greenloop._version import __version__
from greenloop.daemon import (
    DAEMON_DIR_ENV,
    SERVER_MODULE,
    DaemonPaths,
    interpreter_options,
    pages,
    spare,
)
from greenloop.daemon.client import FORWARDED
from greenloop.daemon.conn import decline, each, peer_uid, readable, receive, send, unlink
from greenloop.daemon.forked import become, run_cli
from greenloop.daemon.preload import preload
from greenloop.daemon.wire import frame, unframe

RELEARN = 16
"""One child forked ahead in this many copies nothing ahead, so that what its command
writes is learnt afresh (see :mod:`greenloop.daemon.pages`)."""
STARTER_GRACE = 5.0
"""Seconds a daemon a command started by itself waits for that command to end
before it loads greenloop: the command that starts it must not be slowed down."""


class AlreadyRunning(Exception):
    """Another daemon holds this interpreter's lock."""


@dataclass
class _Command:
    pid: int
    pidfd: int
    conn: socket.socket | None
    report: int | None
    """Where the child writes its exit status once it has closed every descriptor."""
    buffer: bytes = b""
    reported: bool = False
    pages: bytes = b""
    """What it says it wrote, after its status (see :mod:`greenloop.daemon.pages`)."""
    learn: int | None = None
    """Where its spare loader forked ahead says what it wrote, once it has answered."""
    learned: bytes = b""


@dataclass
class _Warm:
    """A child forked ahead of the next command (see :meth:`Server._prefork`)."""

    pid: int
    sock: socket.socket
    """The daemon's end of the pair the command's request and stdio are handed on."""
    report: int
    """The read end of its report pipe (:attr:`_Command.report`)."""
    learn: int
    """The read end of its spare's (:attr:`_Command.learn`)."""
    learns: bool
    """Whether it was forked to learn what its command writes (it copies nothing ahead)."""


class Server:
    """One daemon: its socket, its children and its counters.

    ``started_by`` is the command that started it and ``automatic`` whether that
    command started it by itself (``greenloop daemon status`` says both).
    ``lock_fd`` is its lock when the starter took it (see
    :mod:`greenloop.daemon.spawn`), and ``after_fd`` a pidfd of a starter to let
    finish first.
    """

    def __init__(
        self,
        where: DaemonPaths,
        idle_timeout: float,
        *,
        started_by: str = "greenloop daemon start",
        automatic: bool = False,
        lock_fd: int | None = None,
        after_fd: int | None = None,
    ) -> None:
        self.where = where
        self.idle_timeout = idle_timeout
        self.started_by = started_by
        self.automatic = automatic
        self._given_lock = lock_fd
        self._after_fd = after_fd
        self.started_at = time.time()
        self.served = 0
        self._commands: dict[int, _Command] = {}
        self._stopping = False
        self._restart = False
        self._listener: socket.socket | None = None
        self._lock_fd = -1
        self._stamps: dict[str, int] = {}
        self._warm: _Warm | None = None
        self._written = b""  # by the last command: what the next one's child copies ahead
        self._spare_written = b""  # the same, of the last spare loader forked ahead
        self._forked_ahead = 0
        self._selector = selectors.DefaultSelector()
        # Signals wake the loop through this pair instead of interrupting it mid-fork.
        self._wake_r, self._wake_w = socket.socketpair()

    def serve(self) -> None:
        """Preload, listen, and fork commands until stopped or idle (``AlreadyRunning``
        when another daemon serves this interpreter)."""
        self._lock_fd = self._take_lock()
        try:
            self._let_the_starter_finish()
            preload()
            self._stamps = _stamps(_imported_files())
            self._listen()
            self._loop()
        finally:
            self._drop_warm()
            if self._listener is not None:
                self._close_listener()
            self._selector.close()
            if not self._restart:
                os.close(self._lock_fd)
        if self._restart:
            self._reexec()

    # -- setup ----------------------------------------------------------------

    def _take_lock(self) -> int:
        problem = private_folder(Path(self.where.folder), DAEMON_DIR_ENV)
        if problem is not None:
            raise SystemExit(f"greenloop daemon: {problem}")
        if self._given_lock is not None:
            fd = self._given_lock
            given, ours = os.fstat(fd), os.stat(self.where.lock)
            if (given.st_dev, given.st_ino) != (ours.st_dev, ours.st_ino):
                # Started with other settings than its starter's: it would serve nobody.
                raise SystemExit(f"greenloop daemon: --lock-fd {fd} is not {self.where.lock}")
            os.set_inheritable(fd, False)
        else:
            fd = os.open(self.where.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a no-op on a lock already ours
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(self.where.socket) from None
        # Who holds it: how `daemon status` (and a test) find a daemon still starting.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _let_the_starter_finish(self) -> None:
        """Wait (a few seconds at most) for the command that started this daemon to end."""
        if self._after_fd is None:
            return
        try:
            select.select([self._after_fd], [], [], STARTER_GRACE)  # readable once it exits
        except OSError:
            pass  # not a pidfd after all: nothing to wait for
        finally:
            os.close(self._after_fd)
            self._after_fd = None

    def _reexec(self) -> NoReturn:
        """Run this daemon again with the code now on disk, holding its lock throughout
        (no command can start a second daemon meanwhile)."""
        os.set_inheritable(self._lock_fd, True)
        options = [
            "--lock-fd",
            str(self._lock_fd),
            "--started-by",
            self.started_by,
            "--idle-timeout",
            repr(self.idle_timeout),
            *(["--automatic"] if self.automatic else []),
        ]
        argv = [sys.executable, *interpreter_options(), "-m", SERVER_MODULE, *options]
        os.execv(sys.executable, argv)

    def _listen(self) -> None:
        unlink(self.where.socket)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.where.socket)
        os.chmod(self.where.socket, 0o600)
        listener.listen(64)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, "accept")
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno())
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stopping = True

    # -- the loop ---------------------------------------------------------------

    def _loop(self) -> None:
        last_activity = time.monotonic()
        while True:
            if self._stopping and self._listener is not None:
                self._close_listener()  # new commands now run in their own process
            if not self._commands:
                if self._stopping:
                    return
                idle = time.monotonic() - last_activity
                if idle >= self.idle_timeout:
                    return
                timeout: float | None = self.idle_timeout - idle
            else:
                timeout = None
            if self._wants_warm():
                self._prefork()
            events = self._selector.select(timeout)
            for key, _ in events:
                self._dispatch(key.data)
            if events:
                last_activity = time.monotonic()

    def _wants_warm(self) -> bool:
        """Whether to fork the next command's child now: none waits, commands are taken,
        and none runs (a fork beside a running command would take its core)."""
        if self._warm is not None or self._listener is None or self._stopping:
            return False
        return all(c.reported for c in self._commands.values())

    def _dispatch(self, what: Any) -> None:
        if what == "accept":
            assert self._listener is not None
            conn, _ = self._listener.accept()
            self._accept(conn)
        elif what == "wake":
            self._wake_r.recv(4096)
        elif what[0] == "exited":
            self._reap(what[1])
        elif what[0] == "reported":
            self._reported(what[1])
        elif what[0] == "learned":
            self._learned(what[1])
        else:
            self._from_client(what[1])

    def _accept(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        fds: list[int] = []
        try:
            if peer_uid(conn) != os.getuid():
                conn.close()
                return
            request, fds = receive(conn)
            if "run" in request and len(fds) == 3:
                fds, handed = [], fds
                self._run(conn, request["run"], handed)
                return
            if "status" in request:
                send(conn, self.status())
            elif "stop" in request:
                self._stopping = True
                send(conn, {"stopping": os.getpid()})
        except (OSError, ValueError, KeyError, EOFError, TypeError):
            pass
        for fd in fds:
            os.close(fd)
        conn.close()

    def status(self) -> dict[str, Any]:
        """What ``greenloop daemon status`` shows."""
        return {
            "running": True,
            "pid": os.getpid(),
            "version": __version__,
            "python": sys.executable,
            "identity": self.where.identity,
            "socket": self.where.socket,
            "started_at": self.started_at,
            "served": self.served,
            "in_flight": sum(not c.reported for c in self._commands.values()),
            "idle_timeout": self.idle_timeout,
            "started_by": self.started_by,
            "automatic": self.automatic,
        }

    def _run(self, conn: socket.socket, run: dict[str, Any], fds: list[int]) -> None:
        """Fork the command (the parent owns ``fds`` and ``conn`` from here)."""
        try:
            if run.get("identity") != self.where.identity:
                decline(conn, "the daemon serves other Python settings")
                return
            if _stamps(self._stamps) != self._stamps:
                self._stopping = self._restart = True
                decline(conn, "greenloop's code changed on disk; restarting")
                return
            child = self._hand_to_warm(run, fds) or self._fork(conn, run, fds)
            if child is None:
                conn.close()
                return
        finally:
            for fd in fds:
                os.close(fd)
        pid, report_r, learn = child
        command = _Command(pid, os.pidfd_open(pid), conn, report_r, learn=learn)
        self._commands[pid] = command
        conn.setblocking(False)
        with contextlib.suppress(OSError):
            send(conn, {"started": pid})
        self._selector.register(command.pidfd, selectors.EVENT_READ, ("exited", command))
        self._selector.register(report_r, selectors.EVENT_READ, ("reported", command))
        if learn is not None:
            self._selector.register(learn, selectors.EVENT_READ, ("learned", command))
        self._selector.register(conn, selectors.EVENT_READ, ("client", command))

    def _fork(
        self, conn: socket.socket, run: dict[str, Any], fds: list[int]
    ) -> tuple[int, int, None] | None:
        """Fork the command now: its pid and the read end of its report pipe (None when
        the fork failed)."""
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
        except OSError:
            os.close(report_r)
            os.close(report_w)
            return None
        if pid == 0:
            os.close(report_r)
            self._child(conn, run, fds, report_w)
        os.close(report_w)
        # Both sides set the group, so a signal forwarded at once still finds it.
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        return pid, report_r, None

    def _prefork(self) -> None:
        """Fork the child the next command runs in, to wait for it (:meth:`_warm_child`)."""
        ours, theirs = socket.socketpair()
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        learn_r, learn_w = os.pipe2(os.O_CLOEXEC)
        learns = self._forked_ahead % RELEARN == 0
        try:
            pid = os.fork()
        except OSError:
            for sock in (ours, theirs):
                sock.close()
            for fd in (report_r, report_w, learn_r, learn_w):
                os.close(fd)
            return  # the command is forked when it comes, as without
        if pid == 0:
            ours.close()
            os.close(report_r)
            os.close(learn_r)
            self._warm_child(theirs, report_w, learn_w, learns)
        theirs.close()
        os.close(report_w)
        os.close(learn_w)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        self._warm = _Warm(pid, ours, report_r, learn_r, learns)
        self._forked_ahead += 1

    def _hand_to_warm(self, run: dict[str, Any], fds: list[int]) -> tuple[int, int, int] | None:
        """Hand the command to the child forked ahead for it: its pid, report end and its
        spare's (None when there is none, or it is gone)."""
        warm, self._warm = self._warm, None
        if warm is None:
            return None
        data = frame({"run": run})
        try:
            sent = socket.send_fds(warm.sock, [data], fds)
            warm.sock.sendall(data[sent:])
        except OSError:
            self._warm = warm
            self._drop_warm()
            return None
        warm.sock.close()
        return warm.pid, warm.report, warm.learn

    def _drop_warm(self) -> None:
        """End the child forked ahead, unused (the daemon stops, or it is broken)."""
        warm, self._warm = self._warm, None
        if warm is None:
            return
        warm.sock.close()
        os.close(warm.report)
        os.close(warm.learn)
        with contextlib.suppress(OSError):
            os.kill(warm.pid, signal.SIGKILL)  # it only waits: nothing of it to finish
        with contextlib.suppress(ChildProcessError):
            os.waitpid(warm.pid, 0)

    def _reported(self, command: _Command) -> None:
        """The child's exit status, sent before its memory is torn down (a large
        process takes milliseconds to go): the client need not wait for that. Then
        the pages it wrote (:mod:`greenloop.daemon.pages`), until it closes the pipe."""
        if command.report is None:
            return  # reaped in the same round
        data = b""
        with contextlib.suppress(OSError):
            data = os.read(command.report, 1 << 16 if command.reported else 4)
        if not command.reported and len(data) == 4:
            # Nothing of the command is left but memory: every descriptor is closed.
            self._answer(command, int.from_bytes(data, sys.byteorder, signed=True))
            return
        if command.reported and data:
            command.pages += data
            return
        self._selector.unregister(command.report)
        os.close(command.report)
        command.report = None
        if command.reported and command.pages:
            self._written = command.pages
            self._tell_warm()
        # Else it died before it could say (a signal, a crash): its reaping answers.

    def _tell_warm(self) -> None:
        """Send the child forked ahead what to copy, when it was forked before that was known
        (forked as its command answered, it would not wait for what that wrote)."""
        warm = self._warm
        if warm is None or warm.learns:
            return
        warm.sock.settimeout(1)  # it reads as it waits: it never takes that long
        try:
            warm.sock.sendall(frame({"pages": self._written}))
        except OSError:
            self._drop_warm()  # half sent, it cannot be handed a command
        else:
            warm.sock.settimeout(None)

    def _learned(self, command: _Command) -> None:
        """What the command's spare loader wrote, until it closes the pipe (none when its
        command loaded nothing)."""
        if command.learn is None:
            return
        data = b""
        with contextlib.suppress(OSError):
            data = os.read(command.learn, 1 << 16)
        if data:
            command.learned += data
            return
        self._selector.unregister(command.learn)
        os.close(command.learn)
        command.learn = None
        if command.learned:
            self._spare_written = command.learned

    def _answer(self, command: _Command, code: int) -> None:
        command.reported = True
        self.served += 1
        if command.conn is not None:
            self._selector.unregister(command.conn)
            with contextlib.suppress(OSError):
                command.conn.setblocking(True)
                send(command.conn, {"exit": code})
            command.conn.close()
            command.conn = None

    def _reap(self, command: _Command) -> None:
        _, status = os.waitpid(command.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        self._selector.unregister(command.pidfd)
        os.close(command.pidfd)
        del self._commands[command.pid]
        # A command that answered may still have what it wrote in its report pipe, and
        # its loader in its own: left to their readers, which close them at their end
        # (the exit can come first in a round; closed here, that was lost).
        if command.report is not None and not command.reported:
            self._selector.unregister(command.report)
            os.close(command.report)
            command.report = None
        if not command.reported:
            self._answer(command, 128 - code if code < 0 else code)

    def _from_client(self, command: _Command) -> None:
        if command.conn is None:
            return  # answered in the same round
        try:
            data = command.conn.recv(4096)
        except OSError:
            data = b""
        if not data:
            # The client is gone (killed, or its terminal closed): stop its command
            # the way greenloop stops on SIGTERM, cleanly.
            self._selector.unregister(command.conn)
            command.conn.close()
            command.conn = None
            signal_group(command.pid, signal.SIGTERM)
            return
        try:
            messages, command.buffer = unframe(command.buffer + data)
        except (ValueError, EOFError, TypeError):
            messages, command.buffer = [], b""
        for message in messages:
            if message.get("signal") in FORWARDED:
                signal_group(command.pid, message["signal"])

    def _close_listener(self) -> None:
        assert self._listener is not None
        self._selector.unregister(self._listener)
        self._listener.close()
        self._listener = None
        unlink(self.where.socket)

    # -- the child --------------------------------------------------------------

    def _child(
        self,
        conn: socket.socket | None,
        run: dict[str, Any],
        fds: list[int],
        report: int,
        loader: tuple[int, int, int] | None = None,
        tell: bool = True,
    ) -> NoReturn:
        """Run the command ``run`` with ``fds`` as its stdio, report its status on
        ``report`` and leave (``tell``: then say which pages it wrote)."""
        code = 1
        try:
            if conn is not None:  # else forked ahead, and this is done
                os.setpgid(0, 0)
                self._drop_inherited(conn)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            become(run)
            code = run_cli(loader)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                atexit._run_exitfuncs()
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            # Every descriptor closed (locks released, pipes at their end) before the
            # status goes out: all that is left of the command then is memory to free.
            close_all_but(report)
            with contextlib.suppress(OSError):
                # As the kernel would report it: the low byte of the status.
                os.write(report, (code & 0xFF).to_bytes(4, sys.byteorder, signed=True))
                if tell:  # answered: what this command wrote is for the next (off its path)
                    pages.tell(report)
                else:
                    os.close(report)  # now: the kernel closes files after freeing memory
            os._exit(code)

    def _warm_child(self, sock: socket.socket, report: int, learn: int, relearn: bool) -> NoReturn:
        """A child forked ahead: ready for a command before one comes, it runs the one
        the daemon hands it on ``sock`` as :meth:`_child` would, or leaves unused. It
        and its spare have what their last ones wrote copied ahead (the daemon may send
        it that as it waits), unless they learn it afresh (``relearn``, or nothing
        came)."""
        try:
            os.setpgid(0, 0)
            self._drop_inherited(None)
            ahead: spare.Ahead | None = None
            spare_learns = relearn or not self._spare_written
            with contextlib.suppress(OSError):  # without, the command forks its own
                ahead = spare.fork_ahead(
                    (sock.fileno(), report),
                    b"" if spare_learns else self._spare_written,
                    learn if spare_learns else None,
                )
            os.close(learn)  # the spare's to write to: its end comes when the spare's does
            # After the spare's fork: copied before it, they would be shared again.
            copied = not relearn and self._copy_ahead(sock, self._written)
            for message, got in each(sock):
                if "pages" in message:
                    copied = self._copy_ahead(sock, message["pages"]) or copied
                elif "run" in message:
                    run, fds = message["run"], got
                    break
            else:
                os._exit(0)  # the daemon hung up before a command came
            sock.close()
        except BaseException:
            os._exit(0)  # the daemon hung up before a command came (or it could not wait)
        loader = None
        if ahead is not None and spare.wanted(run["argv"]):
            loader = spare.ready(ahead, run, fds)
        elif ahead is not None:
            spare.dismiss(ahead)
        self._child(None, run, fds, report, loader, tell=not copied)

    @staticmethod
    def _copy_ahead(sock: socket.socket, written: bytes) -> bool:
        """Copy the pages ``written`` into this child, until its command comes on ``sock``;
        whether there were any (what its command then writes cannot be told apart)."""
        if not written:
            return False
        pages.populate(written, lambda: readable(sock))
        return True

    def _drop_inherited(self, conn: socket.socket | None) -> None:
        """Close the daemon's descriptors in a child. Closing a copy sends nothing:
        the daemon's own connections, socket and lock stay as they are."""
        signal.set_wakeup_fd(-1)
        self._selector.close()
        warm = [] if self._warm is None else [self._warm.sock]
        for sock in (conn, self._listener, self._wake_r, self._wake_w, *warm):
            if sock is not None:
                sock.close()
        if self._warm is not None:
            os.close(self._warm.report)
            os.close(self._warm.learn)
        for other in self._commands.values():
            os.close(other.pidfd)
            if other.conn is not None:
                other.conn.close()
        os.close(self._lock_fd)


def _imported_files() -> list[str]:
    """What can change a command's code: greenloop's own modules (edited in place
    in a development install) and every import folder (installing, upgrading or
    removing a package changes its folder's listing)."""
    files = {
        getattr(module, "__file__", None)
        for name, module in list(sys.modules.items())
        if name == "greenloop" or name.startswith("greenloop.")
    }
    # This module too: run as `python -m`, it is `__main__`, not greenloop.daemon.server.
    files.add(os.path.abspath(__file__))
    return sorted({f for f in files if f} | {p for p in sys.path[1:] if p})


def _stamps(files: Iterable[str]) -> dict[str, int]:
    stamps = {}
    for path in files:
        with contextlib.suppress(OSError):
            stamps[path] = os.stat(path).st_mtime_ns
    return stamps


def idle_timeout_setting() -> float:
    """The idle timeout the user's settings give (or the default); exits naming a bad file."""
    try:
        return load_config().daemon_idle_timeout
    except ConfigError as e:
        raise SystemExit(f"greenloop daemon: {e}") from None


def main(argv: list[str] | None = None) -> None:
    """Run a daemon in this process (:mod:`greenloop.daemon.spawn` starts this detached)."""
    parser = argparse.ArgumentParser(prog=f"python -m {SERVER_MODULE}")
    parser.add_argument("--idle-timeout", type=float, default=None)
    parser.add_argument("--started-by", default=f"python -m {SERVER_MODULE}")
    parser.add_argument("--automatic", action="store_true")
    parser.add_argument("--lock-fd", type=int, default=None)
    parser.add_argument("--after-fd", type=int, default=None)
    args = parser.parse_args(argv)
    idle = idle_timeout_setting() if args.idle_timeout is None else args.idle_timeout
    server = Server(
        DaemonPaths(),
        idle,
        started_by=args.started_by,
        automatic=args.automatic,
        lock_fd=args.lock_fd,
        after_fd=args.after_fd,
    )
    try:
        server.serve()
    except AlreadyRunning as e:
        print(f"greenloop daemon: already running at {e}", file=sys.stderr)


if __name__ == "__main__":
    main()
