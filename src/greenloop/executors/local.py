"""The ``local`` executor: each step runs on this machine in a private root.

A step's filesystem ("rootfs") is empty for a root step, its parent's snapshot
otherwise, with the workspace archive laid over ``workdir``. Snapshots are
store trees named by store refs, so they are content-addressed and the remote
cache can move them. Tools come from the host (PATH and HOME are passed through).

Two sandboxes (``Sandbox.mode``; by default ``bwrap`` where it works here):
``bwrap`` runs the step under bubblewrap with its rootfs an overlay at ``/``
(see :mod:`greenloop.executors.bwrap`): checkout and commit cost what the step
changed. ``none`` runs ``sh -c`` on the host in a folder under the store holding
a copy of the snapshot, and commits by scanning that whole folder.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import threading
import uuid
from collections import OrderedDict
from contextlib import ExitStack
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from greenloop._fs import remove_orphans
from greenloop._procs import signal_group, stop_group, wait_exit
from greenloop.executors import bwrap, host_tools
from greenloop.executors._conclude import ArtifactEscapeError, await_exit, conclude
from greenloop.plugins.spec import ArchiveReader, Host, Variant
from greenloop.protocol import (
    ArtifactRef,
    CommandStep,
    ExecutorInput,
    Hit,
    Pipeline,
    SetupError,
    SnapshotRef,
    StepResult,
)
from greenloop.protocol.executor import SECRETS_DIR
from greenloop.protocol.ir import Sandbox, SandboxMode
from greenloop.store import Store
from greenloop.store.artifacts import store_artifact
from greenloop.store.trees import TreeEntry, encode_manifest

_PASSED_ENV = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TERM", "TZ", "SSL_CERT_FILE")

SANDBOX_ENV = "GREENLOOP_LOCAL_SANDBOX"
"""This machine's default sandbox (``bwrap`` or ``none``) for steps that name none."""


class LocalExecutor:
    """Runs steps on this machine in a private root; snapshots are store trees."""

    name = "local"

    def __init__(self, store: Store) -> None:
        self.store = store
        self._sandboxes = store.root / "sandboxes"
        # The mount points bwrap needs, one folder per shape, shared by every step.
        self._skeletons = store.root / "skeletons"
        remove_orphans(self._sandboxes)

    def variant(self, step: CommandStep) -> Variant:
        """The sandbox ``step`` runs in: it changes what the step may write (and where)."""
        if self._mode(step) == "bwrap":
            if step.sandbox is not None and not step.sandbox.network:
                return Variant("bwrap-offline", "bwrap sandbox, offline, overlay snapshots")
            return Variant("bwrap", "bwrap sandbox, overlay snapshots")
        why = self._bwrap_unavailable()
        chosen = step.sandbox is not None or os.environ.get(SANDBOX_ENV)
        fallback = "" if chosen or why is None else f" (bwrap unavailable: {why})"
        return Variant("none", f"no sandbox, copied snapshots{fallback}")

    def host_tools(self, step: CommandStep, env: dict[str, str]) -> str:
        """The stamp of the host's folders ``step`` (with ``env``, its pipeline's and its
        own) may run tools from: a local entry answers it only while it is the same."""
        search_path = env.get("PATH", os.environ.get("PATH", ""))
        binds = step.sandbox.ro_binds if step.sandbox and self._mode(step) == "bwrap" else []
        return host_tools.stamp(search_path, binds)

    def preflight(self, pipeline: Pipeline, steps: list[CommandStep]) -> None:
        """Refuse a bwrap step on a machine where bwrap cannot run, before anything runs."""
        configured = os.environ.get(SANDBOX_ENV)
        if configured and configured not in ("bwrap", "none"):
            raise SetupError(f"{SANDBOX_ENV}={configured!r}: expected bwrap or none")
        for step in steps:
            if self._mode(step) != "bwrap":
                for cache in step.cache_dirs:
                    if cache.env is None:
                        raise SetupError(
                            f"step {step.key!r}: cache dir {cache.name!r} at {cache.path} can "
                            "only be mounted in the bwrap sandbox; without one, say which "
                            "variable the tool reads it from: gl.cache_dir(path, env=...)"
                        )
                continue
            if why := self._bwrap_unavailable():
                raise SetupError(
                    f"step {step.key!r} runs in the bwrap sandbox, which cannot run here: "
                    f"{why} (use --sandbox none to run without it)"
                )
            settings = step.sandbox or Sandbox(mode="bwrap")
            for path in (*settings.ro_binds, *settings.rw_binds):
                if not os.path.exists(path):
                    raise SetupError(f"step {step.key!r}: bind {path} does not exist here")
            try:
                _rooted(step.workdir)
            except ValueError as e:
                raise SetupError(f"step {step.key!r}: {e}") from None

    def run(self, request: ExecutorInput, host: Host) -> StepResult:
        """Run one step (or skip it on a hit) and commit its tree when asked."""
        if isinstance(request.cache_lookup, Hit):
            return StepResult(exit_code=0, committed_snapshot=None, artifacts=[])
        sandbox = self._sandboxes / f"{os.getpid()}-{request.step_id}"
        if self._mode(request.step) == "bwrap":
            root = bwrap.StepRoot(sandbox, self._skeletons)
            try:
                return self._run_overlay(request, host, root)
            finally:
                root.remove()
        rootfs = sandbox / "root"
        try:
            workdir = _inside(rootfs, request.workdir)
            injected = self._boot(request, host, rootfs, workdir)
            env = _env(request, str(rootfs))
            # No mount without a sandbox: the files sit beside the root, not in it.
            env.update(_write_secret_files(sandbox / "secrets", request.secret_files))
            with ExitStack() as held:
                for cache in request.step.cache_dirs:
                    # No mount without a sandbox: the tool is pointed at the folder.
                    folder = held.enter_context(
                        self.store.cache_dirs.use(cache.name, cache.sharing)
                    )
                    env[str(cache.env)] = str(folder)
                code = _execute(["sh", "-c", request.step.command], workdir, env, request, host)

            def commit(tag: str) -> None:
                self.store.set_ref(tag, self._commit_copy(rootfs, injected))

            def keep(tag: str) -> None:
                self.store.set_ref(tag, self._commit_copy(rootfs, set()))

            collect = lambda: self._collect(request, workdir)  # noqa: E731
            return conclude(request, host, code, collect, commit, keep)
        finally:
            shutil.rmtree(sandbox, ignore_errors=True)

    def shell(self, kept: SnapshotRef, step: CommandStep, env: dict[str, str]) -> int:
        """Open an interactive shell in the filesystem a failed ``step`` left (kept under
        ``kept``), in its sandbox and workdir with ``env``; return the shell's exit status.

        What is done in the shell is thrown away."""
        tree = self.store.get_ref(kept)
        if tree is None:
            raise SetupError(
                f"the filesystem {step.key!r} left is no longer kept "
                "(`greenloop cache gc` removes it after an hour): run the pipeline again"
            )
        base = self._sandboxes / f"{os.getpid()}-debug-{uuid.uuid4().hex[:8]}"
        shell_env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ} | env
        if self._mode(step) == "bwrap":
            root = bwrap.StepRoot(base, self._skeletons)
            root.prepare()
            try:
                with self.store.checkout(tree) as lower:
                    settings = step.sandbox or Sandbox(mode="bwrap")
                    shell_env["GREENLOOP_SANDBOX"] = "/"
                    argv = root.command(
                        lower,
                        settings,
                        step.workdir,
                        ["sh", "+m", "-i"],
                        [],
                        shell_env,
                        interactive=True,
                    )
                    return subprocess.call(argv, cwd=root.base, env=shell_env)
            finally:
                root.remove()
        rootfs = base / "root"
        try:
            self.store.materialize(tree, rootfs)
            workdir = _inside(rootfs, step.workdir)
            workdir.mkdir(parents=True, exist_ok=True)
            shell_env["GREENLOOP_SANDBOX"] = str(rootfs)
            return subprocess.call(["sh", "-i"], cwd=workdir, env=shell_env)
        finally:
            shutil.rmtree(base, ignore_errors=True)

    def _run_overlay(self, request: ExecutorInput, host: Host, root: bwrap.StepRoot) -> StepResult:
        """Run the step under bwrap with an overlay root; commit only what it changed."""
        settings = request.step.sandbox or Sandbox(mode="bwrap")
        workdir = _rooted(request.workdir)
        artifacts = [bwrap.root_relative(request.workdir, a) for a in request.step.artifacts]
        parent = self.parent_tree(request)
        root.prepare()
        with self.store.checkout(parent) as lower, ExitStack() as held:
            injected = self._boot_overlay(request, host, root, workdir)
            env = _env(request, "/")
            mounts = [
                (held.enter_context(self.store.cache_dirs.use(c.name, c.sharing)), _at(c.path, env))
                for c in request.step.cache_dirs
            ]
            files = _write_secret_files(root.base / "secrets", request.secret_files)
            secret_mounts = [(Path(path), f"{SECRETS_DIR}/{var}") for var, path in files.items()]
            env.update({var: f"{SECRETS_DIR}/{var}" for var in files})
            command = ["sh", "-c", request.step.command]
            argv = root.command(
                lower,
                settings,
                request.workdir,
                command,
                artifacts,
                env,
                mounts=mounts,
                read_only=secret_mounts,
            )
            code = _execute(argv, root.base, env, request, host)

            def collect() -> tuple[list[ArtifactRef], str]:
                refs: list[ArtifactRef] = []
                escaped = root.escaped.read_text().splitlines() if root.escaped.exists() else []
                for declared, rel in zip(request.step.artifacts, artifacts, strict=True):
                    if rel in escaped:
                        raise ArtifactEscapeError(declared)
                    path = root.saved / rel
                    if not os.path.lexists(path):
                        return [], declared
                    refs.append(store_artifact(self.store, path))
                return refs, ""

            def commit(tag: str) -> None:
                self.store.set_ref(tag, self._commit_overlay(parent, lower, root, injected))

            def keep(tag: str) -> None:
                # Everything the step saw, its workspace included, as one tree.
                layer = bwrap.read_upper(root.upper, lower, self.store.adopt_files, set())
                entries = layer.over(_parsed_tree(self.store, parent))
                self.store.set_ref(tag, self.store.put_bytes(encode_manifest(entries)))

            # Still holding the checkout: the commit reads it where the upper has folders.
            return conclude(request, host, code, collect, commit, keep)

    def _boot_overlay(
        self, request: ExecutorInput, host: Host, root: bwrap.StepRoot, workdir: str
    ) -> set[str]:
        """Lay the workspace into the upper layer at ``workdir`` (root-relative); return
        the root-relative paths of its files. The lower layer needs no work at all."""
        upper_workdir = root.upper / workdir if workdir else root.upper
        upper_workdir.mkdir(parents=True, exist_ok=True)
        names = _lay_workspace(ArchiveReader(host, request.workspace_archive_id), upper_workdir)
        return {f"{workdir}/{name}" if workdir else name for name in names}

    def _commit_copy(self, rootfs: Path, injected: set[str]) -> str:
        """Store the whole copied root; return its tree."""
        # The workspace is laid over every child anyway, so it stays out of the
        # snapshot: snapshots hold only what steps made, and deleted sources
        # can never come back from a cached parent.
        return self.store.put_tree(rootfs, exclude=injected.__contains__)

    def _commit_overlay(
        self, parent: str, lower: Path, root: bwrap.StepRoot, injected: set[str]
    ) -> str:
        """Store the parent's tree with the step's upper layer laid over it; return it.

        Only the upper layer's files are read and stored; the parent's entries are
        reused as they are (as in a copied root, workspace files stay out). A step
        that changed nothing commits its parent's tree, without reading it."""
        layer = bwrap.read_upper(root.upper, lower, self.store.adopt_files, injected)
        if layer.unchanged(lower):
            return parent
        entries = layer.over(_parsed_tree(self.store, parent))
        tree = self.store.put_bytes(encode_manifest(entries))
        # A root step's upper layer is its whole tree: it becomes the checkout its
        # children boot from, instead of a second copy made from the store.
        if parent == _EMPTY_TREE and bwrap.settle_upper(root.upper, injected):
            self.store.adopt_checkout(tree, root.upper)
        return tree

    def parent_tree(self, request: ExecutorInput) -> str:
        """The tree the step boots from: its parent's snapshot, or the empty tree (stored)."""
        if request.parent_snapshot is None:
            return self.store.put_bytes(encode_manifest([]))  # == _EMPTY_TREE
        tree = self.store.get_ref(request.parent_snapshot)
        if tree is None:
            raise RuntimeError(f"snapshot {request.parent_snapshot!r} is not in the store")
        return tree

    def _mode(self, step: CommandStep) -> SandboxMode:
        if step.sandbox is not None:
            return step.sandbox.mode
        configured = os.environ.get(SANDBOX_ENV)
        if configured in ("bwrap", "none"):
            return configured  # type: ignore[return-value]
        return "bwrap" if self._bwrap_unavailable() is None else "none"

    def _bwrap_unavailable(self) -> str | None:
        return bwrap.unavailable(self._sandboxes)

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


_EMPTY_TREE = hashlib.sha256(encode_manifest([])).hexdigest()

_parsed_lock = threading.Lock()
_parsed: OrderedDict[str, list[TreeEntry]] = OrderedDict()


def _parsed_tree(store: Store, tree: str) -> list[TreeEntry]:
    """The entries of ``tree``, parsed once per process for the last few trees: forks of
    one parent each commit on top of it, and a tree's digest names its content."""
    with _parsed_lock:
        if tree in _parsed:
            _parsed.move_to_end(tree)
            return _parsed[tree]
    entries = store.get_tree(tree)
    with _parsed_lock:
        _parsed[tree] = entries
        while len(_parsed) > 8:
            _parsed.popitem(last=False)
    return entries


def _at(path: str, env: dict[str, str]) -> str:
    """Where cache folder ``path`` (``~/...`` or absolute) is in the sandbox."""
    if path.startswith("~/"):
        return env.get("HOME", "/root").rstrip("/") + path[1:]
    return path


def _rooted(workdir: str) -> str:
    """``workdir`` relative to the root ("" for the root itself); ValueError where the
    sandbox hides it (its private and system folders)."""
    rel = PurePosixPath(os.path.normpath("/" + workdir.lstrip("/"))).relative_to("/").as_posix()
    hidden = (*bwrap.PRIVATE_DIRS, *bwrap.SYSTEM_DIRS)
    if any(f"/{rel}/".startswith(f"{d}/") for d in hidden):
        raise ValueError(f"workdir {workdir!r} is hidden in the bwrap sandbox: use another")
    return "" if rel == "." else rel


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
    import tarfile  # only a step that runs unpacks its workspace: not imported by a cached run

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


def _write_secret_files(folder: Path, values: dict[str, str]) -> dict[str, str]:
    """Write each secret file's value into ``folder`` (the step's alone); the
    variables with the paths they get."""
    if not values:
        return {}
    folder.mkdir(mode=0o700)
    paths = {}
    for variable, value in values.items():
        path = folder / variable
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(value)
        paths[variable] = str(path)
    return paths


def _env(request: ExecutorInput, root: str) -> dict[str, str]:
    """The step's environment: a few of the host's variables, the step's, and its root."""
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    env.update(request.env)
    env.update(request.secrets)
    env["GREENLOOP_SANDBOX"] = root
    return env


def _execute(
    argv: list[str], cwd: Path, env: dict[str, str], request: ExecutorInput, host: Host
) -> int:
    proc = subprocess.Popen(
        [*_dies_with_us(), *argv],
        cwd=cwd,
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
        return proc.wait() if wait_exit(proc, 0.05) else None

    code = await_exit(poll, lambda: stop_group(proc, grace=2.0), request, host)
    # A step ends with its command: whatever it left running in the background goes too
    # (it would hold the output pipes open and outlive the sandbox it runs in).
    signal_group(proc.pid, signal.SIGKILL)
    for pump in pumps:
        pump.join(timeout=5)
    return code


@functools.cache
def _dies_with_us() -> tuple[str, ...]:
    """A prefix that makes the step's first process get SIGKILL when we die, if util-linux has it.

    A run killed outright (SIGKILL, a closed terminal) runs no cleanup, and a
    step's process group would live on with nobody to stop it. Under bwrap
    that one signal takes the whole step: bwrap dies with its parent and its
    PID namespace with it. Unsandboxed, what the step started in the
    background can still outlive it.
    """
    setpriv = shutil.which("setpriv")
    return (setpriv, "--pdeathsig", "KILL", "--") if setpriv else ()


def _pump(
    stream: IO[bytes], name: Literal["stdout", "stderr"], request: ExecutorInput, host: Host
) -> None:
    for raw in iter(stream.readline, b""):
        host.log(request.step_id, name, raw.decode("utf-8", "replace").rstrip("\r\n"))
    stream.close()
