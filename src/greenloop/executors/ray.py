"""The ``ray`` executor: each step that must run becomes a Ray task on a cluster.

The host keeps deciding every cache outcome; a hit never reaches the cluster.
A step that runs is sent as one task (``num_cpus``/``num_gpus``/``memory`` and
custom resources from the step's ``resources``, one CPU by default) that runs
it with the node's own ``local`` executor (:mod:`greenloop.executors.ray_node`).
Snapshots, the workspace archive and artifacts travel through the remote cache
(``--remote-cache``/``GREENLOOP_REMOTE_CACHE``, which the executor requires):
before a task starts the host makes sure the parent's tree and the archive are
on the server; the task uploads what it committed before it returns, and the
host then imports the tree's manifest (its blobs stay on the server until
something here reads them) and the artifacts whole.

Ray's own retry moves a task whose node (or worker) dies to another node, once;
after that the step fails with the reason. Nothing is recorded before a task
returns, so a half-finished step never writes the cache.

Ray is an optional extra: this module imports it only once a step is sent, so
a run whose every step is cached never loads it; without it installed, naming
the executor is a setup error with the install hint.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import threading
import time
from typing import Any
from uuid import UUID

from greenloop.executors.local import LocalExecutor
from greenloop.executors.ray_node import CacheSettings, Done, Engine, Job, Line, SnapshotGone
from greenloop.plugins.spec import ArchiveReader, Host, Variant
from greenloop.protocol import (
    CommandStep,
    ExecutorInput,
    Hit,
    Pipeline,
    PluginError,
    PluginFailure,
    SetupError,
    SnapshotRef,
    StepResult,
)
from greenloop.protocol.executor import EXIT_INTERRUPTED, EXIT_TIMEOUT
from greenloop.protocol.ir import Sandbox
from greenloop.store import Store
from greenloop.store.remote import REMOTE_CACHE_ENV, HttpRemoteCache, remote_settings
from greenloop.store.remote.closure import tree_blobs

RAY_ADDRESS_ENV = "RAY_ADDRESS"
"""The cluster to connect to (``--ray-address`` sets it); ``auto`` when unset: the
cluster ``ray start`` started on this machine."""
INSTALL_HINT = "pip install 'greenloop[ray]'"
"""How to get Ray."""
CANCEL_GRACE_S = 10.0
"""How long a cancelled task has to stop its step before its worker is killed."""
TIMEOUT_GRACE_S = 30.0
"""How long past a step's timeout the host waits (the node enforces it) before killing."""
_WAIT_S = 0.1
"""How often the host looks at a running task for a cancel or the deadline."""
_NODES_TTL_S = 10.0
"""How long what the cluster's nodes have is taken as known."""
_RESERVED = {"cpu": "num_cpus", "gpu": "num_gpus", "memory": "memory"}
"""Step resources Ray knows under its own names; any other name is a custom resource."""


def ray_installed() -> bool:
    """Whether Ray can be imported here, found without importing it."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


class RayExecutor:
    """Runs each step as a Ray task on a node's ``local`` executor; see the module doc."""

    name = "ray"

    def __init__(self, store: Store) -> None:
        """An executor for ``store``'s runs; nothing connects until a step is sent."""
        if not ray_installed():
            raise SetupError(f"the ray executor needs Ray, which is not installed: {INSTALL_HINT}")
        self.store = store
        self._local = LocalExecutor(store)  # the sandbox every node will use, decided here
        self._lock = threading.Lock()
        self._transfer: HttpRemoteCache | None = None
        self._archives: dict[UUID, str] = {}
        self._on_server: set[str] = set()
        """Trees known to be whole on the server (a node committed them, or we pushed them)."""

    def variant(self, step: CommandStep) -> Variant:
        """The nodes' sandbox: what it can write, hence part of the key, as under ``local``."""
        local = self._local.variant(step)
        return Variant(local.key, f"Ray cluster, each node's local executor: {local.note}")

    def preflight(self, pipeline: Pipeline, steps: list[CommandStep]) -> None:
        """Before anything runs: a writable remote cache, and no step that needs this host.

        The cluster itself is not contacted here: the plan only knows the local cache,
        and a step it lists may still be a remote hit, which must never load Ray. An
        unreachable cluster, or a step no node can hold, fails the first step sent.
        """
        for step in steps:
            if step.services:
                raise SetupError(
                    f"step {step.key!r} talks to services, which run on this host and are "
                    "not reachable from the cluster's nodes: give it executor='local'"
                )
        self._settings()

    def run(self, request: ExecutorInput, host: Host) -> StepResult:
        """Send the step to the cluster (a hit runs nothing) and bring its outputs back."""
        if isinstance(request.cache_lookup, Hit):
            return StepResult(exit_code=0, committed_snapshot=None, artifacts=[])
        transfer = self._client()
        archive = self._archive(request, host, transfer)
        try:
            cluster = _connect()
        except SetupError as e:
            raise PluginFailure(PluginError(plugin="ray", kind="error", message=str(e))) from None
        cluster.check_fits(request.step)
        parent_tree, node = self._boot(request, transfer, cluster)
        # No kept filesystem for `greenloop debug`: it would be on a node.
        sent = self._sent(request).model_copy(update={"keep_failed_as": None})
        job = Job(sent.model_dump_json(), archive, parent_tree, self._settings(), self.engine)
        done = cluster.run(job, request, host, node)
        if done is None:
            return StepResult(exit_code=EXIT_INTERRUPTED)
        if isinstance(done, int):
            return StepResult(exit_code=done)
        result = StepResult.model_validate_json(done.result)
        try:
            self._landed(result, done, transfer)
            keys = [a.key for a in result.artifacts]
            transfer.pull(keys)
            # Artifacts come whole: the run's caller reads them, maybe after it ended.
            transfer.pull([b for k in keys for b in tree_blobs(self.store, k) or []])
        except Exception:
            if result.committed_snapshot is not None:
                self.store.delete_ref(result.committed_snapshot)
            raise
        return result

    engine: Engine = "local"
    """What runs a step on its node."""

    def _boot(
        self, request: ExecutorInput, transfer: HttpRemoteCache, cluster: _Cluster
    ) -> tuple[str | None, str | None]:
        """(the parent's tree, made sure to be on the server; the node the step must run on)."""
        return self._parent(request, transfer), None

    def _sent(self, request: ExecutorInput) -> ExecutorInput:
        """The request as the node gets it: with the sandbox this host chose."""
        mode = "none" if self._local.variant(request.step).key == "none" else "bwrap"
        sandbox = request.step.sandbox or Sandbox(mode=mode)
        return request.model_copy(
            update={"step": request.step.model_copy(update={"sandbox": sandbox})}
        )

    def _landed(self, result: StepResult, done: Done, transfer: HttpRemoteCache) -> None:
        """Bring in what the step committed: its tree's manifest (the blobs stay lazy)."""
        if done.tree is not None and result.committed_snapshot is not None:
            transfer.pull([done.tree])
            self.store.set_ref(result.committed_snapshot, done.tree)
            with self._lock:
                self._on_server.add(done.tree)

    def discard(self, snapshots: list[SnapshotRef]) -> None:
        """Drop the host's refs of run-scoped snapshots (the nodes' go at their next gc)."""
        for tag in snapshots:
            self.store.delete_ref(tag)

    # -- moving things through the remote cache -------------------------------------

    def _settings(self) -> CacheSettings:
        try:
            settings = remote_settings()
        except ValueError as e:
            raise SetupError(str(e)) from None
        if settings is None:
            raise SetupError(
                "the ray executor moves snapshots through a remote cache: give "
                f"--remote-cache URL (or {REMOTE_CACHE_ENV}), a server every node reaches"
            )
        if settings.mode == "read":
            raise SetupError(
                "the ray executor uploads every snapshot it makes to the remote cache: "
                "it needs --remote-cache-mode readwrite"
            )
        return CacheSettings(settings.url, settings.token, settings.timeout)

    def _client(self) -> HttpRemoteCache:
        with self._lock:
            if self._transfer is None:
                settings = self._settings()
                self._transfer = HttpRemoteCache(
                    self.store,
                    settings.url,
                    token=settings.token,
                    timeout=settings.timeout,
                    fetcher=False,  # the run's own remote client fetches for the store
                )
            return self._transfer

    def _archive(self, request: ExecutorInput, host: Host, transfer: HttpRemoteCache) -> str:
        """The workspace archive's digest, uploaded once per run (per archive)."""
        with self._lock:
            known = self._archives.get(request.workspace_archive_id)
            if known is not None:
                return known
            reader = io.BufferedReader(ArchiveReader(host, request.workspace_archive_id))
            digest = self.store.put_stream(reader)
            transfer.push([digest])
            self._archives[request.workspace_archive_id] = digest
            return digest

    def _parent(self, request: ExecutorInput, transfer: HttpRemoteCache) -> str | None:
        """The parent's tree, made sure to be whole on the server."""
        if request.parent_snapshot is None:
            return None
        tree = self.store.get_ref(request.parent_snapshot)
        if tree is None:
            raise RuntimeError(f"snapshot {request.parent_snapshot!r} is not in the store")
        with self._lock:
            pushed = tree in self._on_server
        if not pushed:
            transfer.push([tree])  # a tree made here (another executor) or imported
            with self._lock:
                self._on_server.add(tree)
        return tree


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


class _Cluster:
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
        self._lock = threading.Lock()
        self._known: list[dict[str, float]] = []
        self._asked = -_NODES_TTL_S
        self._drain_lock = threading.Lock()
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
            with contextlib.suppress(Exception):
                self._drain()
            with self._lock:
                self._hosts.pop(step_id, None)
            self._relay.forget.remote(step_id)

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
            batch: dict[str, list[Line]] = self._ray.get(self._relay.drain.remote())
            with self._lock:
                hosts = dict(self._hosts)
            for step_id, lines in batch.items():
                host = hosts.get(step_id)
                if host is None:
                    continue
                for stream, line in lines:
                    host.log(UUID(step_id), stream, line)


_cluster: _Cluster | None = None
_connecting = threading.Lock()


def _connect() -> _Cluster:
    """This process's connection to the cluster (``RAY_ADDRESS``), made on first use."""
    global _cluster
    with _connecting:
        if _cluster is not None:
            return _cluster
        import ray

        address = os.environ.get(RAY_ADDRESS_ENV) or "auto"
        if not ray.is_initialized():
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
                    f"--ray-address): {_first_line(e)}"
                ) from None
        _cluster = _Cluster()
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
