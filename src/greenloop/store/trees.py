"""Tree manifests: a whole directory tree named by one hash.

A tree is stored as an ordinary blob whose bytes are canonical JSON::

    {"entries":[{"blob":"…","kind":"file","mode":420,"path":"a/b.txt"},…],"greenloop_tree":1}

Canonical means: sorted keys, compact separators, ASCII-only escapes, entries
sorted by path, every parent directory listed, modes normalised. One tree
therefore has exactly one byte representation and one hash, whatever order
the files were created in, their mtimes, or the umask of the machine.

Modes are normalised the way git does it: a file is 0o755 if any execute bit is
set, else 0o644; a directory is 0o755; a symlink is 0o777. Only the
"executable or not" distinction changes what a build does; keeping group/other
bits would make the same checkout hash differently under umask 022 and 002 and
defeat the cache across machines and users.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

from greenloop.store.exceptions import StoreError
from greenloop.store.hashing import is_digest

TREE_FORMAT = 1
"""Value of the ``greenloop_tree`` marker field in manifests written today."""

EntryKind = Literal["file", "symlink", "dir"]
"""What a tree entry is; nothing else (sockets, devices) has a stored form."""

MANIFEST_PREFIX = b'{"entries":['
"""Every canonical manifest starts with these bytes (sorted keys put entries first)."""

FILE_MODE = 0o644
"""Normalised mode of a non-executable file."""
EXEC_MODE = 0o755
"""Normalised mode of an executable file and of every directory."""
SYMLINK_MODE = 0o777
"""Normalised mode of a symlink (its own bits mean nothing on most systems)."""


@dataclass(frozen=True)
class TreeEntry:
    """One item of a tree: a file (with its blob), a symlink (with its target) or a directory.

    ``path`` is relative and POSIX-style; ``..``, ``.``, empty components and
    absolute paths are rejected on construction so that no tree can name a
    location outside the directory it is materialised into.
    """

    path: str
    kind: EntryKind
    mode: int
    blob: str | None = None
    target: str | None = None

    def __post_init__(self) -> None:
        """Reject entries that are malformed or could escape their tree."""
        check_relative_path(self.path)
        if self.kind not in ("file", "symlink", "dir"):
            raise StoreError(f"tree entry {self.path!r} has unknown kind {self.kind!r}")
        if isinstance(self.mode, bool) or not isinstance(self.mode, int):
            raise StoreError(f"tree entry {self.path!r} has a non-integer mode {self.mode!r}")
        if not 0 <= self.mode <= 0o7777:
            raise StoreError(f"tree entry {self.path!r} has mode {self.mode:o} out of range")
        if self.kind == "file":
            if self.blob is None or not is_digest(self.blob):
                raise StoreError(f"file entry {self.path!r} needs a blob digest, got {self.blob!r}")
            if self.target is not None:
                raise StoreError(f"file entry {self.path!r} must not have a symlink target")
        elif self.kind == "symlink":
            if not isinstance(self.target, str) or not self.target or "\0" in self.target:
                raise StoreError(f"symlink entry {self.path!r} needs a non-empty target")
            if self.blob is not None:
                raise StoreError(f"symlink entry {self.path!r} must not have a blob")
        elif self.blob is not None or self.target is not None:
            raise StoreError(f"directory entry {self.path!r} must have neither blob nor target")


def check_relative_path(path: str) -> None:
    """Raise :class:`StoreError` unless ``path`` is a clean relative POSIX path."""
    if not isinstance(path, str) or not path:
        raise StoreError(f"tree path must be a non-empty string, got {path!r}")
    if "\0" in path:
        raise StoreError(f"tree path contains a NUL byte: {path!r}")
    if path.startswith("/"):
        raise StoreError(f"tree path must be relative, got absolute {path!r}")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise StoreError(
            f"tree path {path!r} must not contain '..', '.' or empty components "
            "(it could point outside the tree)"
        )


def normalize_mode(kind: EntryKind, mode: int) -> int:
    """The machine-independent mode stored for an entry (see the module docstring)."""
    if kind == "dir":
        return EXEC_MODE
    if kind == "symlink":
        return SYMLINK_MODE
    return EXEC_MODE if mode & 0o111 else FILE_MODE


def canonicalize(entries: Iterable[TreeEntry]) -> list[TreeEntry]:
    """The canonical form of a tree: normalised modes, parents listed, sorted, no conflicts.

    Exact duplicates collapse; two different entries for one path, or an entry
    beneath a file or symlink, raise :class:`StoreError`.
    """
    by_path: dict[str, TreeEntry] = {}
    for entry in entries:
        mode = normalize_mode(entry.kind, entry.mode)
        if mode != entry.mode:
            entry = TreeEntry(entry.path, entry.kind, mode, entry.blob, entry.target)
        _add(by_path, entry)
    # Paths are clean (checked on construction), so a parent is the text before the
    # last "/". A directory whose ancestors were already checked stops the climb:
    # this runs on every commit, and a tree can have tens of thousands of entries.
    checked: set[str] = set()
    for path in list(by_path):
        cut = path.rfind("/")
        while cut > 0:
            parent = path[:cut]
            existing = by_path.get(parent)
            if existing is None:
                existing = by_path[parent] = TreeEntry(parent, "dir", EXEC_MODE)
            if existing.kind != "dir":
                raise StoreError(
                    f"tree entry {path!r} lies beneath {existing.path!r}, which is a "
                    f"{existing.kind}, not a directory"
                )
            if parent in checked:
                break
            checked.add(parent)
            cut = path.rfind("/", 0, cut)
    return [by_path[path] for path in sorted(by_path)]


def encode_manifest(entries: Iterable[TreeEntry]) -> bytes:
    """Canonical manifest bytes for ``entries`` (canonicalised first)."""
    body = {
        "greenloop_tree": TREE_FORMAT,
        "entries": [_entry_to_json(e) for e in canonicalize(entries)],
    }
    # ensure_ascii keeps the bytes canonical and lets non-UTF-8 file names
    # (surrogate-escaped by Python) round-trip instead of failing to encode.
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


def decode_manifest(data: bytes) -> list[TreeEntry]:
    """Parse manifest bytes; :class:`StoreError` unless they are a canonical tree."""
    if not data.startswith(MANIFEST_PREFIX):
        raise StoreError("object is not a tree manifest")
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise StoreError(f"object is not a tree manifest: {exc}") from exc
    if not isinstance(body, dict) or set(body) != {"entries", "greenloop_tree"}:
        raise StoreError("object is not a tree manifest: unexpected fields")
    version = body["greenloop_tree"]
    if version != TREE_FORMAT:
        raise StoreError(f"tree manifest format {version!r} is not supported (want {TREE_FORMAT})")
    raw = body["entries"]
    if not isinstance(raw, list):
        raise StoreError("object is not a tree manifest: entries is not a list")
    entries = [_entry_from_json(item) for item in raw]
    # Only the canonical encoding counts as a tree, so one tree can never have
    # two hashes and a hand-made manifest cannot smuggle in missing parents.
    if encode_manifest(entries) != data:
        raise StoreError("object is not a canonical tree manifest")
    return entries


def read_manifest(fh: BinaryIO) -> list[TreeEntry] | None:
    """The entries if the open object ``fh`` is a tree, else None.

    Ordinary blobs are rejected after reading a few bytes, not the whole file.
    """
    if fh.read(len(MANIFEST_PREFIX)) != MANIFEST_PREFIX:
        return None
    # Read outside the try: a damaged object is an error of its own, not "no tree".
    data = MANIFEST_PREFIX + fh.read()
    try:
        return decode_manifest(data)
    except StoreError:
        return None


def _add(by_path: dict[str, TreeEntry], entry: TreeEntry) -> None:
    existing = by_path.setdefault(entry.path, entry)
    if existing != entry:
        raise StoreError(f"tree has two different entries for {entry.path!r}")


def _entry_to_json(entry: TreeEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"path": entry.path, "kind": entry.kind, "mode": entry.mode}
    if entry.blob is not None:
        out["blob"] = entry.blob
    if entry.target is not None:
        out["target"] = entry.target
    return out


_ENTRY_FIELDS = {"path", "kind", "mode", "blob", "target"}


def _entry_from_json(item: object) -> TreeEntry:
    if not isinstance(item, dict) or not set(item) <= _ENTRY_FIELDS:
        raise StoreError(f"object is not a tree manifest: bad entry {item!r}")
    try:
        return TreeEntry(
            path=item["path"],
            kind=item["kind"],
            mode=item["mode"],
            blob=item.get("blob"),
            target=item.get("target"),
        )
    except KeyError as exc:
        raise StoreError(f"object is not a tree manifest: entry lacks {exc}") from exc
