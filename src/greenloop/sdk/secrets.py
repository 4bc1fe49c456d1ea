"""``gl.secret("NAME")``: a value a step reads that never enters the IR, a cache key or the store.

A secret is named in the pipeline file and given at run time (from the caller's
environment, ``--secret NAME=@FILE`` or ``--secret-env NAME=VAR``). Only its
name is part of the step's cache key, as in BuildKit and Dagger: changing a
token does not rerun a cached step.

``gl.secret_file("NAME")`` gives the step a file holding the value instead, for
tools that read credentials from a file (``GOOGLE_APPLICATION_CREDENTIALS``,
``NPM_CONFIG_USERCONFIG``, ``PIP_CONFIG_FILE``): the variable holds the file's
path, which is outside the step's tree, so the value never enters a snapshot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Secret:
    """A reference to the secret ``name``; put it in a step's ``env``."""

    name: str
    as_file: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"secret name {self.name!r} is not a valid variable name")

    def __repr__(self) -> str:
        return f"gl.{'secret_file' if self.as_file else 'secret'}({self.name!r})"


def secret(name: str) -> Secret:
    """The secret ``name``, for a step's env.

    ``gl.sh("twine upload dist/*", env={"TWINE_PASSWORD": gl.secret("PYPI_TOKEN")})``
    """
    return Secret(name)


def secret_file(name: str) -> Secret:
    """The secret ``name`` as a file, for a step's env: the variable holds its path.

    ``gl.sh("gcloud auth ...", env={"GOOGLE_APPLICATION_CREDENTIALS": gl.secret_file("GCP_KEY")})``

    The file is readable by the step alone, lives outside its tree (``/run/secrets/``
    in the sandbox or container, a private folder without one) and is gone when the
    step ends.
    """
    return Secret(name, as_file=True)
