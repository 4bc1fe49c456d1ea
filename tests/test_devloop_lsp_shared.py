"""Language servers shared by many trees: the real pyright-langserver, one workspace
folder a tree, verdicts that never leak between trees."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenloop.devloop.lsp import Folder, ServerFailed
from greenloop.devloop.lsp_shared import SharedLanguageServers
from tests.conftest import wait_until
from tests.test_devloop_helpers import PY_GREEN, env_with, node_bin, python_project, write
from tests.test_devloop_lsp import FRAMING

APP = "from demo.calc import double\n\nx: int = double(1)\n"
"""Green exactly when the tree's own ``double`` returns an int."""

RETURNS_STR = "def double(a: int) -> str:\n    return str(a * 2)\n"
"""Green by itself; makes the tree's ``demo/app.py`` red."""

FILES = ["demo/__init__.py", "demo/calc.py", "demo/app.py"]


@pytest.fixture
def argv() -> list[str]:
    server = node_bin() / "pyright-langserver"
    return [str(server), "--stdio"]


@pytest.fixture
def pool() -> Iterator[SharedLanguageServers]:
    servers = SharedLanguageServers(1)
    yield servers
    servers.close()


def _tree(path: Path) -> Path:
    root = python_project(path)
    (root / "demo/app.py").write_text(APP)
    return root


def _errors(folder: Folder) -> list[tuple[str, int]]:
    found = folder.check(FILES, "pyright", threading.Event(), 120)
    assert found is not None
    return sorted((str(Path(d.path).relative_to(folder.root)), d.line) for d in found)


def _env() -> dict[str, str]:
    return env_with(node_bin())


def test_trees_share_one_server_and_each_is_checked_against_its_own_files(
    tmp_path: Path, argv: list[str], pool: SharedLanguageServers
) -> None:
    trees = [_tree(tmp_path / name) for name in ("a", "b", "c")]
    folders = [pool.get(argv, root, _env()) for root in trees]
    (server,) = pool.servers()
    assert all(folder.server is server for folder in folders)
    assert [f.root for f in server.folders] == trees
    assert [_errors(f) for f in folders] == [[], [], []]

    # Only b's own double returns a str: only b's app is red. Had b's import been
    # resolved in another folder, b would be a wrong green.
    (trees[1] / "demo/calc.py").write_text(RETURNS_STR)
    assert [_errors(f) for f in folders] == [[], [("demo/app.py", 3)], []]

    # A folder's own settings apply to it alone.
    write(trees[2], {"pyrightconfig.json": '{"reportAssignmentType": "none"}'})
    (trees[2] / "demo/calc.py").write_text(RETURNS_STR)
    pool.close_root(trees[2])  # settings are read when a folder joins
    folders[2] = pool.get(argv, trees[2], _env())
    assert [_errors(f) for f in folders] == [[], [("demo/app.py", 3)], []]
    assert pool.servers() == [server]

    (trees[1] / "demo/calc.py").write_text(PY_GREEN)
    assert _errors(folders[1]) == []


def test_the_pool_size_bounds_the_servers_and_new_trees_join_the_emptiest(
    tmp_path: Path, argv: list[str]
) -> None:
    trees = [_tree(tmp_path / name) for name in ("a", "b", "c")]
    with_two = SharedLanguageServers(2)
    try:
        folders = [with_two.get(argv, root, _env()) for root in trees]
        servers = with_two.servers()
        assert len(servers) == 2
        assert sorted(len(s.folders) for s in servers) == [1, 2]
        assert folders[0].server is folders[2].server is not folders[1].server
        (trees[2] / "demo/calc.py").write_text(RETURNS_STR)
        assert [_errors(f) for f in folders] == [[], [], [("demo/app.py", 3)]]
    finally:
        with_two.close()
    assert not any(s.alive for s in servers)


def test_a_tree_inside_another_gets_a_server_of_its_own(
    tmp_path: Path, argv: list[str], pool: SharedLanguageServers
) -> None:
    outer = _tree(tmp_path / "main")
    inner = _tree(outer / ".worktrees" / "task")
    (inner / "demo/calc.py").write_text(RETURNS_STR)
    # The outer tree's settings must not reach the inner one: ignoring .worktrees
    # there would hide the inner tree's files from a shared server.
    write(outer, {"pyrightconfig.json": '{"exclude": [".worktrees"]}'})
    first, second = pool.get(argv, outer, _env()), pool.get(argv, inner, _env())
    assert first.server is not second.server
    assert [f.root for f in second.server.folders] == [inner]
    assert _errors(first) == []
    assert _errors(second) == [("demo/app.py", 3)]


def test_closing_a_root_takes_its_folder_out_and_the_last_one_stops_the_server(
    tmp_path: Path, argv: list[str], pool: SharedLanguageServers
) -> None:
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    first, second = pool.get(argv, a, _env()), pool.get(argv, b, _env())
    server = first.server
    pool.close_root(a)
    assert [f.root for f in server.folders] == [b]
    assert _errors(second) == []
    shutil.rmtree(a)
    pool.close_root(b)
    assert pool.servers() == []
    wait_until(lambda: not server.alive, what="the server to stop")


def test_a_killed_shared_server_is_replaced_for_every_tree(
    tmp_path: Path, argv: list[str], pool: SharedLanguageServers
) -> None:
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    first, second = pool.get(argv, a, _env()), pool.get(argv, b, _env())
    os.kill(first.server.pid, signal.SIGKILL)
    wait_until(lambda: not first.server.alive, what="the server to die")
    with pytest.raises(ServerFailed):
        first.check(FILES, "pyright", threading.Event(), 120)
    pool.discard(first)
    (b / "demo/calc.py").write_text(RETURNS_STR)
    again = pool.get(argv, b, _env())
    assert again.server is not second.server
    assert _errors(again) == [("demo/app.py", 3)]
    assert _errors(pool.get(argv, a, _env())) == []
    assert pool.servers() == [again.server]


# A language server that answers pulls with nothing and cannot take more folders.
ONE_FOLDER_SERVER = FRAMING + textwrap.dedent(
    """
    while True:
        message = read()
        method, known = message.get("method"), "id" in message
        if method == "initialize":
            send({"jsonrpc": "2.0", "id": message["id"], "result": INITIALIZED})
        elif method == "textDocument/diagnostic":
            send({"jsonrpc": "2.0", "id": message["id"], "result": {"kind": "full", "items": []}})
        elif method == "workspace/didChangeWorkspaceFolders":
            sys.exit("a folder was added to a server that does not take them")
        elif known:
            send({"jsonrpc": "2.0", "id": message["id"], "result": None})
    """
)


def test_a_server_without_multi_root_support_gets_one_process_a_tree(
    tmp_path: Path, pool: SharedLanguageServers
) -> None:
    write(tmp_path, {"server.py": ONE_FOLDER_SERVER})
    argv = [sys.executable, str(tmp_path / "server.py")]
    trees = [_tree(tmp_path / name) for name in ("a", "b", "c")]
    folders = [pool.get(argv, root, dict(os.environ)) for root in trees]
    assert len({folder.server.pid for folder in folders}) == 3
    assert not any(folder.server.multi_root for folder in folders)
    assert all(_errors(folder) == [] for folder in folders)
    assert all(folder.server.alive for folder in folders)
