"""A step's view of the project's git metadata (``git=True``): a small ``.git`` for HEAD.

Tools read git: setuptools-scm and hatch-vcs take their version from tags, ``prepare``
scripts call ``git``, tests run ``git diff``. A step that asks gets a ``.git`` in its
workdir holding what those need and no more: HEAD's commit with its whole tree, the
commits before it (without their trees, so ``git describe`` and ``git log`` work),
the tags reachable from HEAD, the branch, and an index matching HEAD, so ``git
status`` and ``git diff`` show the workspace's uncommitted changes as they are.
Never the object store of the whole history.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greenloop.protocol.errors import SetupError


@dataclass(frozen=True)
class GitMetadata:
    """What of the project's repository a ``git=True`` step sees, and is keyed by."""

    commit: str
    branch: str | None
    tags: tuple[tuple[str, str], ...]
    """(name, object id) of every tag reachable from HEAD, sorted."""

    def key_part(self) -> dict[str, Any]:
        """The part of a step's key it makes: a new commit, branch or tag reruns the step."""
        return {"commit": self.commit, "branch": self.branch, "tags": [list(t) for t in self.tags]}


def _git(
    root: Path, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> str:
    # The caller's GIT_DIR and friends must not point these at another repository.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    done = subprocess.run(
        ["git", "-C", str(root), *args],
        input=stdin,
        capture_output=True,
        env={**clean, **(env or {})},
    )
    if done.returncode != 0:
        raise SetupError(
            f"git {' '.join(args[:2])} failed in {root}: "
            + (done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}")
        )
    return done.stdout.decode()


def read(root: Path) -> GitMetadata:
    """The HEAD, branch and reachable tags of the repository at ``root``.

    :class:`SetupError` when ``root`` is not the top of a git repository with a commit.
    """
    try:
        top = _git(root, "rev-parse", "--show-toplevel").strip()
    except FileNotFoundError:
        raise SetupError("a step asks for git=True but git is not installed") from None
    except SetupError:
        raise SetupError(
            f"a step asks for git=True but {root} is not in a git repository"
        ) from None
    if Path(top).resolve() != root.resolve():
        raise SetupError(
            f"a step asks for git=True but the project {root} is not the top of its "
            f"repository ({top}): the step's .git would describe other paths"
        )
    try:
        commit = _git(root, "rev-parse", "--verify", "HEAD^{commit}").strip()
    except SetupError:
        raise SetupError(f"a step asks for git=True but {root} has no commit yet") from None
    try:
        branch = _git(root, "symbolic-ref", "-q", "--short", "HEAD").strip() or None
    except SetupError:
        branch = None  # a detached HEAD
    listed = _git(
        root,
        "for-each-ref",
        "--merged",
        commit,
        "--format=%(refname:strip=2) %(objectname)",
        "refs/tags",
    )
    pairs = (line.partition(" ") for line in listed.splitlines() if line)
    tags = tuple(sorted((name, obj) for name, _, obj in pairs))
    return GitMetadata(commit, branch or None, tags)


def git_dir(root: Path, meta: GitMetadata, under: Path) -> Path:
    """A fresh ``.git`` for ``meta``, from the repository at ``root``, in a new folder
    below ``under``; its path."""
    folder = Path(tempfile.mkdtemp(prefix="git-", dir=under))
    _git(folder, "init", "-q", "--template=", ".")
    dest = folder / ".git"
    # HEAD's tree in full; every commit before it, without its tree; annotated tags.
    history = _git(root, "rev-list", meta.commit).split()
    listing = _git(root, "rev-list", "--objects", "--no-walk", meta.commit)
    tree = [line.split(" ", 1)[0] for line in listing.splitlines()]
    wanted = dict.fromkeys([*tree, *history, *(obj for _, obj in meta.tags)])
    pack = dest / "objects" / "pack" / "pack"
    _git(root, "pack-objects", "-q", "--threads=1", str(pack), stdin="\n".join(wanted).encode())
    # Loose refs, not packed-refs: the folder must hold ``refs/`` for git to take
    # it as a repository, and an archive of it carries files only.
    refs = {f"refs/tags/{name}": obj for name, obj in meta.tags}
    if meta.branch:
        refs[f"refs/heads/{meta.branch}"] = meta.commit
        (dest / "HEAD").write_text(f"ref: refs/heads/{meta.branch}\n")
    else:
        (dest / "HEAD").write_text(f"{meta.commit}\n")
    for ref, obj in (refs or {"refs/greenloop/checkout": meta.commit}).items():
        (dest / ref).parent.mkdir(parents=True, exist_ok=True)
        (dest / ref).write_text(f"{obj}\n")
    # An index of HEAD's tree: ``git status`` then compares the files, not stale stat data.
    _git(folder, "read-tree", meta.commit)
    return dest
