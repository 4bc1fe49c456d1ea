"""The workspace: the project's files as a run keys them, and their archive in the store.

The archive is a deterministic tar (sorted, zero times and owners, git-style
modes), so its digest changes exactly when the workspace content does.
Executors read it in chunks through the host by :data:`ArchiveId`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

from greenloop.engine.git import GitMetadata, git_dir
from greenloop.engine.git import read as git_metadata
from greenloop.engine.project_files import project_files
from greenloop.protocol.errors import SetupError
from greenloop.store import Store

if TYPE_CHECKING:
    import tarfile

_READ = 1 << 20
_FULL = (errno.ENOSPC, errno.EDQUOT)


class Workspace:
    """The project's files as a run keys them (each one's content digest), and their
    archive, packed into the store only when a step is to run.

    A fully cached run never needs the archive, so it is not written (nor read
    back to be checked) then. When it is packed, each file's content must still
    be what its digest says: a step never runs on bytes other than its key's.
    """

    def __init__(
        self, root: Path, store: Store, files: dict[str, str], git: GitMetadata | None = None
    ) -> None:
        self.root = root
        self.files = files
        """Each file's path (posix, relative to ``root``) and digest (its content's, the
        mode's too for an executable: see ``_keyed``)."""
        self.git = git
        """The repository's HEAD, when a step asks for git metadata."""
        self._store = store
        self._archive: str | None = None
        self._git_archive: str | None = None
        self._lock = threading.Lock()

    def archive(self) -> str:
        """The digest of the workspace archive in the store (packed on first use)."""
        with self._lock:
            if self._archive is None:
                self._archive = _pack(self.root, self._store, self.files)
            return self._archive

    def git_archive(self) -> str | None:
        """The archive with a ``.git`` for :attr:`git` laid beside the files, when
        the run asked for git metadata."""
        if self.git is None:
            return None
        archive = self.archive()
        with self._lock:
            if self._git_archive is None:
                self._git_archive = _with_git(self.root, self._store, archive, self.git)
            return self._git_archive


def pack(root: Path, store: Store, *, git: bool = False) -> Workspace:
    """The project at ``root`` as a run keys it: each file's digest (its archive is packed
    by :meth:`Workspace.archive`, when needed).

    The store itself is never part of it, even when it lies inside the project. With
    ``git``, the repository's HEAD too (see :mod:`greenloop.engine.git`).
    """
    files: dict[str, str] = {}
    inside = _inside(store.root, root)
    for rel in project_files(root):
        if inside is not None and (rel + "/").startswith(inside):
            continue
        digest = _digest(root / rel, rel)
        if digest is not None:
            files[rel] = digest
    return Workspace(root, store, files, git_metadata(root) if git else None)


def _pack(root: Path, store: Store, files: dict[str, str]) -> str:
    """Pack ``files`` into a deterministic tar stored in ``store``; its digest."""
    import tarfile  # only a run with a step to run packs

    with store.scratch_file(suffix=".tar") as tmp:
        try:
            with tarfile.open(fileobj=tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for rel, keyed in files.items():
                    if _add(tar, root / rel, rel) != keyed:
                        raise SetupError(
                            f"{rel} changed while the run was starting (its steps are keyed "
                            "on what it held before); run again"
                        )
            tmp.flush()
        except OSError as e:
            if e.errno not in _FULL:
                raise
            raise SetupError(
                f"cannot pack the workspace into the store at {store.root}: {e.strerror}"
            ) from None
        # Executors read the archive by path, unchecked: make sure the stored copy is sound.
        return store.put_file(Path(tmp.name), verify_existing=True)


def _with_git(root: Path, store: Store, archive: str, meta: GitMetadata) -> str:
    """The workspace ``archive`` with a ``.git`` for ``meta`` added; its digest."""
    import tarfile

    with (
        tempfile.TemporaryDirectory(prefix="greenloop-git-") as scratch,
        store.scratch_file(".tar") as tmp,
    ):
        dot_git = git_dir(root, meta, Path(scratch))
        with tarfile.open(fileobj=tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
            with tarfile.open(store.blob_path(archive), mode="r|") as files:
                for member in files:
                    tar.addfile(member, files.extractfile(member) if member.isfile() else None)
            for path in sorted(p for p in dot_git.rglob("*") if p.is_file()):
                _add(tar, path, f".git/{path.relative_to(dot_git).as_posix()}")
        tmp.flush()
        return store.put_file(Path(tmp.name), verify_existing=True)


def _inside(folder: Path, root: Path) -> str | None:
    """``folder`` as a ``rel/`` prefix when it lies inside ``root``, else None."""
    try:
        return folder.resolve().relative_to(root.resolve()).as_posix().rstrip("/") + "/"
    except ValueError:
        return None


def _add(tar: tarfile.TarFile, path: Path, rel: str) -> str | None:
    import tarfile

    try:
        st = path.lstat()
    except FileNotFoundError:
        return None  # deleted while we were packing
    info = tarfile.TarInfo(rel)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        info.mode = 0o777
        tar.addfile(info)
        return hashlib.sha256(b"link:" + info.linkname.encode()).hexdigest()
    if not stat.S_ISREG(st.st_mode):
        return None
    info.mode = 0o755 if st.st_mode & 0o111 else 0o644
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            info.size = os.fstat(f.fileno()).st_size
            tar.addfile(info, _Hashing(f, h))
    except FileNotFoundError:
        return None  # deleted while we were packing
    except OSError as e:
        if e.errno in _FULL:
            raise  # the archive's disk is full, not this file at fault
        # Unreadable, or it shrank while being copied: the archive cannot be trusted.
        raise SetupError(f"cannot pack {rel} into the workspace: {e.strerror or e}") from None
    return _keyed(h.hexdigest(), info.mode == 0o755)


def _keyed(content: str, executable: bool) -> str:
    """A regular file's digest as steps are keyed on it: its content's, and for an
    executable its mode too (a script that lost its execute bit fails where it passed)."""
    return hashlib.sha256(f"exec:{content}".encode()).hexdigest() if executable else content


def _digest(path: Path, rel: str) -> str | None:
    """What :func:`_add` would return for ``path``, read without packing it."""
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            return hashlib.sha256(b"link:" + os.readlink(path).encode()).hexdigest()
        if not stat.S_ISREG(st.st_mode):
            return None
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_READ):
                h.update(chunk)
    except FileNotFoundError:
        return None  # deleted while we were reading
    except OSError as e:
        raise SetupError(f"cannot pack {rel} into the workspace: {e.strerror or e}") from None
    return _keyed(h.hexdigest(), bool(st.st_mode & 0o111))


class _Hashing:
    """A reader that hashes what passes through it, so each file is read once."""

    def __init__(self, f: object, h: hashlib._Hash) -> None:
        self._f = f
        self._h = h

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._f.read(n)  # type: ignore[attr-defined]
        self._h.update(data)
        return data


class ArchiveRegistry:
    """Serves workspace archives to executors by ``ArchiveId``, chunk by chunk."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._archives: dict[UUID, int] = {}
        self._lock = threading.Lock()
        self._packing = threading.Lock()
        self._ids: dict[tuple[Workspace, bool], UUID] = {}

    def of(self, workspace: Workspace, *, git: bool) -> UUID:
        """The id of ``workspace``'s archive (with a ``.git`` laid in when ``git`` and the
        run asked for one): packed and registered when a step first needs it."""
        with self._packing:  # steps starting together wait for the one archive
            found = self._ids.get((workspace, git))
            if found is None:
                digest = workspace.git_archive() if git else None
                found = self.register(digest or workspace.archive())
                self._ids[workspace, git] = found
            return found

    def register(self, digest: str) -> UUID:
        """Expose the stored archive ``digest`` under a fresh id."""
        archive_id = uuid.uuid4()
        fd = os.open(self._store.blob_path(digest), os.O_RDONLY)
        with self._lock:
            self._archives[archive_id] = fd
        return archive_id

    def read(self, archive_id: UUID, offset: int, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` from ``offset``; empty at the end. Unknown ids raise ``KeyError``."""
        if offset < 0 or max_bytes < 0:
            raise ValueError("offset and max must be non-negative")
        with self._lock:
            fd = self._archives[archive_id]
        return os.pread(fd, min(max_bytes, 16 * _READ), offset)

    def close(self) -> None:
        """Release every archive."""
        with self._lock:
            for fd in self._archives.values():
                os.close(fd)
            self._archives.clear()
