"""Fleet mode: one `greenloop serve` for N worktrees against N separate `greenloop watch`.

The project is a real one: the `rich` package as installed in this virtualenv
(about 100 modules, 38,000 lines) copied into a fresh git repository and
checked by ruff (with --mypy, by mypy too; with --pyright-lsp, by the warm
pyright language server too, which `serve` shares: one server, one workspace
folder a worktree, where each `watch` runs its own). For each N, N worktrees of it
(the main one and N-1 made with `git worktree add`) are watched

- by one `greenloop serve` process, and
- by N `greenloop watch --json` processes, one per worktree,

and the script reports, once every worktree has its first verdict:

- total RSS: VmRSS summed over each process tree (the watchers and every
  child they have at that moment), from /proc;
- idle CPU: utime + stime ticks of those trees over --idle-s seconds, as a
  percentage of one core;
- save→verdict latency in the first worktree while the others idle: an
  atomic write that flips it red (an unused import), then back green, timed to
  the `became_red` / `became_green` event; the median of --edits edits.

It prints the ratios (serve / separate, and serve at N against serve at
N=1) next to the issue's targets: RSS at N=20 ≤ 1.5 times N=1, latency at N=20
within 10 % of N=1, idle < 0.3 % of a core for the whole fleet.

    python bench/fleet.py [--n 1,5,10,20] [--idle-s 15] [--edits 6] [--mypy] [--pyright-lsp]

(--pyright-lsp needs `pyright-langserver` on PATH, e.g. from `npm install pyright`.)

Everything lives in a temporary folder (state, serve socket) removed at the
end; no daemon is used (GREENLOOP_NO_DAEMON=1). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import rich

GUARD_S = 600.0
"""A failure guard only (a first verdict with mypy on 20 cold worktrees takes minutes)."""

TICK_S = 1 / os.sysconf("SC_CLK_TCK")
EDITED = "src/rich/bar.py"
RED_LINE = "import os  # greenloop bench: unused, so ruff says F401\n"


def make_repo(root: Path, mypy: bool, pyright_lsp: bool) -> Path:
    """A git repository holding a copy of the installed `rich`, green under ruff (F401)."""
    shutil.copytree(Path(rich.__file__).parent, root / "src" / "rich")
    for cache in (root / "src").rglob("__pycache__"):
        shutil.rmtree(cache)
    config = [
        '[project]\nname = "richcopy"\nversion = "0"\n',
        '[tool.ruff]\nsrc = ["src"]\n[tool.ruff.lint]\nselect = ["F401"]\n',
        '[tool.ruff.lint.per-file-ignores]\n"src/rich/screen.py" = ["F401"]\n',
    ]
    if mypy:
        config.append('[tool.mypy]\nfiles = ["src"]\nignore_errors = true\n')
    if pyright_lsp:
        # Basic mode finds errors in rich; off keeps it green (the edits flip on ruff's
        # F401) and still reads and analyses every module (a cold pyright: about 14 s).
        config.append('[tool.pyright]\ntypeCheckingMode = "off"\n')
        config.append("[tool.greenloop.checkers.pyright-lsp]\n")
        config.append("[tool.greenloop.checkers.pyright]\nenabled = false\n")
    (root / "pyproject.toml").write_text("\n".join(config))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "rich")
    return root


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def worktrees(repo: Path, n: int) -> list[Path]:
    """The main worktree and n-1 linked ones (made once, reused by larger n)."""
    trees = [repo]
    for i in range(1, n):
        path = repo.parent / f"wt{i:02d}"
        if not path.exists():
            git(repo, "worktree", "add", "-q", str(path))
        trees.append(path.resolve())
    return trees


# --- /proc ------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def process_tree(roots: Sequence[int]) -> list[int]:
    """``roots`` and all their descendants alive now."""
    children = _children()
    found, pending = [], list(roots)
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending += children.get(pid, [])
    return found


def rss_mb(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def cpu_ticks(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def idle_cpu_percent(roots: Sequence[int], seconds: float) -> float:
    before = cpu_ticks(process_tree(roots))
    time.sleep(seconds)
    after = cpu_ticks(process_tree(roots))
    return (after - before) * TICK_S / seconds * 100


# --- the watchers -----------------------------------------------------------------------


class Lines:
    """A process's stdout lines, read by a thread, as JSON messages."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.queue: queue.Queue[dict[str, object]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.queue.put(json.loads(line))

    def wait(self, kinds: set[str], worktree: str | None = None) -> tuple[float, dict[str, object]]:
        deadline = time.monotonic() + GUARD_S
        while True:
            try:
                message = self.queue.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise SystemExit(
                    f"no {kinds} within {GUARD_S}s (exit {self.proc.poll()})"
                ) from None
            if message.get("kind") in kinds and worktree in (None, message.get("worktree")):
                return time.monotonic(), message

    def drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def private_env(work: Path) -> dict[str, str]:
    """This environment, with greenloop's state, serve socket and settings under ``work``
    and no daemon."""
    return {
        **os.environ,
        "GREENLOOP_NO_DAEMON": "1",
        "GREENLOOP_STATE_DIR": str(work / "state"),
        "GREENLOOP_SERVE_DIR": str(work / "s"),
        "GREENLOOP_CONFIG": str(work / "config.toml"),
    }


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "greenloop", *args]


EDGES = {"became_green", "became_red"}


def edit_latency(tree: Path, lines: Lines, worktree: str | None, edits: int) -> list[float]:
    """Flip the first worktree red and green ``edits`` times; seconds from write to event."""
    path = tree / EDITED
    green = path.read_text()
    took = []
    for i in range(edits):
        text = RED_LINE + green if i % 2 == 0 else green
        want = "became_red" if i % 2 == 0 else "became_green"
        lines.drain()
        temp = path.with_suffix(".tmp")
        temp.write_text(text)
        start = time.monotonic()
        os.replace(temp, path)
        while True:
            at, message = lines.wait(EDGES, worktree)
            if message["kind"] == want:
                break
        took.append(at - start)
        time.sleep(0.5)  # let the loop go idle again
    if edits % 2:
        path.write_text(green)
    return took


@dataclass
class Figures:
    rss_mb: float
    idle_cpu: float
    latency_s: float


def measure_serve(trees: list[Path], env: dict[str, str], args: argparse.Namespace) -> Figures:
    server = subprocess.Popen(
        command("serve", "--repo", str(trees[0])),
        cwd=trees[0],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stream: Lines | None = None
    try:
        deadline = time.monotonic() + GUARD_S
        while not list(Path(env["GREENLOOP_SERVE_DIR"]).glob("*.sock")):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"greenloop serve did not start (exit {server.poll()})")
            time.sleep(0.1)
        stream = Lines(command("watch", "--json", "--all-worktrees"), trees[0], env)
        waiting = {str(t) for t in trees}
        while waiting:
            _, message = stream.wait({"verdict"})
            waiting.discard(str(message["worktree"]))
        time.sleep(2)
        pids = process_tree([server.pid])
        rss = rss_mb(pids)
        idle = idle_cpu_percent([server.pid], args.idle_s)
        took = edit_latency(trees[0], stream, str(trees[0]), args.edits)
        return Figures(rss, idle, statistics.median(took))
    finally:
        if stream is not None:
            stream.stop()
        server.terminate()
        server.wait(timeout=60)


def measure_separate(trees: list[Path], env: dict[str, str], args: argparse.Namespace) -> Figures:
    alone = {**env, "GREENLOOP_NO_SERVE": "1"}
    watchers = [Lines(command("watch", "--json"), tree, alone) for tree in trees]
    try:
        for watcher in watchers:
            watcher.wait(EDGES)
        time.sleep(2)
        roots = [w.proc.pid for w in watchers]
        rss = rss_mb(process_tree(roots))
        idle = idle_cpu_percent(roots, args.idle_s)
        took = edit_latency(trees[0], watchers[0], None, args.edits)
        return Figures(rss, idle, statistics.median(took))
    finally:
        for watcher in watchers:
            watcher.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="1,5,10,20", help="worktree counts, comma-separated")
    parser.add_argument("--idle-s", type=float, default=15.0)
    parser.add_argument("--edits", type=int, default=6)
    parser.add_argument("--mypy", action="store_true", help="check with mypy as well as ruff")
    parser.add_argument(
        "--pyright-lsp", action="store_true", help="and with the pyright language server"
    )
    args = parser.parse_args(argv)
    counts = sorted({int(n) for n in args.n.split(",")})
    work = Path(tempfile.mkdtemp(prefix="glfleet-"))
    env = private_env(work)
    try:
        if args.pyright_lsp and shutil.which("pyright-langserver") is None:
            raise SystemExit("--pyright-lsp: pyright-langserver is not on PATH")
        repo = make_repo(work / "repo", args.mypy, args.pyright_lsp)
        files = sum(1 for _ in (repo / "src").rglob("*.py"))
        checkers = ", ".join(
            name
            for name, on in (("ruff", True), ("mypy", args.mypy), ("pyright-lsp", args.pyright_lsp))
            if on
        )
        print(
            f"project: rich {rich.__version__ if hasattr(rich, '__version__') else ''}"
            f"({files} modules), checked by {checkers}; idle {args.idle_s:g}s, "
            f"{args.edits} edits\n"
        )
        print(f"{'N':>3}  {'mode':9} {'RSS MB':>8} {'idle %core':>10} {'latency ms':>10}")
        results: dict[int, tuple[Figures, Figures]] = {}
        for n in counts:
            trees = worktrees(repo, n)
            served = measure_serve(trees, env, args)
            separate = measure_separate(trees, env, args)
            results[n] = (served, separate)
            for mode, f in (("serve", served), ("separate", separate)):
                cells = f"{f.rss_mb:8.1f} {f.idle_cpu:10.2f} {f.latency_s * 1000:10.0f}"
                print(f"{n:>3}  {mode:9} {cells}")
            print(
                f"     serve/separate: RSS {served.rss_mb / separate.rss_mb:.2f}x, "
                f"idle CPU {served.idle_cpu / separate.idle_cpu if separate.idle_cpu else 0:.2f}x, "
                f"latency {served.latency_s / separate.latency_s:.2f}x",
                flush=True,
            )
        first = results[counts[0]][0]
        print()
        for n in counts[1:]:
            f = results[n][0]
            print(
                f"serve N={n} vs N={counts[0]}: RSS {f.rss_mb / first.rss_mb:.2f}x (target ≤ 1.5x "
                f"at 20), latency {f.latency_s / first.latency_s:.2f}x (target ≤ 1.10x), idle "
                f"{f.idle_cpu:.2f} % of a core (target < 0.3 %)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
