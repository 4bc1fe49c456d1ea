"""`greenloop hook install|uninstall`: a real git repository pushing to a real bare remote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli, write_pipeline

IDENTITY = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``git ARGS`` in ``cwd`` (not checked: pushes are expected to fail too)."""
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **IDENTITY, **(env or {})},
    )


def remote_head(remote: Path, branch: str = "main") -> str:
    """The commit ``branch`` points at in the bare ``remote`` ('' when it has none)."""
    return git("rev-parse", "--verify", "-q", f"refs/heads/{branch}", cwd=remote).stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    """Commit every change; return the new commit."""
    assert git("add", "-A", cwd=repo).returncode == 0
    assert git("commit", "-q", "-m", message, cwd=repo).returncode == 0
    return git("rev-parse", "HEAD", cwd=repo).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, Path]:
    """A repository whose pipeline is green while verdict.txt says green, and a bare remote."""
    remote, repo = tmp_path / "remote.git", tmp_path / "repo"
    assert git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path).returncode == 0
    assert git("init", "-q", "-b", "main", str(repo), cwd=tmp_path).returncode == 0
    (repo / ".greenloop").mkdir()
    write_pipeline(
        repo,
        """
        @gl.pipeline("ci")
        def ci():
            gl.sh("grep -qx green verdict.txt", label="verdict")
        """,
    )
    (repo / "verdict.txt").write_text("green\n")
    commit_all(repo, "green")
    assert git("remote", "add", "origin", str(remote), cwd=repo).returncode == 0
    return repo, remote


def test_the_hook_checks_the_pushed_commit_not_the_working_tree(repo: tuple[Path, Path]) -> None:
    repo_dir, remote = repo
    installed = cli("hook", "install", cwd=repo_dir)
    assert installed.returncode == 0, installed.stderr
    hook = repo_dir / ".git" / "hooks" / "pre-push"
    assert installed.stdout.strip() == f"installed {hook}: runs ci on the pushed commits"
    assert os.access(hook, os.X_OK)

    # A green commit with a red unstaged edit: the commit is what is checked.
    green = git("rev-parse", "HEAD", cwd=repo_dir).stdout.strip()
    (repo_dir / "verdict.txt").write_text("red\n")
    pushed = git("push", "-q", "origin", "main", cwd=repo_dir)
    assert pushed.returncode == 0, pushed.stderr
    assert "running ci on" in pushed.stderr and "✓ verdict passed" in pushed.stderr
    assert remote_head(remote) == green

    # A red commit with a green unstaged edit: refused, and the remote keeps what it had.
    red = commit_all(repo_dir, "red")
    (repo_dir / "verdict.txt").write_text("green\n")
    refused = git("push", "-q", "origin", "main", cwd=repo_dir)
    assert refused.returncode != 0
    assert "✗ verdict failed (exit 1)" in refused.stderr
    assert f"the pipeline is red on {red[:12]} (exit 1): push refused" in refused.stderr
    assert remote_head(remote) == green
    # Deleting a branch pushes no commit: nothing to check.
    assert git("push", "-q", "origin", f"{green}:refs/heads/old", cwd=repo_dir).returncode == 0
    deleted = git("push", "-q", "origin", "--delete", "old", cwd=repo_dir)
    assert deleted.returncode == 0 and "running ci" not in deleted.stderr
    assert remote_head(remote, "old") == ""


def test_an_existing_hook_is_chained_and_put_back(repo: tuple[Path, Path], tmp_path: Path) -> None:
    repo_dir, remote = repo
    hook = repo_dir / ".git" / "hooks" / "pre-push"
    theirs = (
        "#!/bin/sh\n"
        f'cat > {tmp_path}/their-stdin; echo "$@" > {tmp_path}/their-args\n'
        'exit "${THEIR_EXIT:-0}"\n'
    )
    hook.write_text(theirs)
    hook.chmod(0o755)
    installed = cli("hook", "install", "--pipeline", "ci", "--json", cwd=repo_dir)
    assert installed.returncode == 0, installed.stderr
    chained = repo_dir / ".git" / "hooks" / "pre-push.greenloop-chained"
    assert '"chained": "' + str(chained) + '"' in installed.stdout
    assert chained.read_text() == theirs
    assert cli("hook", "install", cwd=repo_dir).returncode == 0  # again: still chained once
    assert chained.read_text() == theirs

    # Their hook refuses: the push is refused although the pipeline is green.
    refused = git("push", "-q", "origin", "main", cwd=repo_dir, env={"THEIR_EXIT": "3"})
    assert refused.returncode != 0
    assert "pre-push.greenloop-chained) refused the push" in refused.stderr
    assert "running ci" not in refused.stderr
    assert remote_head(remote) == ""
    # It sees what git gave ours: the remote's name and URL, and the ref lines.
    head = git("rev-parse", "HEAD", cwd=repo_dir).stdout.strip()
    assert (tmp_path / "their-args").read_text().split() == ["origin", str(remote)]
    assert (tmp_path / "their-stdin").read_text().split()[:3] == [
        "refs/heads/main",
        head,
        "refs/heads/main",
    ]
    pushed = git("push", "-q", "origin", "main", cwd=repo_dir)
    assert pushed.returncode == 0, pushed.stderr
    assert remote_head(remote) == head

    removed = cli("hook", "uninstall", cwd=repo_dir)
    assert removed.returncode == 0
    assert hook.read_text() == theirs and not chained.exists()
    again = cli("hook", "uninstall", cwd=repo_dir)
    assert again.returncode == 2
    assert again.stderr.strip() == f"error: no greenloop pre-push hook in {hook.parent}"


def test_install_picks_the_pipelines_triggered_by_push(repo: tuple[Path, Path]) -> None:
    repo_dir, remote = repo
    write_pipeline(
        repo_dir,
        """
        @gl.pipeline("checks", on=["push"])
        def checks():
            gl.sh("grep -qx green verdict.txt", label="verdict")

        @gl.pipeline("slow")
        def slow():
            gl.sh("exit 1", label="never-on-push")
        """,
    )
    commit_all(repo_dir, "triggers")
    installed = cli("hook", "install", cwd=repo_dir)
    assert installed.returncode == 0, installed.stderr
    assert "runs checks on the pushed commits" in installed.stdout
    pushed = git("push", "-q", "origin", "main", cwd=repo_dir)
    assert pushed.returncode == 0, pushed.stderr
    assert "running --event push on" in pushed.stderr and "never-on-push" not in pushed.stderr
    assert remote_head(remote) == git("rev-parse", "HEAD", cwd=repo_dir).stdout.strip()


def test_hook_errors_are_exit_2(repo: tuple[Path, Path], tmp_path: Path) -> None:
    repo_dir, _ = repo
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    result = cli("hook", "install", cwd=outside)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: not in a git repository ({outside}): `greenloop hook` needs one"
    )
    unknown = cli("hook", "install", "--pipeline", "nope", cwd=repo_dir)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "error: no pipeline named 'nope' (defined: ci)"
    assert not (repo_dir / ".git" / "hooks" / "pre-push").exists()
    none = cli("hook", "uninstall", cwd=repo_dir)
    assert none.returncode == 2 and "no greenloop pre-push hook" in none.stderr


PRE_COMMIT_CONFIG = """\
repos:
  - repo: local
    hooks:
      - id: no-todo
        name: no TODO in verdict.txt
        entry: sh -c '! grep -q TODO verdict.txt'
        language: system
        pass_filenames: false
        always_run: true
        stages: [pre-push]
"""


def pre_commit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real pre-commit, from this interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", *args], cwd=cwd, capture_output=True, text=True
    )


@pytest.mark.parametrize("first", ["pre-commit", "greenloop"])
def test_it_coexists_with_pre_commits_pre_push_hook(
    repo: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    repo_dir, remote = repo
    monkeypatch.setenv("PRE_COMMIT_HOME", str(tmp_path / "pre-commit-home"))
    (repo_dir / ".pre-commit-config.yaml").write_text(PRE_COMMIT_CONFIG)
    commit_all(repo_dir, "pre-commit config")
    steps = [
        lambda: pre_commit("install", "-t", "pre-push", cwd=repo_dir),
        lambda: cli("hook", "install", cwd=repo_dir),
    ]
    for install in steps if first == "pre-commit" else steps[::-1]:
        done = install()
        assert done.returncode == 0, done.stdout + done.stderr

    # pre-commit's hook refuses: the push is refused.
    (repo_dir / "verdict.txt").write_text("green\n# TODO\n")
    commit_all(repo_dir, "todo")
    refused = git("push", "-q", "origin", "main", cwd=repo_dir)
    assert refused.returncode != 0
    assert "no TODO in verdict.txt" in refused.stdout + refused.stderr
    assert remote_head(remote) == ""
    # greenloop's refuses.
    (repo_dir / "verdict.txt").write_text("red\n")
    red = commit_all(repo_dir, "red")
    refused = git("push", "-q", "origin", "main", cwd=repo_dir)
    assert refused.returncode != 0
    assert f"the pipeline is red on {red[:12]}" in refused.stderr
    assert remote_head(remote) == ""
    # Both pass: the push goes through.
    (repo_dir / "verdict.txt").write_text("green\n")
    green = commit_all(repo_dir, "green again")
    pushed = git("push", "-q", "origin", "main", cwd=repo_dir)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "✓ verdict passed" in pushed.stderr
    assert remote_head(remote) == green


def test_the_hook_runs_on_the_users_path_so_cached_steps_stay_cached(
    repo: tuple[Path, Path],
) -> None:
    # git puts its own programs' folder first on a hook's PATH; another PATH is other
    # tools, which would rerun every cached local step the user's own run had cached.
    repo_dir, _ = repo
    write_pipeline(
        repo_dir,
        """
        @gl.pipeline("ci")
        def ci():
            gl.sh("grep -qx green verdict.txt", label="verdict", cache=gl.forever())
        """,
    )
    commit_all(repo_dir, "cached")
    assert cli("hook", "install", cwd=repo_dir).returncode == 0
    assert cli("run", cwd=repo_dir).returncode == 0
    pushed = git("push", "-q", "origin", "main", cwd=repo_dir)
    assert pushed.returncode == 0, pushed.stderr
    assert "↺ verdict cached" in pushed.stderr, pushed.stderr
