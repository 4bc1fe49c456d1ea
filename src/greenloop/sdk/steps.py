"""Chains, forks and joins: the objects a pipeline function builds steps with.

A :class:`Chain` is an immutable handle on the last step of a chain. ``.sh()``
adds a step that boots from that step's filesystem snapshot and returns a new
handle, so calling ``.sh()`` twice on the same handle forks. ``wait()`` joins
chains for ordering only: the step after a join boots from its image, since
several filesystems cannot be merged.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypedDict, Unpack

from greenloop.protocol.ir import CacheDir, CachePolicy, Sandbox, SandboxMode, SecretUse
from greenloop.sdk.cache_dirs import CacheDirs, as_cache_dirs
from greenloop.sdk.registry import recorder
from greenloop.sdk.secrets import Secret
from greenloop.sdk.services import Service

Env = Mapping[str, "str | Secret"]
"""A step's env: plain values, or :func:`~greenloop.sdk.secrets.secret` references."""


Services = list["Service | str"] | None
"""The services a step talks to: ``gl.service(...)`` handles, or the names of services
declared in the same pipeline function."""

SandboxSpec = Sandbox | SandboxMode | None
"""A step's sandbox as a pipeline file gives it: ``gl.sandbox(...)``, ``"bwrap"`` or ``"none"``."""


class StepOptions(TypedDict, total=False):
    """What every way of adding a step (``gl.sh``, ``Chain.sh``, ``Join.sh``) takes."""

    label: str | None
    """Shown in output; also the step's key when ``key`` is not given (as a slug)."""
    key: str | None
    """The step's stable name in the cache, history and ``--only``."""
    env: Env | None
    """Variables for the command; values may be ``gl.secret(...)``/``gl.secret_file(...)``."""
    workdir: str | None
    """Where the command runs (default ``/workspace``, or the parent step's)."""
    timeout: timedelta | float | None
    """Seconds (or a ``timedelta``) after which the step is stopped (exit 124)."""
    artifacts: list[str] | None
    """Files or folders (relative to the workdir) kept from the step."""
    cache: CachePolicy | None
    """When a cached result still answers: ``gl.forever()``, ``gl.on_change(...)``..."""
    executor: str | None
    """``"local"``, ``"docker"`` or a plugin's name (default: the pipeline's)."""
    matrix: Mapping[str, str] | None
    """A cell of ``gl.matrix(...)``: in the key, the label and the env."""
    sandbox: SandboxSpec
    """The local executor's sandbox for this step."""
    services: Services
    """Services the step talks to, started for it."""
    cache_dirs: CacheDirs
    """Folders kept across runs (package caches): name -> path or ``gl.cache_dir(...)``."""
    git: bool | None
    """Give the step the project's git metadata (a read-only ``.git``); its key then
    holds the commit id."""
    resources: Mapping[str, float] | None
    """What the step needs of the machine that runs it on a cluster (``--executor ray``):
    ``{"cpu": 2, "memory": 4 << 30, "gpu": 1}`` or a custom resource's name. Never part
    of the cache key."""


class FreshStepOptions(StepOptions, total=False):
    """A step that starts a chain takes an image too."""

    image: str | None
    """The image it boots from (default: the pipeline's ``default_image``)."""


class PipelineDefinitionError(Exception):
    """A pipeline file built something invalid; ``where`` is ``file:line`` of the cause."""

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.where = where


@dataclass
class StepSpec:
    """One step as the pipeline file declared it (resolved into IR by the compiler)."""

    command: str
    label: str | None
    key: str | None
    image: str | None
    env: dict[str, str]
    workdir: str | None
    timeout: float | None
    artifacts: list[str]
    cache: CachePolicy | None
    executor: str | None
    secrets: list[SecretUse]
    matrix: dict[str, str] | None
    """The matrix cell the step runs in (a chained step inherits its parent's)."""
    after_failure: bool
    """Run once the steps it waits for have finished, whether they passed or not."""
    sandbox: SandboxSpec
    services: list[Service | str]
    cache_dirs: list[CacheDir]
    git: bool | None
    """Whether the step sees the project's git metadata (``None``: as its pipeline says)."""
    resources: dict[str, float]
    """What the step needs of the machine that runs it (cluster executors)."""
    target: tuple[str, str] | None
    """The target that declared it: (name, key suffix of its arguments)."""
    parent: StepSpec | None
    after: list[StepSpec]
    fork: str | None
    where: str
    after_where: str | None = field(default=None, init=False)
    resolved_key: str = field(default="", init=False)


def _caller() -> str:
    """``file:line`` of the first frame outside the SDK: where the user wrote the step."""
    frame = sys._getframe(1)
    sdk_dir = __file__.rsplit("/", 1)[0]
    while frame is not None and frame.f_code.co_filename.startswith(sdk_dir):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _add_step(
    command: str,
    parent: StepSpec | None,
    after: list[StepSpec],
    fork: str | None,
    *,
    after_failure: bool = False,
    **options: Unpack[FreshStepOptions],
) -> Chain:
    where = _caller()
    current = recorder()
    if current is None:
        raise PipelineDefinitionError(
            "steps can only be created inside a @greenloop.pipeline function", where
        )
    allowed = StepOptions.__optional_keys__ if parent else FreshStepOptions.__optional_keys__
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise PipelineDefinitionError(
            f"a step takes no {unknown[0]!r} (it takes {', '.join(sorted(allowed))})"
            + (
                ": a chained step boots from its parent, not an image" if "image" in unknown else ""
            ),
            where,
        )
    timeout = options.get("timeout")
    services = options.get("services")
    matrix = options.get("matrix")
    if not isinstance(command, str) or not command.strip():
        raise PipelineDefinitionError("a step needs a non-empty shell command string", where)
    if isinstance(timeout, timedelta):
        timeout = timeout.total_seconds()
    for used in services or []:
        if not isinstance(used, Service | str):
            raise PipelineDefinitionError(
                f"services= takes gl.service(...) handles or names, got {used!r}", where
            )
    try:
        caches = as_cache_dirs(options.get("cache_dirs"))
    except ValueError as e:
        raise PipelineDefinitionError(str(e), where) from None
    given = dict(options.get("env") or {})
    plain = {k: v for k, v in given.items() if not isinstance(v, Secret)}
    secrets = [
        SecretUse(name=v.name, env=k, as_file=v.as_file)
        for k, v in given.items()
        if isinstance(v, Secret)
    ]
    spec = StepSpec(
        command=command,
        label=options.get("label"),
        key=options.get("key"),
        image=options.get("image"),
        env=plain,
        workdir=options.get("workdir"),
        timeout=timeout,
        artifacts=list(options.get("artifacts") or []),
        cache=options.get("cache"),
        executor=options.get("executor"),
        secrets=secrets,
        matrix=dict(matrix) if matrix is not None else (parent.matrix if parent else None),
        after_failure=after_failure,
        sandbox=options.get("sandbox"),
        services=list(services or []),
        cache_dirs=caches,
        git=options.get("git"),
        resources=dict(options.get("resources") or {}),
        target=current.scopes[-1] if current.scopes else None,
        parent=parent,
        after=after,
        fork=fork,
        where=where,
    )
    current.steps.append(spec)
    return Chain(spec)


class Chain:
    """Handle on the last step of a chain; ``.sh()`` continues it in that step's filesystem."""

    def __init__(self, tail: StepSpec, fork: str | None = None) -> None:
        self._tail = tail
        self._fork = fork

    def sh(self, command: str, **options: Unpack[StepOptions]) -> Chain:
        """Run ``command`` after this step, booting from its filesystem snapshot.

        ``options`` are :class:`StepOptions` (``gl.sh``'s, without ``image``).
        """
        return _add_step(command, self._tail, [], self._fork, **options)

    def fork(self, label: str) -> Chain:
        """A named branch off this step; steps added to it get ``label`` as a key prefix."""
        return Chain(self._tail, fork=_slug(label) or None)

    def after(self, *others: Chain | Join) -> Chain:
        """Also order this chain's last step after ``others`` (no filesystem is inherited)."""
        for other in others:
            self._tail.after.extend(_tails(other))
        self._tail.after_where = _caller()
        return self


class Join:
    """Ordering point after several chains; ``.sh()`` starts a fresh chain after all of them."""

    def __init__(self, tails: list[StepSpec], continue_on_failure: bool = False) -> None:
        self._tails = tails
        self._continue_on_failure = continue_on_failure

    def sh(self, command: str, **options: Unpack[FreshStepOptions]) -> Chain:
        """Run ``command`` (from its image) once every joined chain has finished.

        ``options`` are :class:`FreshStepOptions`, as ``gl.sh`` takes.
        """
        after_failure = self._continue_on_failure
        return _add_step(
            command, None, list(self._tails), None, after_failure=after_failure, **options
        )


def sh(command: str, **options: Unpack[FreshStepOptions]) -> Chain:
    """Start a chain with a step that runs ``command`` in ``image`` (or the pipeline default).

    ``options`` are :class:`FreshStepOptions`: ``label``, ``key``, ``image``, ``env``,
    ``workdir``, ``timeout``, ``artifacts``, ``cache``, ``executor``, ``matrix``,
    ``sandbox``, ``services``, ``cache_dirs``, ``git``, ``resources``.
    """
    return _add_step(command, None, [], None, **options)


def wait(*chains: Chain | Join, continue_on_failure: bool = False) -> Join:
    """Join ``chains``: whatever follows runs after all of them have finished.

    With ``continue_on_failure=True`` it runs even when some of them failed (a
    report step); the run still fails.
    """
    tails: list[StepSpec] = []
    for chain in chains:
        tails.extend(_tails(chain))
    return Join(tails, continue_on_failure)


def _tails(item: Chain | Join) -> list[StepSpec]:
    if isinstance(item, Chain):
        return [item._tail]
    if isinstance(item, Join):
        return list(item._tails)
    raise PipelineDefinitionError(f"expected a chain or wait(...), got {type(item).__name__}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", text.strip()).strip("-.").lower()[:60]


def as_sandbox(spec: object, where: str) -> Sandbox | None:
    """The IR form of a sandbox a pipeline file gave at ``where`` (a bare mode is that
    mode's defaults); :class:`PipelineDefinitionError` for anything else."""
    if spec is None or isinstance(spec, Sandbox):
        return spec
    if spec in ("bwrap", "none"):
        return Sandbox(mode=spec)
    raise PipelineDefinitionError(
        f"invalid sandbox {spec!r}: expected 'bwrap', 'none' or gl.sandbox(...)", where
    )


def short_hash(*parts: str) -> str:
    """A short, stable hash of ``parts`` for keys nobody named."""
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big") + part.encode())
    return h.hexdigest()[:12]
