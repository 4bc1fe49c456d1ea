"""Builders the dev-server tests share: contract values, artifact folders, a running server.

No tests live here; the name only keeps it among the server's test files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from greenloop.protocol.devloop import (
    ArtifactMeta,
    BuildIdentity,
    BuildResult,
    Compiled,
    Diagnostic,
    Failed,
    Profile,
    Severity,
)
from greenloop.server import DevServer, LiveState, serve


def digest(seed: str) -> str:
    """A valid content hash derived from ``seed``."""
    return hashlib.sha256(seed.encode()).hexdigest()


def identity(seed: str = "src") -> BuildIdentity:
    """A build identity whose source tree hash comes from ``seed``."""
    return BuildIdentity(
        source_tree=digest(seed),
        lockfiles=digest("lock"),
        toolchain=digest("tool"),
        config=digest("config"),
        pipeline=digest("pipeline"),
        target="web",
        profile=Profile.DEV,
    )


def green_result(seed: str) -> BuildResult:
    """A compiled build of input ``seed`` whose artifact tree hash comes from ``seed`` too."""
    ident = identity(seed)
    meta = ArtifactMeta(
        input_hash=ident.input_hash(),
        identity=ident,
        tree=digest(f"tree:{seed}"),
        size_bytes=100,
        built_at=1_700_000_000,
        build_duration_ms=42,
    )
    return BuildResult(input_hash=ident.input_hash(), outcome=Compiled(), artifact=meta)


def failed_result(seed: str, reason: str = "the build step exited 1") -> BuildResult:
    """A failed build of input ``seed``."""
    return BuildResult(input_hash=identity(seed).input_hash(), outcome=Failed(reason=reason))


def diagnostic(
    path: str = "/project/src/app.py", line: int = 12, col: int = 5, message: str = "boom"
) -> Diagnostic:
    """An error diagnostic from ``ruff``."""
    return Diagnostic(
        path=path,
        line=line,
        col=col,
        severity=Severity.ERROR,
        code="F821",
        message=message,
        source="ruff",
    )


def write_site(directory: Path, files: dict[str, str | bytes]) -> Path:
    """Create ``directory`` holding ``files`` (relative path → content); return it."""
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return directory


def page(title: str) -> str:
    """A small HTML page whose ``<h1>`` is ``title``."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        f"{title}</title></head><body><h1>{title}</h1></body></html>"
    )


@contextmanager
def running(state: LiveState) -> Iterator[DevServer]:
    """A real server for ``state`` on a free loopback port, stopped afterwards."""
    server = serve(state)
    try:
        yield server
    finally:
        server.stop()
