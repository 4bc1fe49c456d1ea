"""What the dev server knows, fed from the dev loop's threads and read by the server.

:class:`LiveState` is the only door into the server: the publisher switches the
served artifact, the model pushes verdict events, the builder pushes build
results. Every change is applied and broadcast under one lock, so each
WebSocket client sees changes in the same order the state saw them, and a
client that connects mid-stream gets a snapshot and then exactly the changes
after it.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path

from greenloop.protocol.devloop import (
    ArtifactMeta,
    BecameGreen,
    BecameRed,
    BuildResult,
    Diagnostic,
    FileState,
    FileVerdict,
    StateEvent,
    TreeState,
    sorted_diagnostics,
)
from greenloop.server.app_status import AppStatus
from greenloop.server.messages import (
    app_message,
    artifact_message,
    build_message,
    state_message,
    sync_message,
)
from greenloop.server.snapshot import Snapshot

# A client that falls this far behind is cut off; it reconnects and resyncs,
# which costs less than buffering without bound for a stuck browser tab.
_QUEUE_LIMIT = 256


class Subscription:
    """A queue of encoded messages for one WebSocket client, bound to its event loop.

    Messages are delivered from any thread through the loop's thread-safe
    callback queue, which keeps them in the order they were sent. ``None``
    tells the reader to hang up: the state dropped it for lagging too far.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Create an empty subscription for a reader running on ``loop``."""
        self._loop = loop
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(_QUEUE_LIMIT + 1)
        self.closed = False

    async def get(self) -> str | None:
        """The next message, or None when the subscriber must disconnect."""
        return await self._queue.get()

    def _deliver(self, message: str) -> bool:
        # Called under the state's lock from any thread; False means drop me.
        if self.closed:
            return False
        try:
            self._loop.call_soon_threadsafe(self._put, message)
        except RuntimeError:  # the loop is closed: the server is gone
            self.closed = True
            return False
        return True

    def _put(self, message: str) -> None:
        if self.closed:
            return
        if self._queue.qsize() >= _QUEUE_LIMIT:
            self.closed = True
            self._queue.put_nowait(None)  # the one slot kept free for this
            return
        self._queue.put_nowait(message)


@dataclass
class _Fields:
    directory: Path | None = None
    artifact: ArtifactMeta | None = None
    verdict: TreeState = TreeState.UNKNOWN
    by_file: dict[str, list[Diagnostic]] = field(default_factory=dict)
    last_build: BuildResult | None = None
    app: AppStatus | None = None


class LiveState:
    """The served artifact, the verdict and the build results; thread-safe.

    Every method may be called from any thread, including threads with no
    event loop (the watcher and the builder run in plain threads).
    """

    def __init__(self) -> None:
        """Start with nothing served, an unknown verdict and no build."""
        self._lock = threading.Lock()
        self._fields = _Fields()
        self._subscribers: list[Subscription] = []

    def set_artifact(self, directory: Path, result: BuildResult) -> None:
        """Serve ``directory`` — a complete artifact produced by ``result`` — from now on.

        The caller promises the directory is fully written and stays unchanged.
        The path is resolved now, so swapping a symlink to it later does not
        change what is served. Requests that already started keep reading the
        files they opened; requests that start after this call see the new
        directory. Raises ValueError for a failed build or a missing directory.
        """
        if not result.servable or result.artifact is None:
            raise ValueError("only a servable build result can be published")
        try:
            resolved = directory.resolve(strict=True)
        except OSError as e:
            raise ValueError(f"artifact directory {directory} is not readable: {e}") from e
        if not resolved.is_dir():
            raise ValueError(f"artifact {directory} is not a directory")
        with self._lock:
            self._fields.directory = resolved
            self._fields.artifact = result.artifact
            self._fields.last_build = result
            self._broadcast(artifact_message(result, self._snapshot()))

    def push_state(self, event: StateEvent) -> None:
        """Apply a verdict event from the model and broadcast it."""
        with self._lock:
            _apply(self._fields, event)
            self._broadcast(state_message(event, self._snapshot()))

    def push_build(self, result: BuildResult) -> None:
        """Record a build result (failed ones too) and broadcast it.

        This does not change what is served: only :meth:`set_artifact` does,
        once the publisher has the artifact's directory complete.
        """
        with self._lock:
            self._fields.last_build = result
            self._broadcast(build_message(result, self._snapshot()))

    def set_app(self, app: AppStatus) -> None:
        """Record what the app behind the proxy is doing now, and broadcast it.

        Like :meth:`push_build`, this never changes what is served: the proxy
        switches targets on its own, and :meth:`set_artifact` says which build
        the pages now come from.
        """
        with self._lock:
            self._fields.app = app
            self._broadcast(app_message(app, self._snapshot()))

    def snapshot(self) -> Snapshot:
        """A consistent copy of the current state."""
        with self._lock:
            return self._snapshot()

    def subscribe(self, loop: asyncio.AbstractEventLoop) -> Subscription:
        """Register a client on ``loop``; its first message is the current state."""
        subscription = Subscription(loop)
        with self._lock:
            # Under the lock, so no change can slip between the sync and the stream.
            if subscription._deliver(sync_message(self._snapshot())):
                self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop sending to ``subscription``; unknown ones are ignored."""
        subscription.closed = True
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def subscriber_count(self) -> int:
        """How many clients are listening now."""
        with self._lock:
            return len(self._subscribers)

    def _snapshot(self) -> Snapshot:
        f = self._fields
        diagnostics = sorted_diagnostics(d for ds in f.by_file.values() for d in ds)
        return Snapshot(f.directory, f.artifact, f.verdict, tuple(diagnostics), f.last_build, f.app)

    def _broadcast(self, message: str) -> None:
        self._subscribers = [s for s in self._subscribers if s._deliver(message)]


def _apply(fields: _Fields, event: StateEvent) -> None:
    if isinstance(event, BecameGreen):
        fields.verdict = TreeState.GREEN
        fields.by_file.clear()
    elif isinstance(event, BecameRed):
        # The edge carries the whole red picture; it replaces what file verdicts said.
        fields.verdict = TreeState.RED
        fields.by_file.clear()
        for diagnostic in event.diagnostics:
            fields.by_file.setdefault(diagnostic.path, []).append(diagnostic)
    elif isinstance(event, FileVerdict):
        # Level-triggered: the newest verdict of a file is the whole truth about it
        # (a green file may still carry warnings, as the model's own list does).
        # The tree verdict moves only on the model's edges.
        if event.diagnostics and event.state is not FileState.UNCHECKED:
            fields.by_file[event.path] = list(event.diagnostics)
        else:
            fields.by_file.pop(event.path, None)
