"""One worktree served by the fleet: its watch loop, its status file, what it last said.

The loop is the one ``greenloop watch`` runs (:class:`~greenloop.devloop.loop.WatchLoop`),
holding the worktree's watcher lock and writing its status file, so ``greenloop
status`` and a second watcher see the serving process as the tree's watcher.
Only its rounds go through the fleet's pool, and its language servers are the
fleet's (one per worktree and program: never shared between trees, so a verdict
cannot leak from one worktree to another).

:meth:`Member.check` answers ``greenloop check`` honestly: the last verdict is
given only if it was reached on the tree exactly as it is now (same build
identity); otherwise the loop checks again and the answer waits for that round.

:meth:`Member.host_dev` runs ``greenloop dev`` for the worktree in the serving
process: one session at a time, fed the loop's own events (no second loop, no
second checkers), its builds and app told on the stream.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from greenloop.devloop.file_digests import DigestCache
from greenloop.devloop.identity import build_identity
from greenloop.devloop.loop import FanOut, Listener, Verdict, WatchLoop
from greenloop.devloop.lsp import ServerPool
from greenloop.devloop.oneshot import ATTEMPTS
from greenloop.devloop.pool import RoundPool
from greenloop.devloop.rounds import Setup
from greenloop.devloop.status import StatusListener, StatusWriter, WatchLock
from greenloop.fleet.events import EventHub, Message, Subscriber
from greenloop.fleet.hosted_dev import DevOpener, HostedDev
from greenloop.fleet.messages import event_message, verdict_message
from greenloop.protocol import (
    BecameGreen,
    BecameRed,
    BuildResult,
    CheckResult,
    FileVerdict,
    SetupError,
    StateEvent,
    TreeState,
)

HEARTBEAT_S = 5.0
"""How often an idle worktree's status file is rewritten (one watcher writes it every
second; twenty would be twenty writes a second for nothing). One fleet-wide timer
does it for every member (:meth:`Member.beat`): no member wakes by itself."""

_WAIT_S = 0.5
"""How often a waiting ``check`` looks whether its worktree stopped being served."""


class Member(Listener):
    """The watch loop of one worktree, and its latest verdict for ``check`` and the stream."""

    def __init__(
        self,
        root: Path,
        hub: EventHub,
        pool: RoundPool,
        servers: ServerPool,
        on_end: Callable[[], None],
    ) -> None:
        """Take ``root``'s watcher slot; raises ``SetupError`` (bad settings, a live watcher).

        ``on_end`` is called when the loop ends, whether stopped or by itself.
        """
        self.root = root
        self._on_end = on_end
        self.key = str(root)
        setup = Setup.load(root)
        self._lock = WatchLock.acquire(root)
        self._hub = hub
        self._servers = servers
        self._stop = threading.Event()
        self._cond = threading.Condition(hub.lock)
        self._writer = StatusWriter(self._lock, lambda: self.begin_stop(), heartbeat_s=None)
        self._loop = WatchLoop(
            root,
            setup,
            FanOut(self, StatusListener(self._writer)),
            self._stop,
            servers=servers,
            slot=pool.slot,
            # An idle loop blocks until an event or wake(): stopping it wakes it.
            idle_s=None,
        )
        self._busy = True
        self._verdict: Verdict | None = None
        self._rounds = 0
        self._files: dict[str, FileVerdict] = {}
        self._edge: BecameGreen | BecameRed | None = None
        self._checks = threading.Lock()
        self._digests = DigestCache()
        self._dev: HostedDev | None = None
        self._hosting = threading.Lock()  # one dev session opens or closes at a time
        self.failure: str | None = None
        """Why watching stopped by itself, when it did."""
        self._thread = threading.Thread(target=self._run, name="greenloop-serve", daemon=True)

    @property
    def alive(self) -> bool:
        """False once its loop ended (stopped, or watching failed)."""
        return self._thread.is_alive()

    def start(self) -> None:
        """Write the status file and start watching and checking."""
        self._writer.start()
        self._thread.start()

    def beat(self) -> None:
        """Rewrite the idle status file (the fleet's one heartbeat timer calls this)."""
        self._writer.beat()

    def begin_stop(self) -> None:
        """Ask the loop to stop (its running checkers are killed); :meth:`stop` waits."""
        self._stop.set()
        self._loop.wake()
        with self._cond:
            self._cond.notify_all()

    def stop(self) -> None:
        """Stop the loop and its language servers, record "stopped", give the slot up."""
        self.begin_stop()
        if self._thread.is_alive():
            self._thread.join()
        self._servers.close_root(self.root)
        if self._dev is not None:
            self.unhost_dev(self._dev)
        self._writer.stop()
        self._lock.release()

    def _run(self) -> None:
        try:
            self._loop.run()
        except Exception as e:  # told on the stream; the fleet replaces the member
            self.failure = f"watching {self.root} failed: {e}"
        finally:
            self.begin_stop()
            self._on_end()

    # --- what the loop says ---------------------------------------------------------

    def checking(self, changed: frozenset[str]) -> None:
        """A round started."""
        with self._cond:
            self._busy = True
            self._hub.publish(
                {"kind": "checking", "worktree": self.key, "changed": sorted(changed)}
            )
            if self._dev is not None:
                self._dev.builds.checking(changed)

    def events(self, events: list[StateEvent]) -> None:
        """State events of a finished round (or the early ones, via :meth:`early`)."""
        self._events(events, early=False)

    def early(self, events: list[StateEvent]) -> None:
        """An advisory checker's errors turned the tree red before the round ended."""
        self._events(events, early=True)

    def _events(self, events: list[StateEvent], *, early: bool) -> None:
        with self._cond:
            for event in events:
                if isinstance(event, FileVerdict):
                    self._files[event.path] = event
                else:
                    self._edge = event
                self._hub.publish(event_message(self.key, event, early=early))
            # Under the lock, so a session being hosted gets each edge once: from here
            # or from host_dev's replay, never both and never neither.
            if self._dev is not None:
                (self._dev.builds.early if early else self._dev.builds.events)(events)

    def verdict(self, verdict: Verdict) -> None:
        """A round finished: it is the worktree's verdict now."""
        with self._cond:
            self._busy = False
            self._verdict = verdict
            self._rounds += 1
            self._cond.notify_all()
            self._hub.publish(verdict_message(self.key, verdict))

    def settled(self) -> int | None:
        """How many rounds have ended, when none is running; None while one is."""
        with self._cond:
            return None if self._busy or self._verdict is None else self._rounds

    # --- what clients ask -----------------------------------------------------------

    def replay(self, *, files: bool) -> list[Message]:
        """The current state as messages, for a new subscriber (call holding the hub's lock).

        ``files`` adds every file's verdict. The last edge is told when it still holds:
        red until a round says otherwise, green only while no round runs.
        """
        messages: list[Message] = []
        if files:
            messages += [event_message(self.key, self._files[p]) for p in sorted(self._files)]
        edge = self._holding_edge()
        if edge is not None:
            messages.append(event_message(self.key, edge))
        if self._verdict is not None and not self._busy:
            messages.append(verdict_message(self.key, self._verdict))
        return messages

    def subscribe(self) -> Subscriber:
        """A subscriber to this worktree's messages, starting with its whole state."""
        return self._hub.subscribe(self.key, lambda: self.replay(files=True))

    def _holding_edge(self) -> BecameGreen | BecameRed | None:
        """The last edge if it still holds (call holding the hub's lock)."""
        edge = self._edge
        if isinstance(edge, BecameRed) or (
            isinstance(edge, BecameGreen)
            and not self._busy
            and self._verdict is not None
            and self._verdict.tree is TreeState.GREEN
        ):
            return edge
        return None

    # --- a hosted `greenloop dev` ---------------------------------------------------

    def host_dev(self, opener: DevOpener, flags: Mapping[str, Any]) -> HostedDev:
        """Open and start a dev session for this worktree; raises ``SetupError``.

        Refused while another runs. A tree green right now is built at once (the
        session is given the edge that still holds, as a new subscriber is).
        """
        with self._hosting:
            if self._dev is not None:
                raise SetupError(
                    f"a greenloop dev already runs on {self.root} in this greenloop serve; "
                    "stop it first"
                )
            session = opener(self.root, flags, _Reports(self))
            try:
                session.start()
            except BaseException:
                session.close()
                raise
            with self._cond:
                self._dev = session
                edge = self._holding_edge()
                if edge is not None:
                    session.builds.events([edge])
            return session

    def unhost_dev(self, session: HostedDev) -> None:
        """Stop feeding ``session`` and close it (its build ends, its app stops)."""
        with self._hosting:
            with self._cond:
                if self._dev is not session:
                    return
                self._dev = None
            session.close()

    def check(self) -> CheckResult | None:
        """The verdict on the tree as it is now; None if the worktree stopped being served.

        Raises ``SetupError`` as ``greenloop check`` would. A tree that changed under
        every attempt is ``unknown`` (or red, if the last round found errors).
        """
        setup = Setup.load(self.root)
        with self._checks:
            after = -1
            verdict: Verdict | None = None
            for _ in range(ATTEMPTS):
                verdict = self._next_verdict(after)
                if verdict is None:
                    return None
                with self._cond:
                    after = self._rounds
                now = build_identity(
                    self.root, setup.config, checkers=setup.checkers, digests=self._digests
                )
                if verdict.identity == now:
                    return _result(verdict, verdict.tree)
                self._loop.recheck()  # the tree moved on since: its own round decides
            assert verdict is not None
            tree = TreeState.RED if verdict.tree is TreeState.RED else TreeState.UNKNOWN
            return _result(verdict, tree)

    def _next_verdict(self, after: int) -> Verdict | None:
        """The first verdict of a round after the ``after``-th, once no round runs."""
        with self._cond:
            while self._busy or self._verdict is None or self._rounds <= after:
                if self._stop.is_set():
                    return None
                self._cond.wait(_WAIT_S)
            return self._verdict


def _result(verdict: Verdict, tree: TreeState) -> CheckResult:
    return CheckResult(
        state=tree,
        diagnostics=verdict.diagnostics,
        checkers=verdict.checkers,
        duration_ms=verdict.duration_ms,
        omitted=dict(verdict.omitted),
    )


class _Reports:
    """A hosted session's builds and app, into the member's status file and the stream."""

    def __init__(self, member: Member) -> None:
        self._member = member

    def build(self, result: BuildResult, published: bool) -> None:
        """Record the build in the status file and tell the stream."""
        member = self._member
        member._writer.build(result, published)
        message = {"kind": "build", "worktree": member.key, "published": published}
        member._hub.publish({**message, "result": result.model_dump(mode="json")})

    def app(self, status: dict[str, Any], line: str) -> None:
        """Record the app in the status file and tell the stream."""
        member = self._member
        member._writer.update(app=status)
        member._hub.publish({"kind": "app", "worktree": member.key, "app": status, "line": line})

    def log(self, line: str) -> None:
        """Tell the stream what the app printed."""
        self._member._hub.publish({"kind": "app_log", "worktree": self._member.key, "line": line})
