"""The ray executor: a fan of 16 one-second steps on a 2-node cluster, and what it costs.

Starts, on loopback, an nginx WebDAV cache and a Ray cluster (a head that runs
no step and two worker nodes with one CPU each, every node with its own store:
``tests/ray_cluster.py``), then runs one pipeline -- 16 independent steps that
each ``sleep 1`` (cached forever, so a rerun can be answered by the cache) --
four ways, each through the ``Run`` API in this process:

* ``local -j 1`` -- the local executor, one step at a time;
* the fan's sum -- 16 s, what the steps themselves take;
* ``ray`` cold -- ``--executor ray``, an empty host store and server, ``-j 2``
  (one step a node, so a step's duration is not time queued in Ray) and again
  ``-j 16``; a warm-up run first (Ray connects, a worker on each node imports
  greenloop: timed apart), so the fan measures steps;
* remote-warm -- a fresh host store, the same server: every step a remote hit,
  nothing sent to the cluster (also as a fresh ``greenloop run`` process).

Dispatch overhead per step is the median ray step's duration (started to
finished, as the run history records it) less the median local step's (both
run the same bwrap sandbox and commit), and also the fan's wall time less the
ideal (16 s over 2 nodes) per step on a node. Target (issue 14):
<= 50 ms a step. Slow (a minute or so) and needs Ray: not part of CI.

    python bench/ray_fanout.py [--steps N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from greenloop.engine.run import Run, RunOptions, RunResult
from greenloop.executors.ray_cluster import disconnect
from greenloop.plugins.discovery import Executors
from greenloop.sdk.loader import load
from greenloop.store import Store
from greenloop.store.remote import HttpRemoteCache
from tests.ray_cluster import RayCluster, ray_binary
from tests.test_remote_server import NginxServer, nginx_binary

PIPELINE = """
import greenloop as gl

@gl.pipeline("ci")
def ci():
    for i in range({steps}):
        gl.sh(f"sleep 1 && echo {salt}{{i}}", label=f"s{{i}}", cache=gl.forever())
"""
WARMUP = """
import greenloop as gl

@gl.pipeline("ci")
def ci():
    gl.sh("sleep 0.5", label="warm-up-a")
    gl.sh("sleep 0.5", label="warm-up-b")
"""
SLOTS = 2


def write_fan(project: Path, steps: int, salt: str) -> None:
    """The fan, its commands made distinct by ``salt`` (a new salt: nothing cached)."""
    (project / ".greenloop" / "pipeline.py").write_text(PIPELINE.format(steps=steps, salt=salt))


def run(
    store_dir: Path, project: Path, executor: str, jobs: int, url: str | None
) -> tuple[RunResult, float]:
    """One run of the project's ``ci``; its result and wall time."""
    store = Store.open(store_dir)
    remote = HttpRemoteCache(store, url, warn=lambda line: print("warning:", line)) if url else None
    pipeline = load(project / ".greenloop" / "pipeline.py").pipeline("ci")
    the_run = Run(
        store,
        pipeline,
        project,
        Executors(store),
        lambda event: None,
        RunOptions(executor=executor, jobs=jobs),
        remote=remote,
    )
    began = time.perf_counter()
    result = the_run.execute()
    wall = time.perf_counter() - began
    store.close()
    if result.status != "passed":
        failed = {k: (o.status, o.error) for k, o in result.steps.items() if o.status != "passed"}
        raise SystemExit(f"{executor} run {result.status}: {failed}")
    return result, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    ray, nginx = ray_binary(), nginx_binary()
    if ray is None or nginx is None:
        raise SystemExit("needs Ray (pip install 'greenloop[ray]') and nginx")
    with tempfile.TemporaryDirectory(prefix="greenloop-ray-bench-") as tmp:
        base = Path(tmp)
        project = base / "project"
        (project / ".greenloop").mkdir(parents=True)
        warm = base / "warm"
        (warm / ".greenloop").mkdir(parents=True)
        write_fan(project, args.steps, "")
        (warm / ".greenloop" / "pipeline.py").write_text(WARMUP)
        with (
            NginxServer(base / "nginx", binary=nginx) as server,
            RayCluster(base / "ray", binary=ray) as cluster,
        ):
            os.environ.update(cluster.env())
            os.environ["GREENLOOP_REMOTE_CACHE"] = server.url
            try:
                report(base, project, warm, server.url, args.steps)
            finally:
                disconnect()


def report(base: Path, project: Path, warm: Path, url: str, steps: int) -> None:
    """Run the four ways and print the figures."""
    local, local_wall = run(base / "local-store", project, "local", 1, None)
    local_step = statistics.median(o.duration_s for o in local.steps.values())
    print(f"local -j 1          {local_wall:6.2f} s  (a step: {local_step * 1000:.0f} ms median)")
    print(f"the fan's sum       {steps:6.2f} s  ({steps} steps of 1 s)")

    _, connect = run(base / "warm-store", warm, "ray", SLOTS, url)
    print(
        f"ray warm-up         {connect:6.2f} s  (once a process: ray.init, the relay, "
        "a worker on each node importing greenloop)"
    )
    cold, ray_wall = run(base / "ray-store", project, "ray", SLOTS, url)
    ideal = steps / SLOTS
    ray_step = statistics.median(o.duration_s for o in cold.steps.values())
    worst = max(o.duration_s for o in cold.steps.values())
    print(f"ray -j {SLOTS} cold       {ray_wall:6.2f} s  (ideal {ideal:.2f} s on {SLOTS} nodes)")
    print(
        f"dispatch overhead   {(ray_step - local_step) * 1000:6.0f} ms a step (median ray step "
        f"{ray_step * 1000:.0f} ms, max {worst * 1000:.0f}, less the local step's); wall over "
        f"ideal: {(ray_wall - ideal) / (steps / SLOTS) * 1000:.0f} ms a step on each node, "
        "sandbox included"
    )
    print(f"speed-up            {local_wall / ray_wall:6.2f}x over local -j 1")
    write_fan(project, steps, "wide-")
    _, wide_wall = run(base / "ray-wide-store", project, "ray", steps, url)
    print(f"ray -j {steps} cold      {wide_wall:6.2f} s  (every step queued in Ray at once)")
    write_fan(project, steps, "")

    rerun, warm_wall = run(base / "fresh-store", project, "ray", steps, url)
    cached = sum(o.status == "cached" for o in rerun.steps.values())
    print(f"remote-warm rerun   {warm_wall:6.2f} s  ({cached}/{steps} remote hits, in process)")
    env = {**os.environ, "GREENLOOP_CACHE_DIR": str(base / "fresh-cli-store")}
    env["GREENLOOP_NO_DAEMON"] = "1"
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "greenloop", "run", "ci", "--executor", "ray", "--format", "plain"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    cli_wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"greenloop run failed:\n{done.stdout}\n{done.stderr}")
    print(f"remote-warm rerun   {cli_wall:6.2f} s  (a fresh `greenloop run` process)")


if __name__ == "__main__":
    main()
