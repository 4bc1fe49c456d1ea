"""The fleet's one event stream: every worktree's messages, to every subscriber.

A message is a JSON-ready dict with a ``kind`` and the ``worktree`` it is about
(see docs/fleet.md for the kinds). Publishing and subscribing take one lock, so
a new subscriber's replay of the current state and the live messages after it
meet without a gap or a repeat. Each subscriber has a bounded queue: one that
falls :data:`BACKLOG` messages behind is dropped (its connection is closed),
so a stuck reader cannot make the server hold every message forever.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

Message = dict[str, Any]
"""One line of the stream, before it is written as JSON."""

BACKLOG = 10_000
"""Messages a subscriber may fall behind before it is dropped."""


class Subscriber:
    """One reader of the stream: every worktree's messages, or one worktree's."""

    def __init__(self, worktree: str | None) -> None:
        self.worktree = worktree
        self._queue: queue.Queue[Message | None] = queue.Queue(BACKLOG)
        self.dropped = False

    def wants(self, message: Message) -> bool:
        """Whether ``message`` is for this subscriber."""
        return self.worktree is None or message.get("worktree") == self.worktree

    def offer(self, message: Message) -> None:
        """Queue ``message``; end the stream if the subscriber has fallen too far behind."""
        if self.dropped:
            return
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self.close()

    def close(self) -> None:
        """End the stream: :meth:`next` returns None once what is queued is read."""
        self.dropped = True
        # Room is made for the end mark: it must get through, the rest no longer matters.
        while True:
            try:
                self._queue.put_nowait(None)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def next(self, timeout: float) -> Message | None:
        """The next message, or None at the end of the stream; ``queue.Empty`` on timeout."""
        return self._queue.get(timeout=timeout)


class EventHub:
    """Hands every published message to the subscribers who want it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        """Held while publishing; members hold it too while they change what they replay."""
        self._subscribers: set[Subscriber] = set()
        self.closed = False
        """True once :meth:`close` ended every stream (the server is stopping)."""

    def publish(self, message: Message) -> None:
        """Send ``message`` to every subscriber that wants it."""
        with self.lock:
            for subscriber in list(self._subscribers):
                if subscriber.wants(message):
                    subscriber.offer(message)

    def subscribe(self, worktree: str | None, replay: Callable[[], list[Message]]) -> Subscriber:
        """A new subscriber, first given ``replay()`` (the current state), then live messages."""
        subscriber = Subscriber(worktree)
        with self.lock:
            if self.closed:  # one arriving while the server stops: its stream ends at once
                subscriber.close()
                return subscriber
            for message in replay():
                subscriber.offer(message)
            self._subscribers.add(subscriber)
        return subscriber

    @property
    def subscribers(self) -> int:
        """How many streams are open."""
        with self.lock:
            return len(self._subscribers)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop sending to ``subscriber``."""
        with self.lock:
            self._subscribers.discard(subscriber)

    def close(self) -> None:
        """End every subscriber's stream (the server is stopping)."""
        with self.lock:
            self.closed = True
            subscribers, self._subscribers = list(self._subscribers), set()
        for subscriber in subscribers:
            subscriber.close()
