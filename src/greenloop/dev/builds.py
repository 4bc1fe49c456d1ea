"""``greenloop dev``: build every green tree, publish it, and tell the dev server.

This is a :class:`~greenloop.devloop.loop.Listener` on the watch loop. The model
stays the only judge of green: a build is requested only on a ``BecameGreen``
edge, and its result is published only if the tree is still green with the same
identity when the build ends (an edit during the build makes the result stale,
and the next green edge builds again). Builds run on one background thread;
requests that arrive while it is busy collapse into the newest one.

For an app, a published build is handed to ``deploy`` (the app supervisor)
instead of being served as files, and without a build pipeline the build is a
snapshot of the green tree (:mod:`greenloop.dev.tree_snapshot`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from greenloop.dev.builder import Builder
from greenloop.dev.publisher import Publisher, read_pointer
from greenloop.dev.tree_snapshot import StaleSnapshot, TreeSnapshot
from greenloop.devloop.loop import Listener
from greenloop.plugins.discovery import Executors
from greenloop.protocol import (
    BecameGreen,
    BecameRed,
    BuildIdentity,
    BuildResult,
    BuildTrigger,
    Deduplicated,
    Failed,
    Pipeline,
    StateEvent,
)
from greenloop.sdk.loader import PipelineFileError, load
from greenloop.server import LiveState
from greenloop.store import Store

BUILD_PIPELINE = "build"

Deploy = Callable[[Path, BuildResult], object]
"""Runs a published build (its folder and result) instead of serving it as files."""


class DevBuilds(Listener):
    """Turns green edges into builds, publishes servable results, feeds the server."""

    def __init__(
        self,
        store: Store,
        root: Path,
        pipeline_file: Path,
        pipeline_name: str | None,
        publisher: Publisher,
        state: LiveState,
        report: Callable[[BuildResult, bool], None],
        *,
        snapshot: TreeSnapshot | None = None,
        deploy: Deploy | None = None,
    ) -> None:
        """Build with ``pipeline_name`` from ``pipeline_file``, or (None) take ``snapshot``.

        Each published build is served as files, or handed to ``deploy``.
        """
        if pipeline_name is None and snapshot is None:
            raise ValueError("a build needs a pipeline or a snapshot")
        self.store = store
        self.root = root
        self.pipeline_file = pipeline_file
        self.pipeline_name = pipeline_name
        self.publisher = publisher
        self.state = state
        self._report = report
        self._snapshot = snapshot
        self._deploy = deploy
        self._executors = Executors(store)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._requested: BuildIdentity | None = None
        self._green: BuildIdentity | None = None  # what the model says is green right now
        self._stopped = False
        self._thread = threading.Thread(target=self._work, name="greenloop-builds", daemon=True)

    def start(self) -> None:
        """Serve the last published build (if any) and start the build thread.

        An app's previous build is started on the build thread, which it keeps
        busy until it is ready.
        """
        if self._deploy is None:
            self._serve_previous()
        self._thread.start()

    def stop(self) -> None:
        """Let the current build finish, then end the build thread."""
        with self._lock:
            self._stopped = True
            self._wake.notify_all()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=60)

    # -- Listener --------------------------------------------------------------

    def checking(self, changed: frozenset[str]) -> None:
        """A change means the last green no longer describes the tree."""
        if changed:
            with self._lock:
                self._green = None

    def events(self, events: list[StateEvent]) -> None:
        """Forward every verdict event to the server; build on a green edge."""
        for event in events:
            self.state.push_state(event)
            with self._lock:
                if isinstance(event, BecameGreen):
                    self._green = self._requested = event.identity
                    self._wake.notify_all()
                elif isinstance(event, BecameRed):
                    self._green = None

    # -- the build thread --------------------------------------------------------

    def _work(self) -> None:
        if self._deploy is not None:
            self._serve_previous()
        while True:
            with self._lock:
                while self._requested is None and not self._stopped:
                    self._wake.wait()
                if self._stopped:
                    return
                identity, self._requested = self._requested, None
            assert identity is not None
            self._build(identity)

    def _build(self, identity: BuildIdentity) -> None:
        trigger = BuildTrigger.for_identity(identity)
        if self.pipeline_name is None:
            assert self._snapshot is not None
            try:
                result = self._snapshot.build(trigger)
            except StaleSnapshot:
                return  # the watcher has the change that made it stale: a new round follows
            except Exception as e:  # a full disk, a broken store: this build failed, not the loop
                reason = f"snapshot of the tree failed ({type(e).__name__}: {e})"
                result = BuildResult(input_hash=trigger.input_hash, outcome=Failed(reason=reason))
        else:
            try:
                pipeline = load(self.pipeline_file).pipeline(self.pipeline_name)
            except (PipelineFileError, KeyError) as e:
                reason = f"cannot load pipeline {self.pipeline_name!r}: {e}"
                result = BuildResult(input_hash=trigger.input_hash, outcome=Failed(reason=reason))
                self.state.push_build(result)
                self._report(result, False)
                return
            result = self._builder(pipeline).build(trigger)
        self.state.push_build(result)
        with self._lock:
            still_green = self._green == identity
        published = False
        if still_green and result.servable:
            try:
                published = self._publish(result)
            except Exception as e:  # the build thread must live on: this is a red build
                reason = (
                    f"built, but publishing failed ({type(e).__name__}: {e}); "
                    "the next green build publishes again"
                )
                result = BuildResult(input_hash=result.input_hash, outcome=Failed(reason=reason))
                self.state.push_build(result)
        self._report(result, published)
        current = self.publisher.current() if published else None
        if self._deploy is not None and current is not None:
            try:
                self._deploy(current, result)
            except Exception as e:  # the build thread must live on; the old app still serves
                reason = f"published, but the app could not be started ({type(e).__name__}: {e})"
                self.state.push_build(
                    BuildResult(input_hash=result.input_hash, outcome=Failed(reason=reason))
                )

    def _publish(self, result: BuildResult) -> bool:
        """Publish ``result`` and serve it (an app's is run later); False: nothing to serve."""
        if self.publisher.publish(result) is None:
            return False
        current = self.publisher.current()
        if current is None:
            return False
        if self._deploy is None:
            self.state.set_artifact(current, result)
        return True

    def _builder(self, pipeline: Pipeline) -> Builder:
        return Builder(self.store, self.root, pipeline, self._executors)

    def _serve_previous(self) -> None:
        record, _ = read_pointer(self.root)
        current = self.publisher.current()
        if record is None or current is None or not current.is_dir():
            return
        meta = self.store.index.get_artifact(record.input_hash)
        if meta is not None and meta.tree == record.artifact:
            previous = BuildResult(
                input_hash=meta.input_hash, outcome=Deduplicated(), artifact=meta
            )
            if self._deploy is not None:
                self._deploy(current, previous)
            else:
                self.state.set_artifact(current, previous)
