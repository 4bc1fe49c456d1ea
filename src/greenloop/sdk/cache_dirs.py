"""``cache_dirs=``: folders a step keeps across runs, such as a package manager's download cache.

``gl.sh("pip install -r requirements.txt", cache_dirs={"pip": "~/.cache/pip"})``
keeps pip's cache between runs and across lock-file changes, as BuildKit's
cache mounts and Dagger's cache volumes do. Steps naming the same cache share
its folder; the folder is never part of a snapshot or of a cache key (its name,
path and sharing are).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from greenloop.protocol.ir import CacheDir, CacheSharing

KNOWN_ENV = {
    "~/.cache/pip": "PIP_CACHE_DIR",
    "~/.cache/uv": "UV_CACHE_DIR",
    "~/.npm": "npm_config_cache",
    "~/.cache/yarn": "YARN_CACHE_FOLDER",
    "~/.cache/pnpm": "npm_config_store_dir",
    "~/.cache/go-build": "GOCACHE",
    "~/go/pkg/mod": "GOMODCACHE",
    "~/.cache/pre-commit": "PRE_COMMIT_HOME",
    "~/.cargo": "CARGO_HOME",
}
"""The variable each usual tool reads its cache folder from, by that folder's usual path."""


@dataclass(frozen=True)
class CacheDirSpec:
    """A cache folder as ``gl.cache_dir(...)`` gives it (its name is its key in ``cache_dirs``)."""

    path: str
    sharing: CacheSharing = "shared"
    env: str | None = None


CacheDirs = Mapping[str, str | CacheDirSpec] | None
"""``cache_dirs=`` as a pipeline file gives it: name -> path or ``gl.cache_dir(...)``."""


def cache_dir(
    path: str, *, sharing: CacheSharing = "shared", env: str | None = None
) -> CacheDirSpec:
    """A cache folder at ``path`` (``~/...`` or inside the workdir) for ``cache_dirs=``.

    ``sharing`` says how steps running at the same time use it: ``"shared"``
    (together, the default: pip, npm and uv lock their own caches),
    ``"locked"`` (one at a time) or ``"private"`` (a step that finds it in use
    gets a folder of its own). ``env`` names the variable the tool reads the
    folder from, for where it cannot be mounted (the local executor without a
    sandbox); the usual tools' are known (``PIP_CACHE_DIR`` for ``~/.cache/pip`` ...).
    """
    return CacheDirSpec(path, sharing, env)


def as_cache_dirs(given: CacheDirs) -> list[CacheDir]:
    """The IR form of ``cache_dirs=``; :class:`ValueError` saying what is wrong."""
    found = []
    for name, spec in (given or {}).items():
        if isinstance(spec, str):
            spec = CacheDirSpec(spec)
        if not isinstance(spec, CacheDirSpec):
            raise ValueError(
                f"cache_dirs[{name!r}] must be a path or gl.cache_dir(...), got {spec!r}"
            )
        try:
            found.append(
                CacheDir(
                    name=name,
                    path=spec.path,
                    sharing=spec.sharing,
                    env=spec.env or KNOWN_ENV.get(spec.path.rstrip("/")),
                )
            )
        except ValidationError as e:
            problem = e.errors()[0]
            raise ValueError(f"cache_dirs[{name!r}]: {problem['msg']}") from None
    return found
