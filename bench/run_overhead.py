"""Overhead of `greenloop run` with the local executor, against plain `sh`.

A 10-step pipeline (a chain with forks, trivial commands) runs cold (empty
cache) and fully cached, each as a fresh `greenloop run` process; the same ten
commands also run directly with `sh -c`, one after another. Prints wall times,
the cached-run time, and the per-step overhead of a cold run over `sh`.

Targets (issue 3): fully cached rerun of 10 steps < 0.25 s including
interpreter start; cold per-step overhead <= 30 ms beyond the command.

    python bench/run_overhead.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PIPELINE = """
import greenloop as gl

@gl.pipeline("ci")
def ci():
    setup = gl.sh("echo setup > setup.txt", label="setup", cache=gl.forever())
    deps = setup.sh("mkdir -p deps && echo 1 > deps/a", label="deps", cache=gl.forever())
    for name in ("lint", "types", "unit", "docs"):
        deps.fork(name).sh(f"cat setup.txt deps/a > {name}.out", label="run", cache=gl.forever())
    build = deps.sh("mkdir -p dist && echo site > dist/index.html", label="build",
                    cache=gl.forever())
    build.sh("test -s dist/index.html", label="check", cache=gl.forever())
    gl.wait(build).sh("echo report", label="report", cache=gl.forever())
    setup.sh("echo side > side.txt", label="side", cache=gl.forever())
"""
COMMANDS = [
    "echo setup > setup.txt",
    "mkdir -p deps && echo 1 > deps/a",
    *(f"cat setup.txt deps/a > {n}.out" for n in ("lint", "types", "unit", "docs")),
    "mkdir -p dist && echo site > dist/index.html",
    "test -s dist/index.html",
    "echo report",
    "echo side > side.txt",
]


ONE_STEP = """
import greenloop as gl

@gl.pipeline("ci")
def ci():
    gl.sh("echo setup > setup.txt", label="setup", cache=gl.forever())
"""


def write_project(root: Path, pipeline: str = PIPELINE) -> None:
    """A project of twenty source files and ``pipeline``."""
    (root / ".greenloop").mkdir(parents=True)
    (root / ".greenloop" / "pipeline.py").write_text(textwrap.dedent(pipeline))
    for i in range(20):
        (root / f"src{i}.txt").write_text(f"source file {i}\n" * 20)


def _env(**extra: str) -> dict[str, str]:
    # Bytecode caching on, as on a developer's machine: otherwise every run
    # recompiles greenloop and its dependencies and measures the compiler.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    # Each run in its own process, even if a `greenloop daemon` happens to run.
    return {**env, "GREENLOOP_NO_DAEMON": "1", **extra}


def _greenloop(root: Path, cache: Path, *args: str) -> float:
    env = _env(GREENLOOP_CACHE_DIR=str(cache))
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "greenloop", "run", "ci", "--format", "plain", *args],
        cwd=root,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def _direct(root: Path) -> float:
    started = time.perf_counter()
    for command in COMMANDS:
        subprocess.run(["sh", "-c", command], cwd=root, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cold, cold_j1, cached, direct, single = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm-up"
        write_project(warm)
        _greenloop(warm, Path(tmp) / "warm-cache")  # writes the bytecode caches once
        for i in range(args.repeat):
            root = Path(tmp) / f"p{i}"
            write_project(root)
            cold.append(_greenloop(root, Path(tmp) / f"cache{i}"))
            cached.append(_greenloop(root, Path(tmp) / f"cache{i}"))
            root1 = Path(tmp) / f"q{i}"
            write_project(root1)
            cold_j1.append(_greenloop(root1, Path(tmp) / f"cache-j1-{i}", "-j", "1"))
            alone = Path(tmp) / f"s{i}"
            write_project(alone, ONE_STEP)
            single.append(_greenloop(alone, Path(tmp) / f"cache-one-{i}", "-j", "1"))
            plain = Path(tmp) / f"d{i}"
            plain.mkdir()
            direct.append(_direct(plain))
    med = statistics.median
    steps = len(COMMANDS)
    print(f"steps                      {steps}")
    print(f"direct sh (sequential)     {med(direct) * 1000:7.1f} ms")
    print(f"greenloop cold (-j {os.cpu_count()})     {med(cold) * 1000:7.1f} ms")
    print(f"greenloop cold (-j 1)      {med(cold_j1) * 1000:7.1f} ms")
    print(f"greenloop fully cached     {med(cached) * 1000:7.1f} ms   (target < 250 ms)")
    amortized = (med(cold_j1) - med(direct)) / steps
    # The marginal cost of a step: ten steps against one, minus the nine extra commands.
    marginal = (med(cold_j1) - med(single) - med(direct) * (steps - 1) / steps) / (steps - 1)
    print(f"greenloop cold, 1 step     {med(single) * 1000:7.1f} ms   (start-up, pack, one step)")
    print(
        f"cold overhead per step     {marginal * 1000:7.1f} ms   (target <= 30 ms; marginal, -j 1)"
    )
    print(f"  incl. start-up share     {amortized * 1000:7.1f} ms   ((cold - sh) / steps)")
    print(f"cached / cold              {med(cached) / med(cold):7.2f}x")


if __name__ == "__main__":
    main()
