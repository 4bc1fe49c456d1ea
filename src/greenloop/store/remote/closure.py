"""The objects an entry needs on the server: its roots and, for trees, their blobs."""

from __future__ import annotations

from greenloop.store.store import Store
from greenloop.store.trees import read_manifest


def tree_blobs(store: Store, digest: str) -> list[str] | None:
    """The blobs of tree ``digest`` in ``store``, or None when the object is not a tree."""
    # One parse per tree, and only a few bytes read of a blob that is not
    # one (is_tree + get_tree would parse a tree twice).
    with store.open_blob(digest) as fh:
        entries = read_manifest(fh)
    if entries is None:
        return None
    return [e.blob for e in entries if e.blob is not None]


def closure(store: Store, roots: list[str]) -> list[str]:
    """Every object ``roots`` name: themselves and, for trees, their blobs."""
    out: dict[str, None] = {}
    for root in roots:
        out[root] = None
        out.update(dict.fromkeys(tree_blobs(store, root) or []))
    return list(out)
