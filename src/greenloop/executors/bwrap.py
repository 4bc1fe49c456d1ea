"""The local executor's ``bwrap`` sandbox: a step's root is an overlay mount under bubblewrap.

The step's root folder is a kernel overlay mount, made in a fresh user and
mount namespace (util-linux ``unshare`` and ``mount``, no privileges needed):
the parent snapshot's shared read-only checkout is the lower layer, a small
"skeleton" of mount points below it, and a fresh upper folder takes every
write. bubblewrap binds that root at ``/`` -- so ``workdir`` is at its real
path and absolute paths survive from step to step -- with the host's system
folders (and the tools on ``PATH``) read-only over it, a private ``/tmp`` and
``$HOME``, and the network unless the step is offline. The mount lives only
as long as the namespace: a killed run leaves no mount behind.

The mount is ``volatile``: overlayfs then never syncs the upper folder's
filesystem, where it otherwise syncs all of it when the mount goes, so each
step waited for every dirty page on the disk (the last step's freshly
written tree, another program's writes): 80-160 ms for the first child of a
6,000-file install, against 15 ms. Nothing is lost by it: an upper folder is
never mounted again, and the commit syncs what the store keeps
(:meth:`~greenloop.store.Store.adopt_files`).

Committing reads only the upper folder: its files, its whiteouts (character
devices 0/0: deletions) and its opaque directories (``*.overlay.opaque``: a
folder that was removed and made anew) turn the parent's tree into the step's
(:func:`read_upper`). So checkout and commit cost what the step changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from greenloop._fs import write_atomically
from greenloop.executors.host_tools import venv_home
from greenloop.protocol.ir import Sandbox
from greenloop.store.exceptions import StoreError
from greenloop.store.trees import TreeEntry, normalize_mode

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
"""Host folders every sandboxed step sees read-only (those that exist here)."""

PRIVATE_DIRS = ("/tmp", "/proc", "/dev")
"""Folders a sandboxed step gets fresh: never from the host, never in a snapshot."""

_OPAQUE = ("user.overlay.opaque", "trusted.overlay.opaque")

# Runs in the new namespaces: mount the overlay, run bubblewrap, and copy the
# declared artifacts out of the merged root while it is still mounted.
_WRAPPER = """
opts=$1 merged=$2 saved=$3 list=$4 input=$5
shift 5
mount -t overlay overlay -o "$opts" "$merged" || {
  echo "greenloop: cannot mount the step's overlay root" >&2; exit 125; }
"$@" <"$input"
code=$?
if [ "$code" != 130 ] && [ -s "$list" ]; then
  root=$(realpath "$merged")
  while IFS= read -r p; do
    if [ -e "$merged/$p" ] || [ -L "$merged/$p" ]; then
      # A path that leads out of the root (through a symlink the step made) is
      # named, never copied: it would read the host's files.
      case "$(realpath -m -- "$merged/$p")" in
        "$root"/*) ;;
        *) printf '%s\n' "$p" >> "$saved.escaped"; continue ;;
      esac
      mkdir -p "$saved/$(dirname "$p")" && cp -a "$merged/$p" "$saved/$p" || {
        [ "$code" = 0 ] && exit 126; }
    fi
  done < "$list"
fi
exit "$code"
"""


@dataclass(frozen=True)
class StepRoot:
    """The folders of one sandboxed step, all under one private folder."""

    base: Path
    skeletons: Path | None = None
    """Where skeletons are kept for reuse (by the mount points they hold); without it,
    each step makes its own."""

    @property
    def upper(self) -> Path:
        """The overlay's upper layer: every write of the step lands here."""
        return self.base / "upper"

    @property
    def escaped(self) -> Path:
        """Lists the declared artifacts that led out of the root (never copied)."""
        return self.base / "artifacts.escaped"

    @property
    def saved(self) -> Path:
        """Where the declared artifacts are copied (by root-relative path) once the step passed."""
        return self.base / "artifacts"

    def prepare(self) -> None:
        """Make the empty folders the mount needs."""
        for name in ("upper", "work", "merged", "artifacts"):
            (self.base / name).mkdir(parents=True)

    def remove(self) -> None:
        """Delete every folder of the step (the overlay's work folder is made unreadable)."""
        work = self.base / "work" / "work"
        if work.is_dir():
            os.chmod(work, 0o700)
        shutil.rmtree(self.base, ignore_errors=True)

    def command(
        self,
        lower: Path,
        sandbox: Sandbox,
        workdir: str,
        command: list[str],
        artifacts: Iterable[str],
        env: dict[str, str],
        *,
        interactive: bool = False,
        mounts: Iterable[tuple[Path, str]] = (),
        read_only: Iterable[tuple[Path, str]] = (),
    ) -> list[str]:
        """The argv that runs ``command`` in this root over ``lower`` (see the module doc).

        ``artifacts`` are root-relative paths to copy out when the command ends (unless
        it was cancelled): a failed step's too, for its JUnit report. A
        step reads nothing; an ``interactive`` command (a debug shell) reads the terminal.
        ``mounts`` are (host folder, path in the sandbox) bound read-write: cache folders;
        ``read_only`` are (host file, path in the sandbox) bound read-only: secret files.
        Their mount points live in the lowest layer, so none of them is ever committed.
        """
        binds = _binds(sandbox, env) + [("--bind", str(src), dest) for src, dest in mounts]
        binds += [("--ro-bind", str(src), dest) for src, dest in read_only]
        skeleton = self._skeleton(binds)
        for path in (lower, self.base, skeleton):
            if any(c in os.fspath(path) for c in ",:\\\n"):
                raise ValueError(f"the overlay cannot use {path}: its path has , : or \\ in it")
        (self.base / "artifacts.list").write_text("".join(f"{p}\n" for p in artifacts))
        options = (
            f"lowerdir={lower}:{skeleton},upperdir={self.upper},"
            f"workdir={self.base / 'work'},userxattr,volatile"
        )
        bwrap = [
            "bwrap",
            "--die-with-parent",
            "--unshare-user",
            "--uid",
            str(os.getuid()),
            "--gid",
            str(os.getgid()),
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-cgroup-try",
            *([] if sandbox.network else ["--unshare-net"]),
            "--bind",
            str(self.base / "merged"),
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
        ]
        for option, source, dest in binds:
            bwrap += [option, source, dest] if source else [option, dest]
        bwrap += ["--chdir", workdir, "--", *command]
        return [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "--",
            "sh",
            "-c",
            _WRAPPER,
            "greenloop-sandbox",
            options,
            str(self.base / "merged"),
            str(self.saved),
            str(self.base / "artifacts.list"),
            "/dev/stdin" if interactive else "/dev/null",
            *bwrap,
        ]

    def _skeleton(self, binds: list[tuple[str, str, str]]) -> Path:
        """The lowest layer: the mount points ``binds`` need (and the host's ``/bin ->
        usr/bin`` style links), so bubblewrap never writes them into the upper one.

        Steps with the same mount points share one, made once: a lower layer is
        never written, and making it took a few ms of every step.
        """
        if self.skeletons is None:
            _make_skeleton(self.base / "skeleton", binds)
            return self.base / "skeleton"
        shape = sorted(
            {(dest, bool(source) and not os.path.isdir(source)) for _, source, dest in binds}
        )
        key = hashlib.sha256(repr((shape, SYSTEM_DIRS, PRIVATE_DIRS)).encode()).hexdigest()[:32]
        final = self.skeletons / key
        if not final.is_dir():
            self.skeletons.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.skeletons))
            _make_skeleton(tmp, binds)
            try:
                os.rename(tmp, final)
            except OSError:  # another step made it first
                shutil.rmtree(tmp, ignore_errors=True)
        return final


def _make_skeleton(skeleton: Path, binds: list[tuple[str, str, str]]) -> None:
    """Fill ``skeleton`` with the mount points of ``binds`` and the system links."""
    for path in PRIVATE_DIRS:
        (skeleton / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for _, source, dest in binds:
        point = skeleton / dest.lstrip("/")
        point.parent.mkdir(parents=True, exist_ok=True)
        if source and not os.path.isdir(source):
            point.touch()
        else:
            point.mkdir(exist_ok=True)
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            (skeleton / path.lstrip("/")).symlink_to(os.readlink(path))


def _binds(sandbox: Sandbox, env: dict[str, str]) -> list[tuple[str, str, str]]:
    """(bwrap option, host source, sandbox destination) of every mount after ``/tmp``."""
    binds: list[tuple[str, str, str]] = []
    home = env.get("HOME")
    if home and home.startswith("/"):
        binds.append(("--bind", home, home) if sandbox.home else ("--tmpfs", "", home))
    for path in SYSTEM_DIRS:
        if os.path.isdir(path) and not os.path.islink(path):
            binds.append(("--ro-bind", path, path))
    for path in [*_tool_dirs(env.get("PATH", "")), *sandbox.ro_binds]:
        binds.append(("--ro-bind", path, path))
    for path in sandbox.rw_binds:
        if not os.path.isdir(path):
            raise ValueError(f"rw_binds: {path} is not a folder on this machine")
        binds.append(("--bind", path, path))
    return binds


def _tool_dirs(search_path: str) -> list[str]:
    """The folders on ``PATH`` outside the system folders, so the host's tools keep
    working in the sandbox: a virtualenv's ``bin`` brings the whole virtualenv and
    the Python it was made from, ``~/.cargo/bin`` brings ``~/.rustup``."""
    system = tuple(os.path.realpath(p) + "/" for p in SYSTEM_DIRS)
    found: list[str] = []

    def add(folder: str) -> None:
        inside_system = (os.path.realpath(folder) + "/").startswith(system)
        if os.path.isdir(folder) and not inside_system and folder not in found:
            found.append(folder)

    for entry in search_path.split(os.pathsep):
        if not entry.startswith("/") or not os.path.isdir(entry):
            continue
        entry = entry.rstrip("/") or "/"
        parent = os.path.dirname(entry)
        config = os.path.join(parent, "pyvenv.cfg")
        if os.path.isfile(config):
            add(parent)
            base = venv_home(config)
            if base is not None:
                add(os.path.dirname(base))
        else:
            add(entry)
        if entry.endswith("/.cargo/bin"):
            add(os.path.join(os.path.dirname(parent), ".rustup"))
    return found


def root_relative(workdir: str, path: str) -> str:
    """``path`` (relative to ``workdir``, or absolute) as a path relative to the root;
    ValueError when it leaves the root."""
    joined = os.path.normpath(os.path.join(workdir, path))
    rel = PurePosixPath(joined).relative_to("/")
    if not rel.parts or ".." in rel.parts:
        raise ValueError(f"path {path!r} escapes the step's root")
    return rel.as_posix()


@dataclass(frozen=True)
class UpperLayer:
    """What a step's overlayfs upper layer changed, read from that layer alone."""

    hidden: set[str]
    """Root-relative paths whose lower content (and all below) the layer replaces or deletes."""
    changes: dict[str, TreeEntry]
    """Every entry of the layer, by root-relative path (its files already stored)."""

    def unchanged(self, lower: Path) -> bool:
        """True when laying this over the checkout ``lower`` gives ``lower`` back."""
        replaced = any(os.path.lexists(lower / rel) for rel in self.hidden)
        return not replaced and all(
            entry.kind == "dir" and rel not in self.hidden for rel, entry in self.changes.items()
        )

    def over(self, lower: list[TreeEntry]) -> list[TreeEntry]:
        """The entries of tree ``lower`` with this layer laid over them."""
        kept = [e for e in lower if not _under(e.path, self.hidden)]
        return kept + list(self.changes.values())


def read_upper(
    upper: Path, lower: Path, put_files: Callable[[list[Path]], list[str]], skip: set[str]
) -> UpperLayer:
    """What the upper layer ``upper`` over the checkout ``lower`` changed.

    Its files are stored with ``put_files``, all at once. A whiteout hides
    the lower path (and all below it); a non-directory or an opaque directory
    replaces what ``lower`` had there. Paths in ``skip`` (root-relative) are
    left out, whatever either layer holds. Reads ``upper`` whole, and ``lower``
    only where ``upper`` has a folder.
    """
    hidden: set[str] = set(skip)
    changes: dict[str, TreeEntry] = {}
    files: list[tuple[str, str, int]] = []
    pending: list[tuple[str, str]] = [(os.fspath(upper), "")]
    while pending:
        dir_path, prefix = pending.pop()
        with os.scandir(dir_path) as it:
            children = list(it)
        for child in children:
            rel = prefix + child.name
            if rel in skip:
                continue
            st = child.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if not _is_real_dir(lower / rel) or _opaque(child.path):
                    hidden.add(rel)
                changes[rel] = TreeEntry(rel, "dir", normalize_mode("dir", 0))
                pending.append((child.path, rel + "/"))
                continue
            hidden.add(rel)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                continue  # a whiteout: deleted
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(child.path)
                changes[rel] = TreeEntry(
                    rel, "symlink", normalize_mode("symlink", 0), target=target
                )
            elif stat.S_ISREG(st.st_mode):
                files.append((rel, child.path, st.st_mode))
            else:
                raise StoreError(
                    f"cannot store /{rel}: it is neither a file, a directory nor a symlink"
                )
    blobs = put_files([Path(path) for _, path, _ in files])
    for (rel, _, mode), blob in zip(files, blobs, strict=True):
        changes[rel] = TreeEntry(rel, "file", normalize_mode("file", mode), blob=blob)
    return UpperLayer(hidden, changes)


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def settle_upper(upper: Path, skip: set[str]) -> bool:
    """Turn the upper layer of a step that booted from the empty tree into a checkout of
    its own commit: delete ``skip`` (root-relative), normalise modes. False (and
    ``upper`` no longer usable) when it holds a whiteout or an opaque folder,
    which no checkout has."""
    for rel in skip:
        (upper / rel).unlink(missing_ok=True)
    pending = [os.fspath(upper)]
    while pending:
        with os.scandir(pending.pop()) as it:
            children = list(it)
        for child in children:
            st = child.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if _opaque(child.path):
                    return False
                _forget_overlay(child.path)
                os.chmod(child.path, normalize_mode("dir", 0))
                pending.append(child.path)
            elif stat.S_ISREG(st.st_mode):
                _forget_overlay(child.path)
                os.chmod(child.path, normalize_mode("file", st.st_mode))
            elif not stat.S_ISLNK(st.st_mode):
                return False
    _forget_overlay(os.fspath(upper))
    os.chmod(upper, normalize_mode("dir", 0))
    return True


def _forget_overlay(path: str) -> None:
    """Drop overlayfs's bookkeeping (origin, impure): it means nothing in a lower layer."""
    for name in os.listxattr(path, follow_symlinks=False):
        if name.startswith(("user.overlay.", "trusted.overlay.")):
            os.removexattr(path, name, follow_symlinks=False)


def _opaque(path: str) -> bool:
    for name in _OPAQUE:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def _under(path: str, prefixes: set[str]) -> bool:
    """Whether ``path`` or one of its ancestors is in ``prefixes``."""
    if path in prefixes:
        return True
    cut = path.rfind("/")
    while cut > 0:
        if path[:cut] in prefixes:
            return True
        cut = path.rfind("/", 0, cut)
    return False


_probe_lock = threading.Lock()
_probed: dict[str, str | None] = {}


def unavailable(scratch: Path) -> str | None:
    """Why the bwrap sandbox cannot run on this machine, or None when it can.

    Tried once per process (a ``true`` step in an empty root, in ``scratch``), and
    a success is kept beside ``scratch`` for later processes while nothing it
    depends on has changed (see :func:`_conditions`): the probe starts three
    programs, ~30 ms of every cached run. A failure is never kept.
    """
    key = os.fspath(scratch)
    with _probe_lock:
        if key not in _probed:
            _probed[key] = _probe_unless_it_worked(scratch)
        return _probed[key]


_WORKED = "bwrap-worked"
"""The file, beside the probe's scratch folder, holding the conditions of the last probe
that worked there."""

_PROBE_PATH = "/usr/bin:/bin"
"""The ``PATH`` the probe (and so ``unshare``, ``mount`` and ``bwrap`` in it) runs with."""

_KERNEL_SETTINGS = (
    "/proc/sys/kernel/random/boot_id",
    "/proc/sys/kernel/unprivileged_userns_clone",
    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
    "/proc/sys/user/max_user_namespaces",
    "/proc/sys/user/max_mnt_namespaces",
    "/proc/self/mountinfo",
)
_STATUS_LINES = ("Uid:", "Gid:", "Groups:", "Cap", "NoNewPrivs:", "Seccomp")
_NAMESPACES = ("user", "mnt", "pid", "net", "ipc", "uts", "cgroup")


def _probe_unless_it_worked(scratch: Path) -> str | None:
    with contextlib.suppress(OSError):  # as the probe does (and fails, if it must, as before)
        scratch.mkdir(parents=True, exist_ok=True)  # its filesystem is a condition
    conditions = _conditions(scratch)
    record = scratch.parent / _WORKED
    try:
        if record.read_text() == conditions:
            return None
    except (OSError, UnicodeDecodeError):
        pass  # never probed here, or gone: probe
    why = _probe(scratch)
    if why is None:
        with contextlib.suppress(OSError):  # an unwritable store: the next process probes
            write_atomically(record, conditions.encode(), durable=False)
    return why


def _device(folder: Path) -> int | None:
    try:
        return folder.stat().st_dev
    except OSError:
        return None


def _conditions(scratch: Path) -> str:
    """Everything the probe's answer depends on, as one text: this boot, the programs
    it runs (where ``PATH`` finds them, and their stat), this code, who this process
    is and what it may do (ids, capabilities, seccomp, its namespaces, its mounts), the
    kernel's user-namespace settings, and the filesystem ``scratch`` is on."""

    def stat_of(path: str | None) -> list[object] | None:
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return [
            os.path.realpath(path),
            st.st_dev,
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_mode,
        ]

    def read(path: str) -> str | None:
        try:
            with open(path, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()
        except OSError:
            return None

    def namespace(name: str) -> str | None:
        try:
            return os.readlink(f"/proc/self/ns/{name}")
        except OSError:
            return None

    try:
        with open("/proc/self/status") as f:
            status = [line.strip() for line in f if line.startswith(_STATUS_LINES)]
    except OSError:
        status = []
    programs = {
        name: [stat_of(shutil.which(name)), stat_of(shutil.which(name, path=_PROBE_PATH))]
        for name in ("bwrap", "unshare", "mount", "sh", "true")
    }
    conditions = {
        "format": 1,
        "programs": programs,
        "code": stat_of(__file__),
        "status": status,
        "namespaces": [namespace(name) for name in _NAMESPACES],
        "kernel": [read(path) for path in _KERNEL_SETTINGS],
        "scratch": [os.fspath(scratch), _device(scratch.parent)],
    }
    return json.dumps(conditions, sort_keys=True)


def _probe(scratch: Path) -> str | None:
    for program in ("bwrap", "unshare", "mount"):
        if shutil.which(program) is None:
            return f"{program} is not installed"
    scratch.mkdir(parents=True, exist_ok=True)
    root = StepRoot(Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-probe-", dir=scratch)))
    try:
        root.prepare()
        (root.upper / "w").mkdir()
        (root.base / "empty").mkdir()
        env = {"PATH": "/usr/bin:/bin"}
        argv = root.command(root.base / "empty", Sandbox(mode="bwrap"), "/w", ["true"], [], env)
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    except (OSError, ValueError) as exc:
        return str(exc)
    finally:
        root.remove()
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit {done.returncode}"
    return None
