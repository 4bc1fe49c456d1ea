"""SHA-256 digests: the names of every object in the store."""

from __future__ import annotations

import hashlib
from pathlib import Path

from greenloop._sha256 import is_sha256
from greenloop.store.exceptions import StoreError

CHUNK_SIZE = 1 << 20
"""Bytes read or written at a time, so large files never sit whole in memory."""


def is_digest(value: str) -> bool:
    """True when ``value`` is a lowercase hex SHA-256 (the only names objects have)."""
    return is_sha256(value)


def check_digest(value: str) -> str:
    """Return ``value`` unchanged, or raise :class:`StoreError` if it is not a digest."""
    if not is_digest(value):
        raise StoreError(f"not a store digest (want 64 lowercase hex characters): {value!r}")
    return value


def digest_bytes(data: bytes) -> str:
    """The SHA-256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def digest_file(path: Path) -> str:
    """The SHA-256 hex digest of the file at ``path``, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            h.update(chunk)
    return h.hexdigest()
