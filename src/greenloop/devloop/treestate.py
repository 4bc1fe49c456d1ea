"""Where greenloop keeps a project tree's runtime state: outside the tree.

The tree holds only what the user wrote (and, where asked, the latest-green
pointer and ``--out``). Everything greenloop needs while it checks, watches and
serves a tree — the watcher's status and lock, checker caches, the materialized
builds the published links point into — lives in one folder per tree under the
user cache directory, named after the tree's real path::

    ~/.cache/greenloop-trees/<name>-<sha256(real path)[:16]>/

``GREENLOOP_STATE_DIR`` moves the parent folder. Deleting a tree's folder loses
nothing but caches and the last status.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import platformdirs

from greenloop.protocol import SetupError

STATE_DIR_ENV = "GREENLOOP_STATE_DIR"
"""Environment variable that overrides where every tree's state folder lives."""


def state_root() -> Path:
    """The folder holding every tree's state folder."""
    override = os.environ.get(STATE_DIR_ENV)
    if override:
        return Path(override).expanduser().absolute()
    return Path(platformdirs.user_cache_dir("greenloop-trees"))


def tree_key(root: Path) -> str:
    """The state folder's name for ``root``: its name (for people) and a hash of its real path."""
    real = root.resolve()
    name = re.sub(r"[^A-Za-z0-9._-]", "_", real.name)[:40] or "root"
    return f"{name}-{hashlib.sha256(os.fsencode(real)).hexdigest()[:16]}"


def state_dir(root: Path) -> Path:
    """The runtime-state folder of the tree at ``root`` (not created here)."""
    return state_root() / tree_key(root)


def make_state_dir(root: Path) -> Path:
    """:func:`state_dir`, created; raises SetupError naming it when it cannot be made."""
    path = state_dir(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SetupError(
            f"cannot make greenloop's state folder for this tree, {path}: {e.strerror}; "
            f"set {STATE_DIR_ENV} to a writable folder"
        ) from None
    return path
