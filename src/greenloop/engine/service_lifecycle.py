"""Service lifecycles: start a service for the first step that needs it, stop it after the last.

A service starts just before the first step naming it runs (a step the cache
answers never starts one), is polled with its ``ready`` command until it
passes or ``ready_timeout`` runs out, and is stopped once every step naming it
has finished — passed, failed, skipped or cancelled — or when the run ends for
any reason (failure, ``--fail-fast``, the pipeline's timeout, Ctrl-C).

Where a service runs is the executor's business: an executor with a
``start_service(service, run_id, env)`` method starts it itself (docker: a
container on the run's network); for every other executor it is a process
group on the host (:class:`HostService`), which the local executor's steps —
sandboxed or not — reach on loopback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol
from uuid import UUID

from greenloop._procs import stop_group
from greenloop.protocol import CommandStep, Pipeline, SetupError
from greenloop.protocol.ir import Service

LOG_TAIL_LINES = 20
"""How much of a service's log a step that could not use it shows."""
_STOP_GRACE_S = 10.0


class RunningService(Protocol):
    """A started service, as whatever started it reports it."""

    host: str
    """The address dependent steps connect to (``<NAME>_HOST``)."""
    port: int | None
    """The port they connect to (``<NAME>_PORT``)."""

    def check_ready(self) -> tuple[bool, str]:
        """Run the ``ready`` command once: whether it passed, and what it printed."""
        ...

    def exit_code(self) -> int | None:
        """The service's exit code once it has exited by itself, else None."""
        ...

    def log_tail(self, lines: int) -> str:
        """The last ``lines`` lines the service printed."""
        ...

    def stop(self) -> None:
        """Stop it and everything it started; remove what it left (idempotent)."""
        ...


Starter = Callable[[Service, UUID, dict[str, str]], RunningService]
"""Starts a service given its definition, the run's id and its env (secrets included)."""


class ServiceFailed(Exception):
    """A service a step needs did not become ready; the message carries its log tail."""


def fill(template: str, *, host: str, port: int | None, folder: str = "") -> str:
    """``template`` with ``{host}``, ``{port}`` and ``{dir}`` filled in (other braces,
    such as a shell's ``${VAR}``, stay as they are)."""
    return (
        template.replace("{host}", host)
        .replace("{port}", "" if port is None else str(port))
        .replace("{dir}", folder)
    )


def check(
    pipeline: Pipeline,
    executor_of: Callable[[CommandStep], str],
    starts_own: Callable[[CommandStep], bool],
) -> None:
    """Raise ``SetupError`` before anything runs for a service no step could use: one
    without ``run`` for a step whose executor starts no services itself (they run on
    the host), or one named by a local step without network (a sandbox without
    network shares no loopback with the host either)."""
    for step in pipeline.steps:
        for name in step.services:
            if pipeline.service(name).run is None and not starts_own(step):
                raise SetupError(
                    f"service {name!r} (step {step.key!r}) has no run=... command, and the "
                    f"{executor_of(step)} executor runs services on the host; image=... is "
                    "for the docker executor"
                )
        sandbox = step.sandbox
        if step.services and executor_of(step) == "local" and sandbox and not sandbox.network:
            raise SetupError(
                f"step {step.key!r} names service(s) {', '.join(step.services)} but its "
                "sandbox has no network (network=False or --hermetic), so it could not "
                "reach them; drop one of the two"
            )


class Services:
    """The services of one run: started on demand, stopped after their last step."""

    def __init__(
        self,
        pipeline: Pipeline,
        run_id: UUID,
        secrets: Mapping[str, str],
        cancelled: Callable[[], bool],
    ) -> None:
        self._pipeline = pipeline
        self._run_id = run_id
        self._secrets = secrets
        self._cancelled = cancelled
        self._users = {
            s.name: {step.key for step in pipeline.steps if s.name in step.services}
            for s in pipeline.services
        }
        self._running: dict[str, RunningService] = {}
        self._failed: dict[str, str] = {}
        self._locks = {s.name: threading.Lock() for s in pipeline.services}
        self._lock = threading.Lock()

    def env_for(self, step: CommandStep, start: Starter) -> dict[str, str]:
        """Start (once) every service ``step`` names with ``start`` and wait until each is
        ready; return the variables that point the step at them.

        Raises :class:`ServiceFailed` when one exits, never gets ready or the run stops.
        """
        env: dict[str, str] = {}
        for name in step.services:
            service = self._pipeline.service(name)
            running = self._ready(service, start)
            env[f"{service.env_prefix}_HOST"] = running.host
            if running.port is not None:
                env[f"{service.env_prefix}_PORT"] = str(running.port)
        return env

    def finished(self, step_key: str) -> None:
        """``step_key`` is done: stop every service no step still to finish names."""
        for name, users in self._users.items():
            with self._lock:
                if step_key not in users:
                    continue
                users.discard(step_key)
                last = not users
            if last:
                self._stop(name)

    def stop_all(self) -> None:
        """Stop every service still running (the run is over, however it ended)."""
        for name in list(self._running):
            self._stop(name)

    def _ready(self, service: Service, start: Starter) -> RunningService:
        with self._locks[service.name]:
            if service.name in self._failed:
                raise ServiceFailed(self._failed[service.name])
            running = self._running.get(service.name)
            if running is not None:
                return running
            env = {**service.env, **{u.env: self._secrets[u.name] for u in service.secrets}}
            try:
                running = start(service, self._run_id, env)
            except SetupError as e:
                self._failed[service.name] = f"service {service.name!r} did not start: {e}"
                raise ServiceFailed(self._failed[service.name]) from None
            with self._lock:
                self._running[service.name] = running
            problem = self._await_ready(service, running)
            if problem is not None:
                tail = running.log_tail(LOG_TAIL_LINES).rstrip() or "(it printed nothing)"
                self._stop(service.name)
                self._failed[service.name] = (
                    f"service {service.name!r} {problem}; its log ends:\n{tail}"
                )
                raise ServiceFailed(self._failed[service.name])
            return running

    def _await_ready(self, service: Service, running: RunningService) -> str | None:
        """None once ``running`` is ready, else why it never got there."""
        deadline = time.monotonic() + service.ready_timeout_seconds
        pause, said = 0.1, ""
        while True:
            ok, said = running.check_ready()
            if ok:
                return None
            code = running.exit_code()
            if code is not None:
                return f"exited with code {code} before it was ready"
            if self._cancelled():
                return "was stopped before it was ready (the run stopped)"
            if time.monotonic() >= deadline:
                last = f" (the last check said: {said.strip()[-300:]})" if said.strip() else ""
                return (
                    f"was not ready after {service.ready_timeout_seconds:g}s: "
                    f"`{service.ready}` kept failing{last}"
                )
            time.sleep(pause)
            pause = min(pause * 1.5, 1.0)

    def _stop(self, name: str) -> None:
        with self._lock:
            running = self._running.pop(name, None)
        if running is not None:
            running.stop()


class HostService:
    """A service run as its own process group on the host, on a free loopback port.

    ``{dir}`` is a fresh folder owned by the user greenloop runs as; as root, a
    server that refuses root (PostgreSQL) is run through ``runuser -u USER --``
    and hands the folder over first (``chown USER {dir}``).
    """

    host = "127.0.0.1"

    def __init__(self, service: Service, run_id: UUID, env: dict[str, str]) -> None:
        if service.run is None:
            raise SetupError(
                f"service {service.name!r} has no run=... command to start on this host "
                "(image=... is for the docker executor)"
            )
        self.port: int | None = free_port()
        self._service = service
        self._base = Path(tempfile.mkdtemp(prefix=f"greenloop-service-{service.name}-"))
        # Others may pass through (not list) the base: a server run as another user
        # (runuser -u postgres) reaches {dir} once it is handed over.
        self._base.chmod(0o711)
        self._folder = self._base / "dir"
        self._folder.mkdir(mode=0o700)
        self._log = self._base / "log"
        self._env = {**os.environ, **env}
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                ["sh", "-c", self._filled(service.run)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._folder,
                start_new_session=True,  # its own process group, stopped as one
            )

    def _filled(self, template: str) -> str:
        return fill(template, host=self.host, port=self.port, folder=str(self._folder))

    def check_ready(self) -> tuple[bool, str]:
        """Run ``ready`` once on the host."""
        try:
            done = subprocess.run(
                ["sh", "-c", self._filled(self._service.ready)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=self._env,
                cwd=self._folder,
                timeout=max(5.0, self._service.ready_timeout_seconds),
            )
        except subprocess.TimeoutExpired:
            return False, "the check itself timed out"
        said = (done.stdout + done.stderr).decode("utf-8", "replace")
        return done.returncode == 0, said

    def exit_code(self) -> int | None:
        """The shell's exit code once it exited."""
        return self._process.poll()

    def log_tail(self, lines: int) -> str:
        """The end of what the service printed."""
        with contextlib.suppress(OSError):
            text = self._log.read_bytes().decode("utf-8", "replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL what is left after a grace period."""
        stop_group(self._process, _STOP_GRACE_S)
        shutil.rmtree(self._base, ignore_errors=True)


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 right now."""
    import socket  # only a run with a service needs it; every run imports this module

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
