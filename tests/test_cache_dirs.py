"""Cache folders (``cache_dirs=``): kept across runs and lock-file changes, never in a
snapshot or a key, shared or locked between steps running at once, known to gc and stats.

The pip tests install a real package from PyPI, and a real Docker (and Podman) engine
keeps the folder as a volume.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from greenloop.store import Store
from tests.conftest import cli, write_pipeline
from tests.docker_image import IMAGE
from tests.test_docker import _client
from tests.test_executor_suite import use_executor
from tests.test_run import logs, run, statuses
from tests.test_sandbox import require_bwrap

# Built from its sdist: pip keeps a wheel it built whatever the index's HTTP headers say
# (a proxy that sends no caching headers leaves pip's HTTP cache empty).
PIP = """
@gl.pipeline("ci", sandbox="{sandbox}")
def ci():
    gl.sh("python3 -m venv .venv && .venv/bin/python -m pip install --no-binary six"
          " -r requirements.txt",
          label="deps", cache=gl.on_change("requirements.txt"),
          cache_dirs={{"pip": "~/.cache/pip"}})
"""


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_pip_finds_last_runs_wheel_after_the_lock_file_changed(
    project: Path, store: Store, sandbox: str
) -> None:
    if sandbox == "bwrap":
        require_bwrap(project.parent)
    write_pipeline(project, PIP.format(sandbox=sandbox))
    lock = project / "requirements.txt"
    lock.write_text("six==1.16.0\n")
    first = cli("run", "--format", "plain", cwd=project, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Using cached six" not in first.stdout
    lock.write_text("six==1.16.0\n# bumped: a new lock, the same wheel\n")
    second = cli("run", "--format", "plain", cwd=project, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Using cached six" in second.stdout, second.stdout
    # The wheel is in the store's folder, and never in the step's snapshot.
    [usage] = store.cache_dirs.usage()
    assert usage.name == "pip" and usage.size_bytes > 0
    snapshot = {e.path for e in store.get_tree(_last_tree(store))}
    assert ".venv/bin/python" in {p.split("workspace/", 1)[-1] for p in snapshot}
    assert not [p for p in snapshot if ".cache/pip" in p]


def _last_tree(store: Store) -> str:
    entries = sorted(store.index.entries(), key=lambda e: e.created_at)
    tree = store.get_ref(entries[-1].snapshot)
    assert tree is not None
    return tree


TWO_AT_ONCE = """
@gl.pipeline("ci", sandbox="bwrap")
def ci():
    shared = gl.cache_dir("~/.cache/log", sharing="{sharing}")
    for name in ("a", "b"):
        log = "~/.cache/log/log"
        gl.sh(f"echo start-{{name}} >> {{log}}; sleep 1; echo end-{{name}} >> {{log}}",
              label=name, cache_dirs={{"log": shared}})
"""


@pytest.mark.parametrize("sharing", ["locked", "shared"])
def test_locked_steps_take_turns_and_shared_ones_overlap(
    project: Path, store: Store, sharing: str
) -> None:
    require_bwrap(project.parent)
    write_pipeline(project, TWO_AT_ONCE.format(sharing=sharing))
    done = cli("run", "--format", "plain", "-j", "2", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = (store.cache_dirs.folder / "log" / "log").read_text().split()
    assert sorted(lines) == ["end-a", "end-b", "start-a", "start-b"]
    turns = lines[0][6:] == lines[1][4:] and lines[2][6:] == lines[3][4:]
    # Shared: both ran at once (which the lock is there to prevent).
    assert turns is (sharing == "locked"), lines


def test_stats_show_cache_dirs_and_gc_empties_them(project: Path, store: Store) -> None:
    require_bwrap(project.parent)
    write_pipeline(
        project,
        """
        @gl.pipeline("ci", sandbox="bwrap")
        def ci():
            gl.sh("head -c 300000 /dev/zero > ~/.npm/blob", cache_dirs={"npm": "~/.npm"})
        """,
    )
    assert cli("run", cwd=project).returncode == 0
    stats = cli("cache", "stats", "--json", cwd=project)
    [usage] = json.loads(stats.stdout)["cache_dirs"]
    assert usage["name"] == "npm" and usage["size_bytes"] == 300000
    assert "cache dir npm: 0.3 MB" in cli("cache", "stats", cwd=project).stdout
    kept = json.loads(cli("cache", "gc", "--json", cwd=project).stdout)
    assert kept["cache_dirs_removed"] == []  # used just now
    gone = json.loads(cli("cache", "gc", "--cache-dirs", "--json", cwd=project).stdout)
    assert gone["cache_dirs_removed"] == ["npm"]
    assert store.cache_dirs.usage() == []


@pytest.mark.parametrize(
    ("cache_dirs", "says"),
    [
        ('{"pip": "cache/pip"}', "must be ~/... or a path inside the step's workdir"),
        ('{"x": "/etc/x"}', "is neither under ~ nor inside its workdir /workspace"),
        ('{"x": "~/../x"}', "must be ~/... or a path inside the step's workdir"),
        ('{"x": 3}', "cache_dirs['x'] must be a path or gl.cache_dir(...)"),
        ('{"bad name": "~/x"}', "cache_dirs['bad name']"),
    ],
)
def test_bad_cache_dirs_are_exit_2_naming_the_line(
    project: Path, cache_dirs: str, says: str
) -> None:
    path = write_pipeline(
        project, f'@gl.pipeline("ci")\ndef ci():\n    gl.sh("true", cache_dirs={cache_dirs})\n'
    )
    done = cli("render", cwd=project)
    assert done.returncode == 2, done.stdout
    assert says in done.stderr and f"{path.resolve()}:5" in done.stderr, done.stderr


def test_one_name_two_paths_and_no_mount_without_a_sandbox_are_exit_2(project: Path) -> None:
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            gl.sh("true", label="a", cache_dirs={"c": "~/.cache/a"})
            gl.sh("true", label="b", cache_dirs={"c": "~/.cache/b"})
        """,
    )
    done = cli("render", cwd=project)
    assert done.returncode == 2
    assert "cache dir 'c' is ~/.cache/a in step 'a' but ~/.cache/b in step 'b'" in done.stderr
    write_pipeline(
        project,
        """
        @gl.pipeline("ci", sandbox="none")
        def ci():
            gl.sh("true", cache_dirs={"tool": "~/.tool-cache"})
        """,
    )
    done = cli("run", cwd=project)
    assert done.returncode == 2
    assert "can only be mounted in the bwrap sandbox" in done.stderr, done.stderr
    assert "gl.cache_dir(path, env=...)" in done.stderr


@pytest.fixture(params=["docker", "docker+podman"])
def client(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client of the engine under test, whose DOCKER_HOST the run uses too."""
    use_executor(request.param, tmp_path, monkeypatch)
    return _client()


def test_a_container_keeps_its_cache_dir_as_a_volume(
    client: Any, store: Store, project: Path
) -> None:
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci", default_image="{IMAGE}", executor="docker")
        def ci():
            gl.sh("cat ~/.cache/x/seen 2>/dev/null || echo first; echo again > ~/.cache/x/seen",
                  label="use", cache_dirs={{"x": "~/.cache/x"}})
        """,
    )
    try:
        first, events = run(store, project)
        assert statuses(first) == {"use": "passed"}, logs(events, "use")
        assert logs(events, "use") == ["first"]
        _, events = run(store, project)
        assert logs(events, "use") == ["again"]
    finally:
        for volume in client.volumes.list(filters={"label": "greenloop=cache-dir"}):
            volume.remove(force=True)
