"""The ``local`` executor: each step runs on this machine in a private directory.

A step's filesystem is a directory tree ("rootfs") under the store: empty for
a root step, its parent's snapshot otherwise, with the workspace archive laid
over ``workdir``. Snapshots are store trees named by store refs, so they are
content-addressed and the remote cache can move them. Tools come from the
host (PATH and HOME are passed through); only the step's files are private.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import tarfile
import threading
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from greenloop._fs import pid_alive
from greenloop.executors._conclude import ArtifactEscapeError, await_exit, conclude
from greenloop.plugins.spec import ArchiveReader, Host
from greenloop.protocol import (
    ArtifactRef,
    ExecutorInput,
    Hit,
    SnapshotRef,
    StepResult,
)
from greenloop.store import Store
from greenloop.store.artifacts import store_artifact

_PASSED_ENV = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TERM", "TZ", "SSL_CERT_FILE")


class LocalExecutor:
    """Runs steps with ``sh -c`` in a private directory tree; snapshots are store trees."""

    name = "local"

    def __init__(self, store: Store) -> None:
        self.store = store
        _sweep_sandboxes(store.root / "sandboxes")

    def run(self, request: ExecutorInput, host: Host) -> StepResult:
        """Run one step (or skip it on a hit) and commit its tree when asked."""
        if isinstance(request.cache_lookup, Hit):
            return StepResult(exit_code=0, committed_snapshot=None, artifacts=[])
        sandbox = self.store.root / "sandboxes" / f"{os.getpid()}-{request.step_id}"
        rootfs = sandbox / "root"
        try:
            workdir = _inside(rootfs, request.workdir)
            injected = self._boot(request, host, rootfs, workdir)
            code = _execute(request, host, rootfs, workdir)

            def commit(tag: str) -> None:
                # The workspace is laid over every child anyway, so it stays out of the
                # snapshot: snapshots hold only what steps made, and deleted sources
                # can never come back from a cached parent.
                tree = self.store.put_tree(rootfs, exclude=injected.__contains__)
                self.store.set_ref(tag, tree)

            return conclude(request, host, code, lambda: self._collect(request, workdir), commit)
        finally:
            shutil.rmtree(sandbox, ignore_errors=True)

    def discard(self, snapshots: list[SnapshotRef]) -> None:
        """Drop the refs of run-scoped snapshots; their objects go at the next gc."""
        for tag in snapshots:
            self.store.delete_ref(tag)

    def _boot(self, request: ExecutorInput, host: Host, rootfs: Path, workdir: Path) -> set[str]:
        """Materialize the parent snapshot, lay the workspace over ``workdir``; return the
        rootfs-relative paths of the workspace files."""
        rootfs.mkdir(parents=True, exist_ok=True)
        if request.parent_snapshot is not None:
            tree = self.store.get_ref(request.parent_snapshot)
            if tree is None:
                raise RuntimeError(f"snapshot {request.parent_snapshot!r} is not in the store")
            self.store.materialize(tree, rootfs)
        workdir.mkdir(parents=True, exist_ok=True)
        names = _lay_workspace(ArchiveReader(host, request.workspace_archive_id), workdir)
        base = workdir.relative_to(rootfs.resolve()).as_posix()
        return {name if base == "." else f"{base}/{name}" for name in names}

    def _collect(self, request: ExecutorInput, workdir: Path) -> tuple[list[ArtifactRef], str]:
        refs: list[ArtifactRef] = []
        for declared in request.step.artifacts:
            try:
                path = _inside(workdir, declared)
            except ValueError:
                raise ArtifactEscapeError(declared) from None
            if not path.exists():
                return [], declared
            refs.append(store_artifact(self.store, path))
        return refs, ""


def _sweep_sandboxes(folder: Path) -> None:
    """Remove sandboxes a killed greenloop process left behind (named ``<pid>-<step id>``)."""
    if not folder.is_dir():
        return
    for sandbox in folder.iterdir():
        pid = sandbox.name.split("-", 1)[0]
        if not pid_alive(pid):
            shutil.rmtree(sandbox, ignore_errors=True)


def _inside(base: Path, path: str) -> Path:
    """``path`` (absolute inside the sandbox, or relative) resolved under ``base``."""
    candidate = (base / path.lstrip("/")).resolve()
    if not candidate.is_relative_to(base.resolve()):
        raise ValueError(f"path {path!r} escapes the step's directory")
    return candidate


def _lay_workspace(archive: ArchiveReader, workdir: Path) -> list[str]:
    """Write the workspace archive's files and symlinks under ``workdir``; return their names.

    Whatever the parent left at a path is replaced, never written through, and no
    folder on the way may lead outside ``workdir`` (a step may have planted a symlink).
    """
    names: list[str] = []
    checked: set[Path] = {workdir}
    with tarfile.open(fileobj=archive, mode="r|") as tar:
        for member in tar:
            rel = PurePosixPath(member.name)
            if rel.is_absolute() or ".." in rel.parts or not (member.isfile() or member.issym()):
                raise ValueError(f"unsafe workspace archive member {member.name!r}")
            target = workdir / member.name
            if target.parent not in checked:
                if not target.parent.resolve().is_relative_to(workdir):
                    raise ValueError(f"{member.name!r} would be written outside the workspace")
                target.parent.mkdir(parents=True, exist_ok=True)
                checked.add(target.parent)
            _clear(target)
            if member.issym():
                os.symlink(member.linkname, target)
            else:
                source = tar.extractfile(member)
                assert source is not None
                with open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
                if member.mode & 0o111:
                    os.chmod(target, 0o755)
            names.append(member.name)
    return names


def _clear(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def _execute(request: ExecutorInput, host: Host, rootfs: Path, workdir: Path) -> int:
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    env.update(request.env)
    env.update(request.secrets)
    env["GREENLOOP_SANDBOX"] = str(rootfs)
    proc = subprocess.Popen(
        ["sh", "-c", request.step.command],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so cancelling kills every child
    )
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, "stdout", request, host), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "stderr", request, host), daemon=True),
    ]
    for pump in pumps:
        pump.start()

    def poll() -> int | None:
        try:
            return proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            return None

    code = await_exit(poll, lambda: _kill(proc), request, host)
    # A step ends with its command: whatever it left running in the background goes too
    # (it would hold the output pipes open and outlive the sandbox it runs in).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pump in pumps:
        pump.join(timeout=5)
    return code


def _pump(
    stream: IO[bytes], name: Literal["stdout", "stderr"], request: ExecutorInput, host: Host
) -> None:
    for raw in iter(stream.readline, b""):
        host.log(request.step_id, name, raw.decode("utf-8", "replace").rstrip("\r\n"))
    stream.close()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
