"""The host's connection to a Ray cluster: tasks sent and waited for, their log
lines relayed, what the nodes have asked for.

One connection a process (:func:`connect`), made when the first step is sent;
the ``ray`` executors (:mod:`greenloop.executors.ray`) use it. Ray is imported
only here and only then.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
import threading
import time
from typing import Any
from uuid import UUID

from greenloop.executors.ray_node import Done, Job, Relayed, SnapshotGone
from greenloop.plugins.spec import Host
from greenloop.protocol import CommandStep, ExecutorInput, PluginError, PluginFailure, SetupError
from greenloop.protocol.executor import EXIT_TIMEOUT

RAY_ADDRESS_ENV = "RAY_ADDRESS"
"""The cluster to connect to (``--ray-address`` sets it); ``auto`` when unset: the
cluster ``ray start`` started on this machine."""
AUTH_MODE_ENV = "RAY_AUTH_MODE"
"""Ray's switch for token authentication, which the host must set as the cluster does."""
CANCEL_GRACE_S = 10.0
"""How long a cancelled task has to stop its step before its worker is killed."""
TIMEOUT_GRACE_S = 30.0
"""How long past a step's timeout the host waits (the node enforces it) before killing."""
_WAIT_S = 0.1
"""How often the host looks at a running task for a cancel or the deadline."""
_REACH_TIMEOUT_S = 5.0
"""How long the cluster's address has to accept a connection."""
_NODES_TTL_S = 10.0
"""How long what the cluster's nodes have is taken as known."""
_AUTH_HINT = (
    "A cluster with token authentication (the default for a `ray start` cluster since "
    f"Ray 2.59) needs {AUTH_MODE_ENV}=token here too, and its token (RAY_AUTH_TOKEN, "
    "or ~/.ray/auth_token)"
)
_RESERVED = {"cpu": "num_cpus", "gpu": "num_gpus", "memory": "memory"}
"""Step resources Ray knows under its own names; any other name is a custom resource."""


def cluster_address() -> str:
    """The cluster to connect to: ``RAY_ADDRESS``, else ``auto``."""
    return os.environ.get(RAY_ADDRESS_ENV) or "auto"


def _host_port(address: str) -> tuple[str, int] | None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return (host.strip("[]"), int(port)) if host and port.isdigit() else None


def malformed(address: str) -> str | None:
    """Why ``address`` cannot name a cluster (``auto``, or ``HOST:PORT``), or None."""
    if address == "auto" or _host_port(address) is not None:
        return None
    return f"{address!r} is not HOST:PORT (or auto)"


def unreachable(address: str) -> str | None:
    """Why nothing answers at the cluster address ``address``, or None; ``auto`` is
    left to Ray, which finds a local cluster or fails at once.

    A TCP connection only, without Ray: ``ray.init`` on an address nobody listens on
    retries for minutes, and no cancel reaches it meanwhile.
    """
    found = _host_port(address)
    if found is None:
        return malformed(address)
    host, port = found
    try:
        with socket.create_connection((host, port), timeout=_REACH_TIMEOUT_S):
            return None
    except OSError as e:
        return f"nothing answers at {address} ({e.strerror or e})"


def ray_installed() -> bool:
    """Whether Ray can be imported here, found without importing it."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def _demand(step: CommandStep) -> dict[str, float]:
    """What ``step`` asks of a node, in Ray's resource names (one CPU unless it says)."""
    demand = {"CPU": 1.0}
    for name, amount in step.resources.items():
        demand[{"cpu": "CPU", "gpu": "GPU"}.get(name, name)] = amount
    return {name: amount for name, amount in demand.items() if amount > 0}


def _fits(demand: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(name, 0.0) >= amount for name, amount in demand.items())


def _shown(ray_name: str) -> str:
    return {"CPU": "cpu", "GPU": "gpu"}.get(ray_name, ray_name)


def _options(step: CommandStep) -> dict[str, Any]:
    """The Ray task options for ``step``."""
    options: dict[str, Any] = {
        "num_cpus": step.resources.get("cpu", 1.0),
        # System failures only (the node or worker died); a step that fails is not retried.
        "max_retries": 1,
        "retry_exceptions": False,
        "name": f"greenloop:{step.key}",
    }
    custom = {}
    for name, amount in step.resources.items():
        if name in _RESERVED:
            if name != "cpu":
                options[_RESERVED[name]] = int(amount) if name == "memory" else amount
        else:
            custom[name] = amount
    if custom:
        options["resources"] = custom
    return options


class Cluster:
    """The connection to the cluster this process uses: the task, the relay and its pump."""

    def __init__(self) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from greenloop.executors.ray_node import Relay, run_job

        self._ray = ray
        self._task = ray.remote(run_job)
        here = ray.get_runtime_context().get_node_id()
        # On this process's own node, strictly (a soft preference lets Ray put it on any
        # worker): the lines do not cross the network twice, and the relay does not die
        # with a worker node the run would otherwise survive.
        # Any: Ray types actor methods as plain functions, without their .remote.
        self._relay: Any = (
            ray.remote(Relay)
            .options(
                num_cpus=0,
                max_concurrency=64,
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
            )
            .remote()
        )
        self._hosts: dict[str, Host] = {}
        # Lines handed to the hosts, by (step, task attempt): a finished task's result
        # says how many it pushed, so the relay is asked again only for what is missing.
        self._received: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._known: list[dict[str, float]] = []
        self._asked = -_NODES_TTL_S
        # Reentrant: a finished task's last lines are reported under it, after any drain.
        self._drain_lock = threading.RLock()
        threading.Thread(target=self._pump, daemon=True, name="greenloop-ray-logs").start()

    def check_fits(self, step: CommandStep) -> None:
        """Raise :class:`PluginFailure` when no live node could ever hold ``step``: Ray
        would keep it waiting for one forever."""
        demand = _demand(step)
        nodes = self._nodes(fresh=False)
        if any(_fits(demand, node) for node in nodes):
            return
        nodes = self._nodes(fresh=True)  # the cluster may have grown since
        if any(_fits(demand, node) for node in nodes):
            return
        asked = ", ".join(f"{_shown(n)}={a:g}" for n, a in demand.items())
        message = (
            f"step {step.key!r} asks for {asked}, and none of the {len(nodes)} live nodes of "
            "the Ray cluster has that much: it would never start"
        )
        raise PluginFailure(PluginError(plugin="ray", kind="error", message=message))

    def _nodes(self, *, fresh: bool) -> list[dict[str, float]]:
        """What each live node has, asked of the cluster at most every few seconds
        unless ``fresh``: a question to the GCS for every step would cost each one."""
        with self._lock:
            if not fresh and time.monotonic() - self._asked < _NODES_TTL_S:
                return self._known
        found: list[dict[str, Any]] = self._ray.nodes()  # type: ignore[no-untyped-call]
        nodes = [dict(node["Resources"]) for node in found if node.get("Alive")]
        with self._lock:
            self._known, self._asked = nodes, time.monotonic()
        return nodes

    def alive(self) -> set[str]:
        """The ids of the cluster's live nodes."""
        found: list[dict[str, Any]] = self._ray.nodes()  # type: ignore[no-untyped-call]
        return {node["NodeID"] for node in found if node.get("Alive")}

    def on_node(self, node: str, function: Any, *args: Any) -> Any:
        """Run ``function(*args)`` as a task on ``node`` and return what it returns."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        task = self._ray.remote(function).options(
            num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
        )
        return self._ray.get(task.remote(*args))

    def run(
        self, job: Job, request: ExecutorInput, host: Host, node: str | None = None
    ) -> Done | int | None:
        """Run ``job`` as a task (on ``node``, when given); its :class:`Done`, or an exit
        code the host decided (124 past the deadline), or None when it was cancelled."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        exceptions = self._ray.exceptions
        step_id = str(request.step_id)
        with self._lock:
            self._hosts[step_id] = host
        options = _options(request.step)
        if node is not None:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
        ref = self._task.options(**options).remote(job, self._relay)
        timeout = request.step.timeout_seconds
        deadline = time.monotonic() + timeout + TIMEOUT_GRACE_S if timeout else None
        cancelled_at: float | None = None
        caught_up = False
        try:
            while not self._ray.wait([ref], timeout=_WAIT_S)[0]:
                now = time.monotonic()
                if cancelled_at is None and host.cancelled(request.step_id):
                    cancelled_at = now
                    self._relay.cancel.remote(step_id)
                if cancelled_at is not None and now - cancelled_at > CANCEL_GRACE_S:
                    self._ray.cancel(ref, force=True)
                    return None
                if deadline is not None and now > deadline:
                    self._ray.cancel(ref, force=True)
                    host.log(request.step_id, "stderr", f"greenloop: timed out after {timeout:g}s")
                    return EXIT_TIMEOUT
            try:
                done: Done = self._ray.get(ref)
                self._catch_up(step_id, done, host)
                caught_up = True
                return done
            except exceptions.TaskCancelledError:
                return None
            except exceptions.RayTaskError as e:
                if isinstance(e.cause, SnapshotGone):
                    raise e.cause from None
                cause = e.cause if e.cause is not None else e
                error = PluginError(plugin="ray", kind="error", message=str(cause))
                raise PluginFailure(error) from None
            except exceptions.RayError as e:
                lost = (
                    exceptions.WorkerCrashedError,
                    exceptions.NodeDiedError,
                    exceptions.ObjectLostError,
                )
                why = f"{type(e).__name__}: {_first_line(e)}"
                message = f"Ray could not run the step ({why})"
                if isinstance(e, lost):
                    message = (
                        "the node running the step was lost, and so was the one its retry "
                        f"ran on ({why})"
                    )
                raise PluginFailure(
                    PluginError(plugin="ray", kind="crashed", message=message)
                ) from e
        finally:
            # Every line the task sent is reported before its result; a relay that is
            # gone has nothing to say, and the result (or its error) says what happened.
            if not caught_up:
                with contextlib.suppress(Exception):
                    self._drain()
            with self._lock:
                self._hosts.pop(step_id, None)
                for seen in [k for k in self._received if k[0] == step_id]:
                    del self._received[seen]
            self._relay.forget.remote(step_id)

    def _catch_up(self, step_id: str, done: Done, host: Host) -> None:
        """Report the rest of a finished task's lines: those still in the relay (asked for
        only when some are), then those that came back with its result."""
        with self._drain_lock:  # no drain in progress may report its lines after these
            with self._lock:
                received = self._received.get((step_id, done.attempt), 0)
            if received < done.pushed:
                self._drain()
            for stream, line in done.tail:
                host.log(UUID(step_id), stream, line)

    def _pump(self) -> None:
        while True:
            time.sleep(_WAIT_S)
            with self._lock:
                busy = bool(self._hosts)
            if busy:
                try:
                    self._drain()
                except Exception:  # the relay or the connection is gone: the tasks will say
                    time.sleep(1.0)

    def _drain(self) -> None:
        with self._drain_lock:
            batch: dict[str, list[Relayed]] = self._ray.get(self._relay.drain.remote())
            with self._lock:
                hosts = dict(self._hosts)
                for step_id, lines in batch.items():
                    for attempt, _, _ in lines:
                        key = (step_id, attempt)
                        self._received[key] = self._received.get(key, 0) + 1
            for step_id, lines in batch.items():
                host = hosts.get(step_id)
                if host is None:
                    continue
                for _, stream, line in lines:
                    host.log(UUID(step_id), stream, line)


_cluster: Cluster | None = None
_connecting = threading.Lock()


def connect() -> Cluster:
    """This process's connection to the cluster (``RAY_ADDRESS``), made on first use."""
    global _cluster
    with _connecting:
        if _cluster is not None:
            return _cluster
        import ray

        address = cluster_address()
        if not ray.is_initialized():
            problem = unreachable(address)
            if problem is not None:
                raise SetupError(f"cannot connect to the Ray cluster: {problem}")
            # Ray warns that, off the main thread, it leaves SIGTERM alone: as we want
            # (a SIGTERM must cancel the run, not exit the process), so not worth a line.
            logging.getLogger("ray._private.worker").addFilter(_NotSigterm())
            try:
                ray.init(
                    address=address,
                    namespace="greenloop",
                    log_to_driver=False,  # the steps' output comes through the relay
                    logging_level=logging.WARNING,
                    configure_logging=False,
                )
            except Exception as e:
                raise SetupError(
                    f"cannot connect to the Ray cluster at {address!r} ({RAY_ADDRESS_ENV} or "
                    f"--ray-address): {_first_line(e)}. {_AUTH_HINT}"
                ) from None
        _cluster = Cluster()
        return _cluster


class _NotSigterm(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def disconnect() -> None:
    """Leave the cluster (tests; a process otherwise stays connected until it exits)."""
    global _cluster
    with _connecting:
        _cluster = None
        if ray_installed():
            import ray

            ray.shutdown()


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
