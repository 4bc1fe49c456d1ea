"""``@gl.target``: a reusable building block, a function taking parameters and returning steps.

::

    @gl.target
    def deps() -> gl.Chain:
        return gl.python.install()

    @gl.target
    def tests(deps: gl.Chain, python: str = "3.12") -> gl.Chain:
        return deps.sh(f"uvx --python {python} pytest")

    @gl.pipeline("ci")
    def ci() -> None:
        tests(python="3.11")
        tests(python="3.12")

A parameter the caller does not give and that has no default is resolved like
a pytest fixture: by the target of that name (the pipeline file's own first,
then the target's module's), whose steps it gets. Within one pipeline a target
called again with the same arguments gives the same steps, so two targets
asking for ``deps`` share one install. A target's steps are keyed by the
target, not by where it was called: ``tests[python=3.11]``, or
``tests.<label>[python=3.11]`` for a labelled one; a target can live in
another file next to the pipeline file or in an installed package.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Hashable
from typing import Any, Generic, ParamSpec, TypeVar

from greenloop.sdk.matrix import Cell, _text
from greenloop.sdk.registry import recorder, registry
from greenloop.sdk.steps import PipelineDefinitionError, _caller

P = ParamSpec("P")
R = TypeVar("R")

_PLAIN = (str, int, float, bool)


class Target(Generic[P, R]):
    """A function decorated with ``@gl.target``; call it inside a pipeline function."""

    def __init__(self, fn: Callable[P, R]) -> None:
        """Wrap ``fn``."""
        self.fn = fn
        self.name = fn.__name__
        self.where = _caller()
        self._signature = inspect.signature(fn)
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<gl.target {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """The target's steps for these arguments (declared on first use in a pipeline)."""
        where = _caller()
        current = recorder()
        if current is None:
            raise PipelineDefinitionError(
                f"target {self.name!r} can only be called inside a @gl.pipeline function "
                "or another target",
                where,
            )
        try:
            bound = self._signature.bind_partial(*args, **kwargs)
        except TypeError as e:
            raise PipelineDefinitionError(f"target {self.name!r}: {e}", where) from None
        given = dict(bound.arguments)
        shown = {k: _text(v) for k, v in given.items() if isinstance(v, _PLAIN)}
        # In scope while its parameters resolve too: a target asking for itself
        # through others finds its own name on the stack.
        current.scopes.append((self.name, Cell(shown).suffix if shown else ""))
        try:
            for name, parameter in self._signature.parameters.items():
                if name not in given and parameter.default is inspect.Parameter.empty:
                    given[name] = self._resolve(name, where)
            key = (id(self), tuple((k, _hashable(v)) for k, v in sorted(given.items())))
            result: R = current.once(key, lambda: self.fn(**given))  # type: ignore[call-arg]
            return result
        finally:
            current.scopes.pop()

    def _resolve(self, name: str, where: str) -> Any:
        """The steps of the target called ``name``, for a parameter nobody gave."""
        current = recorder()
        assert current is not None
        asking = [scope for scope, _ in current.scopes]
        if name in asking:
            cycle = " -> ".join([*asking[asking.index(name) :], name])
            raise PipelineDefinitionError(f"targets ask for each other in a cycle: {cycle}", where)
        found = registry().namespace.get(name)
        if not isinstance(found, Target):
            found = self.fn.__globals__.get(name)
        if not isinstance(found, Target):
            raise PipelineDefinitionError(
                f"target {self.name!r} asks for {name!r}, but no target is named {name!r} "
                "(give it, default it, or define @gl.target def " + name + "(...))",
                where,
            )
        return found()


def target(fn: Callable[P, R]) -> Target[P, R]:
    """Make ``fn`` a target: a reusable function of steps (see the module doc)."""
    return Target(fn)


def _hashable(value: object) -> Hashable:
    """``value`` as part of a memo key: itself when hashable, else its identity."""
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return value
