"""A cached local step is answered only while the host's tools it may run are unchanged.

Never a wrong green: an entry made with one version of a tool on ``PATH`` must not
answer the step once that tool was upgraded (the new version may fail it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from greenloop.executors import host_tools
from greenloop.store import Store
from tests.conftest import cli, write_pipeline
from tests.test_remote import Remote, nginx, stores  # noqa: F401 (fixtures)
from tests.test_remote import run as run_remote
from tests.test_remote_server import NginxServer
from tests.test_run import run, statuses
from tests.test_sandbox import require_bwrap

LINT = """
@gl.pipeline("ci")
def ci():
    gl.sh("lint", label="lint", cache=gl.forever())
"""


def _install(folder: Path, name: str, exit_code: int) -> None:
    """Install tool ``name`` into ``folder`` as package managers do: the new file is
    written apart and renamed over the old one."""
    folder.mkdir(parents=True, exist_ok=True)
    new = folder / f".{name}.new"
    new.write_text(f"#!/bin/sh\necho {name} exits {exit_code}\nexit {exit_code}\n")
    new.chmod(0o755)
    os.replace(new, folder / name)


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tool folder of the test's first on ``PATH``, holding ``lint`` (which passes)."""
    folder = tmp_path / "tools" / "bin"
    _install(folder, "lint", 0)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


@pytest.mark.parametrize("sandbox", ["none", "bwrap"])
def test_an_upgraded_tool_reruns_the_cached_step_it_would_fail(
    store: Store, project: Path, tools: Path, tmp_path: Path, sandbox: str
) -> None:
    if sandbox == "bwrap":
        require_bwrap(tmp_path)
    write_pipeline(project, LINT)
    first, _ = run(store, project, sandbox=sandbox)
    assert statuses(first) == {"lint": "passed"}
    again, _ = run(store, project, sandbox=sandbox)
    assert statuses(again) == {"lint": "cached"}

    _install(tools, "lint", 1)  # the new version finds a problem
    upgraded, _ = run(store, project, sandbox=sandbox)
    assert statuses(upgraded) == {"lint": "failed"}
    # Red until fixed: the entry made with the old tool answers no more.
    still, _ = run(store, project, sandbox=sandbox)
    assert statuses(still) == {"lint": "failed"}

    _install(tools, "lint", 0)
    fixed, _ = run(store, project, sandbox=sandbox)
    assert statuses(fixed) == {"lint": "passed"}
    cached, _ = run(store, project, sandbox=sandbox)
    assert statuses(cached) == {"lint": "cached"}


def test_a_package_installed_beside_a_tool_reruns_the_step(
    store: Store, project: Path, tools: Path
) -> None:
    # A tool that imports its plugins: a new one is a new folder in site-packages.
    packages = tools.parent / "lib" / "python3.99" / "site-packages"
    packages.mkdir(parents=True)
    write_pipeline(project, LINT)
    run(store, project, sandbox="none")
    assert statuses(run(store, project, sandbox="none")[0]) == {"lint": "cached"}
    (packages / "a_plugin-1.0.dist-info").mkdir()
    assert statuses(run(store, project, sandbox="none")[0]) == {"lint": "passed"}


def test_explain_names_the_tool_folder_that_changed(project: Path, tools: Path) -> None:
    write_pipeline(project, LINT)
    env = {"PATH": os.environ["PATH"]}
    assert cli("run", cwd=project, env=env).returncode == 0
    _install(tools, "lint", 0)

    done = cli("explain", "--json", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    [lint] = json.loads(done.stdout)
    assert lint["outcome"] == "miss"
    assert lint["reasons"] == [f"the host's tools changed since it was cached: {tools}"]
    assert lint["changed"] == {"host_tools": [str(tools)]}
    human = cli("explain", cwd=project, env=env).stdout
    assert f"the host's tools changed since it was cached: {tools}" in human


def test_an_entry_made_with_other_tools_is_not_taken_back_from_the_remote(
    nginx: NginxServer,  # noqa: F811
    stores: tuple[Store, Store],  # noqa: F811
    project: Path,
    tools: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store_a, store_b = stores
    write_pipeline(project, LINT)
    assert statuses(run_remote(store_a, project, Remote(store_a, nginx.url))[0]) == {
        "lint": "passed"
    }
    _install(tools, "lint", 1)
    # The remote holds the entry this machine made with the old tool: it is no answer.
    upgraded, _ = run_remote(store_a, project, Remote(store_a, nginx.url))
    assert statuses(upgraded) == {"lint": "failed"}

    # Another machine takes the remote's word (a key cannot say which tools made it)...
    monkeypatch.setenv("PATH", os.environ["PATH"].replace(str(tools), str(tools) + "-b"))
    _install(Path(str(tools) + "-b"), "lint", 0)
    other = Remote(store_b, nginx.url)
    assert statuses(run_remote(store_b, project, other)[0]) == {"lint": "cached"}
    # ...and from then on holds it to its own tools.
    _install(Path(str(tools) + "-b"), "lint", 1)
    assert statuses(run_remote(store_b, project, None)[0]) == {"lint": "failed"}


def test_the_folders_of_a_virtualenv_a_version_manager_rustup_and_pipx(tmp_path: Path) -> None:
    base = tmp_path / "python"
    (base / "bin").mkdir(parents=True)
    (base / "lib" / "python3.12" / "site-packages").mkdir(parents=True)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "lib" / "python3.12" / "site-packages").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {base / 'bin'}\nversion = 3.12.1\n")
    pyenv = tmp_path / "pyenv"
    (pyenv / "shims").mkdir(parents=True)
    (pyenv / "versions" / "3.12.1" / "bin").mkdir(parents=True)
    (pyenv / "versions" / "3.12.1" / "lib" / "node_modules").mkdir(parents=True)
    cargo = tmp_path / "home" / ".cargo" / "bin"
    cargo.mkdir(parents=True)
    (tmp_path / "home" / ".rustup" / "toolchains" / "stable" / "bin").mkdir(parents=True)
    # pipx: ~/.local/bin/ruff is a link into ruff's own virtualenv.
    local = tmp_path / "home" / ".local" / "bin"
    ruff_venv = tmp_path / "home" / ".local" / "share" / "pipx" / "venvs" / "ruff"
    (ruff_venv / "bin").mkdir(parents=True)
    (ruff_venv / "lib" / "python3.12" / "site-packages").mkdir(parents=True)
    _install(ruff_venv / "bin", "ruff", 0)
    local.mkdir(parents=True)
    (local / "ruff").symlink_to(ruff_venv / "bin" / "ruff")

    folders = [venv / "bin", pyenv / "shims", cargo, local, "relative/bin"]
    search = os.pathsep.join(map(str, folders))
    found = [Path(p).relative_to(tmp_path).as_posix() for p in host_tools.tool_folders(search)]
    assert found == [
        "venv/bin",
        "venv/lib/python3.12",
        "venv/lib/python3.12/site-packages",
        "python/bin",
        "python/lib/python3.12",
        "python/lib/python3.12/site-packages",
        "pyenv/versions",
        "pyenv/version",
        "pyenv/versions/3.12.1/bin",
        "pyenv/versions/3.12.1/lib/node_modules",
        "home/.cargo/bin",
        "home/.rustup/settings.toml",
        "home/.rustup/toolchains",
        "home/.rustup/toolchains/stable/bin",
        "home/.local/bin",
        "home/.local/share/pipx/venvs/ruff/bin",
        "home/.local/share/pipx/venvs/ruff/lib/python3.12",
        "home/.local/share/pipx/venvs/ruff/lib/python3.12/site-packages",
    ]
    before = host_tools.stamp(search)
    assert host_tools.stamp(search) == before
    # `pyenv init` in a new shell rewrites the shims folder, with no tool changed.
    (pyenv / "shims" / ".pyenv-shim").touch()
    (pyenv / "shims" / ".pyenv-shim").unlink()
    assert host_tools.stamp(search) == before
    # `pipx upgrade ruff`: its virtualenv changes, the link does not.
    (ruff_venv / "lib" / "python3.12" / "site-packages" / "ruff-0.6.dist-info").mkdir()
    assert host_tools.stamp(search) != before
    before = host_tools.stamp(search)
    (pyenv / "version").write_text("3.12.1\n")  # `pyenv global 3.12.1`
    assert host_tools.stamp(search) != before


def test_the_same_folders_searched_in_another_order_are_other_tools(
    store: Store, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "a" / "bin", tmp_path / "b" / "bin"
    _install(first, "lint", 0)
    _install(second, "lint", 1)
    rest = os.environ["PATH"]
    write_pipeline(project, LINT)
    monkeypatch.setenv("PATH", os.pathsep.join([str(first), str(second), rest]))
    assert statuses(run(store, project, sandbox="none")[0]) == {"lint": "passed"}
    assert statuses(run(store, project, sandbox="none")[0]) == {"lint": "cached"}
    monkeypatch.setenv("PATH", os.pathsep.join([str(second), str(first), rest]))
    assert statuses(run(store, project, sandbox="none")[0]) == {"lint": "failed"}
    env = {"PATH": os.environ["PATH"], "GREENLOOP_LOCAL_SANDBOX": "none"}
    done = cli("explain", "--json", cwd=project, env=env)
    [lint] = json.loads(done.stdout)
    assert lint["reasons"] == [
        "the host's tools changed since it was cached: "
        "PATH searches the same folders in another order"
    ]


def test_an_imported_entry_answers_then_holds_to_this_machines_tools(
    project: Path, tools: Path, tmp_path: Path
) -> None:
    write_pipeline(project, LINT)
    env = {"PATH": os.environ["PATH"]}
    assert cli("run", cwd=project, env=env).returncode == 0
    assert cli("cache", "export", str(tmp_path / "carried"), cwd=project, env=env).returncode == 0
    other = {**env, "GREENLOOP_CACHE_DIR": str(tmp_path / "runner-2")}
    assert cli("cache", "import", str(tmp_path / "carried"), cwd=project, env=other).returncode == 0
    # An export says nothing of the tools it was made with: taken on its word...
    assert "↺ lint cached" in cli("run", cwd=project, env=other).stdout
    # ...and from its first answer on, held to this machine's.
    _install(tools, "lint", 1)
    rerun = cli("run", cwd=project, env=other)
    assert rerun.returncode == 1 and "✗ lint failed" in rerun.stdout, rerun.stdout
