"""Map a URL path onto a file inside the served artifact, and nothing outside it.

The check is on the resolved path: every symlink is followed and the result
must still lie under the artifact's (already resolved) root. A ``..`` segment
is refused before touching the disk, so a request can never even probe the
file system outside the artifact.
"""

from __future__ import annotations

import mimetypes
import os
import stat
from dataclasses import dataclass
from pathlib import Path

INDEX = "index.html"

# The browser acts on these; a system mime table that lacks one (or maps .js to
# application/x-javascript) must not break a module script or a wasm stream.
_TYPES = {
    ".html": "text/html",
    ".htm": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/x-icon",
    ".txt": "text/plain",
    ".xml": "application/xml",
    ".webmanifest": "application/manifest+json",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".pdf": "application/pdf",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
}


@dataclass(frozen=True)
class Found:
    """A regular file inside the artifact."""

    path: Path
    """Its resolved path."""


@dataclass(frozen=True)
class NeedsSlash:
    """A directory asked for without its trailing slash; relative links need one."""


Lookup = Found | NeedsSlash | None


def lookup(root: Path, url_path: str) -> Lookup:
    """Find what ``url_path`` (already percent-decoded) names under ``root`` (resolved).

    Directories map to their ``index.html``. Returns None for anything that is
    missing, outside ``root`` after resolving symlinks, or not a regular file.
    """
    if "\0" in url_path:
        return None
    segments = [s for s in url_path.split("/") if s not in ("", ".")]
    if ".." in segments:
        return None
    target = _contained(root, root.joinpath(*segments))
    if target is None:
        return None
    if target.is_dir():
        if url_path and not url_path.endswith("/"):
            return NeedsSlash()
        target = _contained(root, target / INDEX)
        if target is None:
            return None
    try:
        mode = target.stat().st_mode
    except OSError:
        return None
    return Found(target) if stat.S_ISREG(mode) else None


def open_file(found: Found) -> int | None:
    """Open ``found`` for reading, or None when it vanished meanwhile.

    The descriptor keeps the file readable even if its directory is replaced
    or removed afterwards, which is what lets a response outlive a switch.
    """
    try:
        # The resolved path has no symlinks left; O_NOFOLLOW keeps it that way.
        return os.open(found.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None


def content_type(path: Path) -> str:
    """The media type to send ``path`` with (text types in UTF-8)."""
    media = _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
    media = media or "application/octet-stream"
    return f"{media}; charset=utf-8" if media.startswith("text/") else media


def is_html(path: Path) -> bool:
    """True for the files that get the live-reload script."""
    return content_type(path).startswith("text/html")


def _contained(root: Path, candidate: Path) -> Path | None:
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a loop, a name too long, not a directory
        return None
    return resolved if resolved.is_relative_to(root) else None
