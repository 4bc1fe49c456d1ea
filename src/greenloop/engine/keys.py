"""Cache keys and policy freshness: how the host decides a step's cache outcome.

A key covers everything that can change a step's output: the command, the
image it boots from (or its parent's snapshot), env, workdir, declared
artifacts, the policy and its inputs, the executor and the protocol version.
A parent's snapshot ref changes whenever the parent really re-ran, so a
rerun upstream invalidates everything downstream.
"""

from __future__ import annotations

import hashlib
import json

from greenloop.protocol import PROTOCOL_VERSION, CommandStep, Pipeline
from greenloop.protocol.ir import CachePolicy, Compose, OnChange, Ttl


def step_key(
    step: CommandStep,
    pipeline: Pipeline,
    executor: str,
    parent_snapshot: str | None,
    files: dict[str, str],
) -> str:
    """The cache key of ``step`` given its parent's snapshot and the workspace file digests."""
    fields = {
        "protocol": PROTOCOL_VERSION,
        "executor": executor,
        "command": step.command,
        "boots_from": ["snapshot", parent_snapshot]
        if step.builds_in
        else ["image", step.image or pipeline.default_image],
        "env": sorted({**pipeline.env, **step.env}.items()),
        "workdir": step.workdir,
        "artifacts": step.artifacts,
        "policy": step.cache.model_dump(mode="json") if step.cache else None,
        "watched": _watched(step.cache, files),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def fresh(policy: CachePolicy, created_at: float, now: float) -> bool:
    """Whether an entry recorded at ``created_at`` under ``policy`` is still valid at ``now``."""
    if isinstance(policy, Ttl):
        return now - created_at < policy.seconds
    if isinstance(policy, Compose):
        return all(fresh(p, created_at, now) for p in policy.policies)
    return True


def _watched(policy: CachePolicy | None, files: dict[str, str]) -> list[tuple[str, str]]:
    """(path, digest) of every workspace file an ``on_change`` policy watches."""
    globs = _globs(policy)
    if not globs:
        return []
    import pathspec  # only on_change needs it

    spec = pathspec.GitIgnoreSpec.from_lines(globs)
    return [(path, digest) for path, digest in sorted(files.items()) if spec.match_file(path)]


def _globs(policy: CachePolicy | None) -> list[str]:
    if isinstance(policy, OnChange):
        return list(policy.globs)
    if isinstance(policy, Compose):
        return [g for p in policy.policies for g in _globs(p)]
    return []
