"""Where a store lives on disk, how it is recognised, and how it is removed.

A store directory holds a marker file (``GREENLOOP_STORE``), the object tree
(``objects/``) and the SQLite index (``index.sqlite``). The marker is what makes
a directory a store: ``open`` refuses to adopt a non-empty directory without it,
and ``clean`` refuses to delete one, so a mistyped path can never wipe a user's
files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import platformdirs

from greenloop._fs import write_atomically
from greenloop.store.exceptions import StoreError

MARKER_NAME = "GREENLOOP_STORE"
"""File whose presence marks a directory as a greenloop store."""

FORMAT_VERSION = 1
"""On-disk layout version written into the marker."""

OBJECTS_DIR = "objects"
"""Subdirectory holding the content-addressed objects."""

INDEX_NAME = "index.sqlite"
"""File name of the SQLite index inside the store."""

TEMP_PREFIX = ".tmp-"
"""Prefix of every temporary file the store writes; gc and verify look for it."""

_TEMP_WRITER = re.compile(re.escape(TEMP_PREFIX) + r"([0-9]+)-")

CACHE_DIR_ENV = "GREENLOOP_CACHE_DIR"
"""Environment variable that overrides the default store location."""


def temp_prefix() -> str:
    """The prefix for a temp file this process writes in the store: ``.tmp-<pid>-``.

    The pid tells gc and verify whether a temp file is a write in progress or a
    killed writer's leftover.
    """
    return f"{TEMP_PREFIX}{os.getpid()}-"


def temp_writer(name: str) -> int | None:
    """The pid of the process that wrote temp file ``name`` (None: not recorded in it)."""
    found = _TEMP_WRITER.match(name)
    return int(found.group(1)) if found else None


def default_root() -> Path:
    """The store location: ``$GREENLOOP_CACHE_DIR`` if set, else the user cache dir."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("greenloop"))


def init_root(root: Path) -> None:
    """Make ``root`` a usable store, creating it if missing or empty.

    Raises :class:`StoreError` when ``root`` is not a directory, is a non-empty
    directory without the marker, was written by a newer greenloop, or cannot be
    created or written (a dangling symlink, a read-only or full disk, ``/proc``).
    """
    try:
        _init_root(root)
    except OSError as exc:
        where = exc.filename or root
        raise StoreError(
            f"cannot use {root} as the greenloop store: {where}: {exc.strerror or exc} "
            f"(set {CACHE_DIR_ENV} to a folder greenloop may write)"
        ) from exc


def _init_root(root: Path) -> None:
    if os.path.islink(root) and not root.exists():
        raise StoreError(
            f"cannot use {root} as the greenloop store: it is a symlink to "
            f"{os.readlink(root)}, which does not exist (create that folder, or set "
            f"{CACHE_DIR_ENV} to another)"
        )
    if root.exists() and not root.is_dir():
        raise StoreError(f"{root} is not a directory, so it cannot be a greenloop store")
    root.mkdir(parents=True, exist_ok=True)
    marker = root / MARKER_NAME
    if not marker.exists():
        if _is_empty(root):
            _write_marker(marker)
        # Look again: a concurrent open() renames the marker into place before
        # it creates anything else, so content we saw may be that store's.
        elif not marker.exists():
            raise StoreError(
                f"{root} is not a greenloop store: it is not empty and has no {MARKER_NAME} "
                "marker; choose an empty or new directory"
            )
    _check_marker(marker)
    (root / OBJECTS_DIR).mkdir(exist_ok=True)


def clean(root: Path) -> None:
    """Delete the whole store at ``root``.

    Refuses with :class:`StoreError` unless ``root`` carries the store marker.
    A missing ``root`` is already clean and is left alone.
    """
    if not os.path.lexists(root):
        return
    if root.is_symlink():
        raise StoreError(f"{root} is a symlink; pass the store directory itself to clean it")
    if not (root / MARKER_NAME).is_file():
        raise StoreError(
            f"refusing to delete {root}: it is not a greenloop store (no {MARKER_NAME} marker)"
        )
    # The marker goes last so that an interrupted clean still leaves a
    # directory that open() and clean() recognise, instead of an orphan that
    # both would refuse to touch.
    for child in root.iterdir():
        if child.name == MARKER_NAME:
            continue
        if child.is_dir() and not child.is_symlink():
            _rmtree(child)
        else:
            child.unlink()
    (root / MARKER_NAME).unlink()
    root.rmdir()


def _is_empty(root: Path) -> bool:
    # Leftover temp files from a concurrent open() writing the marker do not
    # count: that process is creating the very store we are about to join.
    return all(child.name.startswith(TEMP_PREFIX) for child in root.iterdir())


def _write_marker(marker: Path) -> None:
    # Several processes may initialise at once; every one writes the same bytes,
    # so whichever rename lands last is as good as the first.
    body = json.dumps({"greenloop_store": FORMAT_VERSION}) + "\n"
    write_atomically(marker, body.encode(), prefix=temp_prefix())


def _check_marker(marker: Path) -> None:
    try:
        content = json.loads(marker.read_text(encoding="utf-8"))
        version = content["greenloop_store"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{marker} is unreadable or corrupt: {exc}") from exc
    if not isinstance(version, int) or version < 1:
        raise StoreError(f"{marker} has an invalid format version: {version!r}")
    if version > FORMAT_VERSION:
        raise StoreError(
            f"{marker.parent} uses store format {version}, but this greenloop only "
            f"understands up to {FORMAT_VERSION}; upgrade greenloop or use another directory"
        )


def _rmtree(path: Path) -> None:
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=_make_writable_and_retry)
    else:
        shutil.rmtree(path, onerror=_make_writable_and_retry)


def _make_writable_and_retry(func: Callable[..., Any], path: str, _exc: Any) -> None:
    # Objects are stored read-only; some platforms (Windows) refuse to unlink those.
    os.chmod(path, stat.S_IWRITE | stat.S_IREAD | stat.S_IEXEC)
    func(path)
