"""Why each step would be answered from the cache or run: ``greenloop explain``.

The host predicts the cache outcome of every step as a run would (a step whose
parent will run gets a new parent snapshot, so it runs too) and, for a miss,
compares what its key is made of with the parts of the last cache entry that
step wrote: which of command, env, image or parent, policy, watched files
changed; or, for a step that runs the host's tools, which of their folders did.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from greenloop.engine.predict import Prediction, predict
from greenloop.engine.workspace import Workspace
from greenloop.protocol import CommandStep, Pipeline
from greenloop.protocol.ir import Ttl
from greenloop.store import Store

Outcome = Literal["hit", "miss", "always"]


@dataclass
class Explanation:
    """One step's predicted cache outcome and the reasons for it."""

    step: str
    outcome: Outcome
    key: str | None
    reasons: list[str] = field(default_factory=list)
    changed: dict[str, Any] = field(default_factory=dict)
    """For a miss: each part of the key that differs from the last entry's, old and new."""


def explain(
    store: Store,
    pipeline: Pipeline,
    workspace: Workspace,
    executor_of: Callable[[CommandStep], str],
    host_tools: Callable[[CommandStep], str | None],
) -> list[Explanation]:
    """Predict every step of ``pipeline`` in order; ``executor_of(step)`` names its executor
    as its key does, ``host_tools(step)`` stamps the host's tools it may run."""
    now = time.time()
    by_key = {s.key: s for s in pipeline.steps}
    found: list[Explanation] = []
    files, git = workspace.files, workspace.git
    for p in predict(store, pipeline, files, executor_of, host_tools, now=now, git=git):
        step = p.step
        if step.cache is None:
            found.append(Explanation(step.key, "always", None, ["no cache policy: it always runs"]))
        elif p.key is None or p.parts is None:
            parent = str(step.builds_in)
            why = "it always runs" if by_key[parent].cache is None else "it will run"
            reason = f"builds in {parent!r}, and {why}: a new parent snapshot"
            found.append(Explanation(step.key, "miss", None, [reason]))
        elif p.hit and p.entry is not None:
            age = _age(now - p.entry.created_at)
            found.append(Explanation(step.key, "hit", p.key, [f"cached {age} ago"]))
        else:
            found.append(_miss(store, pipeline, step, p, now))
    return found


def _miss(
    store: Store, pipeline: Pipeline, step: CommandStep, p: Prediction, now: float
) -> Explanation:
    key, parts, entry = str(p.key), p.parts or {}, p.entry
    if entry is not None and entry.host is not None and p.host is not None and entry.host != p.host:
        folders = _changed_folders(entry.host, p.host)
        shown = ", ".join(folders[:3]) + (" …" if len(folders) > 3 else "")
        why = f"the host's tools changed since it was cached: {shown}"
        return Explanation(step.key, "miss", key, [why], {"host_tools": folders})
    if entry is not None:
        ttl = _ttl(step)
        limit = f" of {_age(ttl)}" if ttl is not None else ""
        reason = f"its entry is {_age(now - entry.created_at)} old: the ttl{limit} ran out"
        return Explanation(step.key, "miss", key, [reason])
    last = store.index.key_parts(pipeline.name, step.key)
    if last is None:
        return Explanation(step.key, "miss", key, ["never cached: no entry for this step yet"])
    last_key, last_parts_json = last
    if last_key == key:
        why = "its entry is gone from the store (cache gc, or a damaged object)"
        return Explanation(step.key, "miss", key, [why])
    changed = _compare(json.loads(last_parts_json), parts)
    reasons = [_say(name, diff) for name, diff in changed.items()]
    return Explanation(step.key, "miss", key, reasons, changed)


def _changed_folders(was: str, now: str) -> list[str]:
    """What differs between two stamps of the host's tools (JSON lists of ``[folder,
    state]`` in ``PATH`` order): the folders added, removed or changed, sorted; or, when
    the same folders are searched in another order, that."""
    try:
        before = [tuple(pair) for pair in json.loads(was)]
    except (ValueError, TypeError):
        before = []
    after = [tuple(pair) for pair in json.loads(now)]
    was_at, now_at = dict(before), dict(after)
    changed = sorted(p for p in was_at.keys() | now_at.keys() if was_at.get(p) != now_at.get(p))
    return changed or ["PATH searches the same folders in another order"]


def _compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    changed: dict[str, Any] = {}
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if name == "env":
            was, now = dict(before or []), dict(after or [])
            # Values are not shown: an env value may be a token.
            changed[name] = {
                "added": sorted(set(now) - set(was)),
                "removed": sorted(set(was) - set(now)),
                "changed": sorted(k for k in set(was) & set(now) if was[k] != now[k]),
            }
        elif name == "watched":
            was, now = dict(before or []), dict(after or [])
            changed[name] = {
                "added": sorted(set(now) - set(was)),
                "removed": sorted(set(was) - set(now)),
                "changed": sorted(p for p in set(was) & set(now) if was[p] != now[p]),
            }
        else:
            changed[name] = {"was": before, "now": after}
    return changed


def _say(name: str, diff: dict[str, Any]) -> str:
    if name in ("env", "watched"):
        what = "env" if name == "env" else "watched files"
        listed = [
            f"{how} {', '.join(items[:5])}{' …' if len(items) > 5 else ''}"
            for how, items in diff.items()
            if items
        ]
        return f"{what}: {'; '.join(listed)}"
    if name == "boots_from":
        was, now = diff["was"], diff["now"]
        if was and now and was[0] == now[0] == "snapshot":
            return "its parent produced a new snapshot (the parent ran again)"
        return f"boots from {_show(now)} (was {_show(was)})"
    if name == "executor":
        # Whole: an image id changing at its end (a service's, say) is the news.
        return f"executor changed: {diff['was']!r} -> {diff['now']!r}"
    return f"{name} changed: {_show(diff['was'])} -> {_show(diff['now'])}"


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _ttl(step: CommandStep) -> float | None:
    policy = step.cache
    if isinstance(policy, Ttl):
        return policy.seconds
    inner = getattr(policy, "policies", [])
    return min((p.seconds for p in inner if isinstance(p, Ttl)), default=None)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
