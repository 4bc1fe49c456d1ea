"""Shared fixtures: a private store per test, and a helper to write pipeline projects."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenloop.store import Store


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never touch the developer's real cache, local or remote.
    monkeypatch.setenv("GREENLOOP_CACHE_DIR", str(tmp_path / "cache"))
    for variable in (
        "GREENLOOP_REMOTE_CACHE",
        "GREENLOOP_REMOTE_CACHE_MODE",
        "GREENLOOP_REMOTE_CACHE_TOKEN",
    ):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "cache")
    yield s
    s.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / ".greenloop").mkdir(parents=True)
    return root


def write_pipeline(root: Path, body: str) -> Path:
    """Write ``.greenloop/pipeline.py`` with ``import greenloop as gl`` and ``body``."""
    path = root / ".greenloop" / "pipeline.py"
    path.write_text("import greenloop as gl\n\n" + textwrap.dedent(body))
    return path
