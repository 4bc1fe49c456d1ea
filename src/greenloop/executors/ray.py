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

import io
import threading
from uuid import UUID

from greenloop.executors.local import LocalExecutor
from greenloop.executors.ray_cluster import (
    RAY_ADDRESS_ENV,
    Cluster,
    cluster_address,
    connect,
    malformed,
    ray_installed,
)
from greenloop.executors.ray_node import CacheSettings, Done, Engine, Job
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
from greenloop.protocol.executor import EXIT_INTERRUPTED
from greenloop.protocol.ir import Sandbox
from greenloop.store import Store
from greenloop.store.remote import REMOTE_CACHE_ENV, HttpRemoteCache, remote_settings
from greenloop.store.remote.closure import tree_blobs

INSTALL_HINT = "pip install 'greenloop[ray]'"
"""How to get Ray."""


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

        The cluster is not contacted here: the plan only knows the local cache, and a
        step it lists may still be a remote hit, which must never load Ray nor need the
        cluster. Only its address is read; a cluster that does not answer (tried with
        a TCP connection before Ray is), or a step no node can hold, fails the first
        step sent.
        """
        for step in steps:
            if step.services:
                raise SetupError(
                    f"step {step.key!r} talks to services, which run on this host and are "
                    "not reachable from the cluster's nodes: give it executor='local'"
                )
        self._settings()
        if (problem := malformed(cluster_address())) is not None:
            raise SetupError(
                f"cannot connect to the Ray cluster ({RAY_ADDRESS_ENV} or --ray-address): {problem}"
            )

    def run(self, request: ExecutorInput, host: Host) -> StepResult:
        """Send the step to the cluster (a hit runs nothing) and bring its outputs back."""
        if isinstance(request.cache_lookup, Hit):
            return StepResult(exit_code=0, committed_snapshot=None, artifacts=[])
        transfer = self._client()
        archive = self._archive(request, host, transfer)
        try:
            cluster = connect()
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
        self, request: ExecutorInput, transfer: HttpRemoteCache, cluster: Cluster
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

    def _parent(self, request: ExecutorInput, transfer: HttpRemoteCache) -> str:
        """The parent's tree (a root step's: the empty tree), made sure to be whole on
        the server: a step that changes nothing commits it, and its task then has
        nothing to upload."""
        tree = self._local.parent_tree(request)
        with self._lock:
            pushed = tree in self._on_server
        if not pushed:
            transfer.push([tree])  # a tree made here (another executor) or imported
            with self._lock:
                self._on_server.add(tree)
        return tree
