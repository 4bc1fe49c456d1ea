"""Save→verdict latency of the dev-loop watcher, against running the checker by hand.

On a small strict-typed Python project created in a temp folder, each scenario
runs a :class:`~greenloop.devloop.loop.WatchLoop` in this process and edits one
file N times with a whole-file atomic write (temp file + rename), alternating
between two green contents. Latency is from the rename to the listener's
``verdict()`` call. The same checker argv greenloop resolved is then run by
hand (subprocess, same folder, same edits) to get the floor the watcher is
compared with; the configured debounce window is reported apart, since it is a
deliberate wait, not a cost. The checkers start once the tree has settled for a
quarter of that window and their verdict is held until it closes, so a checker
faster than the rest of the window adds nothing beyond it.

Also shown: checker runs per edit (starting early must not cost extra runs),
that independent checkers run in parallel (two 250 ms checkers take 250 ms, not
500), that content-identical saves start no round and no checker, and the
memory and idle CPU of a real ``greenloop watch`` process on a 1,000-file tree
(its own figures from /proc, checker children excluded).

Targets (dev-loop verdict issue): beyond the debounce window, at most 10 % and
at most 50 ms more than the checkers by hand; watcher RSS ≤ 80 MB on 1,000
files; idle CPU < 1 %.

    python bench/verdict_latency.py [--edits N] [--idle-s S]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greenloop.devloop import process
from greenloop.devloop.loop import Listener, Verdict, WatchLoop
from greenloop.devloop.rounds import Setup
from greenloop.devloop.watcher import SETTLE_DIVISOR
from greenloop.protocol import TreeState

DEBOUNCE_MS = 120
"""Written into greenloop.toml explicitly (it is also the default) so the figure is known."""

GUARD_S = 120.0
"""A failure guard only: no single verdict should come anywhere near this."""

TARGET_OVERHEAD_RATIO = 0.10
TARGET_OVERHEAD_MS = 50.0
TARGET_RSS_MB = 80.0
TARGET_IDLE_CPU = 0.01

# Two green versions of the edited file. Their sizes differ on purpose: mypy trusts a cached
# file whose size and whole-second mtime are unchanged, so greenloop wipes its cache on a
# same-size edit within a second; a real edit rarely keeps the size, and that wipe would
# measure a cold mypy instead of the incremental one a developer sees.
GREEN_A = "def double(a: int) -> int:\n    return a * 2\n"
GREEN_B = "def double(a: int) -> int:\n    result = a * 2\n    return result\n"

PYPROJECT = """\
[project]
name = "demo"
version = "0"

[tool.mypy]
strict = true

[tool.ruff.lint]
select = ["F"]
"""

NAP_S = 0.25
"""How long each of the two checkers of the parallel scenario sleeps."""

_NAP = json.dumps([sys.executable, "-c", f"import time; time.sleep({NAP_S})"])
_NO_PYTHON_CHECKERS = "[checkers.ruff]\nenabled = false\n[checkers.mypy]\nenabled = false\n"

SCENARIOS: dict[str, str] = {
    # ruff is advisory by default; made authoritative so it alone can turn the tree green.
    "ruff": '[checkers.ruff]\nrole = "authoritative"\n[checkers.mypy]\nenabled = false\n',
    "mypy": "[checkers.ruff]\nenabled = false\n",
    "ruff+mypy": "",
    "2 naps": _NO_PYTHON_CHECKERS
    + "".join(f'[checkers.nap{i}]\ncommand = {_NAP}\nrole = "authoritative"\n' for i in (1, 2)),
}
"""Scenario name → the checker part of its greenloop.toml."""


# --- the project ----------------------------------------------------------------------


def make_project(root: Path, checkers: str, modules: int = 8) -> Path:
    """A small green package: a few typed modules importing each other, plus the edited one."""
    files = {
        "pyproject.toml": PYPROJECT,
        "greenloop.toml": f'kinds = ["python"]\ndebounce_ms = {DEBOUNCE_MS}\n{checkers}',
        "demo/__init__.py": "",
        "demo/calc.py": GREEN_A,
    }
    for i in range(modules):
        files[f"demo/mod{i}.py"] = textwrap.dedent(
            f"""\
            from demo.calc import double


            def f{i}(values: list[int]) -> dict[str, int]:
                return {{str(v): double(v) + {i} for v in values}}
            """
        )
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` the way editors do: a temp file beside ``path``, then one rename."""
    tmp = path.with_name(f".{path.name}.bench-tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- in-process measurements ----------------------------------------------------------


@dataclass
class Sample:
    """One edit: rename → round start → verdict, in seconds since the rename."""

    detect_s: float
    total_s: float
    round_ms: int


class _Clock(Listener):
    """Timestamps round starts and verdicts; the bench thread waits on ``verdicts``."""

    def __init__(self) -> None:
        self.starts: queue.SimpleQueue[float] = queue.SimpleQueue()
        self.verdicts: queue.SimpleQueue[tuple[float, Verdict]] = queue.SimpleQueue()
        self.rounds = 0

    def checking(self, changed: frozenset[str]) -> None:
        self.rounds += 1
        self.starts.put(time.perf_counter())

    def verdict(self, verdict: Verdict) -> None:
        self.verdicts.put((time.perf_counter(), verdict))


class _CountingRun:
    """Wraps ``process.run`` to count checker processes the loop starts (cancelled ones too)."""

    def __init__(self) -> None:
        self.calls = 0
        self._real = process.run

    def __enter__(self) -> _CountingRun:
        real = self._real

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return real(*args, **kwargs)

        # The runner looks ``run`` up on the module at each call, so this sees every checker.
        process.run = counted
        return self

    def __exit__(self, *exc: object) -> None:
        process.run = self._real


@dataclass
class LoopResult:
    """What one in-process scenario measured."""

    samples: list[Sample]
    runs_per_edit: float
    identical_saves: int
    rounds_after_identical: int
    checker_runs_after_identical: int
    argvs: list[tuple[str, ...]]


def _next_verdict(clock: _Clock) -> tuple[float, Verdict]:
    try:
        return clock.verdicts.get(timeout=GUARD_S)
    except queue.Empty:
        raise SystemExit("no verdict within the guard timeout: the watcher is stuck") from None


def run_loop(root: Path, edits: int, identical_saves: int) -> LoopResult:
    """Watch ``root`` in-process; time ``edits`` alternating green edits, then identical saves."""
    setup = Setup.load(root)
    clock = _Clock()
    stop = threading.Event()
    loop = WatchLoop(root, setup, clock, stop)
    target = root / "demo" / "calc.py"
    with _CountingRun() as counter:
        thread = threading.Thread(target=loop.run, name="bench-loop", daemon=True)
        thread.start()
        try:
            _, first = _next_verdict(clock)  # cold start (empty mypy cache): not timed
            if first.tree is not TreeState.GREEN:
                raise SystemExit(f"the bench project is not green: {first.diagnostics}")
            clock.starts.get(timeout=1)
            samples = []
            runs_before = counter.calls
            for i in range(edits):
                atomic_write(target, GREEN_B if i % 2 == 0 else GREEN_A)
                renamed = time.perf_counter()
                at, verdict = _next_verdict(clock)
                started = clock.starts.get(timeout=1)
                if verdict.tree is not TreeState.GREEN:
                    raise SystemExit(f"edit {i} was not green: {verdict.diagnostics}")
                samples.append(Sample(started - renamed, at - renamed, verdict.duration_ms))
            runs_per_edit = (counter.calls - runs_before) / edits
            # Same bytes, fresh inode and mtime each time: a real save event, but no change.
            rounds, runs = clock.rounds, counter.calls
            current = target.read_text()
            for _ in range(identical_saves):
                atomic_write(target, current)
            time.sleep(DEBOUNCE_MS * 5 / 1000 + 1.0)  # long past when a batch would have come
            rounds_after, runs_after = clock.rounds - rounds, counter.calls - runs
        finally:
            stop.set()
            thread.join(GUARD_S)
    return LoopResult(
        samples,
        runs_per_edit,
        identical_saves,
        rounds_after,
        runs_after,
        [c.argv for c in setup.checkers],
    )


def checker_env() -> dict[str, str]:
    """The environment greenloop's runner gives checkers (no colour), so hand runs match."""
    env = dict(os.environ)
    env.pop("FORCE_COLOR", None)
    env.pop("CLICOLOR_FORCE", None)
    env["NO_COLOR"] = "1"
    return env


def run_by_hand(root: Path, argvs: Sequence[Sequence[str]], edits: int) -> list[float]:
    """The same edits, each followed by the same checker argv(s) started at once; seconds each."""
    target = root / "demo" / "calc.py"
    env = checker_env()
    times = []
    for i in range(edits):
        atomic_write(target, GREEN_B if i % 2 == 0 else GREEN_A)
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                list(argv),
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for argv in argvs
        ]
        for proc in procs:
            proc.wait(timeout=GUARD_S)
        times.append(time.perf_counter() - started)
    return times


# --- a real `greenloop watch` on 1,000 files --------------------------------------------


@dataclass
class IdleResult:
    """Memory and idle CPU of a ``greenloop watch`` process (its own, children excluded)."""

    files: int
    rss_mb: float
    hwm_mb: float
    idle_s: float
    idle_cpu: float


def _proc_status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # reported in kB
    raise SystemExit(f"/proc/{pid}/status has no {field}")


def _proc_cpu_s(pid: int) -> float:
    # utime and stime (fields 14 and 15) count this process only; cutime/cstime hold children.
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def watch_idle(root: Path, files: int, idle_s: float) -> IdleResult:
    """Start ``greenloop watch --json`` on a ``files``-file tree; RSS at green, CPU while idle."""
    for i in range(files):
        path = root / f"pkg{i // 50}" / f"m{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"VALUE_{i} = {i}\n")
    # ruff alone, authoritative: cheap on 1,000 files, and the watcher is what is measured.
    (root / "greenloop.toml").write_text(f'kinds = ["python"]\n{SCENARIOS["ruff"]}')
    program = shutil.which("greenloop", path=str(Path(sys.executable).parent))
    if program is None:
        raise SystemExit("greenloop is not installed beside this Python")
    proc = subprocess.Popen(
        [program, "watch", "--json"],
        cwd=root,
        # In its own process: a daemon it started would load greenloop in the background
        # while the watcher's idle CPU is measured, and outlive the bench.
        env={**os.environ, "GREENLOOP_NO_DAEMON": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + GUARD_S
        for line in proc.stdout:
            if '"became_green"' in line:
                break
            if time.monotonic() > deadline:
                raise SystemExit("the 1,000-file tree never turned green")
        else:
            raise SystemExit(f"greenloop watch exited ({proc.wait()}) before turning green")
        # Nothing more is printed while idle; drain anyway so a stray line cannot block it.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        time.sleep(1.0)  # let the first status write and the checker's exit settle
        rss = _proc_status_mb(proc.pid, "VmRSS")
        cpu_before, wall_before = _proc_cpu_s(proc.pid), time.perf_counter()
        time.sleep(idle_s)
        cpu = _proc_cpu_s(proc.pid) - cpu_before
        wall = time.perf_counter() - wall_before
        hwm = _proc_status_mb(proc.pid, "VmHWM")
        return IdleResult(files, rss, hwm, wall, cpu / wall)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=GUARD_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- reporting ------------------------------------------------------------------------


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    """Seconds as a right-aligned millisecond figure."""
    return f"{seconds * 1000:8.1f}"


def verdict_mark(ok: bool) -> str:
    """How a target line ends."""
    return "ok" if ok else "MISSED"


@dataclass
class Row:
    """One scenario's figures, for the tables."""

    name: str
    samples: list[Sample]
    hand: list[float]
    runs_per_edit: float

    @property
    def total(self) -> float:
        """Median rename → verdict."""
        return statistics.median(s.total_s for s in self.samples)

    @property
    def beyond_debounce(self) -> float:
        """Median rename → verdict, less the debounce window."""
        return self.total - DEBOUNCE_MS / 1000

    @property
    def hand_median(self) -> float:
        """Median time of the checker(s) run by hand."""
        return statistics.median(self.hand)

    @property
    def added(self) -> float:
        """Beyond the window, what the verdict costs more than the checkers by hand."""
        return self.beyond_debounce - self.hand_median

    @property
    def ratio(self) -> float:
        """Beyond the window, the verdict's time over the checkers' time by hand."""
        return self.beyond_debounce / self.hand_median

    def meets_target(self) -> bool:
        """At most 10 % and at most 50 ms more than by hand, beyond the window."""
        allowed = min(TARGET_OVERHEAD_RATIO * self.hand_median, TARGET_OVERHEAD_MS / 1000)
        return self.added <= allowed


def report(rows: list[Row], loops: dict[str, LoopResult], idle: IdleResult, edits: int) -> None:
    """Print every table and the targets."""
    settle = DEBOUNCE_MS // SETTLE_DIVISOR
    print(
        f"\nsave → verdict, {edits} atomic edits each (debounce {DEBOUNCE_MS} ms, "
        f"checking starts after {settle} ms quiet), ms"
    )
    print(
        f"{'checkers':<11}{'median':>9}{'p95':>9}{'start':>9}{'round':>7}"
        f"{'-window':>9}{'by hand':>9}{'added':>9}{'ratio':>7}{'runs':>6}"
    )
    for row in rows:
        print(
            f"{row.name:<11}{ms(row.total)} {ms(p95([s.total_s for s in row.samples]))}"
            f" {ms(statistics.median(s.detect_s for s in row.samples))}"
            f" {statistics.median(s.round_ms for s in row.samples):6.0f}"
            f" {ms(row.beyond_debounce)} {ms(row.hand_median)} {ms(row.added)}"
            f" {row.ratio:6.2f}{row.runs_per_edit:6.1f}"
        )
    print(
        f"  median/p95: rename → verdict; start: rename → round start (the {settle} ms settle,\n"
        "  plus up to a 10 ms watcher step, plus greenloop's own work);\n"
        "  round: the round's own duration (identity before/after + checkers);\n"
        "  -window: median less the debounce window; by hand: the same argv(s) run after\n"
        "  the same edit, all started at once; added = -window - by hand (negative: the\n"
        "  checkers ran inside the window); ratio = -window / by hand; runs: checker\n"
        "  processes started per edit"
    )

    by_name = {r.name: r for r in rows}
    naps = statistics.median(s.round_ms for s in by_name["2 naps"].samples) / 1000
    parallel = naps < NAP_S * 1.5
    print(f"\nparallel checkers: two sleeping {NAP_S * 1000:.0f} ms each")
    print(f"  round {ms(naps)} ms   one alone {ms(NAP_S)}   both in turn {ms(2 * NAP_S)}")

    print("\ncontent-identical saves (ruff+mypy project)")
    loop = loops["ruff+mypy"]
    print(
        f"  {loop.identical_saves} saves → {loop.rounds_after_identical} rounds, "
        f"{loop.checker_runs_after_identical} checker runs"
    )

    print(f"\n`greenloop watch` on {idle.files:,} files (its own process, checkers excluded)")
    print(f"  RSS at green {idle.rss_mb:6.1f} MB   peak (VmHWM) {idle.hwm_mb:6.1f} MB")
    print(f"  idle CPU over {idle.idle_s:.1f} s: {idle.idle_cpu:.2%}")

    print("\ntargets")
    for row in rows:
        print(
            f"  {row.name:<10} beyond the window {row.beyond_debounce * 1000:6.1f} ms, by hand "
            f"{row.hand_median * 1000:6.1f} ms: added {row.added * 1000:6.1f} ms "
            f"≤ min(10%, 50 ms): {verdict_mark(row.meets_target())}"
        )
        checkers = len(loops[row.name].argvs)
        print(
            f"  {row.name:<10} {row.runs_per_edit:.1f} checker runs per edit "
            f"(= {checkers}): {verdict_mark(row.runs_per_edit == checkers)}"
        )
    ok_ident = loop.rounds_after_identical == 0 and loop.checker_runs_after_identical == 0
    print(f"  identical saves cost 0 checker runs: {verdict_mark(ok_ident)}")
    print(f"  parallel (two naps under 1.5 times one): {verdict_mark(parallel)}")
    print(
        f"  RSS {max(idle.rss_mb, idle.hwm_mb):.1f} MB ≤ {TARGET_RSS_MB:.0f} MB: "
        f"{verdict_mark(max(idle.rss_mb, idle.hwm_mb) <= TARGET_RSS_MB)}"
    )
    print(f"  idle CPU {idle.idle_cpu:.2%} < 1%: {verdict_mark(idle.idle_cpu < TARGET_IDLE_CPU)}")


def progress(started: float, what: str) -> None:
    """Say on stderr what runs now, so the tables on stdout stay clean."""
    print(f"[{time.perf_counter() - started:6.1f}s] {what}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    """Run every measurement and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edits", type=int, default=30, help="timed edits per scenario")
    parser.add_argument("--identical", type=int, default=20, help="content-identical saves")
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle CPU window")
    parser.add_argument("--files", type=int, default=1000, help="files in the RSS tree")
    args = parser.parse_args(argv)

    # ruff and mypy come from the Python running this bench (its virtualenv).
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    started = time.perf_counter()
    rows: list[Row] = []
    loops: dict[str, LoopResult] = {}
    with tempfile.TemporaryDirectory(prefix="greenloop-bench-") as tmp:
        for name, checkers in SCENARIOS.items():
            root = make_project(Path(tmp) / name.replace("+", "-"), checkers)
            progress(started, f"{name}: watching")
            loop = run_loop(root, args.edits, args.identical)
            progress(started, f"{name}: by hand")
            hand = run_by_hand(root, loop.argvs, args.edits)
            loops[name] = loop
            rows.append(Row(name, loop.samples, hand, loop.runs_per_edit))
        progress(started, f"idle watcher on {args.files} files")
        idle = watch_idle(Path(tmp) / "big", args.files, args.idle_s)
    report(rows, loops, idle, args.edits)
    print(f"\n(total bench time {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
