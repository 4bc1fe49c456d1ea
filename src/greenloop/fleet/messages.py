"""The fleet stream's messages: state events and verdicts, each naming its worktree.

A state event (``file_verdict``, ``became_green``, ``became_red``) is the
contract's own JSON with ``worktree`` added (and ``early: true`` for an
advisory checker's red before the round ended). A ``verdict`` closes each
round. ``checking`` opens one; ``worktree_added``, ``worktree_removed`` and
``worktree_skipped`` tell the worktree list. docs/fleet.md lists every field.
"""

from __future__ import annotations

import json
from typing import Any, cast

from pydantic import TypeAdapter

from greenloop.devloop.loop import Verdict
from greenloop.fleet.events import Message
from greenloop.protocol import Diagnostic, Severity, StateEvent, TreeState

STATE_EVENT_KINDS = frozenset({"file_verdict", "became_green", "became_red"})
"""The ``kind`` of a message carrying a contract :class:`~greenloop.protocol.StateEvent`."""

# StateEvent is an annotated union; typed through Any so every pydantic version's stubs accept it.
_STATE_EVENT: TypeAdapter[StateEvent] = TypeAdapter(cast(Any, StateEvent))


def event_message(worktree: str, event: StateEvent, *, early: bool = False) -> Message:
    """A state event of ``worktree`` as a stream message."""
    message: Message = {"worktree": worktree, **event.model_dump(mode="json")}
    if early:
        message["early"] = True
    return message


def state_event(message: Message) -> StateEvent:
    """The contract event inside a state-event message (``worktree`` and ``early`` dropped)."""
    fields = {k: v for k, v in message.items() if k not in ("worktree", "early")}
    return _STATE_EVENT.validate_python(fields)


def verdict_message(worktree: str, verdict: Verdict) -> Message:
    """A finished round of ``worktree`` as a stream message."""
    counts = verdict.counts()
    return {
        "kind": "verdict",
        "worktree": worktree,
        "tree": verdict.tree.value,
        "errors": counts[Severity.ERROR],
        "warnings": counts[Severity.WARNING],
        "checkers": verdict.checkers,
        "duration_ms": verdict.duration_ms,
        "changed": sorted(verdict.changed),
        "diagnostics": [d.model_dump(mode="json") for d in verdict.diagnostics],
        "omitted": {severity.value: n for severity, n in verdict.omitted.items()},
    }


def verdict_of(message: Message) -> Verdict:
    """The :class:`Verdict` a ``verdict`` message describes (without its identity)."""
    return Verdict(
        tree=TreeState(message["tree"]),
        diagnostics=[Diagnostic.model_validate(d) for d in message["diagnostics"]],
        checkers=list(message["checkers"]),
        duration_ms=int(message["duration_ms"]),
        changed=frozenset(message["changed"]),
        omitted={Severity(k): int(n) for k, n in message["omitted"].items()},
    )


def encode(message: dict[str, Any]) -> bytes:
    """One line of the stream."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"
