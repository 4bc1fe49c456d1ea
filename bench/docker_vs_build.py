"""greenloop on the docker executor against `docker build`, same 6-step pipeline.

The pipeline is a chain of six shell steps on the test busybox image. It runs
as a greenloop pipeline (`--executor docker`, every step cached `forever`) and
as the equivalent Dockerfile under `docker build` (one RUN per step), each
cold (empty caches) and fully cached, in this one script, and prints wall
times and greenloop/docker-build ratios.

greenloop runs twice over: each command in its own Python process, and
forked from a running `greenloop daemon` (started once here, as dockerd is
for `docker build`: both clients then talk to a resident process). The
targets are judged on the daemon figures; the others are printed beside them.

Targets (issue 4): fully cached ratio <= 1.0; cold ratio <= 1.1.

    DOCKER_HOST=unix:///path/docker.sock python bench/docker_vs_build.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.docker_image import IMAGE, ensure_image

STEPS = [
    "mkdir -p /out && echo one > /out/1",
    "cat /out/1 > /out/2 && ls /workspace > /out/ls",
    "sha256sum /workspace/* > /out/sums",
    "for i in 1 2 3 4 5; do echo line $i >> /out/lines; done",
    "wc -l /out/lines > /out/count",
    "cat /out/count /out/sums | sha256sum > /out/final",
]


def write_project(root: Path, salt: str) -> None:
    """The pipeline and the equivalent Dockerfile over ten source files salted with ``salt``."""
    root.mkdir(parents=True)
    for i in range(10):
        (root / f"src{i}.txt").write_text(f"{salt} source {i}\n" * 50)
    (root / ".greenloop").mkdir()
    chain = f"    s = gl.sh({STEPS[0]!r}, label='s0', cache=gl.forever())\n"
    for i, step in enumerate(STEPS[1:], start=1):
        chain += f"    s = s.sh({step!r}, label='s{i}', cache=gl.forever())\n"
    (root / ".greenloop" / "pipeline.py").write_text(
        "import greenloop as gl\n\n"
        f"@gl.pipeline('ci', default_image={IMAGE!r}, executor='docker')\n"
        f"def ci():\n{chain}"
    )
    dockerfile = f"FROM {IMAGE}\nWORKDIR /workspace\nCOPY src*.txt /workspace/\n"
    dockerfile += "".join(f"RUN {step}\n" for step in STEPS)
    (root / "Dockerfile").write_text(dockerfile)
    (root / ".dockerignore").write_text(".greenloop\nDockerfile\n")


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Wall seconds of ``command``, its output thrown away (it must succeed)."""
    started = time.perf_counter()
    subprocess.run(
        command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def time_docker_build(root: Path, env: dict[str, str]) -> tuple[float, float]:
    """``docker build`` of a freshly salted project at ``root``: cold, then fully cached
    (the legacy builder unless ``DOCKER_BUILDKIT`` says otherwise); the image is removed."""
    salt = uuid.uuid4().hex
    write_project(root, salt)
    tag = f"greenloop-bench:{salt[:12]}"
    build = ["docker", "build", "-q", "-t", tag, "."]
    benv = {**env, "DOCKER_BUILDKIT": os.environ.get("DOCKER_BUILDKIT", "0")}
    try:
        return timed(build, root, benv), timed(build, root, benv)
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def main() -> None:
    """Run both tools cold and cached, and print the figures."""
    import docker

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    client = docker.from_env()
    ensure_image(client)
    kinds = ("gl_cold", "gl_warm", "gd_cold", "gd_warm", "db_cold", "db_warm")
    results: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        # Bytecode caching on, as on a developer's machine.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["GREENLOOP_DAEMON_DIR"] = str(Path(tmp) / "daemon")
        gl = [sys.executable, "-m", "greenloop"]
        subprocess.run([*gl, "daemon", "start"], env=env, check=True, stdout=subprocess.DEVNULL)
        try:
            for i in range(args.repeat):
                run = [*gl, "run", "ci", "--format", "plain"]
                for kind, extra in (("gl", {"GREENLOOP_NO_DAEMON": "1"}), ("gd", {})):
                    # A fresh salt makes every cold run really cold for every tool.
                    root = Path(tmp) / f"{kind}{i}"
                    write_project(root, uuid.uuid4().hex)
                    genv = {**env, **extra, "GREENLOOP_CACHE_DIR": str(Path(tmp) / f"c-{kind}{i}")}
                    results[f"{kind}_cold"].append(timed(run, root, genv))
                    results[f"{kind}_warm"].append(timed(run, root, genv))
                cold, warm = time_docker_build(Path(tmp) / f"db{i}", env)
                results["db_cold"].append(cold)
                results["db_warm"].append(warm)
        finally:
            subprocess.run([*gl, "daemon", "stop"], env=env, stdout=subprocess.DEVNULL)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"steps                                {len(STEPS)}   (median of {args.repeat})")
    for label, key in (
        ("docker build, cold", "db_cold"),
        ("docker build, fully cached", "db_warm"),
        ("greenloop daemon, cold", "gd_cold"),
        ("greenloop daemon, fully cached", "gd_warm"),
        ("greenloop own process, cold", "gl_cold"),
        ("greenloop own process, fully cached", "gl_warm"),
    ):
        print(f"{label:<37}{med[key] * 1000:8.1f} ms")
    for label, key, target in (
        ("cold  ", "cold", "target <= 1.1"),
        ("cached", "warm", "target <= 1.0"),
    ):
        print(
            f"ratio {label} (greenloop/build) {med[f'gd_{key}'] / med[f'db_{key}']:6.2f}x  "
            f"({target}; own process {med[f'gl_{key}'] / med[f'db_{key}']:.2f}x)"
        )


if __name__ == "__main__":
    main()
