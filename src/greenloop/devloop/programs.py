"""Finding checker programs (project-local first) and asking them their version."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

LOCAL_BIN_DIRS = (".venv/bin", "node_modules/.bin")
"""Project-local tool folders searched before ``PATH``, so a project's pinned tools win."""

_versions: dict[tuple[str, int, int], str] = {}
_versions_lock = threading.Lock()


def find_program(name: str, root: Path) -> str | None:
    """Absolute path of the executable ``name``: a path, project-local, or on ``PATH``."""
    if os.sep in name:
        candidate = Path(name) if Path(name).is_absolute() else root / name
        return str(candidate) if _executable(candidate) else None
    for folder in LOCAL_BIN_DIRS:
        candidate = root / folder / name
        if _executable(candidate):
            return str(candidate)
    return shutil.which(name)


def program_version(program: str) -> str:
    """The first line ``program --version`` prints, cached while the executable is unchanged."""
    try:
        st = os.stat(program)
    except OSError:
        return "absent"
    key = (program, st.st_mtime_ns, st.st_size)
    with _versions_lock:
        known = _versions.get(key)
    if known is not None:
        return known
    try:
        done = subprocess.run(
            [program, "--version"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        lines = (done.stdout + done.stderr).strip().splitlines()
        version = lines[0].strip() if lines else f"unknown (exit {done.returncode})"
    except (OSError, subprocess.TimeoutExpired) as e:
        version = f"unknown ({type(e).__name__})"
    with _versions_lock:
        _versions[key] = version
    return version


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)
