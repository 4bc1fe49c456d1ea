"""``artifact.put``: an executor plugin's artifacts, chunk by chunk, into the host's store."""

from __future__ import annotations

import base64
import binascii
import mimetypes
import os
import shutil
import tarfile
import tempfile
import threading
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from greenloop.plugins.jsonrpc import INVALID_PARAMS, RpcError
from greenloop.plugins.stdio.plugin_process import parse_params
from greenloop.protocol.executor import ArtifactRef, ExecutorInput
from greenloop.store import Store
from greenloop.store.artifacts import store_artifact

MAX_PUT = 4 << 20
"""Largest ``artifact.put`` chunk accepted, in bytes after base64 decoding."""
UPLOADS_DIR = "uploads"
"""Folder of the store where ``artifact.put`` chunks wait for their last one."""


class _ArtifactPut(BaseModel):
    step_id: UUID
    path: str
    kind: Literal["file", "directory"]
    data: str = ""
    offset: int = Field(default=0, ge=0)
    final: bool = True
    mime: str | None = Field(default=None, min_length=1)


class ArtifactUploads:
    """Serves ``artifact.put`` for one step: the plugin's artifacts go into the host's store.

    An artifact arrives in one or more chunks, each at most :data:`MAX_PUT`
    bytes: a file as its bytes, a directory as an uncompressed tar of its
    contents. Chunks are spooled to a file under the store (never held in
    memory whole); ``offset`` 0 starts (or restarts) the upload of a path and
    every later chunk must continue exactly where the last one ended. The
    ``final`` chunk stores the artifact and answers with its ``ArtifactRef``;
    earlier chunks are answered with ``null``. Only the step's declared
    artifacts may be sent, and a tar may hold only relative paths that stay
    inside the directory (no ``..``, no absolute names, no links leading
    out, no devices).
    """

    def __init__(self, store: Store, request: ExecutorInput) -> None:
        self._store = store
        self._step_id = request.step_id
        self._declared = list(request.step.artifacts)
        self._folder = store.root / UPLOADS_DIR / f"{os.getpid()}-{request.step_id}"
        self._spools: dict[str, tuple[str, BinaryIO, int]] = {}  # path -> kind, file, size
        self._lock = threading.Lock()
        self._closed = False

    def put(self, params: Any) -> dict[str, Any] | None:
        """Handle one ``artifact.put`` call (see the class docstring)."""
        p = parse_params(_ArtifactPut, params)
        if p.step_id != self._step_id:
            raise RpcError(INVALID_PARAMS, f"step {p.step_id} is not this plugin's step")
        if p.path not in self._declared:
            declared = ", ".join(repr(d) for d in self._declared) or "none"
            raise RpcError(
                INVALID_PARAMS,
                f"{p.path!r} is not an artifact of this step (declared: {declared})",
            )
        try:
            data = base64.b64decode(p.data, validate=True)
        except binascii.Error as e:
            raise RpcError(INVALID_PARAMS, f"data is not base64: {e}") from None
        if len(data) > MAX_PUT:
            raise RpcError(INVALID_PARAMS, f"a chunk may hold at most {MAX_PUT} bytes")
        with self._lock:
            if self._closed:
                raise RpcError(INVALID_PARAMS, "the step is over")
            spool = self._chunk(p.path, p.kind, p.offset)
            try:
                spool.write(data)
            except BaseException:
                spool.close()  # e.g. a full disk: this upload is over
                raise
            if not p.final:
                self._spools[p.path] = (p.kind, spool, p.offset + len(data))
                return None
            self._spools.pop(p.path, None)
            work = Path(tempfile.mkdtemp(dir=self._folder))
        try:
            with spool:
                spool.flush()
                spool.seek(0)
                ref = self._keep(p.path, p.kind, p.mime, spool, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return ref.model_dump(mode="json")

    def close(self) -> None:
        """Drop every upload that never got its final chunk; refuse any later call."""
        with self._lock:
            self._closed = True
            spools, self._spools = self._spools, {}
        for _, spool, _ in spools.values():
            spool.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _chunk(self, path: str, kind: str, offset: int) -> BinaryIO:
        """The spool the chunk at ``offset`` of ``path`` goes to (a new one at offset 0)."""
        current = self._spools.pop(path, None)
        if offset == 0:
            if current is not None:
                current[1].close()
            self._folder.mkdir(parents=True, exist_ok=True)
            # Unnamed: it vanishes on close, whatever happens to this upload.
            return tempfile.TemporaryFile(dir=self._folder)
        if current is None or current[0] != kind or current[2] != offset:
            had = f"{current[2]} bytes of a {current[0]}" if current else "nothing"
            if current is not None:
                current[1].close()
            raise RpcError(
                INVALID_PARAMS,
                f"artifact {path!r}: a {kind} chunk at offset {offset}, but {had} received "
                "(start again at offset 0)",
            )
        return current[1]

    def _keep(
        self, path: str, kind: str, mime: str | None, spool: BinaryIO, work: Path
    ) -> ArtifactRef:
        """Store the finished upload; sizes and MIME types are worked out as ``local`` does."""
        if kind == "file":
            key = self._store.put_stream(spool)
            size = spool.tell()
            guessed = mimetypes.guess_type(PurePosixPath(path).name)[0]
            return ArtifactRef(
                key=key, mime=mime or guessed or "application/octet-stream", size_bytes=size
            )
        tree = work / "tree"
        tree.mkdir()
        try:
            with tarfile.open(fileobj=spool, mode="r:") as tar:
                members = tar.getmembers()
                for member in members:
                    name = PurePosixPath(member.name)
                    if name.is_absolute() or ".." in name.parts:
                        raise RpcError(
                            INVALID_PARAMS,
                            f"artifact {path!r}: unsafe tar member {member.name!r}",
                        )
                # The data filter refuses links leading out of the tree and devices.
                tar.extractall(tree, members=members, filter="data")
        except (tarfile.TarError, OSError) as e:
            raise RpcError(
                INVALID_PARAMS, f"artifact {path!r}: cannot unpack the tar: {e}"
            ) from None
        return store_artifact(self._store, tree)
