"""The ``ray-docker`` executor: the ``ray`` executor with each node's Docker engine.

Steps run as Ray tasks exactly as under ``ray`` (:mod:`greenloop.executors.ray`),
but on each node the ``docker`` executor runs them: a root step boots from its
``image`` (or the pipeline's ``default_image``), a chained one from its parent's
snapshot -- an image in the Docker engine of the node that committed it. Images
do not travel, so a chained step is sent to the node holding its parent's image
(Ray node affinity), and the host remembers which node that is: the snapshot's
ref names a small blob holding the node's id. The workspace archive and the
artifacts still travel through the remote cache; entries of this executor are
never published to it (their snapshots are not store trees).

A parent whose node has left the cluster, or whose image that node no longer
has (``greenloop cache gc`` on the node removes images no entry there names),
is lost: the host drops the cache entries naming it and the run builds those
steps again, as for any snapshot the store cannot produce.
"""

from __future__ import annotations

from greenloop.executors.ray import RayExecutor
from greenloop.executors.ray_cluster import Cluster, connect
from greenloop.executors.ray_node import Done, SnapshotGone, discard_images
from greenloop.plugins.spec import Host, Variant
from greenloop.protocol import (
    CommandStep,
    ExecutorInput,
    Pipeline,
    SetupError,
    SnapshotRef,
    StepResult,
)
from greenloop.store import StoreError
from greenloop.store.remote import HttpRemoteCache

_NODE_PREFIX = b"greenloop-ray-docker-node:"


class RayDockerExecutor(RayExecutor):
    """Runs each step as a Ray task in its node's Docker engine; see the module doc."""

    name = "ray-docker"
    engine = "docker"

    def variant(self, step: CommandStep) -> Variant:
        """Containers on the nodes, whatever this host's sandbox."""
        return Variant("docker", "Ray cluster, each node's Docker engine")

    def preflight(self, pipeline: Pipeline, steps: list[CommandStep]) -> None:
        """As ``ray``'s, and every root step has an image to boot from."""
        super().preflight(pipeline, steps)
        for step in steps:
            if step.builds_in is None and not (step.image or pipeline.default_image):
                raise SetupError(
                    f"step {step.key!r} has no image: give it image=... or set "
                    "default_image on the pipeline (ray-docker runs it in a container)"
                )

    def run(self, request: ExecutorInput, host: Host) -> StepResult:
        """As ``ray``'s; a lost parent image drops its entries and reads as a store error."""
        try:
            return super().run(request, host)
        except SnapshotGone as e:
            if request.parent_snapshot is not None:
                self._forget(request.parent_snapshot)
            raise StoreError(str(e)) from None

    def discard(self, snapshots: list[SnapshotRef]) -> None:
        """Remove run-scoped images from the nodes that hold them, and their refs here."""
        by_node: dict[str, list[str]] = {}
        for tag in snapshots:
            node = self._node_of(tag)
            if node is not None:
                by_node.setdefault(node, []).append(tag)
            self.store.delete_ref(tag)
        if not by_node:
            return
        cluster = connect()
        alive = cluster.alive()
        for node, tags in by_node.items():
            if node in alive:
                cluster.on_node(node, discard_images, tags)

    def _boot(
        self, request: ExecutorInput, transfer: HttpRemoteCache, cluster: Cluster
    ) -> tuple[str | None, str | None]:
        """No tree to push: the parent is an image on one node, where the step must go."""
        parent = request.parent_snapshot
        if parent is None:
            return None, None
        node = self._node_of(parent)
        if node is None or node not in cluster.alive():
            self._forget(parent)
            where = "an unknown node" if node is None else f"Ray node {node}"
            raise StoreError(
                f"snapshot {parent} is an image on {where}, which is not in the cluster "
                "any more; its cache entries are dropped"
            )
        return None, node

    def _sent(self, request: ExecutorInput) -> ExecutorInput:
        return request

    def _landed(self, result: StepResult, done: Done, transfer: HttpRemoteCache) -> None:
        """Remember the node that holds the committed image."""
        if result.committed_snapshot is not None:
            blob = self.store.put_bytes(_NODE_PREFIX + done.node_id.encode())
            self.store.set_ref(result.committed_snapshot, blob)

    def _node_of(self, tag: str) -> str | None:
        blob = self.store.get_ref(tag)
        if blob is None or not self.store.has(blob):
            return None
        data = self.store.read_bytes(blob)
        return data[len(_NODE_PREFIX) :].decode() if data.startswith(_NODE_PREFIX) else None

    def _forget(self, tag: str) -> None:
        """Drop the entries booting children from ``tag``: the image is gone."""
        for entry in self.store.index.entries():
            if entry.snapshot == tag:
                self.store.index.delete_entry(entry.key)
        self.store.delete_ref(tag)
