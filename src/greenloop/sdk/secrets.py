"""``gl.secret("NAME")``: a value a step reads that never enters the IR, a cache key or the store.

A secret is named in the pipeline file and given at run time (from the caller's
environment, ``--secret NAME=@FILE`` or ``--secret-env NAME=VAR``). Only its
name is part of the step's cache key, as in BuildKit and Dagger: changing a
token does not rerun a cached step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Secret:
    """A reference to the secret ``name``; put it in a step's ``env``."""

    name: str

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"secret name {self.name!r} is not a valid variable name")

    def __repr__(self) -> str:
        return f"gl.secret({self.name!r})"


def secret(name: str) -> Secret:
    """The secret ``name``, for a step's env.

    ``gl.sh("twine upload dist/*", env={"TWINE_PASSWORD": gl.secret("PYPI_TOKEN")})``
    """
    return Secret(name)
