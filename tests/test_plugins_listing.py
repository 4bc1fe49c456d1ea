"""Plugin executables on the search path: a directory's listing is kept while it is unchanged.

A long-lived process (and every command forked from the daemon) reads each
directory's ``greenloop-*`` names once; adding, removing or renaming a plugin
changes the directory, so the next lookup reads it again.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from greenloop.plugins import discovery

_SCRIPT = f"#!{sys.executable}\nimport sys\nsys.exit(0)\n"
_LONG_AGO = 1_000_000_000  # 2001


def _plugin(directory: Path, name: str) -> Path:
    path = directory / f"greenloop-hook-{name}"
    path.write_text(_SCRIPT)
    path.chmod(0o755)
    return path


def _settle(directory: Path) -> None:
    """Give ``directory`` one old mtime (its ctime still moves on, as it must)."""
    os.utime(directory, (_LONG_AGO, _LONG_AGO))


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "plugins"
    directory.mkdir()
    monkeypatch.setenv(discovery.PLUGIN_PATH_ENV, str(directory))
    monkeypatch.setenv("PATH", "")
    # Listings are kept only once a directory's last change is two seconds old (coarse
    # file-system times); the tests keep them at once rather than sleep.
    monkeypatch.setattr(discovery, "_SETTLED_NS", -(10**18))
    return directory


def test_a_settled_directory_is_listed_once(plugin_dir: Path) -> None:
    _plugin(plugin_dir, "one")
    _settle(plugin_dir)
    assert discovery.available("hook") == ["one"]
    assert plugin_dir in discovery._LISTINGS  # kept: the directory has not changed since
    assert discovery.available("hook") == ["one"]


def test_adding_removing_and_renaming_a_plugin_are_seen(plugin_dir: Path) -> None:
    first = _plugin(plugin_dir, "one")
    _settle(plugin_dir)
    assert discovery.available("hook") == ["one"]
    _plugin(plugin_dir, "two")
    assert discovery.available("hook") == ["one", "two"]
    _settle(plugin_dir)
    assert discovery.available("hook") == ["one", "two"]
    first.rename(plugin_dir / "greenloop-hook-three")
    _settle(plugin_dir)  # the same mtime as before: its ctime still moved
    assert discovery.available("hook") == ["three", "two"]
    (plugin_dir / "greenloop-hook-three").unlink()
    _settle(plugin_dir)
    assert discovery.available("hook") == ["two"]


def test_what_a_name_is_is_checked_every_time(plugin_dir: Path) -> None:
    path = _plugin(plugin_dir, "one")
    _settle(plugin_dir)
    assert discovery.available("hook") == ["one"]
    path.chmod(0o644)  # the directory is unchanged; the file no longer runs
    assert discovery.available("hook") == []
    path.chmod(0o755)
    assert discovery.available("hook") == ["one"]


def test_a_directory_changed_just_now_is_not_kept(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discovery, "_SETTLED_NS", 2_000_000_000)
    _plugin(plugin_dir, "one")  # the directory changed now: too fresh to trust
    assert discovery.available("hook") == ["one"]
    assert plugin_dir not in discovery._LISTINGS


def test_a_replaced_directory_is_read_again(plugin_dir: Path, tmp_path: Path) -> None:
    _plugin(plugin_dir, "one")
    _settle(plugin_dir)
    assert discovery.available("hook") == ["one"]
    other = tmp_path / "other"
    other.mkdir()
    _plugin(other, "two")
    _settle(other)
    (plugin_dir / "greenloop-hook-one").unlink()
    plugin_dir.rmdir()
    other.rename(plugin_dir)
    _settle(plugin_dir)
    assert discovery.available("hook") == ["two"]
