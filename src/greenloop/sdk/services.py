"""``gl.service(...)``: a server (a database, a web server) the steps that name it talk to.

The engine starts a service before the first step that names it runs, waits
until its ``ready`` command exits 0, gives those steps ``<NAME>_HOST`` and
``<NAME>_PORT``, and stops it after the last of them (or when the run stops).
Under the local executor ``run`` is a host command; under docker the service is
a container of ``image`` on the run's own network, reachable by its name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta

from greenloop.protocol.ir import SecretUse
from greenloop.protocol.ir import Service as ServiceSpec
from greenloop.sdk.registry import recorder
from greenloop.sdk.secrets import Secret

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class Service:
    """Handle on a declared service; pass it to a step's ``services=[...]``."""

    def __init__(self, spec: ServiceSpec, where: str) -> None:
        self.spec = spec
        self.where = where
        """``file:line`` of the ``gl.service(...)`` call."""

    @property
    def name(self) -> str:
        """The service's name."""
        return self.spec.name

    def __repr__(self) -> str:
        return f"gl.service({self.name!r})"


def service(
    name: str,
    *,
    ready: str | None = None,
    run: str | None = None,
    image: str | None = None,
    ports: list[int] | None = None,
    ready_timeout: timedelta | float = 60,
    env: Mapping[str, str | Secret] | None = None,
) -> Service:
    """Declare the service ``name`` for steps' ``services=[...]``.

    ``run`` is the command (local: on the host, in its own process group; docker:
    the container's command), ``image`` the docker executor's container image,
    ``ports`` its container ports (the first is ``<NAME>_PORT``), ``ready`` a
    command that exits 0 once it serves (tried until ``ready_timeout`` seconds).
    ``run`` and ``ready`` may use ``{port}``, ``{host}`` and ``{dir}`` (a private
    scratch folder)::

        db = gl.service("db", run="postgres -D {dir}/data -p {port} -k {dir}",
                        ready="pg_isready -h {host} -p {port}")
        gl.sh("pytest", services=[db])
    """
    from greenloop.sdk import steps

    where = steps._caller()
    if not isinstance(name, str) or not _NAME.match(name):
        raise steps.PipelineDefinitionError(
            f"service name {name!r} must be lower-case letters, digits, _ and - "
            "(starting with a letter)",
            where,
        )
    if not isinstance(ready, str) or not ready.strip():
        raise steps.PipelineDefinitionError(
            f"service {name!r} needs ready=...: a command that exits 0 once it serves", where
        )
    if run is None and image is None:
        raise steps.PipelineDefinitionError(
            f"service {name!r} needs run=... (local executor) or image=... (docker)", where
        )
    if isinstance(ready_timeout, timedelta):
        ready_timeout = ready_timeout.total_seconds()
    given = dict(env or {})
    for variable, value in given.items():
        if isinstance(value, Secret) and value.as_file:
            raise steps.PipelineDefinitionError(
                f"service {name!r}: env[{variable!r}] is a secret file, which only steps "
                f"get; use gl.secret({value.name!r})",
                where,
            )
    try:
        spec = ServiceSpec(
            name=name,
            run=run,
            image=image,
            ports=list(ports or []),
            ready=ready,
            ready_timeout_seconds=ready_timeout,
            env={k: v for k, v in given.items() if not isinstance(v, Secret)},
            secrets=[
                SecretUse(name=v.name, env=k) for k, v in given.items() if isinstance(v, Secret)
            ],
        )
    except ValueError as e:  # pydantic's ValidationError is one
        raise steps.PipelineDefinitionError(f"service {name!r}: {_first_error(e)}", where) from None
    current = recorder()
    if current is not None:
        current.services.append((spec, where))
    return Service(spec, where)


def _first_error(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if errors is None:
        return str(error)
    first = errors()[0]
    field = ".".join(str(x) for x in first["loc"])
    return f"invalid {field}: {first['msg']}" if field else str(first["msg"])
