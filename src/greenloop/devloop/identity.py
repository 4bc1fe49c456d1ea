"""The build identity of the tree as it is now: what a green verdict vouches for.

Each field is a SHA-256 over length-prefixed parts, so no two different inputs
can produce the same byte stream by shifting characters between parts, and an
absent file is distinct from an empty one.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from greenloop._project import PIPELINE_FILE
from greenloop.devloop.checkers import Checker, resolve_checkers
from greenloop.devloop.config import Config
from greenloop.devloop.file_digests import DigestCache
from greenloop.devloop.ignores import Ignores
from greenloop.devloop.programs import program_version
from greenloop.protocol import BuildIdentity, SetupError

LOCKFILES = (
    "Cargo.lock",
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "bun.lock",
    "bun.lockb",
    "poetry.lock",
    "uv.lock",
    "Pipfile.lock",
    "pdm.lock",
)
"""Lock files at the root whose content pins the dependencies."""

LOCKFILE_GLOBS = ("requirements*.txt", "constraints*.txt")
"""Pip-style pin files at the root (every match is hashed)."""

TOOLCHAIN_FILES = (
    "rust-toolchain",
    "rust-toolchain.toml",
    ".python-version",
    ".nvmrc",
    ".node-version",
    ".tool-versions",
)
"""Files at the root that pin a toolchain version."""


class _Hasher:
    def __init__(self, domain: str) -> None:
        self._h = hashlib.sha256()
        self.part(domain)

    def part(self, value: str | bytes | None) -> None:
        # A presence byte, then a length prefix: None, b"" and shifted text all differ.
        if value is None:
            self._h.update(b"\x00")
            return
        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        self._h.update(b"\x01" + len(raw).to_bytes(8, "big") + raw)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def build_identity(
    root: Path,
    config: Config,
    *,
    checkers: Sequence[Checker] | None = None,
    digests: DigestCache | None = None,
    files: Sequence[str] | None = None,
) -> BuildIdentity:
    """The identity of the tree at ``root`` under ``config`` right now.

    ``checkers`` default to the resolved ones (a missing program hashes as
    absent); ``digests`` lets a long-lived caller skip re-hashing settled files;
    ``files`` is the project's file list when the caller has just taken it
    (``Ignores(root, settings.ignore).files()``), so it is not listed twice.
    """
    digests = digests or DigestCache()
    if checkers is None:
        try:
            checkers = resolve_checkers(root, config)
        except SetupError:
            checkers = []
    settings = config.settings
    return BuildIdentity(
        source_tree=source_tree_hash(
            root, files if files is not None else Ignores(root, settings.ignore).files(), digests
        ),
        lockfiles=_files_hash("lockfiles", root, _lockfile_names(root), digests),
        toolchain=_toolchain_hash(root, checkers, digests),
        config=_config_hash(config),
        pipeline=_files_hash("pipeline", root, [PIPELINE_FILE.as_posix()], digests),
        target=settings.target or host_triple(),
        profile=settings.profile,
    )


def source_tree_hash(root: Path, files: Iterable[str], digests: DigestCache) -> str:
    """Hash over (path, content digest) of ``files``; a file gone since listing is absent."""
    h = _Hasher("greenloop-source-tree/v1")
    for rel in sorted(files):
        h.part(rel)
        h.part(digests.digest(root / rel))
    return h.hexdigest()


def host_triple() -> str:
    """A target triple for this machine, e.g. ``x86_64-unknown-linux-gnu``."""
    machine = platform.machine().lower() or "unknown"
    machine = {"amd64": "x86_64", "arm64": "aarch64", "x64": "x86_64"}.get(machine, machine)
    if sys.platform.startswith("linux"):
        return f"{machine}-unknown-linux-gnu"
    if sys.platform == "darwin":
        return f"{machine}-apple-darwin"
    if sys.platform == "win32":
        return f"{machine}-pc-windows-msvc"
    return f"{machine}-unknown-{sys.platform}"


def _lockfile_names(root: Path) -> list[str]:
    globbed = sorted({p.name for pattern in LOCKFILE_GLOBS for p in root.glob(pattern)})
    return [*LOCKFILES, *globbed]


def _files_hash(domain: str, root: Path, names: Iterable[str], digests: DigestCache) -> str:
    h = _Hasher(f"greenloop-{domain}/v1")
    for name in names:
        h.part(name)
        h.part(digests.digest(root / name))
    return h.hexdigest()


def _toolchain_hash(root: Path, checkers: Sequence[Checker], digests: DigestCache) -> str:
    h = _Hasher("greenloop-toolchain/v1")
    h.part(_files_hash("toolchain-files", root, TOOLCHAIN_FILES, digests))
    for checker in sorted(checkers, key=lambda c: c.name):
        h.part(checker.name)
        if checker.builtin:
            h.part(program_version(checker.program))
        else:
            # An arbitrary program may not understand --version (or may run a whole
            # check when asked): its bytes stand for its version instead.
            h.part(digests.digest(Path(checker.program)))
    return h.hexdigest()


def _config_hash(config: Config) -> str:
    h = _Hasher("greenloop-config/v1")
    if config.source is None:
        h.part(None)
    else:
        # Only the greenloop table counts: the rest of pyproject.toml is source.
        h.part(config.source.name)
        h.part(json.dumps(config.table, sort_keys=True, default=str))
    return h.hexdigest()
