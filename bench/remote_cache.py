"""Remote cache: how fast a fresh machine becomes warm from a shared server, and what it fetches.

Two 10-step pipelines (local executor; every step writes a few files, so
snapshots and artifacts have content) run against an nginx WebDAV server this
script starts on loopback:

* ``fan`` -- a chain with forks; six steps declare artifacts;
* ``chain`` -- a straight chain of ten steps; only the last declares an
  artifact, and only it depends on a workspace file (``leaf.txt``).

Each runs three ways:

* cold -- empty local store, empty server: every step runs and is uploaded;
* local-warm -- the same store again: every step is a local hit;
* remote-warm -- a fresh local store, the same server: every step is a remote
  hit. Snapshot blobs are fetched only when a step that runs boots from them,
  so a fully cached run downloads entry documents, tree manifests and
  artifacts, and nothing of a snapshot.

For ``chain`` a fourth figure, *leaf reruns*, changes ``leaf.txt`` and runs a
fresh store against the server in ``read`` mode: nine remote hits, then the
leaf runs and boots from the ninth step's snapshot, fetched on demand.

Each is measured through the ``Run`` API in this process (engine only, timed
to the end of ``execute()``, which includes waiting for uploads) and -- except
*leaf reruns* -- as a fresh ``greenloop run`` process (what a user waits for,
interpreter start-up included, as in ``bench/run_overhead.py``). Warm figures
are the median of ``--repeat`` runs, with a fresh store for each remote one.
Target (issue 7): remote-warm within 2x of local-warm.

    python bench/remote_cache.py [--repeat N] [--kb N] [--shape fan|chain]
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
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from greenloop.engine.run import Run, RunOptions
from greenloop.plugins.discovery import Executors
from greenloop.protocol import BuildEvent
from greenloop.sdk.loader import load
from greenloop.store import Store
from greenloop.store.records import RemoteStats
from greenloop.store.remote import HttpRemoteCache, RemoteMode
from tests.test_remote_server import NginxServer, nginx_binary

_WRITE = """
import greenloop as gl

KB = {kb}

def write(name):
    # A binary blob, a text file and a stamp: distinct content per step.
    return (f"mkdir -p out/{{name}}"
            f" && head -c $(({{KB}} * 1024)) /dev/urandom > out/{{name}}/data.bin"
            f" && seq 1 3000 | sed s/^/{{name}}-/ > out/{{name}}/lines.txt"
            f" && echo {{name}} > out/{{name}}/stamp")
"""

PIPELINES = {
    "fan": _WRITE
    + """
@gl.pipeline("ci")
def ci():
    setup = gl.sh(write("setup"), label="setup", cache=gl.forever())
    deps = setup.sh(write("deps"), label="deps", cache=gl.forever())
    for name in ("lint", "types", "unit", "docs"):
        deps.fork(name).sh(write(name), label="run", cache=gl.forever(),
                           artifacts=[f"out/{{name}}"])
    build = deps.sh(write("build"), label="build", cache=gl.forever(), artifacts=["out/build"])
    build.sh(write("check"), label="check", cache=gl.forever())
    build.sh(write("package"), label="package", cache=gl.forever(),
             artifacts=["out/package"])
    setup.sh(write("side"), label="side", cache=gl.forever())
""",
    "chain": _WRITE
    + """
@gl.pipeline("ci")
def ci():
    step = gl.sh(write("s1"), label="s1", cache=gl.forever())
    for i in range(2, 10):
        step = step.sh(write(f"s{{i}}"), label=f"s{{i}}", cache=gl.forever())
    step.sh(write("leaf") + " && cat leaf.txt >> out/leaf/stamp", label="leaf",
            cache=gl.on_change("leaf.txt"), artifacts=["out/leaf"])
""",
}


@dataclass
class Figures:
    """What one pipeline shape measured."""

    cold: float
    local_warm: float
    remote_warm: float
    cli_cold: float
    cli_local_warm: float
    cli_remote_warm: float
    up: RemoteStats
    down: RemoteStats
    served: int
    rerun: tuple[float, RemoteStats] | None = None


def timed_run(
    store: Store, project: Path, url: str, mode: RemoteMode = "readwrite"
) -> tuple[float, RemoteStats, dict[str, str]]:
    """Run the pipeline once with the remote; (seconds, remote stats, step statuses)."""
    events: list[BuildEvent] = []
    pipeline = load(project / ".greenloop" / "pipeline.py").pipeline("ci")
    warnings: list[str] = []
    remote = HttpRemoteCache(store, url, mode=mode, warn=warnings.append)
    the_run = Run(
        store, pipeline, project, Executors(store), events.append, RunOptions(), None, remote
    )
    remote.bind_run(the_run.run_id)
    started = time.perf_counter()
    result = the_run.execute()
    took = time.perf_counter() - started
    if result.status != "passed" or warnings:
        raise SystemExit(f"bench run went wrong: {result.status} {warnings}")
    return took, remote.stats, {k: o.status for k, o in result.steps.items()}


def cli_run(store: Path, project: Path, url: str) -> float:
    """Seconds a `greenloop run` process takes with the remote, store at ``store``."""
    env = {**os.environ, "GREENLOOP_CACHE_DIR": str(store), "GREENLOOP_NO_DAEMON": "1"}
    cmd = [sys.executable, "-m", "greenloop", "run", "--format", "plain", "--remote-cache", url]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0 or "warning" in done.stderr:
        raise SystemExit(f"bench run went wrong:\n{done.stdout}\n{done.stderr}")
    return took


def measure(shape: str, base: Path, server: NginxServer, repeat: int, kb: int) -> Figures:
    """Cold, local-warm and remote-warm runs of pipeline ``shape`` under ``base``."""
    project = base / shape / "project"
    (project / ".greenloop").mkdir(parents=True)
    (project / ".greenloop" / "pipeline.py").write_text(
        textwrap.dedent(PIPELINES[shape].format(kb=kb))
    )
    (project / "README").write_text("bench\n")
    (project / "leaf.txt").write_text("one\n")
    # One instance name per shape and per way of running, so nothing is shared.
    url = f"{server.url}/{shape}"
    store_a = Store.open(base / shape / "store-a")
    cold, up, states = timed_run(store_a, project, url)
    assert set(states.values()) == {"passed"}, states
    local = []
    for _ in range(repeat):
        took, _, states = timed_run(store_a, project, url)
        assert set(states.values()) == {"cached"}, states
        local.append(took)
    store_a.close()
    remote = []
    down = up
    for i in range(repeat):
        store_b = Store.open(base / shape / f"store-b{i}")
        took, down, states = timed_run(store_b, project, url)
        store_b.close()
        assert set(states.values()) == {"cached"}, states
        remote.append(took)
    served = sum(p.stat().st_size for p in (server.root / shape).rglob("*") if p.is_file())
    rerun = None
    if shape == "chain":
        (project / "leaf.txt").write_text("two\n")
        reruns = []
        for i in range(repeat):
            store_c = Store.open(base / shape / f"store-c{i}")
            took, stats, states = timed_run(store_c, project, url, mode="read")
            store_c.close()
            assert states["leaf"] == "passed" and list(states.values()).count("cached") == 9
            reruns.append((took, stats))
        rerun = sorted(reruns, key=lambda r: r[0])[len(reruns) // 2]
        (project / "leaf.txt").write_text("one\n")
    cli_url = f"{server.url}/{shape}-cli"
    cli_cold = cli_run(base / shape / "cli-a", project, cli_url)
    cli_local = [cli_run(base / shape / "cli-a", project, cli_url) for _ in range(repeat)]
    cli_remote = [cli_run(base / shape / f"cli-b{i}", project, cli_url) for i in range(repeat)]
    return Figures(
        cold=cold,
        local_warm=statistics.median(local),
        remote_warm=statistics.median(remote),
        cli_cold=cli_cold,
        cli_local_warm=statistics.median(cli_local),
        cli_remote_warm=statistics.median(cli_remote),
        up=up,
        down=down,
        served=served,
        rerun=rerun,
    )


def report(shape: str, f: Figures) -> None:
    """Print one shape's figures."""
    print(f"{shape}")
    print(
        f"  moved          cold uploaded {f.up.bytes_uploaded / 1e6:.2f} MB in "
        f"{f.up.blobs_uploaded} blobs + {f.up.published} entries (server holds "
        f"{f.served / 1e6:.2f} MB); remote-warm downloaded {f.down.bytes_downloaded / 1e6:.2f} MB "
        f"in {f.down.blobs_downloaded} blobs, {f.down.hits}/{f.down.lookups} hits"
    )
    print("                      cold   local-warm  remote-warm  remote/local")
    print(
        f"  in-process     {f.cold:7.3f} s  {f.local_warm:7.3f} s    {f.remote_warm:7.3f} s     "
        f"{f.remote_warm / f.local_warm:5.2f}x"
    )
    print(
        f"  greenloop run  {f.cli_cold:7.3f} s  {f.cli_local_warm:7.3f} s    "
        f"{f.cli_remote_warm:7.3f} s     {f.cli_remote_warm / f.cli_local_warm:5.2f}x   "
        "(target <= 2x)"
    )
    if f.rerun is not None:
        took, stats = f.rerun
        print(
            f"  leaf reruns    {took:7.3f} s in-process; downloaded "
            f"{stats.bytes_downloaded / 1e6:.2f} MB in {stats.blobs_downloaded} blobs, "
            f"{stats.hits}/{stats.lookups} hits"
        )


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="warm runs to take the median of")
    parser.add_argument("--kb", type=int, default=256, help="size of each step's binary file")
    parser.add_argument("--shape", choices=sorted(PIPELINES), action="append", help="default: all")
    args = parser.parse_args()
    binary = nginx_binary()
    if binary is None:
        raise SystemExit("nginx is not installed (apt-get install nginx)")
    shapes = args.shape or ["fan", "chain"]
    print(
        f"10 steps per pipeline, {args.kb} KiB random + ~25 KiB text per step; "
        f"warm figures are medians of {args.repeat}"
    )
    with (
        tempfile.TemporaryDirectory(prefix="greenloop-bench-") as tmp,
        NginxServer(Path(tmp) / "nginx", binary=binary) as server,
    ):
        for shape in shapes:
            report(shape, measure(shape, Path(tmp), server, args.repeat, args.kb))


if __name__ == "__main__":
    main()
