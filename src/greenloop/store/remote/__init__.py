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

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from greenloop._lazy import lazy_names
from greenloop.store.remote.settings import (
    DEFAULT_JOBS,
    DEFAULT_TIMEOUT_S,
    MODES,
    REMOTE_CACHE_ENV,
    REMOTE_CACHE_MODE_ENV,
    REMOTE_CACHE_TIMEOUT_ENV,
    REMOTE_CACHE_TOKEN_ENV,
    RemoteMode,
    Warn,
    check_mode,
)
from greenloop.store.store import Store

if TYPE_CHECKING:
    from greenloop.store.remote.entry import ENTRY_FORMAT, RemoteEntry, ac_key
    from greenloop.store.remote.http_cache import HttpRemoteCache

# The client and the entry document load on first use: a run without a remote
# cache reads only the settings here, not the HTTP and TLS stack (~8 ms).
_LAZY = {
    "ENTRY_FORMAT": "entry",
    "RemoteEntry": "entry",
    "ac_key": "entry",
    "HttpRemoteCache": "http_cache",
}


__getattr__ = lazy_names(__name__, _LAZY, globals())


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
    "RemoteSettings",
    "Warn",
    "ac_key",
    "check_mode",
    "open_remote",
    "remote_settings",
]


@dataclass(frozen=True)
class RemoteSettings:
    """A remote cache's configuration, as :func:`remote_settings` reads it."""

    url: str
    mode: RemoteMode
    token: str | None
    timeout: float


def remote_settings(url: str | None = None, mode: str | None = None) -> RemoteSettings | None:
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
    return RemoteSettings(url.strip(), chosen, token, timeout)


def open_remote(
    store: Store,
    url: str | None = None,
    mode: str | None = None,
    *,
    warn: Warn | None = None,
) -> HttpRemoteCache | None:
    """A client for the remote cache :func:`remote_settings` finds, or None when none is."""
    settings = remote_settings(url, mode)
    if settings is None:
        return None
    from greenloop.store.remote.http_cache import HttpRemoteCache

    return HttpRemoteCache(
        store,
        settings.url,
        mode=settings.mode,
        token=settings.token,
        timeout=settings.timeout,
        warn=warn,
    )
