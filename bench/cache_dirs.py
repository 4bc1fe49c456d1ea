"""Package caches (``cache_dirs=``): a dependency install after a lock change, with and without.

A project's install step reruns whenever its lock file changes; without a
cache folder every rerun downloads and builds everything again, as a fresh
CI runner does. With ``cache_dirs={"pip": "~/.cache/pip"}`` (or ``~/.npm``)
the folder outlives the run, so only what is new is fetched or built.

For each tree (a PyPI set with two sdist-only packages that pip must build,
and an npm set), the same pipeline runs side by side with and without the
cache folder: one warm-up run, then ``--rounds`` runs each after a lock-file
change (a comment line, so the dependency set is the same and the install
step is a cache miss). Prints the median install time of each and the ratio.

    python bench/cache_dirs.py [--tree pip|npm|all] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TREES = {
    "pip": {
        "lock": "requirements.txt",
        # docopt and sgmllib3k ship sdists only: pip builds their wheels every
        # time unless its cache keeps them; the rest are wheels pip downloads.
        "deps": "requests\nrich\nclick\ndocopt\nsgmllib3k\n",
        "install": "python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt",
        "cache": '{"pip": "~/.cache/pip"}',
    },
    "npm": {
        "lock": "package.json",
        "deps": '{"name": "bench", "version": "1.0.0", "private": true,\n'
        ' "dependencies": {"typescript": "5", "eslint": "8", "prettier": "3"}}\n',
        "install": "npm install --no-audit --no-fund --loglevel=error --prefer-offline",
        "cache": '{"npm": "~/.npm"}',
    },
}

PIPELINE = """\
import greenloop as gl

@gl.pipeline("ci")
def ci() -> None:
    gl.sh({install!r}, label="install", cache=gl.on_change({lock!r}){cache_dirs})
"""


def _project(folder: Path, tree: dict[str, str], with_cache: bool) -> Path:
    (folder / ".greenloop").mkdir(parents=True)
    cache_dirs = f", cache_dirs={tree['cache']}" if with_cache else ""
    (folder / ".greenloop" / "pipeline.py").write_text(
        PIPELINE.format(install=tree["install"], lock=tree["lock"], cache_dirs=cache_dirs)
    )
    return folder


def _change_lock(project: Path, tree: dict[str, str], n: int) -> None:
    deps = tree["deps"]
    if tree["lock"] == "package.json":
        deps = deps.replace('"1.0.0"', f'"1.0.{n}"')
    else:
        deps += f"# revision {n}\n"
    (project / tree["lock"]).write_text(deps)


def _run(project: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "greenloop", "run", "--format", "plain"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the run in {project} failed:\n{done.stdout}{done.stderr}")
    return took


def bench(name: str, rounds: int) -> tuple[float, float]:
    """Median install times after a lock change (with, without the cache folder)."""
    tree = TREES[name]
    with tempfile.TemporaryDirectory(prefix=f"bench-cache-dirs-{name}-") as scratch:
        base = Path(scratch)
        times: dict[bool, list[float]] = {True: [], False: []}
        projects = {c: _project(base / f"with-{c}", tree, c) for c in (True, False)}
        envs = {
            # Each side its own store and home: no cache leaks from one to the other
            # (nor from this machine's own ~/.cache) except through cache_dirs.
            c: {
                **os.environ,
                "GREENLOOP_NO_DAEMON": "1",
                "GREENLOOP_CACHE_DIR": str(base / f"store-{c}"),
                "HOME": str(base / f"home-{c}"),
                "PIP_NO_CACHE_DIR": "0",
            }
            for c in (True, False)
        }
        for c in (True, False):
            Path(envs[c]["HOME"]).mkdir()
            _change_lock(projects[c], tree, 0)
            _run(projects[c], envs[c])  # warm-up: fills the cache folder
        for n in range(1, rounds + 1):
            for c in (True, False):  # side by side, alternating
                _change_lock(projects[c], tree, n)
                times[c].append(_run(projects[c], envs[c]))
        return statistics.median(times[True]), statistics.median(times[False])


def main() -> None:
    """Run the chosen trees and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tree", choices=[*TREES, "all"], default="all")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for name in TREES if args.tree == "all" else [args.tree]:
        if shutil.which(name) is None and name == "npm":
            print(f"{name}: skipped (npm is not installed)")
            continue
        cached, cold = bench(name, args.rounds)
        print(
            textwrap.dedent(
                f"""\
                {name}: install after a lock change, median of {args.rounds}
                  with cache_dirs     {cached:7.2f} s
                  without             {cold:7.2f} s
                  ratio (with/without) {cached / cold:.2f}x"""
            )
        )


if __name__ == "__main__":
    main()
