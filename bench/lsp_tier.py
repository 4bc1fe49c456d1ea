"""A warm language server against the same checker started afresh: pyright-lsp vs pyright.

On the small typed project of ``verdict_latency.py``, each of N edits (an
atomic write alternating a green and a red version of one module) is checked
twice, side by side:

- by hand: ``pyright --outputjson``, a new process each time, as the
  authoritative ``pyright`` checker runs;
- greenloop's advisory tier: the same edit sent to one warm
  ``pyright-langserver --stdio`` (:class:`greenloop.devloop.lsp.LanguageServer`),
  timed from the edit to its pulled diagnostics.

Both must agree on whether the edit is red; the script prints medians, p95 and
the ratio. The server's cold start (spawn, initialize, first full check) is
shown apart. pyright comes from ``node_modules/.bin`` under
``$GREENLOOP_TEST_NODE_TOOLS`` (as the tests install it) or from PATH.

    python bench/lsp_tier.py [--edits N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from verdict_latency import GREEN_A, atomic_write, make_project, ms, p95

from greenloop.devloop.ignores import Ignores
from greenloop.devloop.lsp import LanguageServer

RED = "def double(a: int) -> str:\n    return a * 2\n"
"""pyright: reportReturnType at line 2."""


def _program(name: str) -> str:
    tools = os.environ.get("GREENLOOP_TEST_NODE_TOOLS")
    if tools and (Path(tools) / "node_modules/.bin" / name).exists():
        return str(Path(tools) / "node_modules/.bin" / name)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: npm install pyright, or set GREENLOOP_TEST_NODE_TOOLS")
    return found


def main() -> None:
    """Time both ways over the same edits and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edits", type=int, default=30, help="timed edits")
    args = parser.parse_args()
    pyright, langserver = _program("pyright"), _program("pyright-langserver")
    with tempfile.TemporaryDirectory(prefix="greenloop-bench-") as tmp:
        root = make_project(Path(tmp), "")
        (root / "pyrightconfig.json").write_text("{}\n")
        target = root / "demo" / "calc.py"
        files = Ignores(root).files()
        never = threading.Event()

        started = time.perf_counter()
        server = LanguageServer([langserver, "--stdio"], root, dict(os.environ))
        server.folder(root).check(files, "pyright", never, 120)
        cold = time.perf_counter() - started

        warm: list[float] = []
        fresh: list[float] = []
        try:
            for i in range(args.edits):
                red = i % 2 == 0
                atomic_write(target, RED if red else GREEN_A)
                began = time.perf_counter()
                found = server.folder(root).check(files, "pyright", never, 120) or []
                warm.append(time.perf_counter() - began)
                began = time.perf_counter()
                done = subprocess.run(
                    [pyright, "--outputjson"], cwd=root, capture_output=True, check=False
                )
                fresh.append(time.perf_counter() - began)
                if bool(found) != red or (done.returncode != 0) != red:
                    raise SystemExit(f"edit {i}: the two ways disagree on red={red}")
        finally:
            server.close()

    print(f"\npyright after each of {args.edits} edits (half red), ms")
    print(f"{'':<34}{'median':>9}{'p95':>9}")
    print(f"{'pyright --outputjson (by hand)':<34}{ms(statistics.median(fresh))} {ms(p95(fresh))}")
    print(f"{'pyright-lsp, warm (greenloop)':<34}{ms(statistics.median(warm))} {ms(p95(warm))}")
    ratio = statistics.median(warm) / statistics.median(fresh)
    print(f"  warm / by hand: {ratio:.3f}   server cold start + first check: {ms(cold)} ms")
    print(f"  faster than the checker it stands beside: {'yes' if ratio < 1 else 'NO'}")


if __name__ == "__main__":
    main()
