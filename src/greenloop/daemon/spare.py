"""A pipeline loader forked ahead of need: the process a ``greenloop run`` forked from
the daemon loads its pipeline file in, started before it has parsed its arguments.

:func:`greenloop.sdk.loader.load` runs the pipeline file in a forked child, so
that nothing the file does reaches the command. Forking a process that has
imported greenloop costs milliseconds (``fork`` itself, then the child's first
touch of each shared page); started first, this child pays them while the
command parses its arguments, on the other core.

When the command loads, it sends the child what the file is to see (source,
path, cwd, environment, argv, ``sys.path``, umask) and the child becomes that
before it runs the file (:func:`greenloop.sdk.loader.serve_spare`). A command
that never loads closes the pipe as it exits, and the child leaves unused.

Not for a command in its own process: a child forked before the CLI is imported
would import the DSL again, and on a busy machine that costs more than it hides.

The daemon's child forked ahead of its command forks its spare ahead too
(:func:`fork_ahead`): before any command came, so the spare waits first for the
command's run request and stdio (:func:`ready`), becomes that process as the
command does, and only then serves as above.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from greenloop.daemon import pages
from greenloop.daemon.conn import readable, receive
from greenloop.daemon.forked import become
from greenloop.daemon.wire import frame

RETRY = b"retry\n"
"""What a spare that could not load answers (the command then forks a loader itself)."""
LOADS = frozenset({"run"})
"""The commands a spare loader is started for: each loads a pipeline file first."""


def wanted(argv: list[str]) -> bool:
    """Whether the command line ``argv`` loads a pipeline file, so a spare is worth it."""
    return argv[1:2] != [] and argv[1] in LOADS and hasattr(os, "fork")


def start() -> tuple[int, int, int]:
    """Fork the spare loader; its pid, the end to write its request to, the end to read
    its answer from (see :func:`greenloop.sdk.loader.hand_over`)."""
    request_r, request_w = os.pipe()
    answer_r, answer_w = os.pipe()
    # A Ctrl-C at the fork must not reach the child before it is inside the try
    # below: raised any earlier, it would unwind into the command's own code.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; the loader's tests assert its answers
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(request_w)
            os.close(answer_r)
            from greenloop.sdk.loader import serve_spare

            serve_spare(request_r, answer_w)
        except BaseException:
            # It could not become the loader (a Ctrl-C meant for the command, say):
            # the command then loads its file the usual way.
            with contextlib.suppress(OSError):
                os.write(answer_w, RETRY)
        finally:
            os._exit(0)  # never the command's atexit handlers, nor its buffered output
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.close(request_r)
    os.close(answer_w)
    return pid, request_w, answer_r


@dataclass
class Ahead:
    """A spare forked before its command came (:func:`fork_ahead`)."""

    pid: int
    run: socket.socket
    """Where the command's run request and stdio go (:func:`ready`)."""
    request: int
    answer: int


def fork_ahead(inherited: Iterable[int], written: bytes = b"", tell: int | None = None) -> Ahead:
    """Fork a spare before the command it is for has come; ``inherited``: descriptors of
    the forking process the spare must not keep open (it closes them). It has the pages
    ``written`` (by a spare before it) copied as it waits, until its command comes; given
    ``tell``, it writes the ones it wrote there once it has answered (see
    :mod:`greenloop.daemon.pages`: with none copied ahead, they are the ones it wrote)."""
    ours, theirs = socket.socketpair()
    request_r, request_w = os.pipe()
    answer_r, answer_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; the daemon's tests assert its answers
        try:
            ours.close()
            for fd in (request_w, answer_r, *inherited):
                os.close(fd)
            pages.populate(written, lambda: readable(theirs))
            request, fds = receive(theirs)
            theirs.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            become(request["run"])  # what the command becomes, as a spare forked now has
            from greenloop.sdk.loader import serve_spare

            if tell is None:
                serve_spare(request_r, answer_w)
            else:
                serve_spare(request_r, answer_w, (tell,), lambda: pages.tell(tell))
        except BaseException:
            # Dismissed (its command loads nothing), or it could not become the loader:
            # the command then loads its file the usual way.
            with contextlib.suppress(OSError):
                os.write(answer_w, RETRY)
        finally:
            os._exit(0)
    theirs.close()
    os.close(request_r)
    os.close(answer_w)
    return Ahead(pid, ours, request_w, answer_r)


def ready(ahead: Ahead, run: dict[str, Any], fds: list[int]) -> tuple[int, int, int]:
    """Send the spare its command's run request and stdio ``fds`` (the command keeps
    its own); the spare, as :func:`start` returns one for
    :func:`greenloop.sdk.loader.hand_over`."""
    data = frame({"run": run})
    with contextlib.suppress(OSError):  # gone: the command's load finds it so, and forks
        sent = socket.send_fds(ahead.run, [data], fds)
        ahead.run.sendall(data[sent:])
    ahead.run.close()
    return ahead.pid, ahead.request, ahead.answer


def dismiss(ahead: Ahead) -> None:
    """Let the spare go unused (its command loads nothing): it leaves, and is reaped
    beside the command rather than waited for."""
    ahead.run.close()
    os.close(ahead.request)
    os.close(ahead.answer)
    threading.Thread(target=os.waitpid, args=(ahead.pid, 0), daemon=True).start()
