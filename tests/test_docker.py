"""The docker executor against a real Docker engine (``DOCKER_HOST``).

Skipped when no engine answers, unless ``GREENLOOP_REQUIRE_DOCKER=1`` (CI sets
it), in which case a missing engine fails the suite instead of hiding it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from greenloop.executors.docker import DockerExecutor
from greenloop.store import Store
from tests.conftest import cli, write_pipeline
from tests.docker_image import IMAGE, ensure_image
from tests.test_run import logs, run, statuses


def _client() -> Any:
    try:
        import docker

        client = docker.from_env()
        client.ping()
        return client
    except Exception as e:
        if os.environ.get("GREENLOOP_REQUIRE_DOCKER") == "1":
            raise RuntimeError(f"GREENLOOP_REQUIRE_DOCKER=1 but no engine answers: {e}") from e
        pytest.skip(f"no Docker engine: {e}")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    c = _client()
    ensure_image(c)
    yield c


def greenloop_containers(client: Any) -> list[Any]:
    return client.containers.list(all=True, filters={"label": "greenloop=1"})


def snapshot_tags(client: Any, repo: str) -> set[str]:
    return {t for image in client.images.list(name=repo) for t in image.tags}


PIPELINE = f"""
@gl.pipeline("ci", default_image="{IMAGE}", executor="docker")
def ci():
    deps = gl.sh("mkdir -p /opt/deps && echo installed > /opt/deps/marker && ls",
                 label="deps", cache=gl.on_change("deps.lock"))
    deps.sh("cat /opt/deps/marker && cat src.txt && ls", label="use")
    deps.sh("echo out; echo err >&2; exit 4", label="fails")
"""


def test_chain_cache_and_workspace_overlay(client: Any, store: Store, project: Path) -> None:
    write_pipeline(project, PIPELINE)
    (project / "deps.lock").write_text("1")
    (project / "src.txt").write_text("first\n")
    (project / "old.txt").write_text("old")
    first, events = run(store, project)
    assert statuses(first) == {"deps": "passed", "use": "passed", "fails": "failed"}
    assert logs(events, "use") == ["installed", "first", "deps.lock", "old.txt", "src.txt"]
    assert sorted(logs(events, "fails")) == ["err", "out"]
    assert first.steps["fails"].exit_code == 4
    snapshot = first.steps["deps"].snapshot
    assert snapshot is not None and snapshot in snapshot_tags(client, "greenloop-snap")

    (project / "src.txt").write_text("second\n")
    (project / "old.txt").unlink()
    second, events = run(store, project)
    assert statuses(second)["deps"] == "cached"
    # The cached parent's copy of old.txt is gone; the new source is there.
    assert logs(events, "use") == ["installed", "second", "deps.lock", "src.txt"]
    assert greenloop_containers(client) == []
    # Run-scoped snapshots are removed when the run ends.
    assert not any(t.startswith("greenloop-run:") for t in snapshot_tags(client, "greenloop-run"))


def test_large_workspace_streams_intact(client: Any, store: Store, project: Path) -> None:
    data = os.urandom(24 << 20)
    (project / "big.bin").write_bytes(data)
    write_pipeline(
        project,
        f'@gl.pipeline("ci", default_image="{IMAGE}", executor="docker")\n'
        'def ci():\n    gl.sh("sha256sum big.bin", label="hash")\n',
    )
    result, events = run(store, project)
    assert result.status == "passed"
    import hashlib

    assert logs(events, "hash")[0].split()[0] == hashlib.sha256(data).hexdigest()


def test_artifacts_come_out_of_the_container(client: Any, store: Store, project: Path) -> None:
    write_pipeline(
        project,
        f'@gl.pipeline("ci", default_image="{IMAGE}", executor="docker")\n'
        "def ci():\n"
        '    gl.sh("mkdir -p dist/a && echo hi > dist/a/index.html && echo 1 > v.txt",'
        ' label="build", artifacts=["dist", "v.txt"])\n',
    )
    result, _ = run(store, project)
    tree, single = result.steps["build"].artifacts
    assert tree.mime == "inode/directory" and single.size_bytes == 2
    out = project.parent / "out"
    store.materialize(tree.key, out)
    assert (out / "a" / "index.html").read_text() == "hi\n"
    assert store.read_bytes(single.key) == b"1\n"


def test_timeout_kills_and_removes_the_container(client: Any, store: Store, project: Path) -> None:
    write_pipeline(
        project,
        f'@gl.pipeline("ci", default_image="{IMAGE}", executor="docker")\n'
        'def ci():\n    gl.sh("sleep 60", label="slow", timeout=1)\n',
    )
    result, events = run(store, project)
    assert result.steps["slow"].exit_code == 124
    assert any("timed out" in line for line in logs(events, "slow"))
    assert greenloop_containers(client) == []


def test_leftovers_of_a_dead_process_are_removed(client: Any, store: Store) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = client.containers.create(
        IMAGE,
        command=["sleep", "60"],
        labels={
            "greenloop": "1",
            "greenloop.host": __import__("socket").gethostname(),
            "greenloop.pid": str(dead.pid),
        },
    )
    executor = DockerExecutor(store)
    assert executor.remove_leftovers() >= 1
    assert leftover.id not in {c.id for c in greenloop_containers(client)}


def test_gc_removes_snapshot_tags_nothing_references(
    client: Any, store: Store, project: Path
) -> None:
    write_pipeline(project, PIPELINE)
    (project / "deps.lock").write_text("gc")
    (project / "src.txt").write_text("x")
    first, _ = run(store, project)
    live = first.steps["deps"].snapshot
    assert live is not None
    executor = DockerExecutor(store)
    # An orphan of this store: a snapshot image labelled with the store, no entry naming it.
    container = client.containers.create(IMAGE, command=["true"])
    orphan = "greenloop-snap:orphan-test"
    container.commit(
        repository="greenloop-snap",
        tag="orphan-test",
        changes=[f"LABEL greenloop.store={executor._store_id}"],
    )
    container.remove()
    # Another store's snapshot on the same engine, and a user's tag: both must survive.
    foreign = client.containers.create(IMAGE, command=["true"])
    foreign.commit(
        repository="greenloop-snap", tag="other-store", changes=["LABEL greenloop.store=x"]
    )
    foreign.remove()
    removed = executor.collect_garbage({live})
    assert removed >= 1
    tags = snapshot_tags(client, "greenloop-snap")
    assert orphan not in tags and live in tags and "greenloop-snap:other-store" in tags
    client.images.get(IMAGE)  # the base image was not collected with the orphans
    client.images.remove("greenloop-snap:other-store")


def test_missing_engine_is_a_setup_error(project: Path) -> None:
    write_pipeline(
        project,
        f'@gl.pipeline("ci", default_image="{IMAGE}")\ndef ci():\n    gl.sh("true")\n',
    )
    result = cli(
        "run",
        "--executor",
        "docker",
        cwd=project,
        env={"DOCKER_HOST": f"unix://{project}/no-such.sock"},
    )
    assert result.returncode == 2
    assert "DOCKER_HOST" in result.stderr or "no-such.sock" in result.stderr
    assert "cannot reach a Docker engine" in result.stderr


def test_missing_image_is_named(client: Any, project: Path) -> None:
    write_pipeline(
        project,
        '@gl.pipeline("ci", default_image="greenloop-test/nope:1")\ndef ci():\n    gl.sh("true")\n',
    )
    result = cli("run", "--executor", "docker", cwd=project)
    assert result.returncode == 2
    assert "image 'greenloop-test/nope:1'" in result.stderr


MOVING = "greenloop-test-moving:latest"
WHICH = f"""
@gl.pipeline("ci", default_image="{MOVING}", executor="docker")
def ci():
    gl.sh("cat /version 2>/dev/null || echo none", label="which", cache=gl.forever())
"""


@contextlib.contextmanager
def moving_tag(client: Any) -> Iterator[None]:
    """MOVING names IMAGE while the block runs (it may be moved, see :func:`move_the_tag`),
    and nothing after it."""
    repository, tag = MOVING.split(":")
    client.images.get(IMAGE).tag(repository, tag)  # Podman's API wants them apart
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            client.images.remove(MOVING, force=True)


def move_the_tag(client: Any) -> None:
    """Point MOVING at another image, one with ``/version``: `docker build -t` again."""
    maker = client.containers.create(IMAGE, ["sh", "-c", "echo v2 > /version"])
    try:
        maker.start()
        maker.wait()
        maker.commit(repository=MOVING.split(":")[0], tag="latest")
    finally:
        maker.remove(force=True)


def test_a_step_boots_from_the_image_its_key_names_when_the_tag_moves_before_it_starts(
    client: Any, store: Store, project: Path
) -> None:
    from greenloop.engine.run import Run, RunOptions
    from greenloop.plugins.discovery import Executors
    from greenloop.protocol import StepStarted
    from greenloop.sdk.loader import load

    write_pipeline(project, WHICH)
    events: list[Any] = []

    def on_event(event: Any) -> None:
        # After the key is made (it names IMAGE's id), before the container starts.
        events.append(event)
        if isinstance(event, StepStarted):
            move_the_tag(client)

    with moving_tag(client):
        pipeline = load(project / ".greenloop" / "pipeline.py").pipeline("ci")
        raced = Run(store, pipeline, project, Executors(store), on_event, RunOptions())
        assert statuses(raced.execute()) == {"which": "passed"}
        # It ran the image its key names; what it stored answers for that image only.
        assert logs(events, "which") == ["none"]
        moved, events_after = run(store, project)
        assert statuses(moved) == {"which": "passed"} and logs(events_after, "which") == ["v2"]


def test_a_step_reruns_when_its_image_tag_moves_and_never_answers_for_an_absent_one(
    client: Any, store: Store, project: Path
) -> None:
    from greenloop.protocol import SetupError

    write_pipeline(project, WHICH)
    with moving_tag(client):
        first, events = run(store, project)
        assert statuses(first) == {"which": "passed"} and logs(events, "which") == ["none"]
        assert statuses(run(store, project)[0]) == {"which": "cached"}
        # The same name, other bytes: `docker build -t` again, or a new pull.
        move_the_tag(client)
        moved, events = run(store, project)
        assert statuses(moved) == {"which": "passed"} and logs(events, "which") == ["v2"]
        assert statuses(run(store, project)[0]) == {"which": "cached"}
        client.images.remove(MOVING)
        with pytest.raises(SetupError, match="not on the Docker engine"):
            run(store, project)
