"""``git=True``: a step sees a small ``.git`` for HEAD, and its key follows the commit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli, write_pipeline
from tests.docker_image import IMAGE

GIT = """
@gl.pipeline("ci"{extra})
def ci():
    seen = gl.sh({command!r}, label="seen", git=True, cache=gl.forever())
    seen.sh("test -e .git/HEAD && echo leaked || echo clean", label="child", git=False)
    gl.sh("test -e .git/HEAD && echo leaked || echo clean", label="plain", cache=gl.forever())
"""

READ = (
    "git describe --tags --dirty; git status --short; git log --format=%s; "
    "git diff --stat | tail -n 1; git rev-parse --abbrev-ref HEAD; "
    f"{sys.executable} -m setuptools_scm"
)


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _repo(project: Path) -> None:
    _git(project, "init", "-q", "--initial-branch", "trunk")
    _git(project, "config", "user.email", "dev@example.com")
    _git(project, "config", "user.name", "dev")
    (project / "version.txt").write_text("one\n")
    (project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\ndynamic = ["version"]\n\n[tool.setuptools_scm]\n'
    )
    _git(project, "add", ".")
    _git(project, "commit", "-qm", "first")
    _git(project, "tag", "-a", "v1.2.0", "-m", "release 1.2.0")
    (project / "version.txt").write_text("two\n")
    _git(project, "commit", "-qam", "second")
    (project / "version.txt").write_text("three, not committed\n")


def _run(project: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    done = cli("run", "--json", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    logs: dict[str, list[str]] = {}
    statuses: dict[str, str] = {}
    for line in done.stdout.splitlines():
        event: dict[str, Any] = json.loads(line)
        if event["type"] == "step_log":
            logs.setdefault(event["step"], []).append(event["line"])
        elif event["type"] == "step_finished":
            statuses[event["step"]] = event["status"]
    return logs, statuses


@pytest.mark.parametrize("sandbox", ["none", "bwrap"])
def test_a_step_reads_git_as_in_a_checkout(project: Path, sandbox: str) -> None:
    if sandbox == "bwrap":
        from tests.test_sandbox import require_bwrap

        require_bwrap(project.parent)
    _repo(project)
    write_pipeline(project, GIT.format(extra=f', sandbox="{sandbox}"', command=READ))
    head = _git(project, "rev-parse", "--short", "HEAD")
    logs, _ = _run(project)
    version = logs["seen"].pop()
    assert logs["seen"] == [
        f"v1.2.0-1-g{head}-dirty",
        " M version.txt",  # the workspace's own change, against HEAD
        "?? .greenloop/",  # as in the project: the pipeline file is not committed
        "second",
        "first",
        " 1 file changed, 1 insertion(+), 1 deletion(-)",
        "trunk",
    ]
    # setuptools-scm, as a real project's build reads its version.
    assert version.startswith(f"1.2.1.dev1+g{head}"), version
    # Never part of a snapshot, nor of a step that did not ask.
    assert logs["child"] == ["clean"]
    assert logs["plain"] == ["clean"]


def test_the_key_follows_the_commit_and_tags(project: Path) -> None:
    _repo(project)
    write_pipeline(project, GIT.format(extra="", command="git describe --tags"))
    _run(project)
    _, statuses = _run(project)
    assert statuses["seen"] == "cached"
    _git(project, "commit", "-qam", "third")  # same files, a new commit
    explained = cli("explain", "--json", cwd=project)
    seen = next(e for e in json.loads(explained.stdout) if e["step"] == "seen")
    assert seen["outcome"] == "miss" and list(seen["changed"]) == ["git"], seen
    logs, statuses = _run(project)
    assert statuses["seen"] == "passed" and statuses["plain"] == "cached"
    assert logs["seen"][0].startswith("v1.2.0-2-g")
    _git(project, "tag", "v1.3.0")
    logs, statuses = _run(project)
    assert statuses["seen"] == "passed" and logs["seen"] == ["v1.3.0"]


def test_git_metadata_in_a_container(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_executor_suite import forget_docker_snapshots, use_executor

    use_executor("docker", tmp_path, monkeypatch)
    _repo(project)
    # The test image has no git: the folder a git in the image would read.
    command = "cat .git/HEAD; ls .git/objects/pack | wc -l; test -f .git/index && echo index"
    write_pipeline(
        project, GIT.format(extra=f', default_image="{IMAGE}", executor="docker"', command=command)
    )
    logs, _ = _run(project)
    assert logs["seen"] == ["ref: refs/heads/trunk", "2", "index"]
    assert logs["child"] == ["clean"]
    from greenloop.store import Store

    with Store.open(tmp_path / "cache") as store:
        forget_docker_snapshots(store)


def test_git_true_outside_a_repository_is_exit_2(project: Path) -> None:
    write_pipeline(project, GIT.format(extra="", command="true"))
    done = cli("run", cwd=project)
    assert done.returncode == 2, done.stdout
    assert "asks for git=True but" in done.stderr and "not in a git repository" in done.stderr
    _repo(project.parent)
    done = cli("run", cwd=project)
    assert done.returncode == 2
    assert "is not the top of its repository" in done.stderr
