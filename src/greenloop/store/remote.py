"""Share the cache across machines through a Bazel remote-cache HTTP server.

The server speaks Bazel's HTTP remote-cache protocol, the one nginx with
WebDAV, bazel-remote and most build-cache services understand:

* ``GET``/``HEAD``/``PUT {base}/cas/<sha256>`` -- content blobs, named by the
  SHA-256 of their bytes. Our objects are already named that way, so a store
  blob *is* a CAS blob (a tree is its manifest blob).
* ``GET``/``PUT {base}/ac/<sha256>`` -- cache entries. The address is
  :func:`ac_key` of our cache key, and the body is a :class:`RemoteEntry`: our
  own versioned JSON document, not Bazel's ``ActionResult`` protobuf.

``{base}`` is the configured URL, so a path there acts as Bazel's instance
name (``https://cache.example/team-a/cas/...``). Credentials come from the
URL's ``user:password@`` (basic auth) or ``GREENLOOP_REMOTE_CACHE_TOKEN``
(bearer, which wins when both are given). TLS trust follows ``SSL_CERT_FILE``
or ``SSL_CERT_DIR`` when set.

What travels is an entry and every object it references: the tree behind its
snapshot ref (for the ``local`` executor, whose snapshots are store trees) and
its artifacts. Entries whose snapshot is not a store tree -- the ``docker``
executor's image tags, which live in one machine's engine -- are never
published: a child on another machine would boot from an image it does not
have.

Lookups fetch lazily where that is safe. Before
:meth:`HttpRemoteCache.lookup` reports a hit, the entry's artifacts (read by
the run's caller, possibly after the client has closed) and its snapshot's
manifest are in the local store, and the server has answered ``HEAD`` for
each of the snapshot's other blobs. Those blobs are downloaded only if a step
boots from the snapshot: the client is the store's fetcher
(:meth:`~greenloop.store.Store.set_fetcher`) while it is open. A fully cached
run therefore downloads no snapshot content at all.

Failure is never fatal. A server that is down, slow or refuses us turns every
later request into a local miss for the rest of the run; one that lies (bytes
that do not match their hash, an invalid entry document) makes that lookup a
miss. Either way the run prints one warning line, once. The exception is a
snapshot blob fetched on demand: by then the step that owns the snapshot was
reported cached, so when the blob cannot be had the read raises
:class:`~greenloop.store.StoreError` and the step that needed it fails with
that message. Nothing reaches the local store unverified: each blob is
checked against its digest before it is stored, and each entry document is
validated before it is used, and no body is read past the size the entry
document gives its objects (see :attr:`RemoteEntry.max_object_bytes`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from greenloop.protocol import ArtifactRef
from greenloop.store.digests import is_digest
from greenloop.store.index import CacheEntry
from greenloop.store.store import Store

if TYPE_CHECKING:
    from greenloop.store.remote_http import HttpRemoteCache

__all__ = [
    "DEFAULT_JOBS",
    "DEFAULT_TIMEOUT_S",
    "ENTRY_FORMAT",
    "MODES",
    "REMOTE_CACHE_ENV",
    "REMOTE_CACHE_MODE_ENV",
    "REMOTE_CACHE_TIMEOUT_ENV",
    "REMOTE_CACHE_TOKEN_ENV",
    "HttpRemoteCache",
    "RemoteEntry",
    "RemoteMode",
    "Warn",
    "ac_key",
    "check_mode",
    "open_remote",
]

REMOTE_CACHE_ENV = "GREENLOOP_REMOTE_CACHE"
"""Environment variable naming the remote cache URL (``--remote-cache`` overrides it)."""
REMOTE_CACHE_MODE_ENV = "GREENLOOP_REMOTE_CACHE_MODE"
"""Environment variable holding the mode, ``read`` or ``readwrite`` (the default)."""
REMOTE_CACHE_TOKEN_ENV = "GREENLOOP_REMOTE_CACHE_TOKEN"
"""Environment variable holding a bearer token sent with every request."""
REMOTE_CACHE_TIMEOUT_ENV = "GREENLOOP_REMOTE_CACHE_TIMEOUT"
"""Environment variable overriding the per-request timeout, in seconds."""

RemoteMode = Literal["read", "readwrite"]
"""``read`` only looks entries up; ``readwrite`` also publishes what this machine builds."""
MODES: tuple[RemoteMode, ...] = get_args(RemoteMode)
"""Every valid mode."""

ENTRY_FORMAT = 2
"""Version of the :class:`RemoteEntry` document written today (2: ``max_object_bytes``)."""

DEFAULT_TIMEOUT_S = 30.0
"""Seconds a request may wait on the network (connecting, or between body chunks)."""
DEFAULT_JOBS = 8
"""Blob transfers in flight at once."""

Warn = Callable[[str], None]
"""Receives the one warning line a run prints about its remote."""

_Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


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


def open_remote(
    store: Store,
    url: str | None = None,
    mode: str | None = None,
    *,
    warn: Warn | None = None,
) -> HttpRemoteCache | None:
    """The remote cache configured by arguments or the environment, or None when none is.

    ``url`` and ``mode`` win over ``GREENLOOP_REMOTE_CACHE`` and
    ``GREENLOOP_REMOTE_CACHE_MODE``; an empty ``url`` turns the remote off.
    The token and timeout come from ``GREENLOOP_REMOTE_CACHE_TOKEN`` and
    ``GREENLOOP_REMOTE_CACHE_TIMEOUT``. Raises :class:`ValueError` for a
    setting that cannot work.
    """
    url = os.environ.get(REMOTE_CACHE_ENV, "") if url is None else url
    if not url.strip():
        return None
    chosen = check_mode(mode or os.environ.get(REMOTE_CACHE_MODE_ENV) or "readwrite")
    raw_timeout = os.environ.get(REMOTE_CACHE_TIMEOUT_ENV)
    try:
        timeout = float(raw_timeout) if raw_timeout else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{REMOTE_CACHE_TIMEOUT_ENV} must be seconds: {raw_timeout!r}") from None
    token = os.environ.get(REMOTE_CACHE_TOKEN_ENV) or None
    # remote_http imports this module, so it is imported on use, not at the top.
    from greenloop.store.remote_http import HttpRemoteCache

    return HttpRemoteCache(
        store,
        url.strip(),
        mode=chosen,
        token=token,
        timeout=timeout,
        warn=warn,
    )


def check_mode(mode: str) -> RemoteMode:
    """``mode`` as a :data:`RemoteMode`; :class:`ValueError` if it is not one."""
    for known in MODES:
        if mode == known:
            return known
    raise ValueError(f"remote cache mode must be one of {', '.join(MODES)}: {mode!r}")


def __getattr__(name: str) -> object:
    # HttpRemoteCache lives in remote_http (which imports this module), so it
    # is resolved on first access rather than imported at the top.
    if name == "HttpRemoteCache":
        from greenloop.store.remote_http import HttpRemoteCache

        return HttpRemoteCache
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
