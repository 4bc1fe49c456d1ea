"""A new worktree under `greenloop serve`: its first verdict against a cold mypy by hand.

`serve` starts a new worktree's mypy from a copy of a settled sibling's cache
(greenloop.devloop.mypy_cache.seed), so its first round checks only what the
copy cannot answer for. This script makes bench/fleet.py's project (a copy of
`rich`, checked by ruff and mypy), serves it, waits for the main worktree's
first verdict, then --repeat times:

- adds a worktree with `git worktree add` and times it to that worktree's
  first verdict on `greenloop watch --json --all-worktrees` (serve: checkout,
  seeding, ruff and mypy);
- runs the peer by hand in a new clone (a worktree would be served too, and
  checked beside it): `git clone`, then `mypy` with a fresh cache folder, as a
  lone `watch` would run it first.

It prints the medians and their ratio.

    python bench/fleet_new_worktree.py [--repeat 3]

Everything lives in a temporary folder, removed at the end; no daemon is used.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import Lines, command, git, make_repo, private_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="glnew-"))
    env = private_env(work)
    mypy = shutil.which("mypy") or sys.exit("mypy is not on PATH")
    repo = make_repo(work / "repo", mypy=True, pyright_lsp=False)
    server = subprocess.Popen(
        command("serve", "--repo", str(repo)),
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stream: Lines | None = None
    served: list[float] = []
    by_hand: list[float] = []
    try:
        while not list((work / "s").glob("*.sock")):
            if server.poll() is not None:
                sys.exit(f"greenloop serve did not start (exit {server.poll()})")
            time.sleep(0.1)
        stream = Lines(command("watch", "--json", "--all-worktrees"), repo, env)
        stream.wait({"verdict"}, str(repo.resolve()))
        for i in range(args.repeat):
            tree = (work / f"new{i}").resolve()
            started = time.monotonic()
            git(repo, "worktree", "add", "-q", str(tree))
            at, message = stream.wait({"verdict"}, str(tree))
            if message.get("tree") != "green":
                sys.exit(f"{tree}: first verdict {message.get('tree')}, not green")
            served.append(at - started)

            peer = work / f"hand{i}"
            started = time.monotonic()
            git(work, "clone", "-q", str(repo), str(peer))
            done = subprocess.run(
                [mypy, "--cache-dir", str(work / f"cache{i}")],
                cwd=peer,
                capture_output=True,
                check=False,
            )
            by_hand.append(time.monotonic() - started)
            if done.returncode != 0:
                sys.exit(f"mypy by hand failed: {done.stdout.decode()[-400:]}")
    finally:
        if stream is not None:
            stream.stop()
        server.terminate()
        _, log = server.communicate(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    seeded = sum(f"new{i}'s mypy starts from" in log for i in range(args.repeat))
    serve_s, hand_s = statistics.median(served), statistics.median(by_hand)
    print(f"new worktree to first verdict, median of {args.repeat} (rich, ruff + mypy):")
    print(f"  greenloop serve (seeded {seeded} of {args.repeat}) {serve_s * 1000:8.0f} ms")
    print(f"  git clone + cold mypy by hand         {hand_s * 1000:8.0f} ms")
    print(f"  ratio {serve_s / hand_s:.2f}x")


if __name__ == "__main__":
    main()
