"""The ``docker`` executor: each step runs in a container on a Docker engine.

A root step boots from its image (by the id its cache key holds, so a tag moved
in between never runs under the old key), a chained step from its parent's snapshot,
which is an image tag (``greenloop-snap:…`` for cached snapshots,
``greenloop-run:…`` for run-scoped ones). The workspace archive is streamed
into the container in chunks; files an earlier injection put in ``workdir``
that the workspace no longer has are removed before the command runs, so a
cached parent never freezes old sources into its children. A step whose
snapshot is committed runs in a container kept for its chain's next step when
it is left as a fresh one would be (:mod:`~greenloop.executors.docker_kept`).

The engine is the one ``DOCKER_HOST`` names (the local socket by default;
``tcp://`` and ``ssh://`` work the same way). Everything created is labelled
``greenloop=1`` with the owning host and pid, so leftovers of a crashed run are
recognised and removed by the next run or by ``greenloop cache gc``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID, uuid4

from greenloop._fs import pid_alive
from greenloop.executors._conclude import await_exit, conclude
from greenloop.executors.docker_kept import BOOT, BOOT_DIR, CHECK, Kept
from greenloop.executors.docker_services import ContainerService, Networks, network_name
from greenloop.plugins.spec import ArchiveReader, Host
from greenloop.protocol import (
    ArtifactRef,
    CommandStep,
    ExecutorInput,
    Hit,
    MissBuildAs,
    Pipeline,
    SetupError,
    SnapshotRef,
    StepResult,
)
from greenloop.protocol.executor import EXIT_INTERRUPTED, EXIT_TIMEOUT, SECRETS_DIR
from greenloop.protocol.ir import Service
from greenloop.store import Store
from greenloop.store.artifacts import store_artifact

if TYPE_CHECKING:
    import tarfile

LABEL = "greenloop"
SNAPSHOT_REPO = "greenloop-snap"
RUN_REPO = "greenloop-run"
_STATE = "/.greenloop"
HOSTNAME = "greenloop"
"""Every step container's hostname: the same whether a step runs in its parent's kept
container or in one of its own (a parent that noted it must not tell them apart)."""

# Runs before the step's command: drop files the previous injection put in
# workdir that the current workspace no longer has, then record the new list;
# write each secret file (the variables named after the command, holding the
# values) into the tmpfs at SECRETS_DIR and point its variable at it. The
# command line is: the step's command, then (in a kept container, see
# docker_kept) the verdict's marker, then the secret files' variables. The command
# is never the container's pid 1 (not exec'd), in a kept container or not: pid 1
# ignores the signals it has no handler for, and a step must not behave otherwise
# in one than in the other.
_STALE = f"""\
if [ -f {_STATE}/injected ]; then
  grep -vxF -f {_STATE}/injected.new {_STATE}/injected | while IFS= read -r f; do
    rm -f -- "$f"
  done
fi
mv {_STATE}/injected.new {_STATE}/injected
"""
_SECRETS = f"""\
for v in "$@"; do
  eval "value=\\${{$v}}"
  printf '%s' "$value" >{SECRETS_DIR}/"$v" && chmod 0400 {SECRETS_DIR}/"$v" &&
    export "$v={SECRETS_DIR}/$v" || exit 125
done
"""
_PRELUDE = f'{_STALE}cmd=$1\nshift\n{_SECRETS}sh -c "$cmd"\n'
_PRELUDE_KEPT = f'{_STALE}cmd=$1\nmarker=$2\nshift 2\n{_SECRETS}sh -c "$cmd"\n{CHECK}'


class DockerExecutor:
    """Runs steps in containers; snapshots are image tags committed from containers."""

    name = "docker"

    def __init__(self, store: Store) -> None:
        self.store = store
        self._client: Any = None
        self._network: dict[str, str] = {}
        self._service_networks = Networks()
        self._lock = threading.Lock()
        # The id each image tag had when a step's key was made: the step boots from that
        # image, not from whatever the tag names by the time it starts.
        self._keyed_ids: dict[str, str] = {}
        # Which store a snapshot belongs to: this machine and the store's folder.
        self._store_id = hashlib.sha256(
            f"{socket.gethostname()}:{store.root.resolve()}".encode()
        ).hexdigest()[:16]
        self._labels = {
            LABEL: "1",
            f"{LABEL}.host": socket.gethostname(),
            f"{LABEL}.pid": str(os.getpid()),
        }
        self._kept = Kept(lambda: self.client)

    # -- setup ---------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The Docker SDK client, connected on first use (``SetupError`` if unreachable)."""
        with self._lock:
            if self._client is None:
                self._client = _connect()
                self._network = _network_options(self._client)
            return self._client

    def image_id(self, image: str) -> str | None:
        """The id of ``image`` on the engine (None when absent): a step's key holds it."""
        from greenloop.executors.docker_image_id import image_id

        found = image_id(image, lambda: self.client)
        if found is None:
            self._keyed_ids.pop(image, None)
        else:
            self._keyed_ids[image] = found
        return found

    def preflight(self, pipeline: Pipeline, steps: list[CommandStep]) -> None:
        """Check the engine and every root step's image before anything runs."""
        client = self.client
        # Beside the run, not before it: what a dead process left (its containers,
        # networks and run-scoped tags, labelled with its pid) is in no live run's way,
        # and listing an engine's images can take a good part of a second.
        threading.Thread(target=self._sweep, daemon=True).start()
        for name in sorted({name for step in steps for name in step.services}):
            image = pipeline.service(name).image
            if image is None:
                raise SetupError(
                    f"service {name!r} has no image=...: the docker executor runs services "
                    "as containers"
                )
            _require_image(client, image, f"service {name!r}")
        for step in steps:
            if step.builds_in is not None:
                continue
            image = step.image or pipeline.default_image
            if not image:
                raise SetupError(
                    f"step {step.key!r} has no image: give it image=... or set "
                    "default_image on the pipeline (the docker executor needs one)"
                )
            _require_image(client, image, f"step {step.key!r}")
        self._kept.open()

    def close(self) -> None:
        """The run :meth:`preflight` checked has ended: remove the containers it kept."""
        self._kept.close()

    def _sweep(self) -> None:
        with contextlib.suppress(Exception):  # the next run sweeps again
            self.remove_leftovers()

    def remove_leftovers(self) -> int:
        """Remove containers and run-scoped images that a dead greenloop process left behind."""
        removed = 0
        mine = {"label": [f"{LABEL}=1", f"{LABEL}.host={socket.gethostname()}"]}
        for container in self.client.containers.list(all=True, filters=mine):
            if not pid_alive(container.labels.get(f"{LABEL}.pid", "")):
                container.remove(force=True)
                removed += 1
        for network in self.client.networks.list(filters=mine):
            if not pid_alive((network.attrs.get("Labels") or {}).get(f"{LABEL}.pid", "")):
                with contextlib.suppress(Exception):  # a live container may still be on it
                    network.remove()
                    removed += 1
        for image in self.client.images.list(name=RUN_REPO, filters=mine):
            if not pid_alive((image.labels or {}).get(f"{LABEL}.pid", "")):
                # Only our own tags: the same image may carry a user's tag too.
                for tag in image.tags:
                    if tag.startswith(f"{RUN_REPO}:"):
                        self._remove_image(tag)
                removed += 1
        return removed

    def collect_garbage(self, live: set[str]) -> int:
        """Remove this store's ``greenloop-snap`` tags no cache entry names; return how many.

        Snapshots are labelled with the store that committed them, so a gc never
        touches another store's snapshots on a shared engine (nor a user's tags).
        """
        self.remove_leftovers()
        removed = 0
        ours = {"label": [f"{LABEL}.store={self._store_id}"]}
        for image in self.client.images.list(name=SNAPSHOT_REPO, filters=ours):
            for tag in image.tags:
                if (
                    tag.startswith(f"{SNAPSHOT_REPO}:")
                    and tag not in live
                    and self._remove_image(tag)
                ):
                    removed += 1
        return removed

    # -- the executor interface ----------------------------------------------

    def start_service(
        self, service: Service, run_id: UUID, env: dict[str, str]
    ) -> ContainerService:
        """Start ``service`` as a container on run ``run_id``'s network (the engine
        waits for it to be ready and stops it)."""
        labels = {**self._labels, f"{LABEL}.run": str(run_id)}
        # The image its steps' keys name (see image_id), not whatever holds the tag now.
        image = self._keyed_ids.get(service.image) if service.image else None
        return ContainerService(
            self.client, self._service_networks, service, run_id, env, labels, image
        )

    def run(self, request: ExecutorInput, host: Host) -> StepResult:
        """Run one step (or skip it on a hit): in its parent's kept container, in one
        kept for its children, or in one of its own (see the module's doc)."""
        if isinstance(request.cache_lookup, Hit):
            return StepResult(exit_code=0, committed_snapshot=None, artifacts=[])
        image = request.parent_snapshot
        if image is None and request.step.image is not None:
            image = self._keyed_ids.get(request.step.image, request.step.image)
        if not image:
            raise SetupError(f"step {request.step.key!r} has no image to boot from")
        labels = {
            **self._labels,
            f"{LABEL}.run": str(request.run_id),
            f"{LABEL}.step": request.step.key,
        }
        held = ExitStack()
        try:
            volumes = {}
            environment = {**request.env, **request.secrets, **request.secret_files}
            if any(cache.path.startswith("~/") for cache in request.step.cache_dirs):
                # An image without a passwd file gives root the home "/": a step that
                # names ~ gets the home its image or env says, else root's usual one.
                environment.setdefault("HOME", self._image_home(image))
            for cache in request.step.cache_dirs:
                folder = held.enter_context(self.store.cache_dirs.use(cache.name, cache.sharing))
                at = cache.path
                if at.startswith("~/"):
                    at = environment["HOME"].rstrip("/") + at[1:]
                volumes[self._cache_volume(folder)] = {"bind": at, "mode": "rw"}
            secret_fs = {SECRETS_DIR: "mode=0700"} if request.secret_files else {}
            # What an exec cannot change: a kept container serves a step that needs the same.
            shape = repr((sorted(volumes.items()), sorted(secret_fs)))
            kept = None
            keeps = not request.step.services and self._kept.open_runs > 0
            if keeps and request.parent_snapshot is not None:
                kept = self._kept.take(request.parent_snapshot, shape)
            taken = kept is not None
            if keeps and kept is None and isinstance(request.cache_lookup, MissBuildAs):
                kept = self._boot(image, labels, volumes, secret_fs)
            if kept is not None:
                container = self.client.containers.prepare_model({"Id": kept})
            else:
                container = self.client.containers.create(
                    image,
                    command=[
                        "sh",
                        "-c",
                        _PRELUDE,
                        "greenloop-step",
                        request.step.command,
                        *sorted(request.secret_files),
                    ],
                    entrypoint=[],
                    hostname=HOSTNAME,
                    working_dir=request.workdir,
                    environment=environment,
                    labels=labels,
                    stdin_open=False,
                    tty=False,
                    volumes=volumes,
                    # Never committed: a tmpfs is not part of the container's filesystem.
                    tmpfs=secret_fs,
                    **(self._service_network(request) if request.step.services else self._network),
                )
            keeping: list[str] = []  # the snapshot it is kept for, once it is
            held.callback(lambda: keeping or container.remove(force=True))
            self._inject(container, request, host)
            if kept is not None:
                if taken:
                    # What a container created from the snapshot would start with: its
                    # image's environment (blanked secrets included), then the step's.
                    environment = {**self._image_env(image), **environment}
                code, fresh = self._exec_and_wait(container, request, host, environment)
            else:
                code, fresh = self._start_and_wait(container, request, host), False

            def commit(snapshot: str) -> None:
                repository, _, tag = snapshot.partition(":")
                # A commit keeps the container's environment in the image: blank the
                # secrets' variables, so their values never land in a snapshot.
                blanked = [
                    f"ENV {name}=" for name in sorted({*request.secrets, *request.secret_files})
                ]
                container.commit(
                    repository=repository,
                    tag=tag or "latest",
                    changes=[f"LABEL {LABEL}.store={self._store_id}", *blanked],
                    # A kept container that passed the check runs only its waiting sh,
                    # one that did not has stopped: nothing to pause.
                    pause=kept is None,
                )

            collect = lambda: self._collect(container, request)  # noqa: E731
            # A failed step is kept the same way: its container, committed.
            result = conclude(request, host, code, collect, commit, keep=commit)
            snapshot = result.committed_snapshot
            passed = fresh and result.exit_code == 0 and snapshot is not None
            if passed and snapshot is not None and self._kept.keep(snapshot, shape, container.id):
                keeping.append(snapshot)
            return result
        finally:
            # Already gone is fine; the next run's leftover sweep is the backstop.
            with contextlib.suppress(Exception):
                held.close()  # the container first, then the cache folders' locks

    def shell(self, kept: SnapshotRef, step: CommandStep, env: dict[str, str]) -> int:
        """Open an interactive shell in a container of the image a failed ``step`` was
        committed to (``kept``), in its workdir with ``env``; return its exit status.

        The engine's own ``docker`` command runs it (it needs the terminal); the
        container is removed when the shell ends."""
        import docker.errors

        try:
            self.client.images.get(kept)
        except docker.errors.ImageNotFound:
            raise SetupError(
                f"the filesystem {step.key!r} left is no longer kept (image {kept} is gone): "
                "run the pipeline again"
            ) from None
        if shutil.which("docker") is None:
            raise SetupError("the debug shell needs the docker command-line client on PATH")
        # Values travel in the environment, never on the command line (ps shows that).
        names = [arg for name in sorted(env) for arg in ("-e", name)]
        argv = ["docker", "run", "--rm", "-it", "-w", step.workdir, *names, "--entrypoint", "sh"]
        return subprocess.call([*argv, kept, "-i"], env={**os.environ, **env})

    def discard(self, snapshots: list[SnapshotRef]) -> None:
        """Remove the image tags of run-scoped snapshots."""
        for tag in snapshots:
            self._remove_image(tag)

    # -- internals -------------------------------------------------------------

    def _image_env(self, image: str) -> dict[str, str]:
        """The environment ``image``'s config sets."""
        items = self.client.api.inspect_image(image)["Config"].get("Env") or []
        return dict(item.partition("=")[::2] for item in items)

    def _image_home(self, image: str) -> str:
        """The ``HOME`` ``image``'s config sets, else ``/root``."""
        for item in self.client.images.get(image).attrs["Config"].get("Env") or []:
            name, _, value = item.partition("=")
            if name == "HOME" and value.startswith("/"):
                return str(value)
        return "/root"

    def _cache_volume(self, folder: Path) -> str:
        """The engine's volume for the cache held at store ``folder`` (made on first use).

        The store folder stays empty and only carries the lock: the engine may not
        see this machine's files (rootless Podman, a remote engine), its volumes it does.
        """
        name = f"greenloop-cache-{self._store_id[:12]}-{folder.name.replace('~', '-')}"
        labels = {LABEL: "cache-dir", f"{LABEL}.store": self._store_id}
        self.client.volumes.create(name=name, labels=labels)
        return name

    def _service_network(self, request: ExecutorInput) -> dict[str, Any]:
        """A step that names services joins their network, where each is its name."""
        hosts = self._service_networks.hosts(request.run_id)
        return {"network": network_name(request.run_id), "extra_hosts": hosts}

    def _boot(
        self,
        image: str,
        labels: dict[str, str],
        volumes: dict[str, dict[str, str]],
        secret_fs: dict[str, str],
    ) -> str:
        """Start a container of ``image`` that waits for execs (see ``docker_kept``): no
        environment but the image's, which each exec adds its own to."""
        container = self.client.containers.create(
            image,
            command=["sh", "-c", BOOT],
            entrypoint=[],
            hostname=HOSTNAME,
            labels=labels,
            stdin_open=True,
            tty=False,
            volumes=volumes,
            tmpfs={**secret_fs, BOOT_DIR: "mode=0700"},
            **self._network,
        )
        try:
            container.start()
        except BaseException:
            with contextlib.suppress(Exception):
                container.remove(force=True)
            raise
        return str(container.id)

    def _exec_and_wait(
        self, container: Any, request: ExecutorInput, host: Host, environment: dict[str, str]
    ) -> tuple[int, bool]:
        """Run the step's command as an exec in the kept ``container``: its exit code, and
        whether the container is as fresh as one booted from its snapshot after it."""
        api = self.client.api
        marker = f"greenloop-verdict-{uuid4().hex}:"
        command = [
            "sh",
            "-c",
            _PRELUDE_KEPT,
            "greenloop-step",
            request.step.command,
            marker,
            *sorted(request.secret_files),
        ]
        exec_id = api.exec_create(
            container.id, command, environment=environment, workdir=request.workdir
        )["Id"]
        stream = api.exec_start(exec_id, stream=True, demux=True)
        verdict: list[str] = []
        pump = threading.Thread(
            target=_pump, args=(stream, request, host, marker, verdict), daemon=True
        )
        pump.start()

        def poll() -> int | None:
            # The exec, not its output: a process the check could not kill (a daemon
            # started as root by a step of another user) may hold the output open.
            pump.join(timeout=0.1)
            if not pump.is_alive():
                time.sleep(0.005)  # the engine notes the exit code just after the output ends
            info = api.exec_inspect(exec_id)
            if info.get("Running") or info.get("ExitCode") is None:
                return None
            return int(info["ExitCode"])

        code = await_exit(poll, lambda: _stop(container), request, host)
        pump.join(timeout=2)
        if pump.is_alive():
            # Something outlived the exec: the container goes, with it, as a
            # container of its own goes with its first process.
            _stop(container)
            pump.join(timeout=5)
            verdict.clear()
        stopped = code in (EXIT_INTERRUPTED, EXIT_TIMEOUT)
        fresh = verdict == ["yes"] and not stopped
        if not fresh:
            # It will not be kept: it ends before its commit, as a container of its own
            # does (what the check could not kill may still be writing; and a rootless
            # engine cannot pause a container to commit it).
            _stop(container)
            with contextlib.suppress(Exception):
                container.wait()
        return code, fresh

    def _inject(self, container: Any, request: ExecutorInput, host: Host) -> None:
        reader = ArchiveReader(host, request.workspace_archive_id)
        container.put_archive("/", _upload(reader, PurePosixPath(request.workdir)))

    def _start_and_wait(self, container: Any, request: ExecutorInput, host: Host) -> int:
        stream = self.client.api.attach(
            container.id, stdout=True, stderr=True, stream=True, logs=True, demux=True
        )
        pump = threading.Thread(target=_pump, args=(stream, request, host), daemon=True)
        container.start()
        pump.start()
        outcome: dict[str, int] = {}
        waiter = threading.Thread(
            target=lambda: outcome.update(code=container.wait()["StatusCode"]), daemon=True
        )
        waiter.start()

        def poll() -> int | None:
            waiter.join(timeout=0.1)
            return None if waiter.is_alive() else outcome.get("code", 1)

        code = await_exit(poll, lambda: _stop(container), request, host)
        pump.join(timeout=5)
        return code

    def _collect(self, container: Any, request: ExecutorInput) -> tuple[list[ArtifactRef], str]:
        import docker.errors

        refs: list[ArtifactRef] = []
        for declared in request.step.artifacts:
            path = PurePosixPath(request.workdir) / declared
            try:
                bits, _ = container.get_archive(str(path))
            except docker.errors.NotFound:
                return [], declared
            with tempfile.TemporaryDirectory(dir=self.store.root) as tmp:
                with tempfile.TemporaryFile(dir=tmp) as spool:
                    for chunk in bits:
                        spool.write(chunk)
                    spool.seek(0)
                    import tarfile  # only a step with artifacts to copy out reads a tar

                    with tarfile.open(fileobj=spool, mode="r|") as tar:
                        tar.extractall(tmp, filter="data")
                refs.append(store_artifact(self.store, Path(tmp) / path.name))
        return refs, ""

    def _remove_image(self, tag: str) -> bool:
        import docker.errors

        try:
            self.client.images.remove(tag, noprune=False)
        except (docker.errors.ImageNotFound, docker.errors.APIError):
            return False
        return True


def _connect() -> Any:
    import docker
    import docker.errors

    try:
        client = docker.from_env(use_ssh_client=_engine_name().startswith("ssh://"))
        client.ping()
    except docker.errors.DockerException as e:
        raise SetupError(
            f"cannot reach a Docker engine at {_engine_name()}: {_first_line(e)}. "
            "Start one (`sudo systemctl start docker`, or `dockerd &`) or point DOCKER_HOST "
            "at a running engine (unix://, tcp:// or ssh://)."
        ) from None
    return client


def _network_options(client: Any) -> dict[str, str]:
    """How containers reach the network on this engine: its default, except on rootless
    Podman, whose Docker API defaults to a bridge that needs a rootless network
    namespace of its own; slirp4netns is what ``podman run`` uses there."""
    components = {c.get("Name", "") for c in client.version().get("Components") or []}
    if "Podman Engine" in components and client.info().get("Rootless"):
        return {"network_mode": "slirp4netns"}
    return {}


def _engine_name() -> str:
    return (
        os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (default; DOCKER_HOST unset)"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _require_image(client: Any, image: str, whose: str) -> None:
    """``SetupError`` unless ``image`` (that ``whose`` boots from) is on the engine."""
    import docker.errors

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise SetupError(
            f"image {image!r} ({whose}) is not on the Docker engine at "
            f"{_engine_name()}; build it or `docker pull {image}` first"
        ) from None


def _upload(reader: ArchiveReader, workdir: PurePosixPath) -> Iterator[bytes]:
    """One tar stream for ``put_archive("/")``: the folders down to ``workdir``, the
    workspace files beneath it, and last the list of those files for the prelude.

    Written header by header so a big file passes through in chunks and is never
    held in memory whole.
    """
    import tarfile  # only a step that runs ships its workspace: not imported by a cached run

    for folder in [*reversed(workdir.parents), workdir, PurePosixPath(_STATE)]:
        if str(folder) != "/":
            info = tarfile.TarInfo(str(folder).lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            yield _header(info)
    injected: list[str] = []
    with tarfile.open(fileobj=reader, mode="r|") as source:
        for member in source:
            target = workdir / member.name
            injected.append(f"{target}\n")
            member.name = str(target).lstrip("/")
            yield _header(member)
            if member.isfile():
                data = source.extractfile(member)
                assert data is not None
                while chunk := data.read(1 << 20):
                    yield chunk
                yield _padding(member.size)
    listing = "".join(injected).encode()
    info = tarfile.TarInfo(f"{_STATE.lstrip('/')}/injected.new")
    info.size = len(listing)
    yield _header(info) + listing + _padding(len(listing))
    yield b"\0" * (2 * tarfile.BLOCKSIZE)  # end-of-archive marker


def _header(info: tarfile.TarInfo) -> bytes:
    import tarfile

    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    import tarfile

    return b"\0" * (-size % tarfile.BLOCKSIZE)


def _pump(
    stream: Iterator[tuple[bytes | None, bytes | None]],
    request: ExecutorInput,
    host: Host,
    marker: str | None = None,
    verdict: list[str] | None = None,
) -> None:
    """Log the step's output line by line. With ``marker``, the output ends with the
    marker and a kept container's verdict (see ``docker_kept.CHECK``): that goes to
    ``verdict`` and never to the log."""
    pending: dict[Literal["stdout", "stderr"], bytes] = {"stdout": b"", "stderr": b""}
    mark = marker.encode() if marker else None

    def log(key: Literal["stdout", "stderr"], line: bytes) -> None:
        if mark is not None and mark in line:
            line = line.partition(mark)[0]  # written after the verdict: never trusted
            if not line:
                return
        host.log(request.step_id, key, line.decode("utf-8", "replace").rstrip("\r"))

    try:
        for out, err in stream:
            for name, data in (("stdout", out), ("stderr", err)):
                if not data:
                    continue
                key: Literal["stdout", "stderr"] = "stdout" if name == "stdout" else "stderr"
                *lines, pending[key] = (pending[key] + data).split(b"\n")
                for line in lines:
                    log(key, line)
    except Exception:  # the container went away mid-stream (cancelled); the exit code says why
        pass
    rest = pending["stdout"]
    if mark is not None and verdict is not None and mark in rest:
        rest, _, said = rest.rpartition(mark)
        verdict.append(said.decode("ascii", "replace"))
        pending["stdout"] = rest
    for key, rest in pending.items():
        if rest:
            log(key, rest)


def _stop(container: Any) -> None:
    with contextlib.suppress(Exception):  # it may have exited already
        container.kill()
