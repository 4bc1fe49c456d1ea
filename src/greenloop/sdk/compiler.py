"""``@pipeline``: register a function as a named pipeline, and compile it to IR."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from greenloop.protocol.ir import CommandStep, Pipeline
from greenloop.sdk import steps as _steps
from greenloop.sdk.steps import (
    PipelineDefinitionError,
    SandboxSpec,
    StepSpec,
    _slug,
    as_sandbox,
    short_hash,
)

DEFAULT_WORKDIR = "/workspace"


@dataclass(frozen=True)
class PipelineDef:
    """A registered pipeline function and its settings."""

    name: str
    fn: Callable[[], Any]
    env: dict[str, str]
    default_image: str | None
    executor: str | None
    where: str
    sandbox: SandboxSpec = None


_registry: list[PipelineDef] = []


def pipeline(
    name: str,
    *,
    env: dict[str, str] | None = None,
    default_image: str | None = None,
    executor: str | None = None,
    sandbox: SandboxSpec = None,
) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Register the decorated function as pipeline ``name``.

    The function builds steps with ``sh``/``wait``; its return value is ignored,
    every step it creates belongs to the pipeline. ``sandbox`` is every local
    step's (``"bwrap"``, ``"none"`` or ``gl.sandbox(...)``) unless a step names its own.
    """
    where = _steps._caller()

    def register(fn: Callable[[], Any]) -> Callable[[], Any]:
        if any(p.name == name for p in _registry):
            raise PipelineDefinitionError(f"pipeline {name!r} is defined twice", where)
        _registry.append(
            PipelineDef(name, fn, dict(env or {}), default_image, executor, where, sandbox)
        )
        return fn

    return register


def compile_pipeline(definition: PipelineDef) -> Pipeline:
    """Run a pipeline function and turn the steps it declared into IR."""
    recorder = _steps._Recorder()
    _steps._current.append(recorder)
    try:
        definition.fn()
    finally:
        _steps._current.pop()
    if not recorder.steps:
        raise PipelineDefinitionError(
            f"pipeline {definition.name!r} has no steps", definition.where
        )
    steps = _resolve(recorder.steps, definition)
    try:
        return Pipeline(
            name=definition.name,
            env=definition.env,
            default_image=definition.default_image,
            executor=definition.executor,
            sandbox=as_sandbox(definition.sandbox, definition.where),
            steps=steps,
        )
    except ValidationError as e:
        message = e.errors()[0]["msg"].removeprefix("Value error, ")
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
        try:
            resolved[id(spec)] = CommandStep(
                key=spec.resolved_key,
                label=spec.label or _default_label(spec.command),
                command=spec.command,
                image=None if parent else (spec.image or definition.default_image),
                env={**(parent.env if parent else {}), **spec.env},
                workdir=workdir,
                timeout_seconds=spec.timeout,
                artifacts=spec.artifacts,
                cache=spec.cache,
                builds_in=parent.key if parent else None,
                depends_on=[],
                executor=spec.executor or (parent.executor if parent else None),
                sandbox=as_sandbox(spec.sandbox, spec.where),
            )
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(x) for x in err["loc"])
            raise PipelineDefinitionError(f"invalid {field}: {err['msg']}", spec.where) from None
    # Ordering edges may point at steps declared later (``.after``), so fill them last.
    return [
        resolved[id(spec)].model_copy(update={"depends_on": [t.resolved_key for t in spec.after]})
        for spec in specs
    ]


def _key_for(spec: StepSpec, parent: CommandStep | None, occurrence: int, taken: set[str]) -> str:
    if spec.key is not None:
        if spec.key in taken:
            raise PipelineDefinitionError(f"duplicate step key {spec.key!r}", spec.where)
        return spec.key
    base = _slug(spec.label) if spec.label else ""
    if base and spec.fork:
        base = f"{spec.fork}.{base}"
    if not base:
        base = short_hash(parent.key if parent else "", spec.command, str(occurrence))
    key, n = base, 2
    while key in taken:
        key, n = f"{base}-{n}", n + 1
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
