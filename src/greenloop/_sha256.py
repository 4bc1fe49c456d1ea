"""The one spelling of a SHA-256 digest every part of greenloop names things by."""

from __future__ import annotations

import re

SHA256_PATTERN = r"^[0-9a-f]{64}$"
"""A lowercase hex SHA-256, for pydantic ``pattern=`` (whose ``$`` is the very end)."""

_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(value: str) -> bool:
    """True when ``value`` is exactly a lowercase hex SHA-256 (no trailing newline either)."""
    return _SHA256.fullmatch(value) is not None
