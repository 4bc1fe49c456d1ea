"""Which files belong to a project: git's view when in git, ``.gitignore`` rules otherwise."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from greenloop._project import PIPELINE_FILE, PROJECT_DIR, STATE_IGNORES
from greenloop.protocol.errors import SetupError

if TYPE_CHECKING:
    import pathspec

WORKSPACE_IGNORES = (
    ".git/",
    *STATE_IGNORES,
    "__pycache__/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".pytest_cache/",
)
"""Never part of a workspace: VCS internals, greenloop's own state, and tool caches that
checkers write into the tree as they run."""


def project_files(root: Path) -> list[str]:
    """Sorted posix paths of the project's files (regular files and symlinks) under ``root``.

    In a git work tree this is tracked plus untracked-not-ignored files; elsewhere
    a walk that honours every ``.gitignore`` on the way down. A folder the walk
    cannot read raises :class:`SetupError` naming it: leaving its files out would
    run steps on part of the project.
    """
    listed = _git_files(root)
    paths = listed if listed is not None else _walk(root)
    return sorted(p for p in paths if not fixed_ignored(p) and os.path.lexists(root / p))


_CACHE_DIRS = frozenset({"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"})


def fixed_ignored(rel: str) -> bool:
    """Whether :data:`WORKSPACE_IGNORES` leaves out the file at ``rel`` (a posix path).

    What ``workspace_ignores().match_file(rel)`` answers, written out for these few
    lines so that a run in git (or without a ``.gitignore``) never imports pathspec:
    ~10 ms of a cached run. tests/test_project_files.py holds the two to the same
    answer on every path these lines could tell apart.
    """
    parts = rel.split("/")
    folders = parts[:-1]
    # The last line matching a path decides: the tool caches' come last.
    if not _CACHE_DIRS.isdisjoint(folders):
        return True
    if len(parts) > 1 and parts[0] == PROJECT_DIR.name:
        # ``.greenloop/*``, but for ``!.greenloop/pipeline.py`` and ``!.greenloop/*.toml``,
        # each of which also takes back everything in a folder of that name.
        return not (parts[1] == PIPELINE_FILE.name or parts[1].endswith(".toml"))
    return ".git" in folders


@functools.cache
def workspace_ignores() -> pathspec.GitIgnoreSpec:
    """:data:`WORKSPACE_IGNORES` compiled once a process (a daemon's commands share it)."""
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(WORKSPACE_IGNORES)


def _git_files(root: Path) -> list[str] | None:
    if not _may_be_in_git(root):
        return None
    try:
        top = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return None
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
        # Not a repository, or ``root`` is a subfolder of one: fall back to the walk,
        # which still honours the .gitignore files under ``root``.
        return None
    out = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout
    return sorted({p for p in out.decode("utf-8", "surrogateescape").split("\0") if p})


_POINTING = ("GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR")
"""The variables that can hand git a repository its search for ``.git`` would not find
(the others, such as ``GIT_CEILING_DIRECTORIES``, only narrow that search)."""


def _may_be_in_git(root: Path) -> bool:
    """False only when git would find no work tree at ``root``: no ``.git`` there or
    above, and nothing pointing git elsewhere. Saves starting git (milliseconds) in a
    project that is not in a repository."""
    if any(os.environ.get(name) for name in _POINTING):
        return True
    here = root.absolute()
    return any(os.path.lexists(folder / ".git") for folder in (here, *here.parents))


def _walk(root: Path) -> list[str]:
    found: list[str] = []
    # Each directory carries the ignore rules in force there: (base dir, spec) pairs.
    stack: list[tuple[Path, list[tuple[str, pathspec.GitIgnoreSpec]]]] = [(root, [])]
    while stack:
        directory, rules = stack.pop()
        rel_dir = directory.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
            gitignore = directory / ".gitignore"
            if gitignore.is_file():
                import pathspec  # only a walk that meets a .gitignore

                lines = gitignore.read_text(errors="replace").splitlines()
                rules = [*rules, (rel_dir, pathspec.GitIgnoreSpec.from_lines(lines))]
        except OSError as e:
            raise SetupError(
                f"cannot read {e.filename or directory}: {e.strerror or e} (make it readable, "
                "or leave it out of the project with a .gitignore above it)"
            ) from None
        for entry in entries:
            rel = rel_dir + entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if entry.name == ".git" or _ignored(rel + ("/" if is_dir else ""), rules):
                continue
            if is_dir:
                stack.append((Path(entry.path), rules))
            else:
                found.append(rel)
    return found


def _ignored(rel: str, rules: list[tuple[str, pathspec.GitIgnoreSpec]]) -> bool:
    # The deepest .gitignore that has an opinion wins, as in git.
    verdict = False
    for base, spec in rules:
        result = spec.check_file(rel[len(base) :])
        if result.include is not None:
            verdict = result.include
    return verdict
