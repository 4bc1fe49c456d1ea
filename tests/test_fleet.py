"""``greenloop serve``: every worktree of a real git repository, checked by real ruff and mypy."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from greenloop.devloop.pool import RoundPool
from greenloop.fleet.place import SERVE_DIR_ENV, ServePlace, common_dir
from tests.conftest import wait_until
from tests.test_devloop_helpers import (
    PY_GREEN,
    PY_RED,
    Background,
    cli,
    python_env,
    python_project,
)


@pytest.fixture(autouse=True)
def _serve_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # A short folder of its own: a Unix socket's path must stay under ~100 bytes.
    folder = tempfile.mkdtemp(prefix="gls-")
    monkeypatch.setenv(SERVE_DIR_ENV, folder)
    yield
    shutil.rmtree(folder, ignore_errors=True)


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = python_project(tmp_path / "main")
    _git("init", "-q", cwd=root)
    _git("add", "-A", cwd=root)
    _git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init", cwd=root)
    return root


def _add_worktree(repo: Path, name: str) -> Path:
    path = repo.parent / name
    _git("worktree", "add", "-q", str(path), cwd=repo)
    return path.resolve()


class Stream:
    """``watch --json --all-worktrees``: every message, and the last verdict per worktree."""

    def __init__(self, repo: Path) -> None:
        self.proc = Background("watch", "--json", "--all-worktrees", cwd=repo, env=python_env())
        self._taken: set[int] = set()

    def next(self, kind: str, worktree: Path, **fields: Any) -> dict[str, Any]:
        """The first message of ``kind`` about ``worktree`` (with ``fields``) not taken yet,
        in the order the stream sent them (worktrees interleave)."""

        def matches(line: str) -> bool:
            message = json.loads(line)
            return (
                message.get("kind") == kind
                and message.get("worktree") == str(worktree)
                and all(message.get(k) == v for k, v in fields.items())
            )

        for index, line in enumerate(self.proc.seen):
            if index not in self._taken and matches(line):
                self._taken.add(index)
                message: dict[str, Any] = json.loads(line)
                return message
        line = self.proc.wait_line(matches)
        self._taken.add(len(self.proc.seen) - 1)
        message = json.loads(line)
        return message

    def verdicts(self, worktree: Path) -> list[str]:
        """Every verdict seen so far about ``worktree``."""
        messages = [json.loads(line) for line in self.proc.seen]
        return [
            m["tree"]
            for m in messages
            if m.get("kind") == "verdict" and m.get("worktree") == str(worktree)
        ]


@pytest.fixture
def serving(repo: Path) -> Iterator[tuple[Path, Background]]:
    server = Background("serve", "--repo", str(repo), "--jobs", "1", cwd=repo, env=python_env())
    place = ServePlace.of(common_dir(repo) or repo)
    try:
        wait_until(place.socket.exists, what="the serve socket")
        yield repo, server
    finally:
        server.close()


def _check(root: Path) -> tuple[int, dict[str, Any]]:
    done = cli("check", "--json", cwd=root, env=python_env())
    assert done.returncode in (0, 1), done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, result


def test_a_red_edit_in_one_worktree_leaves_the_others_green(
    serving: tuple[Path, Background],
) -> None:
    repo, server = serving
    one, two = _add_worktree(repo, "one"), _add_worktree(repo, "two")
    main = repo.resolve()
    stream = Stream(repo)
    try:
        for tree in (main, one, two):
            stream.next("verdict", tree, tree="green")

        (one / "demo/calc.py").write_text(PY_RED)
        red = stream.next("verdict", one, tree="red")
        assert {d["path"] for d in red["diagnostics"]} == {str(one / "demo/calc.py")}
        assert {d["source"] for d in red["diagnostics"]} == {"mypy"}

        code, result = _check(one)
        assert (code, result["state"]) == (1, "red")
        assert [d["line"] for d in result["diagnostics"]] == [2]
        for tree in (main, two):
            assert _check(tree)[0] == 0
            assert stream.verdicts(tree) == ["green"]

        status = json.loads(cli("status", "--json", cwd=one, env=python_env()).stdout)
        assert status["serve"]["pid"] == server.proc.pid
        assert status["serve"]["worktrees"] == 3
        assert (status["watcher"]["pid"], status["watcher"]["verdict"]) == (server.proc.pid, "red")

        (one / "demo/calc.py").write_text(PY_GREEN)
        stream.next("verdict", one, tree="green")
        assert _check(one)[0] == 0
    finally:
        stream.proc.close()
    assert server.stop() == 130


def test_check_never_answers_green_for_an_edit_the_loop_has_not_checked(
    serving: tuple[Path, Background],
) -> None:
    repo, _server = serving
    wt = _add_worktree(repo, "slow")
    # A long debounce window: the check arrives while the loop still holds the edit back.
    with (wt / "pyproject.toml").open("a") as f:
        f.write("\n[tool.greenloop]\ndebounce_ms = 3000\n")
    stream = Stream(repo)
    try:
        stream.next("verdict", wt, tree="green")
        assert _check(wt)[0] == 0
        (wt / "demo/calc.py").write_text(PY_RED)
        code, result = _check(wt)
        assert (code, result["state"]) == (1, "red")
    finally:
        stream.proc.close()


def test_worktrees_added_and_removed_are_followed(serving: tuple[Path, Background]) -> None:
    repo, server = serving
    stream = Stream(repo)
    try:
        stream.next("verdict", repo.resolve(), tree="green")
        added = _add_worktree(repo, "later")
        stream.next("worktree_added", added)
        stream.next("verdict", added, tree="green")
        _git("worktree", "remove", str(added), cwd=repo)
        stream.next("worktree_removed", added)
        assert stream.verdicts(repo.resolve()) == ["green"]
    finally:
        stream.proc.close()
    assert server.stop() == 130
    assert server.proc.stderr is not None
    # The new worktree's mypy started warm, from the settled main worktree's cache.
    assert f"{added}'s mypy starts from {repo.resolve()}'s cache" in server.proc.stderr.read()


def test_watch_json_in_a_served_worktree_follows_the_server(
    serving: tuple[Path, Background],
) -> None:
    repo, server = serving
    wt = _add_worktree(repo, "watched")
    watch = Background("watch", "--json", cwd=wt, env=python_env())
    try:
        first = watch.wait_event("became_green")
        assert "worktree" not in first
        (wt / "demo/calc.py").write_text(PY_RED)
        red = watch.wait_event("became_red")
        assert red["diagnostics"][0]["path"] == str(wt / "demo" / "calc.py")
        assert server.stop() == 130
        assert watch.proc.wait(timeout=120) == 2
    finally:
        watch.close()


def test_second_serve_is_refused_and_commands_work_alone_without_one(repo: Path) -> None:
    wt = _add_worktree(repo, "alone")
    assert _check(wt)[0] == 0  # no server: checked in its own process
    status = json.loads(cli("status", "--json", cwd=wt, env=python_env()).stdout)
    assert "serve" not in status
    all_of_them = cli("watch", "--json", "--all-worktrees", cwd=wt, env=python_env())
    assert all_of_them.returncode == 2
    assert "no greenloop serve answers" in all_of_them.stderr

    server = Background("serve", cwd=wt, env=python_env())
    try:
        place = ServePlace.of(common_dir(repo) or repo)
        wait_until(place.socket.exists, what="the serve socket")
        second = cli("serve", "--repo", str(repo), cwd=repo, env=python_env())
        assert second.returncode == 2
        assert f"pid {server.proc.pid}" in second.stderr
    finally:
        server.close()
    # Killed without cleaning up: the socket file stays, and nothing answers on it.
    assert _check(wt)[0] == 0


def test_the_round_pool_lets_at_most_its_size_run() -> None:
    pool = RoundPool(2)
    running, most = 0, 0
    guard, release = threading.Lock(), threading.Event()

    def round_() -> None:
        nonlocal running, most
        with pool.slot(threading.Event()) as granted:
            assert granted
            with guard:
                running += 1
                most = max(most, running)
            release.wait()
            with guard:
                running -= 1

    threads = [threading.Thread(target=round_) for _ in range(5)]
    for thread in threads:
        thread.start()
    wait_until(lambda: most == 2, what="two rounds to hold slots")
    cancelled = threading.Event()
    cancelled.set()
    with pool.slot(cancelled) as granted:
        assert not granted  # no slot free, and the round was cancelled while waiting
    release.set()
    for thread in threads:
        thread.join()
    assert most == 2
