"""The entry document a remote cache stores for one cache key, and its address."""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from greenloop._sha256 import SHA256_PATTERN
from greenloop.protocol import ArtifactRef
from greenloop.store.hashing import is_digest
from greenloop.store.records import CacheEntry

ENTRY_FORMAT = 2
"""Version of the :class:`RemoteEntry` document written today (2: ``max_object_bytes``)."""

_Digest = Annotated[str, Field(pattern=SHA256_PATTERN)]


class RemoteEntry(BaseModel):
    """The action-cache document: one cache entry as stored on the server.

    It carries the :class:`~greenloop.store.CacheEntry` fields a step needs to
    be reused (``last_used`` stays local) plus ``snapshot_tree``, the tree
    digest the snapshot ref named on the publishing machine. The document is
    versioned by its ``greenloop_remote_entry`` field *and* by its address
    (see :func:`ac_key`), so a format change never feeds an old client a body
    it cannot read.
    """

    # defer_build: validators are built on first use, not when `greenloop run` imports us.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    greenloop_remote_entry: Literal[2]
    key: _Digest
    snapshot: Annotated[str, Field(pattern=r"^[!-~]{1,512}$")]
    snapshot_tree: _Digest
    executor: Annotated[str, Field(min_length=1, max_length=128)]
    tree: _Digest | None = None
    artifacts: list[ArtifactRef]
    created_at: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    policy: Annotated[str, Field(max_length=1 << 16)]
    max_object_bytes: Annotated[int, Field(ge=0)]
    """The size of the largest object the entry references, manifests included.

    Our digests carry no size (Bazel's do), so this is what bounds a download:
    a body longer than this is refused as soon as it says so (``Content-Length``)
    or reaches it, instead of being read to the end and only then failing its hash.
    """

    @classmethod
    def describing(cls, entry: CacheEntry, snapshot_tree: str) -> RemoteEntry:
        """The document for local ``entry`` whose snapshot ref names ``snapshot_tree``
        (``max_object_bytes`` still 0: whoever has the objects at hand measures it)."""
        return cls(
            greenloop_remote_entry=ENTRY_FORMAT,
            key=entry.key,
            snapshot=entry.snapshot,
            snapshot_tree=snapshot_tree,
            executor=entry.executor,
            tree=entry.tree,
            artifacts=entry.artifacts,
            created_at=entry.created_at,
            policy=entry.policy,
            max_object_bytes=0,
        )

    def as_entry(self, now: float) -> CacheEntry:
        """The local cache entry this document describes, first used at ``now``."""
        return CacheEntry(
            key=self.key,
            snapshot=self.snapshot,
            executor=self.executor,
            tree=self.tree,
            artifacts=list(self.artifacts),
            # A clock ahead of ours (or a lie) must not stretch a ttl policy.
            created_at=min(self.created_at, now),
            last_used=now,
            policy=self.policy,
        )

    @field_validator("artifacts")
    @classmethod
    def _artifacts_are_objects(cls, refs: list[ArtifactRef]) -> list[ArtifactRef]:
        # An artifact key is a store object name; anything else could make the
        # store read or write a path of the server's choosing.
        for ref in refs:
            if not is_digest(ref.key):
                raise ValueError(f"artifact key {ref.key!r} is not a sha256 digest")
        return refs

    def roots(self) -> list[str]:
        """The objects the entry references directly (trees expand to their blobs)."""
        roots = [self.snapshot_tree, *(a.key for a in self.artifacts)]
        if self.tree is not None:
            roots.append(self.tree)
        return list(dict.fromkeys(roots))


def ac_key(key: str) -> str:
    """The action-cache address of cache key ``key``.

    Our keys are already SHA-256 hex, but they are hashed again with a
    greenloop- and format-specific prefix: the result stays a valid Bazel AC
    key while greenloop's entries can share a server with Bazel's without ever
    landing on the same address, and a new :data:`ENTRY_FORMAT` gets fresh
    addresses instead of overwriting documents older clients still read.
    """
    return hashlib.sha256(f"greenloop-remote-entry/{ENTRY_FORMAT}\0{key}".encode()).hexdigest()
