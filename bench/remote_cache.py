"""Remote cache: how fast a fresh machine becomes warm from a shared server.

A 10-step pipeline (local executor; a chain with forks; every step writes a
few files, so snapshots and artifacts have content) runs three ways against an
nginx WebDAV server this script starts on loopback:

* cold -- empty local store, empty server: every step runs and is uploaded;
* local-warm -- the same store again: every step is a local hit;
* remote-warm -- a fresh local store, the same server: every step is a remote
  hit, its snapshot and artifacts downloaded and verified.

Each is measured twice: through the ``Run`` API in this process (engine
only, timed to the end of ``execute()``, which includes waiting for uploads),
and as a fresh ``greenloop run`` process (what a user waits for, interpreter
start-up included, as in ``bench/run_overhead.py``). Warm figures are the
median of ``--repeat`` runs, with a fresh store for each remote-warm one.
Target (issue 7): remote-warm within 2x of local-warm.

    python bench/remote_cache.py [--repeat N] [--kb N]
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from greenloop.engine.run import Run, RunOptions
from greenloop.plugins.registry import Executors
from greenloop.protocol import BuildEvent
from greenloop.sdk.loader import load
from greenloop.store import Store
from greenloop.store.index import RemoteStats
from greenloop.store.remote import HttpRemoteCache
from tests.test_remote_server import NginxServer, nginx_binary

PIPELINE = """
import greenloop as gl

KB = {kb}

def write(name):
    # A binary blob, a text file and a stamp: distinct content per step.
    return (f"mkdir -p out/{{name}}"
            f" && head -c $(({{KB}} * 1024)) /dev/urandom > out/{{name}}/data.bin"
            f" && seq 1 3000 | sed s/^/{{name}}-/ > out/{{name}}/lines.txt"
            f" && echo {{name}} > out/{{name}}/stamp")

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
"""


def timed_run(store: Store, project: Path, url: str) -> tuple[float, RemoteStats, dict[str, str]]:
    """Run the pipeline once with the remote; (seconds, remote stats, step statuses)."""
    events: list[BuildEvent] = []
    pipeline = load(project / ".greenloop" / "pipeline.py").pipeline("ci")
    warnings: list[str] = []
    remote = HttpRemoteCache(store, url, warn=warnings.append)
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
    env = {**os.environ, "GREENLOOP_CACHE_DIR": str(store)}
    cmd = [sys.executable, "-m", "greenloop", "run", "--format", "plain", "--remote-cache", url]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0 or "warning" in done.stderr:
        raise SystemExit(f"bench run went wrong:\n{done.stdout}\n{done.stderr}")
    return took


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="warm runs to take the median of")
    parser.add_argument("--kb", type=int, default=256, help="size of each step's binary file")
    args = parser.parse_args()
    binary = nginx_binary()
    if binary is None:
        raise SystemExit("nginx is not installed (apt-get install nginx)")
    with tempfile.TemporaryDirectory(prefix="greenloop-bench-") as tmp:
        base = Path(tmp)
        project = base / "project"
        (project / ".greenloop").mkdir(parents=True)
        (project / ".greenloop" / "pipeline.py").write_text(
            textwrap.dedent(PIPELINE.format(kb=args.kb))
        )
        (project / "README").write_text("bench\n")
        with NginxServer(base / "nginx", binary=binary) as server:
            store_a = Store.open(base / "store-a")
            cold, up, states = timed_run(store_a, project, server.url)
            assert set(states.values()) == {"passed"}, states
            local = []
            for _ in range(args.repeat):
                took, _, states = timed_run(store_a, project, server.url)
                assert set(states.values()) == {"cached"}, states
                local.append(took)
            store_a.close()
            remote = []
            down = up
            for i in range(args.repeat):
                store_b = Store.open(base / f"store-b{i}")
                took, down, states = timed_run(store_b, project, server.url)
                store_b.close()
                assert set(states.values()) == {"cached"}, states
                remote.append(took)
            served = sum(p.stat().st_size for p in server.root.rglob("*") if p.is_file())
            # The same three as user-facing processes, on a second server.
            cli_cold = cli_run(base / "cli-a", project, server.url + "/cli")
            cli_local = [cli_run(base / "cli-a", project, server.url + "/cli")]
            cli_local += [
                cli_run(base / "cli-a", project, server.url + "/cli")
                for _ in range(args.repeat - 1)
            ]
            cli_remote = [
                cli_run(base / f"cli-b{i}", project, server.url + "/cli")
                for i in range(args.repeat)
            ]
    local_warm, remote_warm = statistics.median(local), statistics.median(remote)
    cli_local_warm, cli_remote_warm = statistics.median(cli_local), statistics.median(cli_remote)
    print(
        f"pipeline       10 steps, {args.kb} KiB random + ~25 KiB text per step; "
        f"warm figures are medians of {args.repeat}"
    )
    print(
        f"moved          cold uploaded {up.bytes_uploaded / 1e6:.2f} MB in {up.blobs_uploaded} "
        f"blobs + {up.published} entries (server holds {served / 1e6:.2f} MB); remote-warm "
        f"downloaded {down.bytes_downloaded / 1e6:.2f} MB in {down.blobs_downloaded} blobs, "
        f"{down.hits}/{down.lookups} hits"
    )
    print("                    cold   local-warm  remote-warm  remote/local")
    print(
        f"in-process     {cold:7.3f} s  {local_warm:7.3f} s    {remote_warm:7.3f} s     "
        f"{remote_warm / local_warm:5.2f}x"
    )
    print(
        f"greenloop run  {cli_cold:7.3f} s  {cli_local_warm:7.3f} s    "
        f"{cli_remote_warm:7.3f} s     {cli_remote_warm / cli_local_warm:5.2f}x   (target <= 2x)"
    )


if __name__ == "__main__":
    main()
