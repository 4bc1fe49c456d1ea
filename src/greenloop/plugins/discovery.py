"""One registry for every plugin kind: entry points, and executables on a search path.

Built-in plugins are registered through the same entry points as third-party
ones (see ``pyproject.toml``), so there is exactly one way in for Python code.
Plugins in any other language (or Python run out of process) are executables
named ``greenloop-KIND-NAME`` that speak JSON-RPC over stdio (see
:mod:`greenloop.plugins.stdio`); they are looked for in the directories of
``GREENLOOP_PLUGIN_PATH`` first, then on ``PATH``. An entry point wins over an
executable of the same name.

Entry points are read once per process, and a command finds them in a listing
kept in the store folder (``plugins/``) while no ``sys.path`` folder and no
distribution's metadata has changed since: importing ``importlib.metadata`` and
scanning every distribution is a good part of a fully cached run.

Whatever the transport, :func:`load` returns a factory of the same shape:
executors are created as ``factory(store)``, formatters as ``factory(stream)``
and hooks as ``factory()``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import os
import re
import sys
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.machinery import PathFinder
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from greenloop._fs import write_atomically
from greenloop.protocol.errors import PluginError, PluginFailure
from greenloop.store.layout import MARKER_NAME, default_root

if TYPE_CHECKING:
    from greenloop.plugins.spec import Executor, Hook
    from greenloop.store import Store

PluginKind = Literal["executor", "hook", "formatter"]
GROUPS: dict[PluginKind, str] = {
    "executor": "greenloop.executors",
    "hook": "greenloop.hooks",
    "formatter": "greenloop.formatters",
}
PLUGIN_PATH_ENV = "GREENLOOP_PLUGIN_PATH"
"""Directories (``os.pathsep``-separated) searched for plugin executables before ``PATH``."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class PluginInfo:
    """A plugin found on this machine.

    ``target`` is the entry point's ``module:object`` or the executable's
    path; ``note`` says what is wrong with a plugin that could not be asked
    its version, or that another plugin of the same name shadows it.
    """

    name: str
    kind: PluginKind
    transport: Literal["in-process", "stdio"]
    version: str
    target: str
    note: str = ""


@dataclass(frozen=True)
class Entry:
    """An installed entry point of one of greenloop's groups, as the listing keeps it."""

    name: str
    value: str
    """``module:object``, as the distribution declares it."""
    group: str
    version: str
    """The version of the distribution declaring it (``?`` when it is unknown)."""

    def load(self) -> Any:
        """The object the entry point names: what ``importlib.metadata.EntryPoint.load``
        returns, and raising what it raises."""
        match = _ENTRY_VALUE.match(self.value)
        if match is None:
            from importlib.metadata import EntryPoint

            return EntryPoint(self.name, self.value, self.group).load()  # its own error
        found: Any = importlib.import_module(match.group("module"))
        for attr in filter(None, (match.group("attr") or "").split(".")):
            found = getattr(found, attr)
        return found


# ``importlib.metadata.EntryPoint.pattern``.
_ENTRY_VALUE = re.compile(
    r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$"
)


def _entry_points(kind: PluginKind) -> dict[str, Entry]:
    # The last of a name wins, as in ``{ep.name: ep for ep in entry_points(group=...)}``.
    return {ep.name: ep for ep in _installed()[GROUPS[kind]]}


_PYDANTIC_GROUP = "pydantic"
"""pydantic's own plugins' group: kept too, so that a command can spare pydantic its scan
(see :func:`spare_pydantic_its_plugin_scan`)."""
_KEPT_GROUPS = (*GROUPS.values(), _PYDANTIC_GROUP)

_found: dict[str, tuple[Entry, ...]] | None = None


def _installed() -> dict[str, tuple[Entry, ...]]:
    # Once per process, not once per lookup: a run looks up three kinds. A plugin
    # installed later is seen by the next command (the daemon restarts itself when
    # site-packages changes). Across processes the listing is kept in a file while
    # nothing it was read from has changed: importing importlib.metadata costs a
    # command ~11 ms, and scanning every distribution ~4 ms.
    global _found
    if _found is not None:
        return _found
    where = _listing_file()
    stamp = _distributions_stamp() if where is not None else None
    kept = _read_listing(where, stamp) if where is not None and stamp is not None else None
    if kept is not None:
        _found = kept
        return kept
    found = _scan_distributions()
    if where is None:
        # No store yet (a first command, before it opens one): not kept for this process
        # either, so that its next lookup, once the store is there, writes the listing.
        return found
    if stamp is not None and _settled(stamp):
        _write_listing(where, stamp, found)
    _found = found
    return found


def _forget_installed() -> None:
    """Read the installed distributions again at the next lookup (as a new process would)."""
    global _found
    _found = None


_PYDANTIC_LOADER = "pydantic.plugin._loader"


def spare_pydantic_its_plugin_scan() -> None:
    """Answer pydantic's question "which pydantic plugins are installed?" from the kept
    listing, when the answer is none.

    Before it builds its first validator, pydantic imports ``pydantic.plugin._loader``
    to ask, and that module imports ``importlib.metadata`` and scans every distribution:
    ~15 ms of a cached run, for an answer the listing already has. With no distribution
    declaring the ``pydantic`` group, a stand-in takes the module's place whose
    ``get_plugins()`` answers as pydantic's would, with none (the only name pydantic
    imports from it; tests/test_plugins_listing.py checks that). Anything else, or a
    loader already imported, and pydantic asks for itself.
    """
    if _PYDANTIC_LOADER in sys.modules or _installed()[_PYDANTIC_GROUP]:
        return
    stand_in = types.ModuleType(_PYDANTIC_LOADER, "No pydantic plugin is installed here.")
    stand_in.get_plugins = _no_pydantic_plugins  # type: ignore[attr-defined]
    sys.modules[_PYDANTIC_LOADER] = stand_in


def _no_pydantic_plugins() -> tuple[()]:
    return ()


def _scan_distributions() -> dict[str, tuple[Entry, ...]]:
    """Every entry point of greenloop's groups, read from the installed distributions."""
    from importlib.metadata import entry_points

    found = entry_points()
    return {
        group: tuple(
            Entry(ep.name, ep.value, group, ep.dist.version if ep.dist is not None else "?")
            for ep in found.select(group=group)
        )
        for group in _KEPT_GROUPS
    }


_LISTING_FORMAT = 2
Stamp = list[tuple[str, "list[int] | None"]]
"""Each file the entry points were read from (or would be, once it exists), with its stat."""


def _listing_file() -> Path | None:
    """Where this interpreter's entry-point listing is kept: in greenloop's store folder,
    beside (not in) its objects; None while there is no store yet (anything written into
    a folder before its store marker would make it look like a stranger's folder)."""
    root = default_root()
    if not os.path.isfile(root / MARKER_NAME):
        return None
    # One file per interpreter and import path; ``sys.path[0]`` (the script's folder, or
    # the current one under ``-m``) is left out of the name, not out of the stamp.
    ident = hashlib.sha256(repr((sys.executable, sys.path[1:])).encode()).hexdigest()[:16]
    return root / "plugins" / f"entry-points-{ident}.json"


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _distributions_stamp() -> Stamp | None:
    """The stat of everything ``importlib.metadata`` reads entry points and versions from.

    Every ``sys.path`` entry (adding, removing or renaming a distribution changes its
    folder), every distribution's metadata folder (a file replaced in it), and its
    ``entry_points.txt`` and ``METADATA``/``PKG-INFO`` (a file rewritten in place).
    None when a finder other than the path finder can list distributions: what it
    reads cannot be stamped.
    """
    for finder in sys.meta_path:
        if finder is not PathFinder and hasattr(finder, "find_distributions"):
            return None
    stamp: Stamp = []
    for entry in sys.path:
        root = entry or "."  # as importlib.metadata reads it
        stamp.append((root, _stat(root)))
        try:
            names = sorted(os.listdir(root))
        except OSError:
            continue  # missing, or a zip file: its own stat stands for what is in it
        egg = root.lower().endswith(".egg")
        for name in names:
            low = name.lower()
            if low.endswith(".dist-info"):
                own = "METADATA"
            elif low.endswith(".egg-info") or (egg and low == "egg-info"):
                own = "PKG-INFO"
            else:
                continue
            meta = os.path.join(root, name)
            for path in (meta, os.path.join(meta, "entry_points.txt"), os.path.join(meta, own)):
                stamp.append((path, _stat(path)))
    return stamp


def _settled(stamp: Stamp) -> bool:
    """Whether every stamped file's last change is old enough to trust its stat
    (see :data:`_SETTLED_NS`)."""
    newest = max((max(st[3], st[4]) for _, st in stamp if st is not None), default=0)
    return time.time_ns() - newest > _SETTLED_NS


def _read_listing(where: Path, stamp: Stamp) -> dict[str, tuple[Entry, ...]] | None:
    """The kept listing, if it was made for this very stamp (and by this user)."""
    try:
        with open(where, "rb") as f:
            if os.fstat(f.fileno()).st_uid != os.getuid():
                return None
            kept = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or kept.get("format") != _LISTING_FORMAT:
        return None
    if kept.get("python") != sys.version or kept.get("path") != sys.path:
        return None
    if kept.get("stamp") != [[path, st] for path, st in stamp]:
        return None
    try:
        return {
            group: tuple(
                Entry(n, value, group, version) for n, value, version in kept["groups"][group]
            )
            for group in _KEPT_GROUPS
        }
    except (KeyError, TypeError, ValueError):
        return None  # not a listing this code wrote


def _write_listing(where: Path, stamp: Stamp, found: dict[str, tuple[Entry, ...]]) -> None:
    kept = {
        "format": _LISTING_FORMAT,
        "python": sys.version,
        "path": sys.path,
        "stamp": stamp,
        "groups": {g: [[e.name, e.value, e.version] for e in es] for g, es in found.items()},
    }
    with contextlib.suppress(OSError):  # a read-only or full store: the next command scans
        write_atomically(where, json.dumps(kept).encode(), durable=False)


def search_path() -> list[Path]:
    """The directories searched for plugin executables, in order."""
    dirs: list[Path] = []
    for variable in (PLUGIN_PATH_ENV, "PATH"):
        for entry in os.environ.get(variable, "").split(os.pathsep):
            if entry and Path(entry) not in dirs:
                dirs.append(Path(entry))
    return dirs


def _executables(kind: PluginKind) -> dict[str, list[Path]]:
    """Every ``greenloop-KIND-NAME`` executable, by name, in search order (first one wins)."""
    prefix = f"greenloop-{kind}-"
    found: dict[str, list[Path]] = {}
    for directory in search_path():
        for entry in _plugin_names(directory):
            name = entry[len(prefix) :]
            if not entry.startswith(prefix) or not _NAME.match(name):
                continue
            path = directory / entry
            if path.is_file() and os.access(path, os.X_OK):
                found.setdefault(name, []).append(path)
    return found


_LISTINGS: dict[Path, tuple[list[int], list[str]]] = {}
"""Each directory's ``greenloop-*`` names, with the stamp of the directory they were read at."""
_SETTLED_NS = 2_000_000_000
"""How old a directory's change must be before its listing is kept: on a file system with
coarse times, a name added within the same tick would leave the stamp unchanged."""


def _plugin_names(directory: Path) -> list[str]:
    """The sorted ``greenloop-*`` names in ``directory`` (none when it cannot be read).

    Read again whenever the directory itself changed (adding, removing or renaming
    an entry changes its mtime): a long-lived process, and every command forked
    from the daemon, lists ``/usr/bin`` once rather than on every run. What a name
    is (a file, executable) is checked by the caller each time.
    """
    stamp = _stat(os.fspath(directory))
    if stamp is None:
        return []  # missing or unreadable directories on PATH are common and harmless
    known = _LISTINGS.get(directory)
    if known is not None and known[0] == stamp:
        return known[1]
    try:
        names = sorted(n for n in os.listdir(directory) if n.startswith("greenloop-"))
    except OSError:
        return []
    if _settled([(os.fspath(directory), stamp)]):
        _LISTINGS[directory] = (stamp, names)
    return names


def _stdio_factory(kind: PluginKind, name: str, path: Path) -> Any:
    # Imported here, not at the top: a run on entry-point plugins alone never pays for
    # the stdio host.
    from greenloop.plugins import stdio

    if kind == "executor":
        return functools.partial(stdio.StdioExecutor, name, path)
    if kind == "formatter":
        return functools.partial(stdio.StdioFormatter, name, path)
    return functools.partial(stdio.StdioHook, name, path)


def available(kind: PluginKind) -> list[str]:
    """Names of the installed plugins of ``kind`` (entry points and executables)."""
    return sorted(set(_entry_points(kind)) | set(_executables(kind)))


def load(kind: PluginKind, name: str) -> Any:
    """A factory for the plugin ``name`` of ``kind``; unknown names raise ``PluginFailure``.

    For an entry point this is the object it names; for an executable, a
    factory creating the matching :mod:`~greenloop.plugins.stdio` adapter.
    """
    found = _entry_points(kind)
    if name in found:
        try:
            return found[name].load()
        except Exception as e:
            raise PluginFailure(
                PluginError(plugin=name, kind="crashed", message=f"failed to load: {e}")
            ) from e
    executables = _executables(kind)
    if name in executables:
        return _stdio_factory(kind, name, executables[name][0])
    known = ", ".join(sorted(set(found) | set(executables))) or "none"
    raise PluginFailure(
        PluginError(
            plugin=name, kind="not_found", message=f"no {kind} named {name!r} (known: {known})"
        )
    )


def plugins(probe_timeout: float | None = None) -> list[PluginInfo]:
    """Every plugin found, of every kind.

    A stdio plugin's version comes from its ``initialize`` handshake (run in
    parallel, each within ``probe_timeout`` seconds, default
    :data:`~greenloop.plugins.stdio.PROBE_TIMEOUT`); one that fails it is
    listed with version ``"?"`` and the failure as its note.
    """
    from greenloop.plugins import stdio

    timeout = stdio.PROBE_TIMEOUT if probe_timeout is None else probe_timeout
    infos: list[PluginInfo] = []
    probes: list[tuple[PluginKind, str, Path, str]] = []
    for kind in GROUPS:
        in_process = _entry_points(kind)
        for name, ep in sorted(in_process.items()):
            infos.append(PluginInfo(name, kind, "in-process", ep.version, ep.value))
        for name, paths in sorted(_executables(kind).items()):
            for index, path in enumerate(paths):
                if name in in_process:
                    shadow = f"shadowed by the in-process {kind} {name!r}"
                elif index > 0:
                    shadow = f"shadowed by {paths[0]}"
                else:
                    shadow = ""
                probes.append((kind, name, path, shadow))
    if probes:
        with ThreadPoolExecutor(max_workers=min(8, len(probes))) as pool:
            infos.extend(pool.map(lambda p: _probe(*p, timeout=timeout), probes))
    kinds = list(GROUPS)
    return sorted(infos, key=lambda i: (kinds.index(i.kind), i.name, i.transport == "stdio"))


def _probe(kind: PluginKind, name: str, path: Path, shadow: str, *, timeout: float) -> PluginInfo:
    from greenloop.plugins import stdio

    try:
        version = stdio.probe(name, kind, path, timeout).version
        note = shadow
    except PluginFailure as e:
        version = "?"
        note = "; ".join(part for part in (f"{e.error.kind}: {e.error.message}", shadow) if part)
    return PluginInfo(name, kind, "stdio", version, str(path), note)


def hooks() -> list[Hook]:
    """One instance of every hook found (entry points first, then executables)."""
    in_process = _entry_points("hook")
    made: list[Hook] = [load("hook", name)() for name in sorted(in_process)]
    executables = {n: p for n, p in _executables("hook").items() if n not in in_process}
    if executables:
        # Only now: a run without stdio hooks never pays for the stdio host.
        from greenloop.plugins import stdio

        made.extend(stdio.StdioHook(name, paths[0]) for name, paths in sorted(executables.items()))
    return made


class Executors:
    """Creates each executor a run needs once, on first use, and caches it."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._made: dict[str, Executor] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str) -> Executor:
        """The executor called ``name`` (``PluginFailure`` if there is none)."""
        with self._lock:
            if name not in self._made:
                factory = load("executor", name)
                self._made[name] = factory(self._store)
            return self._made[name]
