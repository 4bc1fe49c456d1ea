"""One suite, every executor: ``local`` (copied roots, and overlay roots under bwrap),
``docker``, the out-of-process example ``echo`` and ``ray`` (a real cluster of a head
and two worker nodes on loopback, snapshots moving through an nginx cache).

Each test runs the same pipeline and workspace through the ``Run`` API under
each executor and expects the same outcomes: chains inherit files, forks do
not see each other, cached steps are not run again, the workspace is laid
over ``workdir``, exit codes and timeouts are reported, and declared
artifacts come back byte for byte with the same store keys. Commands stick to
what busybox offers (the docker image is busybox) and paths stay relative to
``workdir``, which every executor maps under a private root.

Docker cases skip when no engine answers, unless ``GREENLOOP_REQUIRE_DOCKER=1``
(see ``tests/test_docker.py``); ``local+bwrap`` cases skip where bwrap cannot run,
unless ``GREENLOOP_REQUIRE_BWRAP=1`` (see ``tests/test_sandbox.py``); ``ray`` cases
skip without Ray, unless ``GREENLOOP_REQUIRE_RAY=1`` (see ``tests/ray_cluster.py``).
"""

from __future__ import annotations

import os
import stat
import textwrap
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from greenloop.engine.run import RunResult
from greenloop.executors.docker import DockerExecutor
from greenloop.protocol import BuildEvent, StepLog, StepStarted
from greenloop.store import Store
from tests.conftest import write_pipeline
from tests.docker_image import IMAGE, ensure_image
from tests.test_docker import _client as docker_client
from tests.test_run import run, statuses
from tests.test_sandbox import require_bwrap

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "plugins"
EXECUTORS = ["local+none", "local+bwrap", "docker", "docker+podman", "echo", "ray", "ray-docker"]
"""Executors under test: ``local+MODE`` is the local executor in that sandbox,
``docker+podman`` the docker executor on the rootless Podman socket
``GREENLOOP_PODMAN_HOST`` names, ``ray-docker`` the ray executor with the nodes' Docker
engine (the one ``DOCKER_HOST`` names when the cluster starts)."""
PODMAN_HOST = "GREENLOOP_PODMAN_HOST"


def use_executor(
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest | None = None,
) -> None:
    """Make ``name`` usable in this test (skipping docker when no engine answers; ``ray``
    needs the test's ``request`` for the session's cluster)."""
    if name.startswith("ray"):
        assert request is not None, f"use_executor({name!r}, ...) needs the test's request"
        if name == "ray-docker":
            ensure_image(docker_client())  # skips without an engine, as for docker
        request.getfixturevalue("on_ray")  # the session's cluster, started on first use
    elif name == "local+bwrap":
        require_bwrap(tmp_path)
    elif name == "docker+podman":
        podman = os.environ.get(PODMAN_HOST)
        if not podman:
            if os.environ.get("GREENLOOP_REQUIRE_PODMAN") == "1":
                raise RuntimeError(f"GREENLOOP_REQUIRE_PODMAN=1 but {PODMAN_HOST} is not set")
            pytest.skip(f"no Podman socket ({PODMAN_HOST} unset)")
        monkeypatch.setenv("DOCKER_HOST", podman)
        ensure_image(docker_client())
    elif name == "docker":
        # Per test, not once: another suite sharing the engine may have removed it.
        ensure_image(docker_client())
    elif name == "echo":
        monkeypatch.setenv("GREENLOOP_PLUGIN_PATH", str(EXAMPLES))
        monkeypatch.setenv("GREENLOOP_ECHO_STATE", str(tmp_path / "echo-state"))


def forget_docker_snapshots(store: Store) -> None:
    """Remove the image tags cached docker steps left on the engine (it outlives the test)."""
    tags = sorted(
        {e.snapshot for e in store.index.entries() if e.executor in ("docker", "ray-docker")}
    )
    if tags:
        DockerExecutor(store).discard(tags)


@pytest.fixture(params=EXECUTORS)
def executor(
    request: pytest.FixtureRequest, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The name of the executor under test, ready to use."""
    name: str = request.param
    use_executor(name, tmp_path, monkeypatch, request)
    yield name
    if "docker" in name:
        forget_docker_snapshots(store)


def run_snapshots(executor: str, store: Store, tmp_path: Path, result: RunResult) -> list[str]:
    """The run-scoped snapshots of ``result``'s run that ``executor`` still keeps."""
    prefix = f"greenloop-run:{result.run_id.hex[:12]}-"
    if executor.startswith(("local", "ray")) and executor != "ray-docker":
        return [name for name in store.index.refs() if name.startswith(prefix)]
    if executor.startswith(("docker", "ray-docker")):
        images = docker_client().images.list(name="greenloop-run")
        return [t for image in images for t in image.tags if t.startswith(prefix)]
    folder = tmp_path / "echo-state" / "snapshots"
    if not folder.is_dir():
        return []
    quoted = "snap-" + urllib.parse.quote(prefix, safe="")
    return [name for name in os.listdir(folder) if name.startswith(quoted)]


def pipeline(project: Path, body: str) -> None:
    """Write a ``ci`` pipeline whose steps are ``body``; root steps boot from the test image."""
    header = f'@gl.pipeline("ci", default_image={IMAGE!r})\ndef ci():\n'
    write_pipeline(project, header + textwrap.indent(textwrap.dedent(body), "    "))


def execute(store: Store, project: Path, executor: str) -> tuple[RunResult, list[BuildEvent]]:
    """Run the project's ``ci`` pipeline with every step on ``executor``."""
    name, _, variant = executor.partition("+")
    sandbox = variant if name == "local" else None
    return run(store, project, executor=name, sandbox=sandbox)


def output(events: list[BuildEvent], step: str, stream: str = "stdout") -> list[str]:
    """What the step's command printed on ``stream``, without the executors' own notes."""
    return [
        e.line
        for e in events
        if isinstance(e, StepLog)
        and e.step == step
        and e.stream == stream
        and not e.line.startswith(("echo: ", "greenloop: "))
    ]


def story(events: list[BuildEvent]) -> list[str]:
    """Every log line of the run, compactly, for assertion messages."""
    return [f"{e.step} {e.stream}: {e.line}" for e in events if isinstance(e, StepLog)]


def started(events: list[BuildEvent]) -> set[str]:
    """The steps an executor was asked to run."""
    return {e.step for e in events if isinstance(e, StepStarted)}


# -- filesystems -------------------------------------------------------------------------


def test_a_chain_sees_what_its_parents_wrote(
    store: Store, project: Path, tmp_path: Path, executor: str
) -> None:
    (project / "src.txt").write_text("source\n")
    pipeline(
        project,
        """
        base = gl.sh("mkdir -p build ../tools && echo built > build/out.txt"
                     " && echo tool > ../tools/t.txt", label="base")
        mid = base.sh("cat build/out.txt ../tools/t.txt src.txt && echo mid > build/mid.txt",
                      label="mid")
        mid.sh("cat build/out.txt build/mid.txt ../tools/t.txt", label="last")
        """,
    )
    result, events = execute(store, project, executor)
    assert statuses(result) == {"base": "passed", "mid": "passed", "last": "passed"}, story(events)
    assert output(events, "mid") == ["built", "tool", "source"]
    assert output(events, "last") == ["built", "mid", "tool"]
    # base and mid were snapshotted for this run only; the run's end discarded them.
    assert run_snapshots(executor, store, tmp_path, result) == []


def test_a_custom_workdir_lives_under_the_private_root(
    store: Store, project: Path, executor: str
) -> None:
    (project / "src.txt").write_text("source\n")
    pipeline(
        project,
        """
        base = gl.sh("echo beside > ../beside.txt && mkdir -p gen && echo gen > gen/g.txt",
                     label="base", workdir="/src/app")
        base.sh("cat ../beside.txt gen/g.txt src.txt", label="child", workdir="/src/app")
        base.sh("cat app/gen/g.txt beside.txt src.txt;"
                " if [ -e app/src.txt ]; then echo has-app-src; else echo no-app-src; fi",
                label="up", workdir="/src")
        """,
    )
    result, events = execute(store, project, executor)
    assert statuses(result) == {"base": "passed", "child": "passed", "up": "passed"}, story(events)
    assert output(events, "child") == ["beside", "gen", "source"]
    # A child with another workdir gets the workspace there, and the parent's copy
    # under /src/app is gone: workspace files never travel in a snapshot.
    assert output(events, "up") == ["gen", "beside", "source", "no-app-src"]


CHECK_FORKS = (
    "for f in base left right; do "
    "if [ -e build/$f.txt ]; then echo has-$f; else echo no-$f; fi; done"
)


def test_forks_see_their_parent_but_not_each_other(
    store: Store, project: Path, executor: str
) -> None:
    pipeline(
        project,
        f"""
        base = gl.sh("mkdir -p build && echo base > build/base.txt", label="base")
        left = base.sh("echo left > build/left.txt", label="left")
        right = base.sh("echo right > build/right.txt", label="right")
        # Each check runs once both forks are done, so a shared folder would show.
        left.sh({CHECK_FORKS!r}, label="left-check").after(right)
        right.sh({CHECK_FORKS!r}, label="right-check").after(left)
        """,
    )
    result, events = execute(store, project, executor)
    assert result.status == "passed", story(events)
    assert output(events, "left-check") == ["has-base", "has-left", "no-right"]
    assert output(events, "right-check") == ["has-base", "no-left", "has-right"]


# -- the cache ---------------------------------------------------------------------------


def test_a_cached_rerun_runs_nothing_and_children_still_see_the_files(
    store: Store, project: Path, executor: str
) -> None:
    (project / "src.txt").write_text("source\n")
    pipeline(
        project,
        """
        deps = gl.sh("echo installing && mkdir -p build && echo installed > build/deps.txt",
                     label="deps", cache=gl.forever())
        deps.sh("cat build/deps.txt", label="use", cache=gl.forever())
        deps.sh("cat build/deps.txt src.txt", label="fresh")
        """,
    )
    first, events = execute(store, project, executor)
    assert statuses(first) == {"deps": "passed", "use": "passed", "fresh": "passed"}, story(events)
    assert output(events, "deps") == ["installing"]

    second, events = execute(store, project, executor)
    assert statuses(second) == {"deps": "cached", "use": "cached", "fresh": "passed"}
    # Answered from the cache: never handed to the executor, so nothing printed.
    assert started(events) == {"fresh"}
    assert output(events, "deps") == [] and output(events, "use") == []
    assert output(events, "fresh") == ["installed", "source"]
    assert second.steps["deps"].snapshot == first.steps["deps"].snapshot


def test_the_workspace_is_laid_fresh_over_a_cached_parent(
    store: Store, project: Path, executor: str
) -> None:
    (project / "src.txt").write_text("one\n")
    (project / "gone.txt").write_text("soon gone\n")
    (project / "sub").mkdir()
    (project / "sub" / "keep.txt").write_text("kept\n")
    pipeline(
        project,
        """
        base = gl.sh("mkdir -p build && cat src.txt > build/seen.txt"
                     " && echo edited-by-base > src.txt && rm sub/keep.txt",
                     label="base", cache=gl.forever())
        base.sh("cat build/seen.txt src.txt sub/keep.txt;"
                " if [ -e gone.txt ]; then echo has-gone; else echo no-gone; fi",
                label="child")
        """,
    )
    first, events = execute(store, project, executor)
    assert first.status == "passed", story(events)
    # The workspace wins over what the parent did to workspace files.
    assert output(events, "child") == ["one", "one", "kept", "has-gone"]

    (project / "src.txt").write_text("two\n")
    (project / "gone.txt").unlink()
    second, events = execute(store, project, executor)
    assert statuses(second) == {"base": "cached", "child": "passed"}
    assert output(events, "child") == ["one", "two", "kept", "no-gone"]


# -- failures ----------------------------------------------------------------------------


def test_a_failing_command_reports_its_exit_code(
    store: Store, project: Path, executor: str
) -> None:
    pipeline(
        project,
        """
        bad = gl.sh("echo out; echo err >&2; exit 7", label="bad")
        bad.sh("echo never", label="after")
        """,
    )
    result, events = execute(store, project, executor)
    assert result.status == "failed"
    assert statuses(result) == {"bad": "failed", "after": "skipped"}
    assert result.steps["bad"].exit_code == 7
    assert output(events, "bad") == ["out"] and output(events, "bad", "stderr") == ["err"]


def test_a_step_timeout_fails_with_124(store: Store, project: Path, executor: str) -> None:
    pipeline(project, 'gl.sh("sleep 60", label="slow", timeout=1)\n')
    result, events = execute(store, project, executor)
    assert result.steps["slow"].status == "failed"
    assert result.steps["slow"].exit_code == 124
    notes = [e.line for e in events if isinstance(e, StepLog) and e.step == "slow"]
    assert any("timed out" in line for line in notes), notes


def test_a_missing_artifact_fails_the_step(store: Store, project: Path, executor: str) -> None:
    pipeline(project, 'gl.sh("mkdir -p dist", label="build", artifacts=["dist", "nope"])\n')
    result, _ = execute(store, project, executor)
    assert result.steps["build"].status == "failed"
    assert result.steps["build"].exit_code == 1


# -- artifacts ---------------------------------------------------------------------------

BIG = os.urandom(300_000)  # several artifact.put and archive.read chunks

ARTIFACTS = """
gl.sh("mkdir -p dist/sub dist/empty && echo hi > dist/index.html && echo x > dist/sub/a.txt"
      " && echo 'echo run' > dist/run.sh && chmod +x dist/run.sh"
      " && ln -s index.html dist/link.html && cp big.bin dist/sub/big.bin"
      " && cp big.bin notes.txt",
      label="build", artifacts=["dist", "notes.txt"], cache=gl.forever())
"""


def expected_dist(folder: Path) -> Path:
    """Build on the host what ``ARTIFACTS`` makes in ``dist``."""
    (folder / "sub").mkdir(parents=True)
    (folder / "empty").mkdir()
    (folder / "index.html").write_text("hi\n")
    (folder / "sub" / "a.txt").write_text("x\n")
    (folder / "run.sh").write_text("echo run\n")
    (folder / "run.sh").chmod(0o755)
    (folder / "link.html").symlink_to("index.html")
    (folder / "sub" / "big.bin").write_bytes(BIG)
    return folder


def listing(folder: Path) -> dict[str, Any]:
    """Everything under ``folder``: file bytes and executable bit, link targets, folders."""
    found: dict[str, Any] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            found[rel] = ("dir",)
        else:
            executable = bool(path.stat().st_mode & stat.S_IXUSR)
            found[rel] = ("file", path.read_bytes(), executable)
    return found


def test_declared_artifacts_come_back_byte_for_byte(
    store: Store, project: Path, tmp_path: Path, executor: str
) -> None:
    (project / "big.bin").write_bytes(BIG)
    pipeline(project, ARTIFACTS)
    first, events = execute(store, project, executor)
    assert first.status == "passed", story(events)
    tree, notes = first.steps["build"].artifacts
    assert tree.mime == "inode/directory"
    assert (notes.mime, notes.size_bytes) == ("text/plain", len(BIG))
    assert store.read_bytes(notes.key) == BIG

    out = tmp_path / "out"
    store.materialize(tree.key, out)
    reference = expected_dist(tmp_path / "reference")
    assert listing(out) == listing(reference)
    # A store tree's hash covers content only, so every executor lands on this key.
    assert tree.key == store.put_tree(reference)

    second, _ = execute(store, project, executor)
    assert second.steps["build"].status == "cached"
    assert second.steps["build"].artifacts == first.steps["build"].artifacts


# -- every executor agrees ---------------------------------------------------------------

EVERYTHING = (
    """
base = gl.sh("mkdir -p build ../tools && echo built > build/out.txt && echo t > ../tools/t",
             label="base", cache=gl.forever())
base.sh("cat build/out.txt ../tools/t src.txt", label="child")
left = base.sh("echo left > build/left.txt", label="left")
right = base.sh("echo right > build/right.txt", label="right")
left.sh("ls build", label="left-check").after(right)
right.sh("ls build", label="right-check").after(left)
bad = gl.sh("echo out; exit 3", label="bad")
bad.sh("echo never", label="after-bad")
gl.sh("sleep 60", label="slow", timeout=1)
gl.sh("true", label="missing", artifacts=["nope"])
"""
    + ARTIFACTS
)


def summary(result: RunResult, events: list[BuildEvent]) -> dict[str, Any]:
    """What must not depend on the executor: per step, outcome, artifacts and output."""
    return {
        key: (
            outcome.status,
            outcome.exit_code,
            [(a.key, a.mime, a.size_bytes) for a in outcome.artifacts],
            output(events, key),
        )
        for key, outcome in result.steps.items()
    }


@pytest.mark.parametrize("other", [e for e in EXECUTORS if e != "local+none"])
def test_the_same_pipeline_gives_the_same_outcomes_as_local(
    store: Store,
    project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    other: str,
) -> None:
    (project / "src.txt").write_text("source\n")
    (project / "big.bin").write_bytes(BIG)
    pipeline(project, EVERYTHING)
    use_executor(other, tmp_path, monkeypatch, request)
    try:
        # Once running everything, once with the cached steps answered from the cache.
        expected = [summary(*execute(store, project, "local+none")) for _ in range(2)]
        assert expected[0]["child"][3] == ["built", "t", "source"]
        assert expected[0]["left-check"][3] == ["left.txt", "out.txt"]
        assert expected[0]["slow"][:2] == ("failed", 124)
        assert expected[1]["build"][0] == "cached"
        got = [summary(*execute(store, project, other)) for _ in range(2)]
        assert got == expected
    finally:
        if "docker" in other:
            forget_docker_snapshots(store)
