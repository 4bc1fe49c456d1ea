"""A chain's docker steps run as execs in one kept container, and only while it is
as fresh as a container booted from the snapshot would be.

Against the real engines: Docker (``DOCKER_HOST``) and rootless Podman
(``GREENLOOP_PODMAN_HOST``), as the executor suite runs them. A step's hostname
has no say (every step container is named ``greenloop``); what names a container is
its pid 1's start time, which ``ID`` below prints first.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from greenloop.engine.run import Run, RunOptions, RunResult
from greenloop.executors.docker import DockerExecutor
from greenloop.executors.docker_kept import Kept
from greenloop.plugins.discovery import Executors
from greenloop.protocol import BuildEvent
from greenloop.sdk.loader import load
from greenloop.store import Store
from tests.docker_image import IMAGE, ensure_image
from tests.test_docker import _client as docker_client
from tests.test_executor_suite import forget_docker_snapshots, pipeline, use_executor
from tests.test_run import logs, run, statuses


@pytest.fixture(params=["docker", "docker+podman"])
def engine(
    request: pytest.FixtureRequest, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """The engine's client, with the docker executor pointed at it."""
    use_executor(request.param, tmp_path, monkeypatch)
    yield docker_client()
    forget_docker_snapshots(store)


ID = "read -r s </proc/1/stat && set -- $s && echo ${22} && hostname"
"""Print the container's identity (pid 1's start time) and its hostname."""


def steps(project: Path, body: str) -> None:
    """The ``ci`` pipeline of ``body``'s steps, which may print ``ID``."""
    pipeline(project, f"ID = {ID!r}\n" + textwrap.dedent(body))


def ran(store: Store, project: Path, body: str) -> tuple[RunResult, list[BuildEvent]]:
    """Run ``body``'s steps (every one cached, so each commits its snapshot) on docker."""
    steps(project, body)
    result, events = run(store, project, executor="docker")
    assert result.status == "passed", [(e.step, e.line) for e in events if hasattr(e, "line")]
    return result, events


def no_containers_left(client: Any) -> bool:
    """Whether this process left no container on the engine."""
    mine = {"label": ["greenloop=1", f"greenloop.pid={os.getpid()}"]}
    return client.containers.list(all=True, filters=mine) == []


def test_a_chain_runs_in_the_container_it_keeps(engine: Any, store: Store, project: Path) -> None:
    (project / "src.txt").write_text("laid\n")
    _, events = ran(
        store,
        project,
        """
        s0 = gl.sh(ID + " && mkdir -p /o && echo 0 > /o/0", label="s0", cache=gl.forever())
        s1 = s0.sh(ID + " && cat /o/0 && echo 1 > /o/1", label="s1", cache=gl.forever())
        s1.sh(ID + " && cat /o/0 /o/1 && pwd && cat src.txt", label="s2", cache=gl.forever())
        """,
    )
    s0, s1, s2 = (logs(events, s) for s in ("s0", "s1", "s2"))
    assert s1[1:] == ["greenloop", "0"] and s2[1:] == ["greenloop", "0", "1", "/workspace", "laid"]
    assert s0[0] == s1[0] == s2[0]  # one container, kept from step to step
    assert no_containers_left(engine)
    # A child of a cached parent boots its own container from the snapshot, as ever.
    (project / "src.txt").write_text("again\n")
    steps(
        project,
        """
        s0 = gl.sh(ID + " && mkdir -p /o && echo 0 > /o/0", label="s0", cache=gl.forever())
        s0.sh(ID + " && cat /o/0 src.txt", label="new", cache=gl.forever())
        """,
    )
    again, events = run(store, project, executor="docker")
    assert statuses(again) == {"s0": "cached", "new": "passed"}
    assert logs(events, "new")[1:] == ["greenloop", "0", "again"]
    assert no_containers_left(engine)


# Each leaves something a container booted from its snapshot would not have; the child
# must not see it, so it gets a container of its own.
LEAKS = {
    "a process": (
        "{ sleep 300 >/dev/null 2>&1 & }",
        "for p in /proc/[0-9]*/comm; do cat $p; done | grep -c sleep || true",
        "0",
    ),
    "/etc/hosts": (
        "echo '10.9.9.9 leaked.example' >> /etc/hosts",
        "grep -c leaked /etc/hosts || true",
        "0",
    ),
    "/dev/shm": ("echo x > /dev/shm/leak", "ls /dev/shm | grep -c leak || true", "0"),
    "a /dev entry's mode": (
        "chmod 0700 /dev/shm",
        "ls -ld /dev/shm | cut -c1-10",
        "drwxrwxrwt",
    ),
    "an engine's file": (  # Docker's; Podman's /run/.containerenv cannot be removed
        "rm -f /.dockerenv",
        "ls /.dockerenv /run/.containerenv 2>/dev/null | grep -c env",
        "1",
    ),
}


@pytest.mark.parametrize("leak", sorted(LEAKS))
def test_a_container_a_step_left_unlike_a_fresh_one_is_not_kept(
    engine: Any, store: Store, project: Path, leak: str, request: pytest.FixtureRequest
) -> None:
    if leak == "an engine's file" and "podman" in request.node.callspec.id:
        pytest.skip("Podman makes no engine file a step can remove")
    leave, look, seen = LEAKS[leak]
    _, events = ran(
        store,
        project,
        f"""
        s0 = gl.sh(ID + " && " + {leave!r}, label="s0", cache=gl.forever())
        s0.sh(ID + " && " + {look!r}, label="s1", cache=gl.forever())
        """,
    )
    (parent, _), (child, _, found) = logs(events, "s0"), logs(events, "s1")
    assert found == seen
    assert parent != child  # a container of its own
    assert no_containers_left(engine)


def test_forks_share_nothing_but_the_snapshot(engine: Any, store: Store, project: Path) -> None:
    _, events = ran(
        store,
        project,
        """
        base = gl.sh(ID + " && echo base > /b", label="base", cache=gl.forever())
        sides = "ls / | grep -c -x -e left -e right"
        for side in ("left", "right"):
            base.sh(ID + f" && cat /b && echo {side} > /{side} && " + sides,
                    label=side, cache=gl.forever())
        """,
    )
    base, left, right = (logs(events, s) for s in ("base", "left", "right"))
    assert left[1:] == right[1:] == ["greenloop", "base", "1"]
    # One child took the kept container, the other booted its own from the snapshot.
    assert sorted([left[0] == base[0], right[0] == base[0]]) == [False, True]
    assert no_containers_left(engine)


def test_secret_files_are_gone_before_the_next_step(
    engine: Any, store: Store, project: Path
) -> None:
    steps(
        project,
        """
        s0 = gl.sh(ID + " && test -s $TOKEN_FILE && ls /run/secrets", label="s0",
                   env={"TOKEN_FILE": gl.secret_file("TOKEN")}, cache=gl.forever())
        s0.sh(ID + " && ls /run/secrets", label="s1", cache=gl.forever(),
              env={"OTHER_FILE": gl.secret_file("OTHER")})
        """,
    )
    events: list[BuildEvent] = []
    the_run = Run(
        store,
        load(project / ".greenloop" / "pipeline.py").pipeline("ci"),
        project,
        Executors(store),
        events.append,
        RunOptions(executor="docker"),
        secrets={"TOKEN": "s3cret-value", "OTHER": "other-value"},
    )
    result = the_run.execute()
    assert result.status == "passed", events
    (parent, _, parents_file), (child, _, *childs_files) = logs(events, "s0"), logs(events, "s1")
    assert parents_file == "TOKEN_FILE"
    # The child inherits its parent's secret (a chained step does) and has its own:
    # each written afresh, nothing left over from the parent's exec.
    assert childs_files == ["OTHER_FILE", "TOKEN_FILE"]
    assert parent == child  # the same container, kept
    assert no_containers_left(engine)


def test_a_step_that_times_out_in_a_kept_container_takes_it_down(
    engine: Any, store: Store, project: Path
) -> None:
    steps(
        project,
        """
        s0 = gl.sh(ID, label="s0", cache=gl.forever())
        s0.sh(ID + " && sleep 60", label="slow", timeout=1, cache=gl.forever())
        """,
    )
    result, events = run(store, project, executor="docker")
    assert result.steps["slow"].exit_code == 124
    assert logs(events, "slow")[0] == logs(events, "s0")[0]  # it ran in the kept one
    assert any("timed out" in line for line in logs(events, "slow"))
    assert no_containers_left(engine)


@pytest.mark.parametrize("kept", [False, True])
def test_a_step_is_never_pid_1_so_its_signals_act_as_anywhere(
    engine: Any, store: Store, project: Path, kept: bool
) -> None:
    # pid 1 ignores a signal it has no handler for: this would print "survived" there.
    # Cached, the step commits and runs in a kept container; uncached, in its own.
    policy = ", cache=gl.forever()" if kept else ""
    steps(project, f'gl.sh("kill -TERM $$; echo survived", label="s"{policy})\n')
    result, events = run(store, project, executor="docker")
    assert result.steps["s"].exit_code == 143
    assert "survived" not in logs(events, "s")
    assert no_containers_left(engine)


def test_a_kept_container_stopped_by_hand_is_not_used(store: Store) -> None:
    client = docker_client()
    ensure_image(client)
    executor = DockerExecutor(store)
    kept = Kept(lambda: executor.client)
    kept.open()
    booted = executor._boot(IMAGE, executor._labels, {}, {})
    assert kept.keep("greenloop-run:x", "shape", booted)
    client.api.kill(booted)
    assert kept.take("greenloop-run:x", "shape") is None  # the step boots its own
    kept.close()
    assert no_containers_left(client)


def test_a_child_sees_the_same_environment_kept_or_booted_from_the_snapshot(
    engine: Any, store: Store, project: Path
) -> None:
    body = """
    s0 = gl.sh(ID + " && echo parent", label="s0", env={"FROM_PARENT": "p"}, cache=gl.forever())
    s0.sh(ID + " && env | sort", label="s1", env={"OWN": "{own}"}, cache=gl.forever())
    """
    _, events = ran(store, project, body.replace("{own}", "1"))
    kept = logs(events, "s1")
    assert kept[0] == logs(events, "s0")[0]
    # The parent cached: its child boots a container of its own from the snapshot.
    _, events = ran(store, project, body.replace("{own}", "2"))
    fresh = logs(events, "s1")
    assert fresh[0] != kept[0]
    assert [v for v in kept[1:] if not v.startswith("OWN=")] == [
        v for v in fresh[1:] if not v.startswith("OWN=")
    ]
    assert "FROM_PARENT=p" in kept
