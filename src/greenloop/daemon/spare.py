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
"""

from __future__ import annotations

import contextlib
import os
import signal

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
