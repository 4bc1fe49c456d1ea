"""The latest-green pointer: a small, versioned, strictly parsed text file.

Format (every line newline-terminated, keys in this fixed order)::

    greenloop-latest-green/v1
    input_hash=<64 hex>
    artifact=<64 hex>
    source_tree=<64 hex>
    lockfiles=<64 hex>
    toolchain=<64 hex>
    config=<64 hex>
    pipeline=<64 hex>
    target=<triple>
    profile=dev|release
    published_at=<unix seconds, at most 2**64 - 1>

Unknown keys are tolerated (a newer writer may add some); anything else that is
off is a :class:`PointerFormatError`, never a half-decoded pointer.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from greenloop._sha256 import is_sha256
from greenloop.protocol.devloop import (
    BuildIdentity,
    ContentHash,
    InputHash,
    Profile,
    UnixSeconds,
)

HEADER = "greenloop-latest-green/v1"
_IDENTITY_KEYS = (
    "source_tree",
    "lockfiles",
    "toolchain",
    "config",
    "pipeline",
    "target",
    "profile",
)
KEYS = ("input_hash", "artifact", *_IDENTITY_KEYS, "published_at")

MAX_PUBLISHED_AT = 2**64 - 1
"""The largest ``published_at`` a pointer may carry (an unsigned 64-bit count of seconds)."""


class PointerFormatError(ValueError):
    """The pointer file is not the expected ``greenloop-latest-green/v1`` shape."""


class PublishedArtifact(BaseModel):
    """The latest-green record the publisher writes and ``status`` reads back."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    input_hash: InputHash
    artifact: ContentHash
    identity: BuildIdentity
    published_at: Annotated[UnixSeconds, Field(le=MAX_PUBLISHED_AT)]

    def render(self) -> str:
        """The byte-stable text form."""
        values = {
            "input_hash": self.input_hash,
            "artifact": self.artifact,
            **{k: _text(getattr(self.identity, k)) for k in _IDENTITY_KEYS},
            "published_at": str(self.published_at),
        }
        return "".join([HEADER + "\n", *(f"{k}={values[k]}\n" for k in KEYS)])

    @classmethod
    def parse(cls, text: str | bytes) -> PublishedArtifact:
        """Decode a pointer, or raise :class:`PointerFormatError` saying what is wrong."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                raise PointerFormatError(f"pointer is not UTF-8: {e}") from None
        if not text.endswith("\n"):
            raise PointerFormatError("pointer is not newline-terminated")
        header, *lines = text[:-1].split("\n")
        if header != HEADER:
            raise PointerFormatError(f"bad header {header[:60]!r}, expected {HEADER!r}")
        values: dict[str, str] = {}
        for n, line in enumerate(lines, start=2):
            key, sep, value = line.partition("=")
            if not sep:
                raise PointerFormatError(f"line {n} has no '=': {line[:60]!r}")
            if key in values:
                raise PointerFormatError(f"line {n}: duplicate key {key!r}")
            values[key] = value
        missing = [k for k in KEYS if k not in values]
        if missing:
            raise PointerFormatError(f"missing key(s): {', '.join(missing)}")
        if values["profile"] not in {p.value for p in Profile}:
            raise PointerFormatError(f"bad profile {values['profile'][:30]!r}")
        stamp = values["published_at"]
        if not stamp.isascii() or not stamp.isdigit():
            raise PointerFormatError(f"published_at is not an integer: {stamp[:30]!r}")
        # Checked before int(): past 4,300 digits int() raises a plain ValueError.
        if len(stamp) > len(str(MAX_PUBLISHED_AT)) or int(stamp) > MAX_PUBLISHED_AT:
            raise PointerFormatError(f"published_at is out of range: {stamp[:30]!r}")
        for k in (
            "input_hash",
            "artifact",
            "source_tree",
            "lockfiles",
            "toolchain",
            "config",
            "pipeline",
        ):
            if not is_sha256(values[k]):
                raise PointerFormatError(f"{k} is not a 64-digit hex hash")
        try:
            return cls(
                input_hash=values["input_hash"],
                artifact=values["artifact"],
                identity=BuildIdentity(**{k: values[k] for k in _IDENTITY_KEYS}),
                published_at=int(stamp),
            )
        except ValidationError as e:
            raise PointerFormatError(f"invalid pointer: {e.errors()[0]['msg']}") from None


def _text(value: object) -> str:
    return value.value if isinstance(value, Profile) else str(value)
