"""``greenloop hook install|uninstall``: a git pre-push hook that runs a pipeline on what is pushed.

The hook checks the commits being pushed, never the working tree: each pushed
commit is exported with ``git archive`` into a temporary folder and the
pipeline runs there, so unstaged edits and untracked files cannot change the
verdict. A red pipeline refuses the push. A pre-push hook that was there
before (pre-commit's, or a hand-written one) is kept beside ours and run first
with the same arguments and input; ``hook uninstall`` puts it back.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from greenloop._fs import write_atomically
from greenloop.cli._common import echo_json, fail, json_option, load_pipelines, pipeline_named
from greenloop.sdk.loader import find_pipeline_file

HOOK = "pre-push"
CHAINED = "pre-push.greenloop-chained"
"""Where a pre-push hook that was there before ours is kept (and run from)."""
MARK = "# greenloop pre-push hook"
_NO_COMMIT = "0" * 40


@click.group()
def hook() -> None:
    """Git hooks: run a pipeline on every push and refuse the push when it is red."""


@hook.command()
@click.option(
    "--pipeline",
    "pipelines",
    multiple=True,
    metavar="NAME",
    help="Pipeline to run (repeatable; default: those with on=['push'], else ci).",
)
@json_option
def install(pipelines: tuple[str, ...], as_json: bool) -> None:
    """Write .git/hooks/pre-push: run the pipeline on the pushed commits, refuse red pushes.

    An existing pre-push hook (pre-commit's too) is kept and run first.
    """
    hooks, top = _hooks_dir(), _toplevel()
    path = find_pipeline_file(Path.cwd())
    if path is None:
        fail("no .greenloop/pipeline.py here or above; create one with `greenloop init`")
    try:
        relative = path.resolve().relative_to(top)
    except ValueError:
        fail(f"{path} is outside the git repository at {top}")
    document, _ = load_pipelines(path)
    for name in pipelines:
        pipeline_named(document, name)
    if pipelines:
        selector = [arg for name in pipelines for arg in ("--pipeline", name)]
        runs = list(pipelines)
    elif document.triggered_by("push"):
        selector, runs = ["--event", "push"], [p.name for p in document.triggered_by("push")]
    else:
        selector, runs = ["--pipeline", "ci"], ["ci"]
        if "ci" not in (p.name for p in document.pipelines):
            fail("no pipeline runs on push: give --pipeline NAME or @gl.pipeline(..., on=['push'])")
    target, chained = hooks / HOOK, hooks / CHAINED
    kept = None
    if target.exists() and not _ours(target):
        if chained.exists():
            fail(f"{chained} exists already; move it or {target} away first")
        target.rename(chained)
        kept = chained
    elif chained.exists():
        kept = chained
    write_atomically(target, _script(str(relative), selector).encode())
    target.chmod(0o755)
    if as_json:
        echo_json({"hook": str(target), "pipelines": runs, "chained": str(kept) if kept else None})
        return
    also = f"; runs {kept.name} first" if kept else ""
    click.echo(f"installed {target}: runs {', '.join(runs)} on the pushed commits{also}")


@hook.command()
@json_option
def uninstall(as_json: bool) -> None:
    """Remove greenloop's pre-push hook, putting back the one it was chained to."""
    hooks = _hooks_dir()
    target, chained = hooks / HOOK, hooks / CHAINED
    if not _ours(target):
        fail(f"no greenloop pre-push hook in {hooks}")
    target.unlink()
    restored = chained.exists()
    if restored:
        chained.rename(target)
    if as_json:
        echo_json({"removed": str(target), "restored": restored})
        return
    click.echo(f"removed {target}" + ("; put the previous pre-push hook back" if restored else ""))


@hook.command("pre-push", hidden=True)
@click.option("--file", "relative", required=True, help="The pipeline file, from the repo's top.")
@click.option("--pipeline", "pipelines", multiple=True)
@click.option("--event", default=None)
@click.argument("git_args", nargs=-1)
def pre_push(
    relative: str, pipelines: tuple[str, ...], event: str | None, git_args: tuple[str, ...]
) -> None:
    """What the hook runs: git's pre-push arguments come last, its ref lines on stdin."""
    updates = sys.stdin.read()
    chained = _hooks_dir() / CHAINED
    if chained.exists() and os.access(chained, os.X_OK):
        code = subprocess.run([str(chained), *git_args], input=updates, text=True).returncode
        if code != 0:
            _say(f"the pre-push hook greenloop chains to ({chained.name}) refused the push")
            sys.exit(code)
    commits: list[str] = []
    for line in updates.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[1] != _NO_COMMIT and fields[1] not in commits:
            commits.append(fields[1])  # a deletion pushes no commit
    runs = [["--event", event]] if event else [[name] for name in pipelines]
    for commit in commits:
        code = _check(commit, relative, runs)
        if code != 0:
            _say(
                f"the pipeline is red on {commit[:12]} (exit {code}): push refused "
                "(`git push --no-verify` skips this check)"
            )
            sys.exit(1)


def _check(commit: str, relative: str, runs: list[list[str]]) -> int:
    """``greenloop run ARGS`` for each of ``runs`` on ``commit``'s tree; the worst exit code."""
    with tempfile.TemporaryDirectory(prefix="greenloop-push-") as tmp:
        tree = Path(tmp)
        archive = subprocess.Popen(
            ["git", "archive", "--format=tar", commit], stdout=subprocess.PIPE
        )
        unpacked = subprocess.run(["tar", "-x", "-C", tmp], stdin=archive.stdout)
        if archive.stdout is not None:
            archive.stdout.close()
        if archive.wait() != 0 or unpacked.returncode != 0:
            _say(f"could not export commit {commit[:12]} with git archive")
            return 2
        pipeline_file = tree / relative
        if not pipeline_file.is_file():
            _say(f"commit {commit[:12]} has no {relative}")
            return 2
        # The pipeline runs on the exported tree, not in this repository; and on the PATH
        # of the user's shell, without the folder of git's own programs git puts first
        # for a hook (another PATH is other tools: every cached local step would rerun).
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        exec_path = _git("--exec-path")
        env["PATH"] = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if p.rstrip("/") != exec_path
        )
        code = 0
        for args in runs:
            _say(f"running {' '.join(args)} on {commit[:12]}")
            ran = subprocess.run(
                [sys.executable, "-m", "greenloop", "run", *args, "-f", str(pipeline_file)],
                cwd=tree,
                env=env,
                stdout=sys.stderr,  # git shows a hook's stderr; keep stdout for git's own use
            )
            code = max(code, ran.returncode)
        return code


def _script(relative: str, selector: list[str]) -> str:
    args = shlex.join(["hook", "pre-push", "--file", relative, *selector, "--"])
    python = shlex.quote(sys.executable)
    return f"""#!/bin/sh
{MARK}: written by `greenloop hook install`, removed by `greenloop hook uninstall`.
# Runs the pipeline on the commits being pushed (not the working tree) and refuses
# the push when it is red; `git push --no-verify` skips it.
if [ -x {python} ]; then
  exec {python} -m greenloop {args} "$@"
fi
exec greenloop {args} "$@"
"""


def _ours(path: Path) -> bool:
    try:
        return MARK in path.read_text(errors="replace")
    except OSError:
        return False


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True)
    except FileNotFoundError:
        fail("git is not installed (greenloop hook needs it)")
    if done.returncode != 0:
        fail(f"not in a git repository ({Path.cwd()}): `greenloop hook` needs one")
    return done.stdout.strip()


def _hooks_dir() -> Path:
    """The repository's hooks folder (``core.hooksPath`` when set), made if missing."""
    hooks = Path(_git("rev-parse", "--path-format=absolute", "--git-path", "hooks"))
    hooks.mkdir(parents=True, exist_ok=True)
    return hooks


def _toplevel() -> Path:
    top = _git("rev-parse", "--show-toplevel")
    if not top:
        fail("the repository has no working tree (a bare repository?): `greenloop hook` needs one")
    return Path(top).resolve()


def _say(message: str) -> None:
    click.echo(f"greenloop: {message}", err=True)
