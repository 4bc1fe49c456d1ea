"""Cache keys and policy freshness: how the host decides a step's cache outcome.

A key covers everything that can change a step's output: the command, the
image it boots from (or its parent's snapshot), env, workdir, declared
artifacts, the policy and its inputs, the executor (named with the id of the
image a root step boots from: see ``Placement.keyed_as``) and the protocol
version. A parent's snapshot ref changes whenever the parent really re-ran, so a
rerun upstream invalidates everything downstream.

What a key cannot cover because it differs between machines sharing a cache,
the host's tools a local step runs, is checked apart: an entry answers only
while they are as when it was made (:func:`answers`).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from greenloop.engine.git import GitMetadata
from greenloop.protocol import PROTOCOL_VERSION, CommandStep, Pipeline, SetupError
from greenloop.protocol.ir import CachePolicy, Compose, OnChange, Ttl

if TYPE_CHECKING:
    import pathspec

    from greenloop.store import CacheEntry


def step_key(
    step: CommandStep,
    pipeline: Pipeline,
    executor: str,
    parent_snapshot: str | None,
    files: dict[str, str],
    git: GitMetadata | None = None,
) -> str:
    """The cache key of ``step`` given its parent's snapshot and the workspace file digests."""
    return digest(key_parts(step, pipeline, executor, parent_snapshot, files, git))


def key_parts(
    step: CommandStep,
    pipeline: Pipeline,
    executor: str,
    parent_snapshot: str | None,
    files: dict[str, str],
    git: GitMetadata | None = None,
) -> dict[str, Any]:
    """What ``step``'s cache key is made of, as JSON-ready data (``explain`` compares them).

    ``git`` is the repository's HEAD, read when a step asks for git metadata."""
    parts = {
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
    if step.secrets:
        # Names only, never values (BuildKit's and Dagger's rule): a new token
        # does not rerun a cached step.
        parts["secrets"] = sorted(
            (use.env, use.name, "file") if use.as_file else (use.env, use.name)
            for use in step.secrets
        )
    if step.git:
        if git is None:
            raise SetupError(f"step {step.key!r} asks for git=True but no git metadata was read")
        parts["git"] = git.key_part()
    if step.cache_dirs:
        # What is kept where, never what is in it: a warm cache must not change a key.
        parts["cache_dirs"] = [c.model_dump(mode="json") for c in step.cache_dirs]
    if step.services:
        # The definitions, not the ports picked or the secret values they get: a
        # changed server reruns the step, a new run of the same one does not.
        parts["services"] = [
            pipeline.service(name).model_dump(mode="json") for name in sorted(step.services)
        ]
    # Tuples become lists, as they will when read back from the index.
    loaded: dict[str, Any] = json.loads(json.dumps(parts))
    return loaded


def digest(parts: dict[str, Any]) -> str:
    """The cache key made of ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def fresh(policy: CachePolicy, created_at: float, now: float) -> bool:
    """Whether an entry recorded at ``created_at`` under ``policy`` is still valid at ``now``."""
    if isinstance(policy, Ttl):
        return now - created_at < policy.seconds
    if isinstance(policy, Compose):
        return all(fresh(p, created_at, now) for p in policy.policies)
    return True


def answers(entry: CacheEntry, policy: CachePolicy, host: str | None, now: float) -> bool:
    """Whether ``entry`` may answer a step with ``policy`` at ``now``: fresh under the
    policy and, for a step that runs the host's tools, made while they were as
    ``host`` says. An entry that says nothing of them (from a remote cache, an imported
    one, an older greenloop) is taken on its word: its first answer records them."""
    fresh_enough = fresh(policy, entry.created_at, now)
    return fresh_enough and (host is None or entry.host is None or entry.host == host)


def check_watched(pipeline: Pipeline, files: dict[str, str]) -> None:
    """Raise ``SetupError`` for an ``on_change`` glob (not marked optional) that matches no file."""
    for step in pipeline.steps:
        for policy in _on_change(step.cache):
            if policy.optional:
                continue
            for glob in policy.globs:
                if glob.startswith("!"):
                    continue
                spec = _spec([glob])
                if not any(spec.match_file(path) for path in files):
                    raise SetupError(
                        f"step {step.key!r}: on_change({glob!r}) matches no file in the "
                        "workspace, so the step would stay cached whatever changes; fix the "
                        "pattern or mark it gl.on_change(..., optional=True)"
                    )


def expand_braces(glob: str) -> list[str]:
    """``"*.{ts,js}"`` -> ``["*.ts", "*.js"]``, nested sets too; a glob without a set as is."""
    depth, start = 0, -1
    for i, char in enumerate(glob):
        if char == "{":
            if depth == 0:
                start = i
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                options = _split_top_level(glob[start + 1 : i])
                if len(options) < 2:
                    continue  # "{x}" is no set, as in bash
                head, tail = glob[:start], glob[i + 1 :]
                return [e for option in options for e in expand_braces(head + option + tail)]
    return [glob]


def _split_top_level(body: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in body:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += (char == "{") - (char == "}")
        current += char
    return [*parts, current]


def _spec(globs: list[str]) -> pathspec.GitIgnoreSpec:
    import pathspec  # only a step whose cache watches files

    return pathspec.GitIgnoreSpec.from_lines([e for g in globs for e in expand_braces(g)])


def _watched(policy: CachePolicy | None, files: dict[str, str]) -> list[tuple[str, str]]:
    """(path, digest) of every workspace file an ``on_change`` policy watches."""
    globs = [g for p in _on_change(policy) for g in p.globs]
    if not globs:
        return []
    spec = _spec(globs)
    return [(path, digest) for path, digest in sorted(files.items()) if spec.match_file(path)]


def _on_change(policy: CachePolicy | None) -> list[OnChange]:
    if isinstance(policy, OnChange):
        return [policy]
    if isinstance(policy, Compose):
        return [o for p in policy.policies for o in _on_change(p)]
    return []
