"""greenloop as installed, no flags and no explicit daemon, against `docker build`.

What a developer sees: `greenloop run ci` typed again and again. The first
command finds no daemon, runs in its own process and starts one in the
background; every command from the second on is forked from it. This script
makes that first invocation (and waits for the daemon it started to serve),
then times, for the same 6-step pipeline as bench/docker_vs_build.py (busybox
image built locally, nothing pulled):

- `docker build`, cold (a fresh salt in every source file) and fully cached;
- `greenloop run ci` by default (forked from that daemon), cold and cached;
- the same with GREENLOOP_NO_DAEMON=1 (its own process), cold and cached;
- and a 10-step local-executor pipeline (bench/run_overhead.py's), fully
  cached, both ways.

It prints medians, the ratios to `docker build` (the median of each repeat's
ratio), and checks that every default invocation was really served by the
daemon.

Targets (issue 17): default cached <= 0.5x `docker build` cached; own process
cached <= 2.5x; default cold <= 0.9x `docker build` cold.

    DOCKER_HOST=unix:///path/docker.sock python bench/defaults.py [--repeat N]

The daemon lives in a private folder and is stopped at the end; the user's
settings file is not read, and $CI is dropped (under CI no daemon starts by
itself, and this measures a developer's machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docker_vs_build import STEPS, time_docker_build, timed
from docker_vs_build import write_project as write_docker_project
from run_overhead import write_project as write_local_project

from tests.docker_image import ensure_image  # importable: docker_vs_build put the repo on the path


def _greenloop() -> list[str]:
    """The program a user types: the `greenloop` script beside this Python, else `-m`."""
    script = shutil.which("greenloop", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "greenloop"]


def _status(gl: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([*gl, "daemon", "status", "--json"], env=env, capture_output=True)
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def main() -> None:
    """Start a daemon the way a user does, time every variant, print the figures."""
    import docker

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    ensure_image(docker.from_env())
    gl = _greenloop()
    run = [*gl, "run", "ci", "--format", "plain"]
    kinds = ("db_cold", "db_warm", "gd_cold", "gd_warm", "gl_cold", "gl_warm", "ld_warm", "ll_warm")
    results: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        # Bytecode caching on, as on a developer's machine; none of the user's settings.
        drop = ("PYTHONDONTWRITEBYTECODE", "GREENLOOP_NO_DAEMON", "CI")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env["GREENLOOP_DAEMON_DIR"] = str(base / "daemon")
        env["GREENLOOP_CONFIG"] = str(base / "no-settings.toml")
        own = {**env, "GREENLOOP_NO_DAEMON": "1"}
        try:
            # The first invocation: its own process, and it starts the daemon.
            first = base / "first"
            write_docker_project(first, uuid.uuid4().hex)
            subprocess.run(
                run,
                cwd=first,
                env={**env, "GREENLOOP_CACHE_DIR": str(base / "c-first")},
                check=True,
                stdout=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 60
            while not _status(gl, env)["running"]:
                if time.monotonic() > deadline:
                    raise SystemExit("the first command started no daemon")
                time.sleep(0.1)
            served_before = _status(gl, env)["served"]
            for i in range(args.repeat):
                # A fresh salt makes every cold run really cold for every tool.
                for kind, kind_env in (("gd", env), ("gl", own)):
                    root = base / f"{kind}{i}"
                    write_docker_project(root, uuid.uuid4().hex)
                    genv = {**kind_env, "GREENLOOP_CACHE_DIR": str(base / f"c-{kind}{i}")}
                    results[f"{kind}_cold"].append(timed(run, root, genv))
                    results[f"{kind}_warm"].append(timed(run, root, genv))
                cold, warm = time_docker_build(base / f"db{i}", env)
                results["db_cold"].append(cold)
                results["db_warm"].append(warm)
                for kind, kind_env in (("ld", env), ("ll", own)):
                    root = base / f"{kind}{i}"
                    write_local_project(root)
                    lenv = {**kind_env, "GREENLOOP_CACHE_DIR": str(base / f"c-{kind}{i}")}
                    timed(run, root, lenv)  # cold: fills the cache
                    results[f"{kind}_warm"].append(timed(run, root, lenv))
            served = _status(gl, env)["served"] - served_before
        finally:
            subprocess.run([*gl, "daemon", "stop"], env=env, stdout=subprocess.DEVNULL)
    med = {k: statistics.median(v) for k, v in results.items()}
    default_runs = 4 * args.repeat  # gd cold + cached, ld cold + cached
    print(f"steps {len(STEPS)} (docker), 10 (local); median of {args.repeat}; program {gl[-1]}")
    print(f"served by the daemon: {served} of {default_runs} default invocations")
    for label, key in (
        ("docker build, cold", "db_cold"),
        ("docker build, fully cached", "db_warm"),
        ("greenloop default, cold", "gd_cold"),
        ("greenloop default, fully cached", "gd_warm"),
        ("greenloop own process, cold", "gl_cold"),
        ("greenloop own process, fully cached", "gl_warm"),
        ("10 local steps, default, fully cached", "ld_warm"),
        ("10 local steps, own process, cached", "ll_warm"),
    ):
        print(f"{label:<40}{med[key] * 1000:8.1f} ms")
    for label, key, base_key, target in (
        ("default cached / build cached", "gd_warm", "db_warm", "target <= 0.5"),
        ("own process cached / build cached", "gl_warm", "db_warm", "target <= 2.5"),
        ("default cold / build cold", "gd_cold", "db_cold", "target <= 0.9"),
        ("own process cold / build cold", "gl_cold", "db_cold", "no target"),
        ("10 local cached, default / build cached", "ld_warm", "db_warm", "no target"),
    ):
        # Repeat by repeat, then the median: the two were timed minutes apart at most,
        # so a machine whose speed drifts moves both.
        pairs = zip(results[key], results[base_key], strict=True)
        ratio = statistics.median(a / b for a, b in pairs)
        print(f"ratio {label:<40}{ratio:6.2f}x  ({target})")


if __name__ == "__main__":
    main()
