"""The docker executor's services: containers on a network of their run, reachable by name.

Each run that uses services gets a bridge network (``greenloop-<run>``); a
service is a container of its image on it with the service's name as its
alias, and the containers of steps naming services join the same network with
the name also in their ``/etc/hosts`` (Podman without its DNS plugin resolves
no alias). The
steps see ``<NAME>_HOST`` = the name and ``<NAME>_PORT`` = its first container
port; ``ready`` runs inside the service's container with ``{host}`` = 127.0.0.1.
The network goes once the run's last service has stopped.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
from typing import Any
from uuid import UUID

from greenloop.protocol import SetupError
from greenloop.protocol.ir import Service

_CHECK_HOST = "127.0.0.1"


def network_name(run_id: UUID) -> str:
    """The network of run ``run_id``'s services (and of its steps that use them)."""
    return f"greenloop-{run_id.hex[:12]}"


class Networks:
    """Per-run networks, created with a run's first service and removed after its last."""

    def __init__(self) -> None:
        self._users: dict[str, int] = {}
        self._hosts: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def hosts(self, run_id: UUID) -> dict[str, str]:
        """The address of each running service of run ``run_id``, by name."""
        with self._lock:
            return dict(self._hosts.get(network_name(run_id), {}))

    def add_host(self, network: str, name: str, address: str) -> None:
        """Service ``name`` answers at ``address`` on ``network``."""
        with self._lock:
            self._hosts.setdefault(network, {})[name] = address

    def join(self, client: Any, run_id: UUID, labels: dict[str, str]) -> str:
        """The run's network, created if this is its first service."""
        name = network_name(run_id)
        with self._lock:
            if not self._users.get(name):
                client.networks.create(name, driver="bridge", labels=labels)
            self._users[name] = self._users.get(name, 0) + 1
        return name

    def leave(self, client: Any, name: str, service: str | None = None) -> None:
        """``service`` of the network stopped; remove the network after the last."""
        with self._lock:
            self._hosts.get(name, {}).pop(service or "", None)
            self._users[name] -= 1
            if self._users[name]:
                return
            del self._users[name]
        with contextlib.suppress(Exception):  # the leftover sweep is the backstop
            client.networks.get(name).remove()


class ContainerService:
    """One service as a container of its image on its run's network (``image``: the id
    its steps' keys name, when they name one, else the service's tag)."""

    def __init__(
        self,
        client: Any,
        networks: Networks,
        service: Service,
        run_id: UUID,
        env: dict[str, str],
        labels: dict[str, str],
        image: str | None = None,
    ) -> None:
        import docker.errors

        if service.image is None:
            raise SetupError(
                f"service {service.name!r} has no image=... for the docker executor "
                "(run=... alone is a host command, for the local executor)"
            )
        self.host = service.name
        self.port: int | None = service.ports[0] if service.ports else None
        self._service = service
        self._client = client
        self._networks = networks
        self._network = networks.join(client, run_id, labels)
        try:
            # create + start, not run: run pulls a missing image, and nothing is pulled.
            self._container = client.containers.create(
                image or service.image,
                command=shlex.split(service.run) if service.run else None,
                name=f"{network_name(run_id)}-{service.name}",
                environment=env,
                labels={**labels, "greenloop.service": service.name},
                network=self._network,
                networking_config={
                    self._network: client.api.create_endpoint_config(aliases=[service.name])
                },
            )
            self._container.start()
            self._container.reload()
            address = self._container.attrs["NetworkSettings"]["Networks"][self._network]
            networks.add_host(self._network, service.name, address["IPAddress"])
        except docker.errors.DockerException as e:
            self._networks.leave(client, self._network)
            raise SetupError(f"image {service.image!r}: {str(e).splitlines()[0]}") from None

    def check_ready(self) -> tuple[bool, str]:
        """Run ``ready`` inside the service's container."""
        command = self._service.ready.replace("{host}", _CHECK_HOST).replace(
            "{port}", "" if self.port is None else str(self.port)
        )
        try:
            code, output = self._container.exec_run(["sh", "-c", command])
        except Exception as e:  # not running (yet, or any more)
            return False, str(e).splitlines()[0]
        return code == 0, (output or b"").decode("utf-8", "replace")

    def exit_code(self) -> int | None:
        """The container's exit code once it exited."""
        with contextlib.suppress(Exception):
            self._container.reload()
            if self._container.status in ("exited", "dead"):
                code: int = self._container.attrs["State"]["ExitCode"]
                return code
        return None

    def log_tail(self, lines: int) -> str:
        """The end of the container's output."""
        with contextlib.suppress(Exception):
            logs: bytes = self._container.logs(tail=lines)
            return logs.decode("utf-8", "replace")
        return ""

    def stop(self) -> None:
        """Remove the container, then the network if it was the run's last service."""
        if self._container is None:
            return
        with contextlib.suppress(Exception):  # gone already
            self._container.remove(force=True)
        self._container = None
        self._networks.leave(self._client, self._network, self._service.name)
