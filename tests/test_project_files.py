"""Which files a project has: git's answer in a repository, the walk elsewhere.

Outside any repository greenloop does not start git to learn so; these check
that the answer is git's whenever git could have one.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from greenloop.engine.project_files import (
    WORKSPACE_IGNORES,
    fixed_ignored,
    project_files,
    workspace_ignores,
)


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


# Every name the fixed ignore lines speak of, with near misses of each: every path of up to
# four of them is one the hand-written matcher and pathspec must answer alike.
_NAMES = sorted(
    {
        ".git",
        ".greenloop",
        "pipeline.py",
        "__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        "a.toml",
        ".toml",
        "a.toml.bak",
        "pipeline.pyc",
        "xpipeline.py",
        ".greenloopx",
        "greenloop",
        ".gitx",
        "x.git",
        "_pycache_",
        "src",
        "A.TOML",
        ".GIT",
        "__PYCACHE__",
    }
)


def test_the_fixed_ignores_answer_as_pathspec_does() -> None:
    assert WORKSPACE_IGNORES == (
        ".git/",
        ".greenloop/*",
        "!.greenloop/pipeline.py",
        "!.greenloop/*.toml",
        "__pycache__/",
        ".mypy_cache/",
        ".ruff_cache/",
        ".pytest_cache/",
    ), "the lines changed: change fixed_ignored() with them"
    spec = workspace_ignores()
    for depth in range(1, 5):
        for parts in itertools.product(_NAMES, repeat=depth):
            path = "/".join(parts)
            assert fixed_ignored(path) == spec.match_file(path), path


def test_a_cached_run_outside_git_without_gitignore_imports_no_pathspec(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    _tree(root)
    (root / ".greenloop").mkdir()
    (root / ".greenloop" / "pipeline.py").write_text("")
    (root / ".greenloop" / "state").write_text("")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from greenloop.engine.project_files import project_files\n"
        f"print(project_files(Path({str(root)!r})), 'pathspec' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected = [".greenloop/pipeline.py", "kept.txt", "untracked-ignored.log"]
    assert done.stdout.split(" False")[0] == repr(expected)
    assert done.stdout.strip().endswith("False")
