"""What the SDK collects while a pipeline file loads; this module alone holds it.

As nox's ``registry.py`` owns its sessions: a load (:func:`loading`) gets a
fresh :class:`Registry`, which the file's ``@gl.pipeline`` decorators fill, and
the previous one is back when the load ends. Compiling a pipeline runs its
function inside :func:`recording`, whose :class:`Recorder` collects the steps
and services the function declares and the targets it resolved, so a target
asked for twice gives the same steps.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from greenloop.protocol.ir import Service as ServiceSpec
    from greenloop.sdk.steps import SandboxSpec, StepSpec


@dataclass(frozen=True)
class PipelineDef:
    """A registered pipeline function and its settings."""

    name: str
    fn: Callable[[], Any]
    env: dict[str, str]
    default_image: str | None
    executor: str | None
    where: str
    timeout: float | None = None
    on: tuple[str, ...] = ()
    sandbox: SandboxSpec = None
    git: bool = False


@dataclass
class Registry:
    """The pipelines one pipeline file (and what it imports) defined, and its names."""

    pipelines: list[PipelineDef] = field(default_factory=list)
    namespace: dict[str, Any] = field(default_factory=dict)
    """The pipeline file's globals: a target asking for a name gets the target the file
    calls by it first (defined or imported there), as a conftest overrides a fixture."""


@dataclass
class Recorder:
    """What one pipeline function declares while it runs."""

    steps: list[StepSpec] = field(default_factory=list)
    services: list[tuple[ServiceSpec, str]] = field(default_factory=list)
    """Services declared while the function ran, with the ``file:line`` of each."""
    scopes: list[tuple[str, str]] = field(default_factory=list)
    """The targets being expanded, innermost last: (name, key suffix of its arguments)."""
    _made: dict[Hashable, Any] = field(default_factory=dict)

    def once(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """``make()``'s result, made once for this pipeline per ``key``."""
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]


_registry = Registry()
_recorders: list[Recorder] = []


def registry() -> Registry:
    """The registry decorators add to now."""
    return _registry


@contextmanager
def loading() -> Iterator[Registry]:
    """A fresh registry for one pipeline file's definitions; the previous one after."""
    global _registry
    saved, _registry = _registry, Registry()
    try:
        yield _registry
    finally:
        _registry = saved


@contextmanager
def recording() -> Iterator[Recorder]:
    """A fresh recorder for the steps one pipeline function declares."""
    recorder = Recorder()
    _recorders.append(recorder)
    try:
        yield recorder
    finally:
        _recorders.pop()


def recorder() -> Recorder | None:
    """The recorder of the pipeline function running now, if one is."""
    return _recorders[-1] if _recorders else None
