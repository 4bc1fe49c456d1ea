"""One app process: started from a published build on a free loopback port, in its own group.

Its output is kept (the tail the overlay shows) and echoed; its end is noticed
without reaping it, so its process group can only ever be stopped as a whole
by :func:`greenloop._procs.stop_group`, never a stranger that reused its id.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from greenloop._procs import exit_status, stop_group
from greenloop.dev.app_log import LogTail
from greenloop.protocol import BuildResult
from greenloop.server import AppHealth, AppProblem, AppProcessInfo, Upstream

LOOPBACK = "127.0.0.1"
"""Where every app listens: only the proxy talks to it."""

_LOG_CHUNK = 64 << 10


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on now (the kernel's pick), for the next app."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class AppProcess:
    """One app process started from a published build, in its own process group.

    Its output (stdout and stderr together) is kept in :attr:`log` and echoed;
    :attr:`exited` is set once it ends by itself or is stopped. It is never
    reaped until :meth:`stop`: a zombie leader keeps its group id reserved, so
    stopping the group later can only reach what this app left running.
    """

    def __init__(
        self,
        argv: Callable[[int], Sequence[str]],
        site: Path,
        result: BuildResult,
        echo: Callable[[str], None] | None,
        on_exit: Callable[[AppProcess], None],
    ) -> None:
        """Start ``argv(port)`` in ``site`` (the published folder of ``result``); raises OSError."""
        assert result.artifact is not None
        self.site = site
        self.result = result
        self.port = free_port()
        self.upstream = Upstream(port=self.port, artifact_id=result.artifact.tree, host=LOOPBACK)
        self.health = AppHealth.STARTING
        self.problem: AppProblem | None = None
        self.ready_ms: int | None = None
        self.stopping = False
        self.exited = threading.Event()
        self.started_at = time.time()
        self.spawned = time.monotonic()
        self.log = LogTail()
        self._echo = echo
        self._on_exit = on_exit
        self._stop_lock = threading.Lock()
        self._stopped = False
        env = {
            **os.environ,
            "PORT": str(self.port),
            "HOST": LOOPBACK,
            # The build folder is a published artifact: nothing may write into it.
            "PYTHONDONTWRITEBYTECODE": "1",
            # Each line as it is printed: the overlay's tail must include the last one.
            "PYTHONUNBUFFERED": "1",
        }
        self.proc = subprocess.Popen(
            list(argv(self.port)),
            cwd=site,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stopped with every helper it starts
        )
        self.pid = self.proc.pid
        assert self.proc.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self.proc.stdout,), name=f"greenloop-app-{self.pid}-log"
        )
        self._reader.daemon = True
        self._reader.start()
        self._waiter = threading.Thread(target=self._wait, name=f"greenloop-app-{self.pid}")
        self._waiter.daemon = True
        self._waiter.start()

    def describe_exit(self) -> str:
        """``exited with code 1``, ``was killed by SIGKILL``, or ``is running``."""
        return exit_status(self.proc) or "is running"

    def info(self) -> AppProcessInfo:
        """What the status says about this process."""
        assert self.result.artifact is not None
        return AppProcessInfo(
            pid=self.pid,
            port=self.port,
            input_hash=self.result.input_hash,
            tree=self.result.artifact.tree,
            health=self.health,
            started_at=self.started_at,
            ready_ms=self.ready_ms,
            problem=self.problem,
        )

    def stop(self, grace: float) -> None:
        """SIGTERM the group, SIGKILL after ``grace`` seconds, reap; once, from any thread."""
        with self._stop_lock:
            self.stopping = True
            if self._stopped:
                return
            self._stopped = True
            stop_group(self.proc, grace)
        self._reader.join(timeout=2)

    def _read(self, stream: IO[bytes]) -> None:
        with stream:
            while raw := stream.readline(_LOG_CHUNK):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                self.log.add(line)
                if self._echo is not None:
                    try:
                        self._echo(f"[app {self.pid}] {line}")
                    except Exception:  # a closed terminal: keep draining, or the app blocks
                        self._echo = None

    def _wait(self) -> None:
        if hasattr(os, "waitid"):
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        else:  # no waitid (macOS): reaping is the only way to wait
            self.proc.wait()
        # Its last words (the traceback) come through the pipe a moment after it ends.
        self._reader.join(timeout=1)
        self.exited.set()
        self._on_exit(self)
