"""Crash safety of publishing: SIGKILL at random moments never leaves a broken latest green.

What a kill may leave, and what these tests hold it to:

* ``.greenloop/latest-green`` parses, and names a tree that is whole in the store
  (absent only before the first publish ever);
* ``--out`` resolves to a complete folder: its content is exactly the tree its
  name (``sites/<tree[:32]>``) promises, and a tree that was built;
* the two agree, always: both are fixed links through one switch
  (``current`` in the tree's state folder), so one rename moves them together. (Before that
  design ``--out`` was swapped first and the pointer rewritten second, and a kill
  between the two could leave ``--out`` one publish ahead; that is gone, so any
  disagreement now fails.)

Two ways of killing, because a publish is a few milliseconds of a dev round:

* ``test_sigkill_during_publish_50_times`` kills a real ``Publisher`` that does
  nothing but publish a rotation of real store trees, after a random delay. A
  full ``greenloop dev`` spends most of a round in the checkers, so random kills
  of it would seldom land inside ``publish``; this loop lands 50 kills in the
  window that matters (materializing, renaming, swapping, pruning) in seconds,
  and every restart inherits what the previous kill left behind, as ``dev``
  restarts would. It runs the very ``Publisher.publish`` that ``dev`` runs.
* ``test_sigkill_greenloop_dev_while_editing`` kills a real ``greenloop dev`` on a
  copy of ``examples/site`` that is being edited all the time, to show the same
  guarantees hold end to end (checkers, builder, publisher, restart on the same
  tree and store).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from greenloop.dev.publisher import POINTER
from greenloop.protocol import (
    ArtifactMeta,
    BuildIdentity,
    BuildResult,
    Compiled,
    Failed,
    PointerFormatError,
    PublishedArtifact,
)
from greenloop.store import Store
from tests.conftest import cli

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "site"
KILLS = 50
DEV_KILLS = 6
# Failure guards only: how long a child may take to come up, never a measurement.
START_TIMEOUT_S = 60.0

# The child: publish a rotation of prepared builds forever, logging each step to a
# file (a pipe could fill up and park the child in write(), away from publish).
PUBLISH_LOOP = """
import sys
from pathlib import Path

from greenloop.dev.publisher import Publisher
from greenloop.protocol import BuildResult
from greenloop.store import Store

cache, root, out, results, start, count = sys.argv[1:7]
builds = [BuildResult.model_validate_json(line) for line in Path(results).read_text().splitlines()]
store = Store.open(Path(cache))
publisher = Publisher(store, Path(root), Path(out))
print("ready", flush=True)
for i in range(int(start), int(start) + int(count)):
    build = builds[i % len(builds)]
    print("publishing", build.artifact.tree, flush=True)
    publisher.publish(build)
    print("published", build.artifact.tree, flush=True)
store.close()
"""


def copy_site(tmp_path: Path) -> Path:
    """A private copy of ``examples/site`` (without state a local run left in it)."""
    root = tmp_path / "site"
    shutil.copytree(
        EXAMPLE, root, ignore=shutil.ignore_patterns(".greenloop-state", "dist", ".mypy_cache")
    )
    # The example's own `.greenloop` may hold a developer's pointer or out link.
    for leftover in (root / ".greenloop").iterdir():
        if leftover.name != "pipeline.py":
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
    return root


def dev_env(cache: Path) -> dict[str, str]:
    """The environment of a ``greenloop dev`` child: private cache, this venv's tools first."""
    return {
        **os.environ,
        "GREENLOOP_CACHE_DIR": str(cache),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def require_mypy() -> None:
    """The example site's verdict needs mypy; skip like the other dev end-to-end tests."""
    if shutil.which("mypy") is None and not Path(sys.executable).with_name("mypy").exists():
        pytest.skip("mypy is not installed")


class DevProcess:
    """A real ``greenloop dev --port 0 --json`` child whose stdout lines are collected."""

    def __init__(self, site: Path, cache: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "greenloop", "dev", "--port", "0", "--json", *args],
            cwd=site,
            env=dev_env(cache),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        # Drain stdout all the time: a full pipe would stall the dev loop itself.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = self._wait_for_url()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _wait_for_url(self) -> str:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            found = re.search(r"serving (http://\S+/)", line)
            if found:
                # Keep stderr drained too, for the same reason as stdout.
                threading.Thread(target=self.proc.stderr.read, daemon=True).start()
                return found.group(1)
        self.proc.kill()
        raise AssertionError(f"greenloop dev did not start: {self.proc.stderr.read()}")

    def build_results(self) -> list[BuildResult]:
        """Every BuildResult line printed so far (state events are the other lines)."""
        with self._changed:
            lines = list(self.lines)
        return [BuildResult.model_validate_json(x) for x in lines if '"outcome"' in x]

    def wait_for_builds(self, count: int, timeout_s: float = START_TIMEOUT_S) -> list[BuildResult]:
        """Block until at least ``count`` BuildResults were printed; return them all."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                results = [
                    BuildResult.model_validate_json(x) for x in self.lines if '"outcome"' in x
                ]
                if len(results) >= count:
                    return results
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(
                        f"waited for {count} builds, got {len(results)}: {self.lines[-5:]}"
                    )
                self._changed.wait(timeout=min(left, 0.5))

    def wait_for_result(self, after: int, want: Callable[[BuildResult], bool]) -> BuildResult:
        """The first BuildResult after the first ``after`` that ``want`` accepts."""
        count = after + 1
        while True:
            results = self.wait_for_builds(count)
            found = next((r for r in results[after:] if want(r)), None)
            if found is not None:
                return found
            count = len(results) + 1

    def stop(self) -> int:
        """SIGTERM and wait; the exit code (130 is a clean interrupted stop)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL, the crash no handler sees."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


# -- checking what a kill left --------------------------------------------------


def same_bytes(a: Path, b: Path) -> bool:
    """True when the two folders hold the same paths with the same bytes."""

    def files(root: Path) -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    def folders(root: Path) -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()}

    return files(a) == files(b) and folders(a) == folders(b)


def check_after_kill(
    store: Store,
    root: Path,
    out: Path,
    known_trees: set[str],
    scratch: Path,
    *,
    published_before: bool,
) -> tuple[PublishedArtifact | None, str | None]:
    """Assert the crash guarantees on what is on disk; return (pointer, tree --out serves)."""
    pointer_path = root / POINTER
    record: PublishedArtifact | None
    try:
        record = PublishedArtifact.parse(pointer_path.read_bytes())
    except FileNotFoundError:
        record = None
    except PointerFormatError as e:  # a torn pointer is exactly the failure we look for
        raise AssertionError(f"the pointer does not parse after a kill: {e}") from None
    if record is None:
        assert not published_before, "the pointer vanished after an earlier publish"
    else:
        # The pointer names a whole tree in the store: materializing it must work.
        assert store.has(record.artifact) and store.is_tree(record.artifact)
        expected = scratch / "pointer-tree"
        shutil.rmtree(expected, ignore_errors=True)
        store.materialize(record.artifact, expected)

    if not out.exists():
        # Before the first publish --out is absent, or a link into a switch not made yet.
        assert record is None, "the pointer moved but --out shows nothing"
        return record, None
    folder = out.resolve()
    assert out.is_symlink() and folder.is_dir(), f"--out is not the managed link: {folder}"
    served = store.put_tree(folder)
    # Complete: the folder holds exactly the tree its name promises, and that tree
    # was built. A folder left half-written or half-deleted fails one or the other.
    assert served.startswith(folder.name.rsplit(".", 1)[-1]), (
        f"--out -> {folder.name}, which holds tree {served[:16]}: an incomplete folder "
        f"({sum(1 for p in folder.rglob('*') if p.is_file())} files)"
    )
    assert served in known_trees, f"--out serves {served[:16]}, a tree never built"
    # Consistent: both move through one switch, so a kill cannot split them.
    assert record is not None, "--out moved but the pointer never did"
    assert served == record.artifact, (
        f"after a kill --out serves {served[:16]} but the pointer names {record.artifact[:16]}"
    )
    assert same_bytes(folder, scratch / "pointer-tree")
    return record, served


# -- 50 kills of the publisher ----------------------------------------------------


def make_builds(store: Store, where: Path, count: int) -> list[BuildResult]:
    """``count`` distinct servable builds whose trees are in ``store``.

    Each tree has a few hundred files so that materializing and pruning a version
    take long enough for random kills to land inside them.
    """
    builds = []
    for n in range(count):
        folder = where / f"build-{n}"
        for i in range(300):
            page = folder / f"section-{i % 7}" / f"page-{i}.html"
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(f"<h1>build {n} page {i}</h1>\n" + "x" * (i * 13 % 2000))
        (folder / "index.html").write_text(f"<h1>build {n}</h1>\n")
        tree = store.put_tree(folder)
        identity = BuildIdentity(
            source_tree=format(n, "x") * 64,
            lockfiles="0" * 64,
            toolchain="0" * 64,
            config="0" * 64,
            pipeline="0" * 64,
            target="web",
            profile="dev",
        )
        meta = ArtifactMeta(
            input_hash=identity.input_hash(),
            identity=identity,
            tree=tree,
            size_bytes=0,
            built_at=int(time.time()),
            build_duration_ms=0,
        )
        store.index.put_artifact(meta)
        builds.append(BuildResult(input_hash=meta.input_hash, outcome=Compiled(), artifact=meta))
    return builds


def run_publisher(
    script: Path,
    cache: Path,
    root: Path,
    out: Path,
    results: Path,
    start: int,
    count: int,
    log: Path,
) -> subprocess.Popen[bytes]:
    """Start the publish loop with its stdout going to ``log``."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, str(script), *map(str, (cache, root, out, results, start, count))],
            stdout=sink,
            stderr=subprocess.PIPE,
            env=dev_env(cache),
        )


def log_lines(log: Path) -> list[list[str]]:
    """The child's log, split; a line torn by the kill (no newline yet) is dropped."""
    text = log.read_text()
    return [line.split() for line in text.splitlines(keepends=True) if line.endswith("\n")]


def test_sigkill_during_publish_50_times(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    root = tmp_path / "project"
    (root / ".greenloop").mkdir(parents=True)
    out = root / ".greenloop" / "out"
    script = tmp_path / "publish_loop.py"
    script.write_text(PUBLISH_LOOP)
    store = Store.open(cache)
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)  # printed on failure so a bad interleaving can be replayed
    try:
        # Four builds kept in rotation: publisher keeps two versions, so nearly every
        # publish materializes one folder and prunes another.
        builds = make_builds(store, tmp_path / "builds", 4)
        known = {b.artifact.tree for b in builds if b.artifact is not None}
        results = tmp_path / "builds.jsonl"
        results.write_text("".join(b.model_dump_json() + "\n" for b in builds))
        published_before = False
        in_flight = 0
        for kill in range(KILLS):
            log = tmp_path / f"publish-{kill}.log"
            child = run_publisher(script, cache, root, out, results, rng.randrange(4), 10_000, log)
            deadline = time.monotonic() + START_TIMEOUT_S
            while not log.read_bytes().startswith(b"ready\n"):
                assert child.poll() is None, f"seed {seed}: publisher exited {child.returncode}"
                assert time.monotonic() < deadline, "the publish loop never became ready"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.3))
            alive = child.poll() is None
            child.send_signal(signal.SIGKILL)
            _, err = child.communicate()
            assert alive, (
                f"seed {seed}, kill {kill}: the publish loop crashed by itself "
                f"(what earlier kills left broke it):\n{err.decode()}"
            )
            steps = log_lines(log)
            record, served = check_after_kill(
                store, root, out, known, tmp_path, published_before=published_before
            )
            published_before = published_before or record is not None
            # The pointer is the last publish finished, or the one in flight.
            started = [s[1] for s in steps if s[0] == "publishing"]
            finished = [s[1] for s in steps if s[0] == "published"]
            if record is not None and started:
                assert record.artifact in {started[-1], *finished[-1:]} or not finished, (
                    f"seed {seed}, kill {kill}: the pointer is older than the last publish"
                )
                in_flight += record.artifact == started[-1] and len(started) > len(finished)
        # After every kill, a publisher must still work and leave the two in agreement.
        log = tmp_path / "publish-final.log"
        final = run_publisher(script, cache, root, out, results, 0, 8, log)
        _, err = final.communicate(timeout=START_TIMEOUT_S)
        assert final.returncode == 0, (
            f"seed {seed}: publishing after the kills failed:\n{err.decode()}"
        )
        record, served = check_after_kill(store, root, out, known, tmp_path, published_before=True)
        assert record is not None and served == record.artifact
        print(f"{KILLS} kills, seed {seed}; {in_flight} left the publish in flight completed")
    finally:
        store.close()


# -- kills of a real greenloop dev -------------------------------------------------

VARIANTS = [f"Version {n}" for n in range(5)]


@pytest.fixture
def editing(tmp_path: Path) -> Iterator[Path]:
    """A copy of the example site whose title a thread keeps changing, green every time."""
    site = copy_site(tmp_path)
    pages = site / "pages.py"
    original = pages.read_text()
    stop = threading.Event()

    def edit() -> None:
        rng = random.Random()
        while not stop.is_set():
            title = rng.choice(VARIANTS)
            pages.write_text(original.replace("Hello from greenloop", title))
            # Mostly quick saves, and now and then a pause as a person makes: on a
            # loaded machine a check longer than every gap would never let a build
            # through, and the test would measure the load, not the kills.
            stop.wait(rng.uniform(0.1, 0.8) if rng.random() < 0.75 else rng.uniform(2.0, 5.0))

    editor = threading.Thread(target=edit, daemon=True)
    editor.start()
    try:
        yield site
    finally:
        stop.set()
        editor.join()


def test_sigkill_greenloop_dev_while_editing(editing: Path, tmp_path: Path) -> None:
    require_mypy()
    cache = tmp_path / "cache"
    out = editing / ".greenloop" / "out"
    rng = random.Random()
    published_before = False
    seen_builds = 0
    for _ in range(DEV_KILLS):
        dev = DevProcess(editing, cache)
        # Let it get through a few rounds first: a kill at start-up says little.
        dev.wait_for_builds(1)
        time.sleep(rng.uniform(0.0, 1.5))
        dev.kill()
        seen_builds += len(dev.build_results())
        with Store.open(cache) as store:
            known = {a.tree for a in store.index.artifacts()}
            record, _ = check_after_kill(
                store, editing, out, known, tmp_path, published_before=published_before
            )
        published_before = published_before or record is not None
    assert seen_builds >= DEV_KILLS and published_before
    # A dev started on what the kills left serves again and stops cleanly.
    dev = DevProcess(editing, cache)
    try:
        dev.wait_for_builds(1)
    finally:
        assert dev.stop() == 130


def test_a_prune_cut_short_is_never_served(tmp_path: Path) -> None:
    """What a kill during pruning leaves must never be published.

    Pruning renames a folder out of the way (``.trash-…``) before deleting it, so
    a SIGKILL inside ``rmtree`` leaves a partial folder under a name no publish
    ever links to. That state is made here directly — a half-deleted copy of a
    tree under a trash name — and the next publish of that tree must build a
    complete folder, not reuse the partial one, and sweep the leftover.
    """
    from greenloop.dev.publisher import Publisher

    root = tmp_path / "project"
    (root / ".greenloop").mkdir(parents=True)
    with Store.open(tmp_path / "cache") as store:
        builds = make_builds(store, tmp_path / "builds", 4)
        publisher = Publisher(store, root)
        for build in builds[1:]:
            publisher.publish(build)
        first = builds[0].artifact
        assert first is not None
        half = publisher.state / "sites" / ".trash-cut-short"
        store.materialize(first.tree, half)
        for i, page in enumerate(sorted(half.rglob("*.html"))):
            if i % 2:
                page.unlink()
        publisher.publish(builds[0])
        known = {b.artifact.tree for b in builds if b.artifact is not None}
        check_after_kill(store, root, publisher.out, known, tmp_path, published_before=True)
        assert not half.exists()


# -- what dev refuses at start, and a publish that fails later -----------------------


@pytest.mark.parametrize("case", ["/proc", "file", "user-link", "bad-host"])
def test_dev_refuses_an_out_or_host_it_cannot_use_in_one_line(tmp_path: Path, case: str) -> None:
    require_mypy()
    site = copy_site(tmp_path)
    (tmp_path / "file").write_text("a file, not a folder")
    (tmp_path / "mine").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "mine")
    args = {
        "/proc": ["--out", "/proc/greenloop-out"],
        "file": ["--out", str(tmp_path / "file" / "out")],
        "user-link": ["--out", str(tmp_path / "link")],
        "bad-host": ["--allowed-host", "not a host"],
    }[case]
    done = subprocess.run(
        [sys.executable, "-m", "greenloop", "dev", "--port", "0", *args],
        cwd=site,
        env=dev_env(tmp_path / "cache"),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert args[1] in lines[0] or repr(args[1]) in lines[0]
    assert (tmp_path / "link").readlink() == tmp_path / "mine"  # the user's link is intact


def test_a_publish_that_fails_is_a_red_build_and_the_next_green_publishes(
    tmp_path: Path,
) -> None:
    require_mypy()
    site = copy_site(tmp_path)
    pages = site / "pages.py"
    original = pages.read_text()
    outs = tmp_path / "outs"
    out = outs / "site"
    dev = DevProcess(site, tmp_path / "cache", "--out", str(out))
    try:
        first = dev.wait_for_builds(1)[0]
        assert first.servable and (out / "index.html").is_file()
        seen = len(dev.build_results())
        shutil.rmtree(outs)  # the folder --out lives in goes away under the running dev
        pages.write_text(original.replace("Hello from greenloop", "Version A"))
        failed = dev.wait_for_result(seen, lambda r: isinstance(r.outcome, Failed))
        assert isinstance(failed.outcome, Failed)
        assert "publishing failed" in failed.outcome.reason
        assert str(outs) in failed.outcome.reason
        status = httpx.get(dev.url + "__greenloop/status").json()
        # Green tree, failed last build: what the overlay shows as "The last build failed".
        assert status["verdict"] == "green"
        assert status["last_build"]["outcome"] == {
            "kind": "failed",
            "reason": failed.outcome.reason,
        }
        assert status["artifact"]["tree"] == first.artifact.tree  # type: ignore[union-attr]
        pointer = PublishedArtifact.parse((site / POINTER).read_bytes())
        assert pointer.artifact == first.artifact.tree  # type: ignore[union-attr]
        # `greenloop status` says so too (the status file is written as the build ends).
        watcher = json.loads(cli("status", "--json", cwd=site).stdout)["watcher"]
        assert watcher["last_build"]["outcome"] == "failed"
        assert watcher["last_build"]["reason"] == failed.outcome.reason
        assert "; last build FAILED: built, but publishing failed" in cli("status", cwd=site).stdout

        seen = len(dev.build_results())
        outs.mkdir()
        pages.write_text(original.replace("Hello from greenloop", "Version B"))
        again = dev.wait_for_result(seen, lambda r: r.servable)
        assert again.artifact is not None
        assert "Version B" in (out / "index.html").read_text()
        status = httpx.get(dev.url + "__greenloop/status").json()
        assert status["artifact"]["tree"] == again.artifact.tree
        assert status["last_build"]["outcome"]["kind"] != "failed"
        watcher = json.loads(cli("status", "--json", cwd=site).stdout)["watcher"]
        assert watcher["last_build"]["published"] is True
    finally:
        assert dev.stop() == 130


def tree_listing(root: Path) -> set[str]:
    """Every path in the tree, folders and hidden files included."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_dev_answers_only_its_own_hosts_and_adds_only_its_two_links(tmp_path: Path) -> None:
    require_mypy()
    site = copy_site(tmp_path)
    before = tree_listing(site)
    dev = DevProcess(site, tmp_path / "cache", "--allowed-host", "my-tunnel.example")
    try:
        assert dev.wait_for_builds(1)[0].servable
        # The tree gains the two links the user sees, and nothing else: the status,
        # lock, checker caches and materialized builds live in the tree's state folder.
        assert tree_listing(site) == before | {".greenloop/latest-green", ".greenloop/out"}
        assert (site / ".greenloop" / "out" / "index.html").is_file()
        port = dev.url.rstrip("/").rsplit(":", 1)[1]
        status = dev.url + "__greenloop/status"
        for host, code in (
            (f"evil.example:{port}", 403),
            ("other.example", 403),
            (f"my-tunnel.example:{port}", 200),
            (f"localhost:{port}", 200),
        ):
            assert httpx.get(status, headers={"host": host}).status_code == code, host
    finally:
        assert dev.stop() == 130
