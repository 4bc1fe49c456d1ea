"""Real dependency trees through the local executor, against the same commands by hand.

A chain whose root installs a real dependency set -- a virtualenv from PyPI
(numpy and pandas: ~170 MB) or a ``node_modules`` from npm (typescript, eslint,
webpack, jest) -- then five trivial child steps (``: childN``, as cheap as ``true``). Each runs cold
(empty greenloop cache), after a one-file change (the install is cached, the
children rerun) and fully cached, under ``--sandbox bwrap`` (overlay snapshots)
and ``--sandbox none`` (copied snapshots); the same commands also run by hand,
one after another in one folder (cold: a fresh folder; after a change: again in
the same folder, as a person would rerun them). pip's and npm's download caches
are shared by all, so "cold" means greenloop's cache is cold, not the network.

Prints wall times and, per step, the checkout (the step's root made ready,
workspace included) and commit (its snapshot stored) times and the overhead of
a child step over its command.

Targets (issue 18): a trivial child costs <= 50 ms over its command whatever
its parent's size; cold <= 1.1x by hand; one-file change <= 0.5x by hand.

    python bench/real_tree.py [--tree venv|node|all] [--sandbox bwrap|none|all]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from greenloop.engine.run import Run, RunOptions
from greenloop.executors.local import LocalExecutor
from greenloop.plugins.discovery import Executors
from greenloop.protocol import BuildEvent, PlanSummary, StepFinished
from greenloop.sdk.loader import load
from greenloop.store import Store

CHILDREN = 5

TREES: dict[str, dict[str, Any]] = {
    "venv": {
        "install": "python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt",
        "lock": "requirements.txt",
        "files": {"requirements.txt": "numpy\npandas\n"},
        "folder": ".venv",
    },
    "node": {
        "install": "npm install --no-audit --no-fund --loglevel=error",
        "lock": "package.json",
        "files": {
            "package.json": '{"name": "bench", "version": "1.0.0", "private": true,'
            ' "dependencies": {"typescript": "5", "eslint": "8", "webpack": "5", "jest": "29"}}\n'
        },
        "folder": "node_modules",
    },
}

PIPELINE = """
import greenloop as gl

@gl.pipeline("ci", env={env!r}, sandbox=gl.sandbox(ro_binds={ro!r}, rw_binds={rw!r}))
def ci():
    deps = gl.sh({install!r}, label="deps", cache=gl.on_change({lock!r}))
    for i in range({children}):
        # `: childN`: as trivial as `true`, and five distinct commands (five cache keys).
        deps.sh(f": child{{i}}", label=f"child{{i}}", cache=gl.on_change("src/**"))
"""


class PhaseClock:
    """Per step, how long the local executor spent checking out and committing.

    Wraps the executor's phases in this process (``checkout``: the parent's
    files made ready and the workspace laid; ``commit``: the snapshot stored).
    """

    def __init__(self) -> None:
        self.times: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._step = threading.local()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Time the phases while the block runs."""
        originals: list[tuple[Any, str, Any]] = []

        def wrap(owner: Any, name: str, phase: str, until_yield: bool = False) -> None:
            original = getattr(owner, name)
            originals.append((owner, name, original))
            if until_yield:

                @contextlib.contextmanager
                def timed_cm(*args: Any, **kwargs: Any) -> Iterator[Any]:
                    started = time.perf_counter()
                    with original(*args, **kwargs) as value:
                        self._add(phase, time.perf_counter() - started)
                        yield value

                setattr(owner, name, timed_cm)
                return

            def timed(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    self._add(phase, time.perf_counter() - started)

            setattr(owner, name, timed)

        original_run = LocalExecutor.run

        def run(executor: LocalExecutor, request: Any, host: Any) -> Any:
            self._step.key = request.step.key
            return original_run(executor, request, host)

        originals.append((LocalExecutor, "run", original_run))
        setattr(LocalExecutor, "run", run)  # noqa: B010 -- patched like the phases
        wrap(LocalExecutor, "_boot", "checkout")
        wrap(LocalExecutor, "_boot_overlay", "checkout")
        wrap(Store, "checkout", "checkout", until_yield=True)
        wrap(LocalExecutor, "_commit_copy", "commit")
        wrap(LocalExecutor, "_commit_overlay", "commit")
        try:
            yield
        finally:
            for owner, name, original in reversed(originals):
                setattr(owner, name, original)

    def _add(self, phase: str, seconds: float) -> None:
        key = getattr(self._step, "key", None)
        if key is not None:
            self.times[key][phase] += seconds


def _project(root: Path, tree: dict[str, Any], bench: Path) -> None:
    (root / ".greenloop").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("print('app')\n")
    for name, text in tree["files"].items():
        (root / name).write_text(text)
    env = _tool_env(bench)
    ro = [p for p in ("/opt",) if os.path.isdir(p)]  # pip's local wheels, if any
    rw = [env["PIP_CACHE_DIR"], env["npm_config_cache"]]
    (root / ".greenloop" / "pipeline.py").write_text(
        PIPELINE.format(
            env=env,
            ro=ro,
            rw=rw,
            install=tree["install"],
            lock=tree["lock"],
            children=CHILDREN,
        )
    )


def _tool_env(bench: Path) -> dict[str, str]:
    caches = {"PIP_CACHE_DIR": bench / "pip-cache", "npm_config_cache": bench / "npm-cache"}
    for folder in caches.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {name: str(folder) for name, folder in caches.items()} | {
        "PIP_DISABLE_PIP_VERSION_CHECK": "1"
    }


def _greenloop(store: Store, project: Path, sandbox: str) -> tuple[float, dict[str, float], str]:
    """One run; its wall time, each step's duration, and the plan line's mode."""
    events: list[BuildEvent] = []
    pipeline = load(project / ".greenloop" / "pipeline.py").pipeline("ci")
    the_run = Run(
        store,
        pipeline,
        project,
        Executors(store),
        events.append,
        RunOptions(jobs=2, sandbox=sandbox),  # type: ignore[arg-type]
    )
    started = time.perf_counter()
    result = the_run.execute()
    wall = time.perf_counter() - started
    if result.status != "passed":
        failed = {k: o.status for k, o in result.steps.items() if o.status != "passed"}
        raise SystemExit(f"greenloop run failed: {failed}")
    durations = {e.step: e.duration_s for e in events if isinstance(e, StepFinished)}
    modes = next(e.modes for e in events if isinstance(e, PlanSummary))
    return wall, durations, "; ".join(modes)


def _by_hand(folder: Path, commands: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    for command in commands:
        subprocess.run(["sh", "-c", command], cwd=folder, env=env, check=True)
    return time.perf_counter() - started


def _size(folder: Path) -> tuple[int, int]:
    files = total = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            files += 1
            total += path.stat().st_size
    return total, files


def bench_tree(name: str, sandboxes: list[str], bench: Path) -> None:
    """Run one tree through every sandbox and by hand, and print the comparison."""
    tree = TREES[name]
    env = {**os.environ, **_tool_env(bench)}
    commands = [tree["install"]] + [f": child{i}" for i in range(CHILDREN)]
    # Fill pip's or npm's download cache first, untimed: every run below reads it.
    warm = bench / f"{name}-warm-up"
    shutil.rmtree(warm, ignore_errors=True)
    warm.mkdir()
    for file, text in tree["files"].items():
        (warm / file).write_text(text)
    _by_hand(warm, [tree["install"]], env)
    shutil.rmtree(warm)
    hand_dir = bench / f"{name}-by-hand"
    shutil.rmtree(hand_dir, ignore_errors=True)
    hand_dir.mkdir()
    for file, text in tree["files"].items():
        (hand_dir / file).write_text(text)
    hand = {"cold": _by_hand(hand_dir, commands, env)}
    size, files = _size(hand_dir / tree["folder"])
    (hand_dir / "src").mkdir(exist_ok=True)
    (hand_dir / "src" / "app.py").write_text("print('changed')\n")
    hand["one-file change"] = hand["cached"] = _by_hand(hand_dir, commands, env)
    child_by_hand = _by_hand(hand_dir, [": child0"], env)
    print(f"\n== {name}: {tree['folder']} of {size / 1e6:.0f} MB in {files} files ==")
    print(f"by hand: cold {hand['cold']:.2f}s, again {hand['cached']:.2f}s")

    for sandbox in sandboxes:
        project = bench / f"{name}-{sandbox}"
        shutil.rmtree(project, ignore_errors=True)
        _project(project, tree, bench)
        clock = PhaseClock()
        with Store.open(bench / f"store-{name}-{sandbox}") as store, clock.installed():
            runs: dict[str, tuple[float, dict[str, float], str]] = {}
            runs["cold"] = _greenloop(store, project, sandbox)
            cold_phases = {k: dict(v) for k, v in clock.times.items()}
            clock.times.clear()
            (project / "src" / "app.py").write_text("print('changed')\n")
            runs["one-file change"] = _greenloop(store, project, sandbox)
            change_phases = {k: dict(v) for k, v in clock.times.items()}
            runs["cached"] = _greenloop(store, project, sandbox)
        print(f"-- greenloop --sandbox {sandbox} ({runs['cold'][2]})")
        for scenario, (wall, durations, _) in runs.items():
            ratio = wall / hand[scenario]
            children = [d for k, d in durations.items() if k.startswith("child")]
            child = f", child step {1000 * max(children):.0f} ms max" if children else ""
            print(f"   {scenario:<16} {wall:7.2f}s  = {ratio:4.2f}x by hand{child}")
        for scenario, phases in (("cold", cold_phases), ("one-file change", change_phases)):
            print(f"   per step, {scenario}:")
            for key, times in phases.items():
                command = runs[scenario][1].get(key, 0.0)
                line = (
                    f"     {key:<8} checkout {1000 * times.get('checkout', 0):8.1f} ms"
                    f"  commit {1000 * times.get('commit', 0):8.1f} ms"
                    f"  step {command:7.3f}s"
                )
                if key.startswith("child"):
                    line += f"  over the command by hand {1000 * (command - child_by_hand):6.1f} ms"
                print(line)


def main() -> None:
    """Parse the options and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", choices=[*TREES, "all"], default="all")
    parser.add_argument("--sandbox", choices=["bwrap", "none", "all"], default="all")
    parser.add_argument("--dir", type=Path, default=None, help="Work folder (default: a temp one).")
    args = parser.parse_args()
    trees = list(TREES) if args.tree == "all" else [args.tree]
    sandboxes = ["bwrap", "none"] if args.sandbox == "all" else [args.sandbox]
    with _work_dir(args.dir) as bench:
        for name in trees:
            bench_tree(name, sandboxes, bench)


@contextlib.contextmanager
def _work_dir(chosen: Path | None) -> Iterator[Path]:
    if chosen is not None:
        chosen.mkdir(parents=True, exist_ok=True)
        yield chosen
        return
    with tempfile.TemporaryDirectory(prefix="greenloop-real-tree-") as tmp:
        yield Path(tmp)


if __name__ == "__main__":
    main()
