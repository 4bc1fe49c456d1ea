"""What a local step may run from this machine that its cache key does not cover.

A local step runs the host's tools (``ruff``, ``mypy``, ``node`` ... found on
``PATH``). Their versions are not in the key: a key must mean the same on every
machine sharing a remote cache, and which tools a shell command runs cannot be
known before it runs. Yet an entry made with ruff 0.5 must not answer a step
after ``pip install -U ruff``: that would be a green the new ruff never gave.

So an entry remembers the :func:`stamp` of the folders the step's tools come
from, and the host answers a step from a local entry only while the stamp is
the same. Installing, upgrading or removing a tool renames or unlinks an entry
of one of these folders (pip stashes the old files, dpkg and npm rename into
place), and that changes the folder's modification time: a stat per folder,
no file read.

The folders, in the order ``PATH`` searches them (another order may run another
tool): each one on ``PATH``; for each, its prefix's package folders
(``lib/python3*``, ``lib/python3*/site-packages`` or ``dist-packages``,
``lib/node_modules``), the virtualenv's base Python, the folders its links lead
to (pipx's virtualenvs; not followed in ``/usr`` and the like), the versions
behind version managers' shims (pyenv, rbenv, nodenv: ``versions/*/bin``, in
place of the shims) and behind rustup's proxies (``~/.rustup/toolchains/*/bin``),
with the files that pick the version (``version``, ``settings.toml``); and the
folders a step binds read-only.

So a ``PATH`` of other folders, or in another order (a git hook's, ``uv run``'s),
is other tools: the step runs again, as Bazel reruns an action whose ``PATH``
changed.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable


def stamp(search_path: str, binds: Iterable[str] = ()) -> str:
    """The stamp of the tool folders a step with ``PATH=search_path`` and read-only
    ``binds`` may run from: a JSON list of ``[path, state]`` (state null for a missing
    one), in the order ``PATH`` searches them. Two stamps are equal while no tool there
    changed and ``PATH`` names the same folders in the same order."""
    return json.dumps(
        [[path, _stat(path)] for path in [*tool_folders(search_path), *binds]],
        separators=(",", ":"),
    )


def tool_folders(search_path: str) -> list[str]:
    """The folders tools on ``search_path`` come from (see the module's docstring)."""
    found: dict[str, None] = {}
    seen: set[tuple[int, int]] = set()

    def add_bin(folder: str, *, links: bool = True) -> None:
        try:
            st = os.stat(folder)
        except OSError:
            return
        found[folder] = None
        if (st.st_dev, st.st_ino) in seen:
            return  # /bin is /usr/bin on a merged-/usr system: its packages are listed
        seen.add((st.st_dev, st.st_ino))
        prefix = os.path.dirname(folder)
        for path in _package_folders(prefix):
            found[path] = None
        base = venv_home(os.path.join(prefix, "pyvenv.cfg"))
        if base is not None and base != folder:
            add_bin(base)
        if links and not (os.path.realpath(folder) + "/").startswith(_SYSTEM):
            for target in _linked_folders(folder):
                add_bin(target, links=False)

    for entry in search_path.split(os.pathsep):
        if not entry.startswith("/"):
            continue  # relative: in the step's own tree, which its key covers
        entry = entry.rstrip("/") or "/"
        manager = os.path.dirname(entry)
        if os.path.basename(entry) == "shims" and os.path.isdir(os.path.join(manager, "versions")):
            # Every shim runs the manager, which picks a version: those are the tools.
            # The shims folder itself is left out: `pyenv init` rewrites it in every
            # new shell, with no tool changed.
            found[os.path.join(manager, "versions")] = None
            found[os.path.join(manager, "version")] = None
            for folder in sorted(glob.glob(os.path.join(manager, "versions", "*", "bin"))):
                add_bin(folder)
            continue
        add_bin(entry)
        if entry.endswith("/.cargo/bin"):
            rustup = os.path.join(os.path.dirname(manager), ".rustup")
            found[os.path.join(rustup, "settings.toml")] = None
            found[os.path.join(rustup, "toolchains")] = None
            for folder in sorted(glob.glob(os.path.join(rustup, "toolchains", "*", "bin"))):
                found[folder] = None
    return list(found)


_SYSTEM = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/")
"""Folders whose tools the package manager installs as files (or links inside them):
their links are not followed (``/usr/bin`` holds thousands)."""


def _linked_folders(folder: str) -> list[str]:
    """The folders the links in ``folder`` lead to, elsewhere: pipx's
    ``~/.local/bin/ruff`` is a link into ruff's own virtualenv, which ``pipx upgrade``
    changes while the link stays as it was."""
    targets: dict[str, None] = {}
    try:
        with os.scandir(folder) as entries:
            for item in entries:
                if item.is_symlink():
                    target = os.path.dirname(os.path.realpath(item.path))
                    if target != folder:
                        targets[target] = None
    except OSError:
        return []
    return sorted(targets)


def _package_folders(prefix: str) -> list[str]:
    """Where packages for the tools of ``prefix``/bin install: ``lib/python3*`` with its
    ``site-packages`` or ``dist-packages``, ``lib/node_modules``."""
    found = []
    for lib in ("lib", "lib64"):
        try:
            names = sorted(os.listdir(os.path.join(prefix, lib)))
        except OSError:
            continue
        for name in names:
            if name.startswith("python3"):
                folder = os.path.join(prefix, lib, name)
                found.append(folder)
                for packages in ("site-packages", "dist-packages"):
                    if os.path.isdir(os.path.join(folder, packages)):
                        found.append(os.path.join(folder, packages))
            elif name == "node_modules":
                found.append(os.path.join(prefix, lib, name))
    return found


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_mtime_ns]


def venv_home(config: str) -> str | None:
    """The ``bin`` folder of the Python a virtualenv was made from (its ``home``)."""
    try:
        with open(config, encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition("=")
                if key.strip() == "home" and value.strip().startswith("/"):
                    return value.strip().rstrip("/") or "/"
    except OSError:
        return None
    return None
