"""The app supervisor: the last green build of a web app keeps serving until a newer one is ready.

For every published green build, :meth:`AppSupervisor.deploy` starts the app
command from the build's folder on a fresh loopback port, waits until it is
ready (an HTTP path answering 2xx/3xx, a command exiting 0, or else its port
accepting connections), and only then points the proxy at it — one atomic
swap. The old process gets its in-flight requests finished (or the drain
timeout), then SIGTERM and, after the stop timeout, SIGKILL, its whole process
group (:func:`greenloop._procs.stop_group`).

A new app that exits before it is ready, or is not ready in time, is stopped
and reported (``failed_start``, with its log tail); the old one never stopped
serving. A serving app that answers a 5xx, cannot be reached, or exits is
reported too (``current.problem``), so the overlay shows runtime errors and
not only the checkers' diagnostics. The server only shows what this module
says (:class:`~greenloop.server.AppStatus`); it never starts or stops anything.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from greenloop.dev.app_log import problem_of
from greenloop.dev.app_process import LOOPBACK, AppProcess
from greenloop.devloop import process
from greenloop.devloop.config import DevSettings
from greenloop.protocol import BuildResult, SetupError
from greenloop.server import (
    AppHealth,
    AppProblem,
    AppProcessInfo,
    AppStatus,
    LiveState,
    Proxy,
    Upstream,
    UpstreamFailure,
)

_FAST_POLL_S = 0.005  # readiness, while an app typically starts: a refused connect costs ~nothing
_SLOW_POLL_S = 0.025  # after the first seconds: a slow starter needs no tight loop
_FAST_FOR_S = 2.0
_PROBE_TIMEOUT_S = 2.0
_REFRESH_S = 0.25  # a traceback is logged just after the 5xx it caused; read the tail again then


@dataclass(frozen=True)
class AppConfig:
    """How to run the app: ``greenloop dev --app``/``--ready``, else the ``[dev]`` settings."""

    command: tuple[str, ...]
    """The argv; ``{port}`` in any argument is replaced by the port it must listen on."""
    ready: str | None = None
    """An HTTP path (``/healthz``: starts with ``/``, no spaces), else a command; None: its
    port accepts connections."""
    ready_timeout_s: float = 30.0
    stop_timeout_s: float = 5.0
    drain_timeout_s: float = 10.0

    @classmethod
    def of(
        cls, settings: DevSettings, command: str | None = None, ready: str | None = None
    ) -> AppConfig | None:
        """The app configuration of ``settings`` with the flags' overrides; None: no app."""
        argv = shlex.split(command) if command is not None else settings.app
        if not argv:
            return None
        return cls(
            command=tuple(argv),
            ready=ready if ready is not None else settings.ready,
            ready_timeout_s=settings.ready_timeout_s,
            stop_timeout_s=settings.stop_timeout_s,
            drain_timeout_s=settings.drain_timeout_s,
        )

    def check(self, root: Path) -> None:
        """Raise :class:`SetupError` when the app's program cannot be found.

        A program named with a path is looked up as the build will have it
        (relative to the tree); a bare name on ``PATH``.
        """
        program = self.command[0]
        if "/" in program:
            found = Path(program) if Path(program).is_absolute() else root / program
            if found.exists():
                return
        elif shutil.which(program) is not None:
            return
        raise SetupError(
            f"the app command's program {program!r} is not found (on PATH or in {root})"
        )

    @property
    def ready_path(self) -> str | None:
        """The HTTP path readiness asks for, when ``ready`` is one."""
        ready = self.ready
        if ready is not None and ready.startswith("/") and not any(c.isspace() for c in ready):
            return ready
        return None

    def argv(self, port: int) -> list[str]:
        """The command for an app on ``port``."""
        return [part.replace("{port}", str(port)) for part in self.command]


OnChange = Callable[[AppStatus, str], None]
"""Told of every change: the new status and one line saying what happened ("" for none)."""


class AppSupervisor:
    """Starts each green build's app, swaps the proxy to it once ready, stops the old one."""

    def __init__(
        self,
        config: AppConfig,
        root: Path,
        state: LiveState,
        *,
        hold: Callable[[Path], None] = lambda site: None,
        release: Callable[[Path], None] = lambda site: None,
        on_change: OnChange | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        """Supervise apps of the tree at ``root``, telling ``state`` (and ``on_change``).

        ``hold`` and ``release`` keep a build folder from being pruned while an
        app runs from it (:meth:`Publisher.hold`); ``echo`` gets each line an
        app prints, prefixed with its pid.
        """
        self.config = config
        self.root = root
        self.proxy = Proxy(self._upstream_failed)
        """The proxy to serve: it always points at the app this supervisor says is current."""
        self._state = state
        self._hold = hold
        self._release = release
        self._on_change = on_change or (lambda status, line: None)
        self._echo = echo
        self._lock = threading.Lock()
        self._notify = threading.Lock()  # one change reported at a time, in order
        self._closed = threading.Event()
        self._current: AppProcess | None = None
        self._starting: AppProcess | None = None
        self._failed: AppProcessInfo | None = None
        self._retiring: set[AppProcess] = set()
        self._retirements: list[threading.Thread] = []
        self._refreshing: set[AppProcess] = set()
        self._probe = httpx.Client(trust_env=False, timeout=_PROBE_TIMEOUT_S)
        # The status says "an app" from the start, before any has started.
        state.set_app(self.status())

    def status(self) -> AppStatus:
        """Where the apps stand now."""
        with self._lock:
            return AppStatus(
                command=list(self.config.command),
                current=self._current.info() if self._current is not None else None,
                starting=self._starting.info() if self._starting is not None else None,
                failed_start=self._failed,
            )

    def deploy(self, site: Path, result: BuildResult) -> bool:
        """Run ``result``'s app from ``site`` and make it current once ready; whether it is.

        Blocks until the new app is ready or has failed (at most the ready
        timeout). On failure the current app keeps serving.
        """
        if result.artifact is None:
            return False
        with self._lock:
            current = self._current
            if self._closed.is_set():
                return False
            if (
                current is not None
                and current.upstream.artifact_id == result.artifact.tree
                and current.health is AppHealth.HEALTHY
            ):
                return True  # this very build already serves, and well
        self._hold(site)
        try:
            app = AppProcess(self.config.argv, site, result, self._echo, self._exited)
        except OSError as e:
            self._release(site)
            self._start_failed(site, result, f"cannot start {self.config.command[0]!r}: {e}")
            return False
        with self._lock:
            self._starting = app
        self._changed(
            f"app {app.pid}: starting build {result.input_hash[:12]} on {LOOPBACK}:{app.port}"
        )
        why = self._wait_ready(app)
        if why is None:
            with self._lock:
                closed = self._closed.is_set()
                old = None if closed else self._swap(app)
            if not closed:
                self._changed(
                    f"app {app.pid}: serving build {result.input_hash[:12]} on "
                    f"{LOOPBACK}:{app.port} (ready in {app.ready_ms} ms)"
                )
                self._state.set_artifact(site, result)
                if old is not None:
                    self._retire_later(old)
                return True
            why = "greenloop dev stopped before the app took over"
        app.stop(self.config.stop_timeout_s)
        self._release(site)
        with self._lock:
            self._starting = None
            app.health = AppHealth.EXITED  # stopped, if it had not ended by itself
            app.problem = problem_of(why, app.log.lines(), site, self.root)
            self._failed = app.info()
        self._changed(
            f"app {app.pid} FAILED to start (build {result.input_hash[:12]}): " + _said(app.problem)
        )
        return False

    def close(self) -> None:
        """Stop every app (the serving one too) and wait for them to be gone."""
        self._closed.set()
        with self._lock:
            apps = [a for a in (self._starting, self._current, *self._retiring) if a is not None]
            retirements = list(self._retirements)
        for app in apps:
            app.stop(self.config.stop_timeout_s)
        for thread in retirements:
            thread.join(timeout=self.config.stop_timeout_s + 5)
        self._probe.close()

    # -- starting -------------------------------------------------------------------

    def _wait_ready(self, app: AppProcess) -> str | None:
        """None once ``app`` is ready; else why it never will be."""
        timeout = self.config.ready_timeout_s
        deadline = app.spawned + timeout
        last = "it did not answer"
        while True:
            if app.exited.is_set():
                return f"{app.describe_exit()} before it was ready"
            if self._closed.is_set():
                return "greenloop dev stopped before the app was ready"
            outcome = self._ready_now(app, deadline)
            if outcome is None:
                app.ready_ms = int((time.monotonic() - app.spawned) * 1000)
                return None
            last = outcome
            now = time.monotonic()
            if now >= deadline:
                return f"not ready after {timeout:g}s ({last})"
            poll = _FAST_POLL_S if now - app.spawned < _FAST_FOR_S else _SLOW_POLL_S
            app.exited.wait(min(poll, deadline - now))

    def _ready_now(self, app: AppProcess, deadline: float) -> str | None:
        """One readiness check: None when ready, else what it saw."""
        ready = self.config.ready
        if ready is None:
            try:
                with socket.create_connection((LOOPBACK, app.port), timeout=_PROBE_TIMEOUT_S):
                    return None
            except OSError as e:
                return f"port {app.port}: {e.strerror or e}"
        if self.config.ready_path is not None:
            url = f"http://{LOOPBACK}:{app.port}{ready}"
            try:
                status = self._probe.get(url).status_code
            except httpx.HTTPError as e:
                return f"GET {ready}: {e or type(e).__name__}"
            return None if 200 <= status < 400 else f"GET {ready} answered {status}"
        argv = [part.replace("{port}", str(app.port)) for part in shlex.split(ready)]
        env = {**os.environ, "PORT": str(app.port), "HOST": LOOPBACK}
        left = max(deadline - time.monotonic(), 0.1)
        try:
            outcome = process.run(argv, app.site, self._closed, env=env, timeout_s=left)
        except OSError as e:
            return f"ready command {argv[0]!r}: {e.strerror or e}"
        if outcome is None:
            return "greenloop dev stopped"
        outcome.close()
        if isinstance(outcome, process.Completed):
            return None if outcome.returncode == 0 else f"ready command exited {outcome.returncode}"
        return f"ready command still running after {outcome.timeout_s:g}s"

    def _start_failed(self, site: Path, result: BuildResult, why: str) -> None:
        assert result.artifact is not None
        with self._lock:
            self._failed = AppProcessInfo(
                pid=0,
                port=0,
                input_hash=result.input_hash,
                tree=result.artifact.tree,
                health=AppHealth.EXITED,
                started_at=time.time(),
                problem=AppProblem(summary=why),
            )
        self._changed(f"app FAILED to start (build {result.input_hash[:12]}): {why}")

    def _swap(self, app: AppProcess) -> AppProcess | None:
        """Make ``app`` current (under the lock); return the one it replaces."""
        app.health = AppHealth.HEALTHY
        old = self._current
        self.proxy.swap(app.upstream)  # from here on, every new request goes to app
        self._current = app
        self._starting = None
        self._failed = None
        if old is not None:
            old.stopping = True  # its exit is ours now, not a failure to report
            self._retiring.add(old)
        return old

    # -- stopping -------------------------------------------------------------------

    def _retire_later(self, old: AppProcess) -> None:
        thread = threading.Thread(
            target=self._retire, args=(old,), name=f"greenloop-app-{old.pid}-stop", daemon=True
        )
        with self._lock:
            self._retirements = [t for t in self._retirements if t.is_alive()] + [thread]
        thread.start()

    def _retire(self, old: AppProcess) -> None:
        """Stop ``old`` once its requests are answered (or the drain timeout passed)."""
        drained = self.proxy.wait_drained(old.upstream, self.config.drain_timeout_s)
        old.stop(self.config.stop_timeout_s)
        self._release(old.site)
        with self._lock:
            self._retiring.discard(old)
        if not drained and self._echo is not None:
            left = self.proxy.in_flight(old.upstream)
            self._echo(
                f"greenloop: app {old.pid} stopped with {left} request(s) still in flight "
                f"after the {self.config.drain_timeout_s:g}s drain timeout"
            )

    # -- running --------------------------------------------------------------------

    def _exited(self, app: AppProcess) -> None:
        """``app`` ended; if it was serving and nobody stopped it, that is a problem to show."""
        with self._lock:
            if app.stopping or app is not self._current:
                return
            app.health = AppHealth.EXITED
            app.problem = problem_of(
                f"the app {app.describe_exit()}", app.log.lines(), app.site, self.root
            )
        self._changed(f"app {app.pid} {app.describe_exit()}: " + _said(app.problem))

    def _upstream_failed(self, upstream: Upstream, failure: UpstreamFailure) -> None:
        """The proxy saw a 5xx (or no answer); runs on the server's loop, so it only records."""
        with self._lock:
            app = self._current
            if app is None or app.upstream is not upstream or app.stopping:
                return
            if app.health is AppHealth.EXITED:
                return  # the exit says more than the requests it now fails
            app.health = AppHealth.FAILING
            app.problem = AppProblem(
                summary=failure.describe(), log_tail=app.problem.log_tail if app.problem else []
            )
            if app in self._refreshing:
                return  # a report is on its way and will carry this failure
            self._refreshing.add(app)
        # Reading the log and telling the status file and the terminal happen off the loop.
        threading.Thread(target=self._refresh, args=(app,), daemon=True).start()

    def _refresh(self, app: AppProcess) -> None:
        """Report ``app``'s problem now, and again once its traceback has been logged."""
        for delay in (0.0, _REFRESH_S):
            if self._closed.wait(delay):
                return
            with self._lock:
                if app is not self._current or app.health is not AppHealth.FAILING:
                    self._refreshing.discard(app)
                    return
                assert app.problem is not None
                app.problem = problem_of(app.problem.summary, app.log.lines(), app.site, self.root)
                if delay:
                    self._refreshing.discard(app)
            # One line for the terminal, once the traceback is in.
            self._changed(f"app {app.pid} failing: {_said(app.problem)}" if delay else "")

    def _changed(self, line: str) -> None:
        with self._notify:
            status = self.status()
            self._state.set_app(status)
            self._on_change(status, line)


def _said(problem: AppProblem | None) -> str:
    if problem is None:
        return ""
    return problem.summary + (f": {problem.error}" if problem.error else "")
