"""The object directory: immutable blobs named by their SHA-256.

Layout is ``objects/<first 2 hex>/<remaining 62 hex>``. Every write goes to a
``.tmp-`` file on the same filesystem, is fsynced, then renamed over the final
name, so a reader sees either no object or the whole object, never a prefix.
Writers need no locks: two processes storing the same bytes rename identical
files over each other. A finished step's new files are linked in instead of
copied (:meth:`ObjectDir.adopt_files`), their bytes synced before the link.

Every object read to its end is checked against its name on the way (the bytes
are hashed as they pass, so it costs no second read): a damaged object is
removed and the read fails with :class:`CorruptObject`.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from greenloop._fs import fsync_dir, pid_alive, sync_filesystem
from greenloop.store.exceptions import CorruptObject, StoreError
from greenloop.store.hashing import (
    CHUNK_SIZE,
    check_digest,
    digest_bytes,
    digest_file,
    is_digest,
)
from greenloop.store.layout import TEMP_PREFIX, temp_prefix, temp_writer

_OBJECT_MODE = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
"""Objects are read-only so that a careless writer through blob_path fails loudly."""

_PUT_FILE_ATTEMPTS = 3


@dataclass(frozen=True)
class ObjectFile:
    """One file found under ``objects/`` while scanning (for gc, verify, sizing)."""

    path: Path
    digest: str | None
    """The object's digest, or None for temp files and stray names."""
    is_temp: bool
    size: int
    mtime: float
    writer: int | None = None
    """For a temp file, the pid of the process that writes it, when its name records one."""

    @property
    def abandoned(self) -> bool:
        """A temp file whose writer is known to be gone (killed mid-write): never finished."""
        return self.is_temp and self.writer is not None and not pid_alive(self.writer)


class ObjectDir:
    """Reads and atomically writes the blobs under one ``objects/`` directory."""

    def __init__(self, directory: Path) -> None:
        """Use ``directory`` (which must already exist) as the object directory."""
        self.directory = directory

    def path_for(self, digest: str) -> Path:
        """Where the object named ``digest`` lives (whether or not it exists)."""
        check_digest(digest)
        return self.directory / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        """True when the object ``digest`` is stored."""
        return self.path_for(digest).is_file()

    def existing_path(self, digest: str) -> Path:
        """The path of the stored object ``digest``; :class:`StoreError` if absent."""
        path = self.path_for(digest)
        if not path.is_file():
            raise StoreError(f"object {digest} is not in the store at {self.directory.parent}")
        return path

    def open(self, digest: str, on_corrupt: OnCorrupt | None = None) -> BinaryIO:
        """Open the object ``digest`` for binary reading; the caller closes it.

        A read that reaches the end checks the bytes against ``digest``: when
        they differ the read raises :class:`CorruptObject`, after
        ``on_corrupt`` (when given; else :meth:`discard_corrupt`) has dealt with
        the object and said what was done.
        """
        path = self.existing_path(digest)
        try:
            raw = open(path, "rb", buffering=0)  # noqa: SIM115 -- closed with the reader
        except FileNotFoundError as exc:
            # A concurrent gc can remove an unreferenced object between the check and the open.
            raise StoreError(f"object {digest} disappeared while being opened") from exc
        return io.BufferedReader(_Verifying(raw, digest, self, on_corrupt))

    def discard_corrupt(self, digest: str) -> None:
        """Remove object ``digest`` if its bytes do not hash to its name."""
        path = self.path_for(digest)
        try:
            # Hashed again first: another process may have replaced it with a
            # sound copy since our read, and that one stays.
            if digest_file(path) != digest:
                path.unlink()
        except FileNotFoundError:
            pass

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; return its digest. Idempotent."""
        try:
            return self._put_bytes(data)
        except OSError as exc:
            raise StoreError(f"could not store an object in {self.directory}: {exc}") from exc

    def _put_bytes(self, data: bytes) -> str:
        digest = digest_bytes(data)
        final = self.path_for(digest)
        if self._reuse(final):
            return digest
        fd, tmp = self._temp_in(final.parent)
        with _cleanup_on_error(tmp):
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                _seal(fh)
            _publish(tmp, final)
        return digest

    def put_file(self, path: Path, *, verify_existing: bool = False) -> str:
        """Store the file at ``path`` in chunks; return its digest. Idempotent.

        ``verify_existing`` reads an already stored copy back and replaces it if
        it is damaged (for an object used as it is stored, without a read
        through :meth:`open`).
        """
        try:
            return self._put_file(path, verify_existing)
        except OSError as exc:
            raise StoreError(f"could not store {path}: {exc}") from exc

    def _put_file(self, path: Path, verify_existing: bool) -> str:
        # The file is hashed first so that content already in the store costs
        # one read and no write or fsync -- the common case when re-storing a
        # workspace. The copy pass re-hashes, and a mismatch means the file
        # changed underneath us; we retry rather than store a torn mix.
        for _ in range(_PUT_FILE_ATTEMPTS):
            digest = digest_file(path)
            final = self.path_for(digest)
            if self._reuse(final):
                if not verify_existing or digest_file(final) == digest:
                    return digest
                self.discard_corrupt(digest)
            fd, tmp = self._temp_in(final.parent)
            with _cleanup_on_error(tmp):
                with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                    copied = _copy_hashing(src, out)
                    _seal(out)
                if copied == digest:
                    _publish(tmp, final)
                    return digest
                Path(tmp).unlink(missing_ok=True)
        raise StoreError(f"{path} kept changing while being stored; try again once it settles")

    def put_stream(self, stream: BinaryIO) -> str:
        """Store everything read from ``stream`` in chunks; return its digest. Idempotent."""
        try:
            return self._put_stream(stream)
        except OSError as exc:
            raise StoreError(f"could not store an object in {self.directory}: {exc}") from exc

    def _put_stream(self, stream: BinaryIO) -> str:
        # A stream can be read only once, so its digest (and therefore its
        # shard directory) is unknown until the end. The temp file lives in
        # objects/ itself -- the shards' parent, so still the same filesystem
        # and still an atomic rename.
        fd, tmp = self._temp_in(self.directory)
        with _cleanup_on_error(tmp):
            with os.fdopen(fd, "wb") as out:
                digest = _copy_hashing(stream, out)
                final = self.path_for(digest)
                reused = self._reuse(final)
                if not reused:
                    _seal(out)
            if reused:
                Path(tmp).unlink()
            else:
                _publish(tmp, final)
        return digest

    def put_files(self, paths: Sequence[Path]) -> list[str]:
        """Store many files (a step's new tree); their digests, in order. Idempotent.

        Made durable together: the files are copied (hashing as they go) without
        an fsync each, the filesystem is synced once, they are renamed into place,
        and it is synced once more for the renames. Two fsyncs a file made a
        fresh 7,500-file virtualenv take 7x as long to store as to copy.
        """
        try:
            with ThreadPoolExecutor(max_workers=4) as pool:
                staged = list(pool.map(self._stage, paths))
            if any(tmp for _, tmp in staged):
                sync_filesystem(self.directory)
                for digest, tmp in staged:
                    if tmp is not None:
                        os.replace(tmp, self.path_for(digest))
                sync_filesystem(self.directory)
        except OSError as exc:
            raise StoreError(f"could not store {len(paths)} files: {exc}") from exc
        return [digest for digest, _ in staged]

    def adopt_files(self, paths: Sequence[Path]) -> list[str]:
        """Store files nobody writes again (a finished step's upper layer) by linking them
        in rather than copying; their digests, in order.

        A linked object shares its inode with ``paths``: whoever passes them
        promises never to write to them again (they are deleted, or kept as a
        checkout, which is only ever an overlay's read-only lower layer). The
        bytes are synced before any name points at them, so a crash leaves no
        object with the wrong content. A file on another filesystem, or one
        that changed while it was hashed, is copied as :meth:`put_files` does.
        """
        try:
            with ThreadPoolExecutor(max_workers=4) as pool:
                hashed = list(pool.map(_hash_with_stat, paths))
            copies: list[Path] = []
            if not all(self._reuse(self.path_for(digest)) for digest, _ in hashed):
                sync_filesystem(self.directory)
                for path, (digest, before) in zip(paths, hashed, strict=True):
                    if not self._link(path, digest, before):
                        copies.append(path)
                sync_filesystem(self.directory)
        except OSError as exc:
            raise StoreError(f"could not store {len(paths)} files: {exc}") from exc
        # A file that changed while it was hashed is stored as it is now.
        copied = dict(zip(copies, self.put_files(copies), strict=True))
        return [copied.get(path, d) for path, (d, _) in zip(paths, hashed, strict=True)]

    def _link(self, path: Path, digest: str, before: os.stat_result) -> bool:
        """Link ``path`` in as object ``digest``; False when it must be copied instead."""
        final = self.path_for(digest)
        if self._reuse(final):
            return True
        final.parent.mkdir(exist_ok=True)
        try:
            os.link(path, final)
        except FileExistsError:
            return True  # another writer stored the same bytes meanwhile
        except OSError:
            return False  # another filesystem, too many links, not allowed
        after = os.stat(final)
        if (after.st_ino, after.st_size, after.st_mtime_ns) != (
            before.st_ino,
            before.st_size,
            before.st_mtime_ns,
        ):
            final.unlink()  # written to while hashed: not these bytes after all
            return False
        # Read-only like every object, keeping the execute bits: a root step's upper
        # layer, kept as its checkout, is given its tree's modes from them afterwards.
        os.chmod(final, _OBJECT_MODE | (before.st_mode & 0o111))
        return True

    def _stage(self, path: Path) -> tuple[str, str | None]:
        """Copy ``path`` into a temp file here; its digest, and the temp file unless the
        object is stored already. (Sealed but not synced: :meth:`put_files` syncs.)"""
        # Hashed first: content already stored costs one read and no write.
        digest = digest_file(path)
        final = self.path_for(digest)
        if self._reuse(final):
            return digest, None
        fd, tmp = self._temp_in(final.parent)
        with _cleanup_on_error(tmp):
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                copied = _copy_hashing(src, out)
                out.flush()
                os.fchmod(out.fileno(), _OBJECT_MODE)
            if copied != digest:
                raise StoreError(f"{path} changed while being stored")
        return digest, tmp

    def scan(self) -> Iterator[ObjectFile]:
        """Every regular file under the object directory, including temp files."""
        for shard in _entries(self.directory):
            if shard.is_dir(follow_symlinks=False):
                for item in _entries(Path(shard.path)):
                    found = _describe(item, shard.name)
                    if found is not None:
                        yield found
            else:
                found = _describe(shard, None)
                if found is not None:
                    yield found

    def _reuse(self, final: Path) -> bool:
        # Refreshing the mtime of an object we are about to rely on keeps a
        # concurrent gc's grace period from collecting it before our caller
        # records a reference to it.
        try:
            os.utime(final)
        except FileNotFoundError:
            return False
        except PermissionError:
            # Someone else's object on a shared cache: it exists, so reuse it.
            return final.is_file()
        return True

    def scratch_file(self, suffix: str = "") -> IO[bytes]:
        """A temp file on the objects' filesystem, deleted when closed.

        Were its writer killed, gc and verify see it as that writer's leftover.
        """
        return tempfile.NamedTemporaryFile(dir=self.directory, prefix=temp_prefix(), suffix=suffix)

    def _temp_in(self, directory: Path) -> tuple[int, str]:
        directory.mkdir(exist_ok=True)
        return tempfile.mkstemp(prefix=temp_prefix(), dir=directory)


OnCorrupt = Callable[[str], str]
"""Deals with the damaged object of the digest it is given; returns what the failed read says."""


class _Verifying(io.RawIOBase):
    """An object's file that hashes what is read and, at its end, checks it."""

    def __init__(
        self, raw: io.FileIO, digest: str, objects: ObjectDir, on_corrupt: OnCorrupt | None
    ) -> None:
        super().__init__()
        self._raw = raw
        self._digest = digest
        self._objects = objects
        self._on_corrupt = on_corrupt
        self._hash = hashlib.sha256()
        self._verdict: str | None = None  # set at the end: "" when sound, else the error

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._raw.fileno()

    def readinto(self, buffer: Any) -> int:
        if self._verdict:
            raise CorruptObject(self._digest, self._verdict)
        n = self._raw.readinto(buffer) or 0
        if n:
            self._hash.update(memoryview(buffer)[:n])
        elif self._verdict is None:
            self._verdict = "" if self._hash.hexdigest() == self._digest else self._damaged()
            if self._verdict:
                raise CorruptObject(self._digest, self._verdict)
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()

    def _damaged(self) -> str:
        if self._on_corrupt is not None:
            return self._on_corrupt(self._digest)
        self._objects.discard_corrupt(self._digest)
        return f"object {self._digest} does not match its hash (damaged on disk); removed it"


@contextmanager
def _cleanup_on_error(tmp: str) -> Iterator[None]:
    """Remove the temp file if the block raises; once renamed it is no longer there."""
    try:
        yield
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _seal(fh: BinaryIO) -> None:
    fh.flush()
    os.fchmod(fh.fileno(), _OBJECT_MODE)
    os.fsync(fh.fileno())


def _publish(tmp: str, final: Path) -> None:
    final.parent.mkdir(exist_ok=True)  # a streamed object's shard may not exist yet
    os.replace(tmp, final)
    # Without this the rename itself may not survive a crash, leaving an index
    # entry that points at an object the disk never recorded.
    fsync_dir(final.parent)


def _hash_with_stat(path: Path) -> tuple[str, os.stat_result]:
    """``path``'s digest and its stat from before it was read."""
    before = os.stat(path)
    return digest_file(path), before


def _copy_hashing(src: BinaryIO, out: BinaryIO) -> str:
    h = hashlib.sha256()
    while chunk := src.read(CHUNK_SIZE):
        h.update(chunk)
        out.write(chunk)
    return h.hexdigest()


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            return list(it)
    except FileNotFoundError:
        return []


def _describe(entry: os.DirEntry[str], shard: str | None) -> ObjectFile | None:
    try:
        st = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None  # removed by a concurrent writer or gc while we looked
    if not stat.S_ISREG(st.st_mode):
        return None
    is_temp = entry.name.startswith(TEMP_PREFIX)
    digest = None
    if shard is not None and len(shard) == 2 and not is_temp and is_digest(shard + entry.name):
        digest = shard + entry.name
    writer = temp_writer(entry.name) if is_temp else None
    return ObjectFile(Path(entry.path), digest, is_temp, st.st_size, st.st_mtime, writer)
