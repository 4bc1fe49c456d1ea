"""Which files a project has: git's answer in a repository, the walk elsewhere.

Outside any repository greenloop does not start git to learn so; these check
that the answer is git's whenever git could have one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from greenloop.engine.project_files import project_files


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def _tree(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "kept.txt").write_text("kept\n")
    (root / "untracked-ignored.log").write_text("log\n")


def test_outside_a_repository_the_walk_answers(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    _tree(root)
    (root / ".gitignore").write_text("*.log\n")
    assert project_files(root) == [".gitignore", "kept.txt"]


def test_a_repository_made_later_is_asked(tmp_path: Path) -> None:
    root = tmp_path / "later"
    _tree(root)
    assert project_files(root) == ["kept.txt", "untracked-ignored.log"]
    _git(root, "init", "-q")
    (root / ".git" / "info" / "exclude").write_text("*.log\n")  # only git knows this rule
    assert project_files(root) == ["kept.txt"]


def test_a_subfolder_of_a_repository_is_walked_as_before(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / ".git" / "info" / "exclude").write_text("*.log\n")
    root = tmp_path / "sub"
    _tree(root)
    # As before: git is asked, sees a subfolder, and the walk (which knows no exclude) answers.
    assert project_files(root) == ["kept.txt", "untracked-ignored.log"]


def test_other_git_variables_do_not_start_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "plain"
    _tree(root)
    monkeypatch.setenv("GIT_SSL_CAINFO", "/nowhere")
    monkeypatch.setenv("PATH", "")  # were git started, it would not be found: the walk
    assert project_files(root) == ["kept.txt", "untracked-ignored.log"]


def test_git_dir_set_elsewhere_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "worktree"
    _tree(root)
    gitdir = tmp_path / "elsewhere.git"
    subprocess.run(["git", "init", "-q", "--bare", str(gitdir)], check=True)
    (gitdir / "info").mkdir(exist_ok=True)
    (gitdir / "info" / "exclude").write_text("*.log\n")
    subprocess.run(["git", "--git-dir", str(gitdir), "config", "core.bare", "false"], check=True)
    monkeypatch.setenv("GIT_DIR", str(gitdir))
    monkeypatch.setenv("GIT_WORK_TREE", str(root))
    assert project_files(root) == ["kept.txt"]
