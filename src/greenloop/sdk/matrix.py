"""``gl.matrix(...)``: the cells of a build matrix, each a set of values a step runs with.

A step given ``matrix=cell`` gets the cell in its key (``test[python=3.11]``) and
label, and each value in its env as ``MATRIX_<AXIS>``; the steps chained after
it inherit the cell. Every cell is cached on its own, since its env differs.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping, Sequence

from greenloop.sdk.steps import PipelineDefinitionError, _caller

_AXIS = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Cell(Mapping[str, str]):
    """One combination of a matrix's values: ``cell["python"] == "3.11"``."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = dict(values)

    def __getitem__(self, axis: str) -> str:
        return self._values[axis]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Cell({self._values!r})"

    @property
    def suffix(self) -> str:
        """The cell as a key suffix: ``[python=3.11,os=linux]``."""
        parts = (f"{axis}={re.sub(r'[^A-Za-z0-9_.-]+', '-', v)}" for axis, v in self.items())
        return f"[{','.join(parts)}]"

    @property
    def env(self) -> dict[str, str]:
        """The cell as env values: ``MATRIX_PYTHON=3.11``."""
        return {f"MATRIX_{axis.upper()}": value for axis, value in self.items()}


def matrix(**axes: Sequence[str | int | float | bool]) -> list[Cell]:
    """Every combination of the axes' values, in the order given.

    ``gl.matrix(python=["3.11", "3.12"], os=["linux"])`` has two cells. An axis
    with no values (or a value list that is a plain string) is an error.
    """
    where = _caller()
    if not axes:
        raise PipelineDefinitionError("gl.matrix() needs at least one axis", where)
    for axis, values in axes.items():
        if not _AXIS.match(axis):
            raise PipelineDefinitionError(f"matrix axis {axis!r} is not a name", where)
        if isinstance(values, str) or not isinstance(values, Sequence):
            raise PipelineDefinitionError(
                f"matrix axis {axis!r} needs a list of values, got {values!r}", where
            )
        if not values:
            raise PipelineDefinitionError(f"matrix axis {axis!r} has no values", where)
    names = list(axes)
    combos = itertools.product(*(axes[name] for name in names))
    return [Cell({n: _text(v) for n, v in zip(names, combo, strict=True)}) for combo in combos]


def _text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
