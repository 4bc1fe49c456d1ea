"""``greenloop serve`` with the real pyright language server: one process for every
worktree, one workspace folder each, and verdicts that never leak between them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenloop.fleet.place import ServePlace, common_dir
from tests.conftest import wait_until
from tests.test_devloop_helpers import Background, cli, env_with, node_bin, python_env
from tests.test_devloop_lsp import _MARK, LSP_ON, _servers
from tests.test_devloop_lsp_shared import APP, RETURNS_STR, _tree
from tests.test_fleet import Stream, _add_worktree, _check, _git, _serve_dir

__all__ = ["_serve_dir"]  # its autouse fixture gives every test a short socket folder


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = _tree(tmp_path / "main")
    assert (root / "demo/app.py").read_text() == APP
    with (root / "pyproject.toml").open("a") as f:
        f.write(LSP_ON)
    _git("init", "-q", cwd=root)
    _git("add", "-A", cwd=root)
    _git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init", cwd=root)
    return root.resolve()


def _env(repo: Path) -> dict[str, str]:
    # The mark finds this test's servers among the machine's processes.
    return {**env_with(node_bin(), *python_env()["PATH"].split(":")), _MARK: str(repo)}


@pytest.fixture
def serving(repo: Path, request: pytest.FixtureRequest) -> Iterator[Background]:
    flags = getattr(request, "param", [])
    server = Background("serve", "--jobs", "1", *flags, cwd=repo, env=_env(repo))
    try:
        wait_until(ServePlace.of(common_dir(repo) or repo).socket.exists, what="the socket")
        yield server
    finally:
        server.close()
    wait_until(lambda: not _servers(repo), what="the language servers to stop with serve")


def _pyright(diagnostics: list[dict[str, object]]) -> set[tuple[object, object]]:
    return {(d["path"], d["line"]) for d in diagnostics if d["source"] == "pyright"}


def test_one_language_server_checks_every_worktree_each_against_its_own_files(
    repo: Path, serving: Background
) -> None:
    trees = [repo, _add_worktree(repo, "one"), _add_worktree(repo, "two")]
    stream = Stream(repo)
    try:
        for tree in trees:
            stream.next("verdict", tree, tree="green")
        (server,) = _servers(repo)

        # Only "one"'s own double returns a str: only its app is red, by pyright too.
        (trees[1] / "demo/calc.py").write_text(RETURNS_STR)
        red = stream.next("verdict", trees[1], tree="red")
        assert _pyright(red["diagnostics"]) == {(str(trees[1] / "demo/app.py"), 3)}
        for tree in (trees[0], trees[2]):
            assert _check(tree)[0] == 0
            assert stream.verdicts(tree) == ["green"]

        status = json.loads(cli("status", "--json", cwd=repo, env=_env(repo)).stdout)
        assert status["serve"]["lsp_servers"] == {"limit": 1, "running": 1}
        text = cli("status", cwd=repo, env=_env(repo)).stdout
        assert "lsp_servers.limit=1, lsp_servers.running=1" in text

        # A removed worktree leaves the shared server to the others.
        _git("worktree", "remove", "--force", str(trees[2]), cwd=repo)
        stream.next("worktree_removed", trees[2])
        (trees[0] / "demo/calc.py").write_text(RETURNS_STR)
        assert _pyright(stream.next("verdict", trees[0], tree="red")["diagnostics"]) == {
            (str(trees[0] / "demo/app.py"), 3)
        }
        assert _servers(repo) == [server]
    finally:
        stream.proc.close()


@pytest.mark.parametrize("serving", [["--lsp-servers", "2"]], indirect=True)
def test_lsp_servers_bounds_the_processes_whatever_the_number_of_worktrees(
    repo: Path, serving: Background
) -> None:
    trees = [repo, *(_add_worktree(repo, f"wt{i}") for i in range(3))]
    stream = Stream(repo)
    try:
        for tree in trees:
            stream.next("verdict", tree, tree="green")
        assert len(_servers(repo)) == 2
        status = json.loads(cli("status", "--json", cwd=repo, env=_env(repo)).stdout)
        assert status["serve"]["lsp_servers"] == {"limit": 2, "running": 2}
    finally:
        stream.proc.close()


def test_lsp_servers_below_one_is_exit_2(repo: Path) -> None:
    done = cli("serve", "--lsp-servers", "0", cwd=repo, env=_env(repo))
    assert done.returncode == 2
    assert "--lsp-servers" in done.stderr
