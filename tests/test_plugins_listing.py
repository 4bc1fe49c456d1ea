"""Plugin listings are kept while what they were read from is unchanged.

Executables on the search path: a long-lived process (and every command forked
from the daemon) reads each directory's ``greenloop-*`` names once; adding,
removing or renaming a plugin changes the directory, so the next lookup reads it
again. Entry points: the listing is kept in a file in the store folder, stamped
with the stat of every ``sys.path`` folder and every distribution's metadata; the
next command reads it unless one of them changed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest

from greenloop.plugins import discovery
from greenloop.store.layout import default_root, init_root

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


# -- entry points: the listing kept in the store folder across processes -----------------


def _distribution(site: Path, name: str, version: str, target: str) -> Path:
    """Install a distribution ``name`` into ``site`` declaring the hook ``fake = target``."""
    meta = site / f"{name}-{version}.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (meta / "entry_points.txt").write_text(f"[greenloop.hooks]\nfake = {target}\n")
    return meta


def _new_process() -> None:
    """What a new command starts with: nothing read yet in this process."""
    discovery._forget_installed()
    importlib.invalidate_caches()  # importlib.metadata's own per-folder cache too


def _scanned(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the scans of the installed distributions from now on."""
    calls: list[int] = []
    scan = discovery._scan_distributions

    def counted() -> dict[str, tuple[discovery.Entry, ...]]:
        calls.append(1)
        return scan()

    monkeypatch.setattr(discovery, "_scan_distributions", counted)
    return calls


def _from_importlib(name: str) -> str:
    """What importlib.metadata itself says hook ``name`` is (the last of the name wins)."""
    found = {ep.name: ep for ep in importlib.metadata.entry_points(group="greenloop.hooks")}
    return found[name].value


@pytest.fixture
def site(plugin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on ``sys.path`` to install distributions into, and a store to keep the listing."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "fakeplug.py").write_text("class One:\n    pass\n\n\nclass Two:\n    pass\n")
    init_root(default_root())
    monkeypatch.syspath_prepend(str(folder))
    _new_process()
    yield folder
    _new_process()  # the next test sees the real distributions again


def test_the_listing_is_kept_and_read_by_the_next_command(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _distribution(site, "fake-one", "1.0", "fakeplug:One")
    scans = _scanned(monkeypatch)
    assert discovery.available("hook") == ["fake"]
    assert list((default_root() / "plugins").glob("entry-points-*.json"))
    _new_process()
    assert discovery.available("hook") == ["fake"]
    assert discovery.load("hook", "fake").__name__ == "One"
    assert len(scans) == 1  # the second command read the kept listing


def test_adding_and_removing_a_distribution_are_seen(site: Path) -> None:
    assert discovery.available("hook") == []
    meta = _distribution(site, "fake-one", "1.0", "fakeplug:One")
    _new_process()
    assert discovery.available("hook") == ["fake"]
    shutil.rmtree(meta)
    _new_process()
    assert discovery.available("hook") == []


def test_an_entry_points_file_rewritten_in_place_is_seen(site: Path) -> None:
    meta = _distribution(site, "fake-one", "1.0", "fakeplug:One")
    assert discovery.load("hook", "fake").__name__ == "One"
    entry_points = meta / "entry_points.txt"
    before = entry_points.stat()
    # The same size, and the same mtime given back: only its ctime tells.
    entry_points.write_text(entry_points.read_text().replace("One", "Two"))
    os.utime(entry_points, ns=(before.st_atime_ns, before.st_mtime_ns))
    _new_process()
    assert discovery.load("hook", "fake").__name__ == "Two"


def test_a_new_version_is_listed(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meta = _distribution(site, "fake-one", "1.0", "fakeplug:One")

    def listed() -> str:
        (info,) = [i for i in discovery.plugins() if i.name == "fake"]
        return info.version

    assert listed() == "1.0"
    (meta / "METADATA").write_text((meta / "METADATA").read_text().replace("1.0", "1.1"))
    _new_process()
    assert listed() == "1.1"


def test_a_shadowing_distribution_keeps_importlib_metadatas_precedence(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = tmp_path / "later-site"
    later.mkdir()
    _distribution(site, "fake-one", "1.0", "fakeplug:One")
    _distribution(later, "fake-two", "2.0", "fakeplug:Two")
    monkeypatch.syspath_prepend(str(later))
    monkeypatch.syspath_prepend(str(site))  # site first on the path, later-site after it
    _new_process()
    expected = _from_importlib("fake")
    assert discovery._entry_points("hook")["fake"].value == expected  # scanned
    _new_process()
    assert discovery._entry_points("hook")["fake"].value == expected  # kept
    sys.path.remove(str(site))  # the other order: the answer follows importlib's
    sys.path.append(str(site))
    _new_process()
    assert discovery._entry_points("hook")["fake"].value == _from_importlib("fake") != expected


def test_a_folder_leaving_the_path_is_seen(site: Path) -> None:
    _distribution(site, "fake-one", "1.0", "fakeplug:One")
    assert discovery.available("hook") == ["fake"]
    sys.path.remove(str(site))
    _new_process()
    assert discovery.available("hook") == []


def test_a_listing_read_from_files_changed_just_now_is_not_kept(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discovery, "_SETTLED_NS", 2_000_000_000)
    _distribution(site, "fake-one", "1.0", "fakeplug:One")  # now: too fresh to trust its stat
    assert discovery.available("hook") == ["fake"]
    assert not list((default_root() / "plugins").glob("entry-points-*.json"))


def test_without_a_store_nothing_is_written(site: Path, tmp_path: Path) -> None:
    shutil.rmtree(default_root())
    _distribution(site, "fake-one", "1.0", "fakeplug:One")
    assert discovery.available("hook") == ["fake"]
    assert not default_root().exists()  # a store made later must not find a stranger's file


# -- pydantic's own plugin scan, answered from the listing ---------------------------------

_BUILD_A_MODEL = """
import sys
from greenloop.plugins import discovery
discovery._SETTLED_NS = -(10**18)  # keep the listing at once (the test's folders are new)
discovery.spare_pydantic_its_plugin_scan()
import pydantic
class Model(pydantic.BaseModel):
    x: int
assert Model(x=1).x == 1
print("importlib.metadata" in sys.modules)
"""

_RECORDER = """
class Recorder:
    def new_schema_validator(self, schema, schema_type, schema_type_path, *args):
        print("the plugin saw", schema_type_path.name)
        return None, None, None


plugin = Recorder()
"""


def _build_a_model(env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _BUILD_A_MODEL], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_pydantic_is_answered_from_the_listing_when_no_pydantic_plugin_is_installed() -> None:
    if importlib.metadata.entry_points(group="pydantic"):
        pytest.skip("a pydantic plugin is installed in this environment")
    init_root(default_root())
    env = dict(os.environ)
    assert _build_a_model(env) == ["True"]  # the first command scans (and keeps the listing)
    assert _build_a_model(env) == ["False"]  # the next: no importlib.metadata at all


def test_an_installed_pydantic_plugin_is_still_found_and_used_by_pydantic(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "recorder_plugin.py").write_text(_RECORDER)
    meta = site / "recorder-1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: recorder\nVersion: 1.0\n")
    (meta / "entry_points.txt").write_text("[pydantic]\nrecorder = recorder_plugin:plugin\n")
    init_root(default_root())
    paths = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    for _ in range(2):  # scanned, then from the kept listing
        assert _build_a_model(env) == ["the plugin saw Model", "True"]


def test_pydantic_asks_its_plugin_loader_for_get_plugins_alone() -> None:
    # The stand-in for pydantic.plugin._loader has get_plugins() and nothing else: should
    # pydantic ever import more from it, this fails before any command does.
    package = Path(pydantic.__file__).parent
    uses = [
        line.strip()
        for source in package.rglob("*.py")
        for line in source.read_text().splitlines()
        if "_loader" in line and "import" in line
    ]
    assert uses == ["from ._loader import get_plugins"]
