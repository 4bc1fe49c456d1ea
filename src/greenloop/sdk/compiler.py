"""``@pipeline``: register a function as a named pipeline, and compile it to IR."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from greenloop.protocol.ir import CommandStep, Pipeline, SecretUse, Service
from greenloop.sdk import steps as _steps
from greenloop.sdk.matrix import Cell
from greenloop.sdk.registry import PipelineDef, Recorder, recording, registry
from greenloop.sdk.steps import (
    PipelineDefinitionError,
    SandboxSpec,
    StepSpec,
    _slug,
    as_sandbox,
    short_hash,
)

DEFAULT_WORKDIR = "/workspace"


def pipeline(
    name: str,
    *,
    env: dict[str, str] | None = None,
    default_image: str | None = None,
    executor: str | None = None,
    timeout: timedelta | float | None = None,
    on: str | Iterable[str] = (),
    sandbox: SandboxSpec = None,
    git: bool = False,
) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Register the decorated function as pipeline ``name``.

    The function builds steps with ``sh``/``wait``; its return value is ignored,
    every step it creates belongs to the pipeline. ``timeout`` (seconds or a
    ``timedelta``) limits the whole run: when it runs out the running steps are
    stopped and the run fails with exit code 124.
    ``on`` names the events that trigger it (``["push", "pull_request"]``):
    ``greenloop run --event push`` runs every pipeline triggered by ``push``.
    ``sandbox`` is every local step's (``"bwrap"``, ``"none"`` or ``gl.sandbox(...)``)
    unless a step names its own. ``git=True`` gives every step the project's git
    metadata (as a step's ``git=True`` does) unless a step says ``git=False``.
    """
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    where = _steps._caller()
    events = (on,) if isinstance(on, str) else tuple(on) if isinstance(on, Iterable) else (on,)
    if not all(isinstance(e, str) for e in events):
        raise PipelineDefinitionError(f"pipeline {name!r}: on= takes event names", where)

    def register(fn: Callable[[], Any]) -> Callable[[], Any]:
        pipelines = registry().pipelines
        if any(p.name == name for p in pipelines):
            raise PipelineDefinitionError(f"pipeline {name!r} is defined twice", where)
        pipelines.append(
            PipelineDef(
                name,
                fn,
                dict(env or {}),
                default_image,
                executor,
                where,
                seconds,
                events,
                sandbox,
                git,
            )
        )
        return fn

    return register


def compile_pipeline(definition: PipelineDef) -> Pipeline:
    """Run a pipeline function and turn the steps it declared into IR."""
    with recording() as recorder:
        definition.fn()
    if not recorder.steps:
        raise PipelineDefinitionError(
            f"pipeline {definition.name!r} has no steps", definition.where
        )
    steps = _resolve(recorder.steps, definition)
    services = _services(recorder)
    try:
        return Pipeline(
            name=definition.name,
            env=definition.env,
            default_image=definition.default_image,
            executor=definition.executor,
            timeout_seconds=definition.timeout,
            on=list(definition.on),
            sandbox=as_sandbox(definition.sandbox, definition.where),
            services=services,
            steps=steps,
        )
    except ValidationError as e:
        error = e.errors()[0]
        if error["loc"][:1] == ("on",):
            bad = definition.on[int(error["loc"][1])] if len(error["loc"]) > 1 else definition.on
            raise PipelineDefinitionError(
                f"pipeline {definition.name!r}: event {bad!r} is not an event name "
                "(lower-case letters, digits, _ and -)",
                definition.where,
            ) from None
        message = error["msg"].removeprefix("Value error, ")
        raise PipelineDefinitionError(message, _where_of(message, recorder.steps)) from None


def _resolve(specs: list[StepSpec], definition: PipelineDef) -> list[CommandStep]:
    taken: set[str] = set()
    resolved: dict[int, CommandStep] = {}
    # Unnamed steps are keyed by parent and command; the occurrence number only
    # separates identical siblings, so edits elsewhere never shift a key.
    seen: Counter[tuple[str, str]] = Counter()
    for spec in specs:
        parent = resolved[id(spec.parent)] if spec.parent is not None else None
        occurrence = (parent.key if parent else "", spec.command)
        seen[occurrence] += 1
        spec.resolved_key = _key_for(spec, parent, seen[occurrence], taken)
        taken.add(spec.resolved_key)
        workdir = spec.workdir or (parent.workdir if parent else DEFAULT_WORKDIR)
        if not workdir.startswith("/"):
            workdir = f"{DEFAULT_WORKDIR}/{workdir}"
        cell = Cell(spec.matrix) if spec.matrix is not None else None
        label = spec.label or _default_label(spec.command)
        try:
            resolved[id(spec)] = CommandStep(
                key=spec.resolved_key,
                label=f"{label} {cell.suffix}" if cell else label,
                command=spec.command,
                image=None if parent else (spec.image or definition.default_image),
                env={**(parent.env if parent else {}), **(cell.env if cell else {}), **spec.env},
                workdir=workdir,
                timeout_seconds=spec.timeout,
                artifacts=spec.artifacts,
                cache=spec.cache,
                builds_in=parent.key if parent else None,
                depends_on=[],
                executor=spec.executor or (parent.executor if parent else None),
                secrets=_inherited(parent.secrets if parent else [], spec.secrets),
                runs_after_failure=spec.after_failure,
                sandbox=as_sandbox(spec.sandbox, spec.where),
                services=[u if isinstance(u, str) else u.name for u in spec.services],
                cache_dirs=spec.cache_dirs,
                git=_git(spec, parent, definition),
                resources=spec.resources,
            )
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(x) for x in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            raise PipelineDefinitionError(f"invalid {field}: {message}", spec.where) from None
    # Ordering edges may point at steps declared later (``.after``), so fill them last.
    return [
        resolved[id(spec)].model_copy(update={"depends_on": [t.resolved_key for t in spec.after]})
        for spec in specs
    ]


def _services(recorder: Recorder) -> list[Service]:
    """Every service the pipeline's steps can name: those declared while its function
    ran, then those its steps were handed (declared elsewhere); one definition a name."""
    found: dict[str, tuple[Service, str]] = {}
    handed = [
        (u.spec, u.where) for s in recorder.steps for u in s.services if not isinstance(u, str)
    ]
    for service, where in [*recorder.services, *handed]:
        if service.name in found and found[service.name][0] != service:
            raise PipelineDefinitionError(
                f"service {service.name!r} is declared twice, differently "
                f"(first at {found[service.name][1]})",
                where,
            )
        found.setdefault(service.name, (service, where))
    for spec in recorder.steps:
        for name in spec.services:
            if isinstance(name, str) and name not in found:
                raise PipelineDefinitionError(f"step names undeclared service {name!r}", spec.where)
    return [service for service, _ in found.values()]


def _key_for(spec: StepSpec, parent: CommandStep | None, occurrence: int, taken: set[str]) -> str:
    suffix = Cell(spec.matrix).suffix if spec.matrix is not None else ""
    if spec.target is not None:
        suffix = spec.target[1] + suffix  # one target called with other arguments
    if spec.key is not None:
        if spec.key + suffix in taken:
            raise PipelineDefinitionError(f"duplicate step key {spec.key + suffix!r}", spec.where)
        return spec.key + suffix
    base = _slug(spec.label) if spec.label else ""
    if base and spec.fork:
        base = f"{spec.fork}.{base}"
    if spec.target is not None:
        # A target's steps are named by the target, wherever it is called.
        base = f"{spec.target[0]}.{base}" if base else spec.target[0]
    if not base:
        base = short_hash(parent.key if parent else "", spec.command, str(occurrence))
    key, n = base + suffix, 2
    while key in taken:
        key, n = f"{base}-{n}{suffix}", n + 1
    return key


def _default_label(command: str) -> str:
    first = command.strip().splitlines()[0]
    return first if len(first) <= 48 else first[:47] + "…"


def _where_of(message: str, specs: list[StepSpec]) -> str | None:
    """Point at the step a graph error message names (the last one named wins)."""
    named = [s for s in specs if f"'{s.resolved_key}'" in message]
    # An ordering edge added with ``.after()`` is what closes a cycle: blame that call.
    closing = [s.after_where for s in named if s.after_where]
    if closing:
        return closing[-1]
    return named[-1].where if named else None


def _inherited(parents: list[SecretUse], own: list[SecretUse]) -> list[SecretUse]:
    """A chained step reads its parent's secrets too, as it gets its env; its own win."""
    mine = {use.env for use in own}
    return [*(use for use in parents if use.env not in mine), *own]


def _git(spec: StepSpec, parent: CommandStep | None, definition: PipelineDef) -> bool:
    """A step's own ``git=``, else its parent's (a chain stays in one checkout), else the
    pipeline's."""
    if spec.git is not None:
        return spec.git
    return parent.git if parent else definition.git
