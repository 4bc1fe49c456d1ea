"""Names a package exports but imports only when first asked for (imports nothing of greenloop)."""

from __future__ import annotations

import gc
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def lazy_names(package: str, where: dict[str, str], into: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``where`` maps each lazy name to the
    submodule defining it; a name once loaded is kept in ``into`` (the package's globals),
    so it is looked up only once."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        into[name] = value
        return value

    return __getattr__


@contextmanager
def imports_without_collection() -> Iterator[None]:
    """Import with the cyclic garbage collector off, then freeze what is there.

    Importing greenloop's command modules makes hundreds of thousands of objects that
    live as long as the process, and almost no garbage: the collector, run some fifty
    times meanwhile and through them all again later, has nothing to free in them.
    Frozen, they stay out of every later collection's way.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if collecting:
            gc.enable()
