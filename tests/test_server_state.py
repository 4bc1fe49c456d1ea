"""LiveState: how events change the state, and what subscribers receive."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenloop.protocol.devloop import (
    BecameGreen,
    BecameRed,
    FileState,
    FileVerdict,
    Severity,
    TreeState,
)
from greenloop.server import LiveState
from greenloop.server.state import Subscription
from tests.test_server_support import (
    diagnostic,
    failed_result,
    green_result,
    identity,
    page,
    write_site,
)


def drain(loop: asyncio.AbstractEventLoop, subscription: Subscription) -> list[str | None]:
    """Every message delivered so far, in order (stops after a hang-up)."""

    async def collect() -> list[str | None]:
        await asyncio.sleep(0)  # let the scheduled deliveries run
        out: list[str | None] = []
        while not subscription._queue.empty():
            item = await subscription.get()
            out.append(item)
            if item is None:
                break
        return out

    return loop.run_until_complete(collect())


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_starts_empty() -> None:
    snapshot = LiveState().snapshot()
    assert snapshot.directory is None
    assert snapshot.artifact is None
    assert snapshot.artifact_id == ""
    assert snapshot.verdict is TreeState.UNKNOWN
    assert snapshot.diagnostics == ()
    assert snapshot.last_build is None


def test_red_then_green_verdicts_and_diagnostics() -> None:
    state = LiveState()
    late = diagnostic(path="/p/b.py", line=3, col=1)
    early = diagnostic(path="/p/a.py", line=9, col=2)
    state.push_state(BecameRed(diagnostics=[late, early]))
    snap = state.snapshot()
    assert snap.verdict is TreeState.RED
    assert snap.diagnostics == (early, late)  # sorted by path, line, column

    state.push_state(BecameGreen(identity=identity()))
    snap = state.snapshot()
    assert snap.verdict is TreeState.GREEN
    assert snap.diagnostics == ()


def test_file_verdicts_replace_that_files_diagnostics_only() -> None:
    state = LiveState()
    a1 = diagnostic(path="/p/a.py", line=1)
    b1 = diagnostic(path="/p/b.py", line=1)
    state.push_state(BecameRed(diagnostics=[a1, b1]))

    a2 = diagnostic(path="/p/a.py", line=7, message="new")
    state.push_state(FileVerdict(path="/p/a.py", state=FileState.RED, diagnostics=[a2]))
    assert state.snapshot().diagnostics == (a2, b1)

    state.push_state(FileVerdict(path="/p/b.py", state=FileState.GREEN))
    snap = state.snapshot()
    assert snap.diagnostics == (a2,)
    assert snap.verdict is TreeState.RED  # only the model's edges move the verdict

    warning = diagnostic(path="/p/c.py").model_copy(update={"severity": Severity.WARNING})
    state.push_state(FileVerdict(path="/p/c.py", state=FileState.GREEN, diagnostics=[warning]))
    assert state.snapshot().diagnostics == (a2, warning)
    state.push_state(FileVerdict(path="/p/c.py", state=FileState.UNCHECKED))
    assert state.snapshot().diagnostics == (a2,)


def test_set_artifact_pins_the_resolved_directory(tmp_path: Path) -> None:
    v1 = write_site(tmp_path / "v1", {"index.html": page("v1")})
    v2 = write_site(tmp_path / "v2", {"index.html": page("v2")})
    link = tmp_path / "current"
    link.symlink_to(v1)
    state = LiveState()
    result = green_result("one")
    state.set_artifact(link, result)
    link.unlink()
    link.symlink_to(v2)  # the publisher's next swap must not leak into what is served
    snap = state.snapshot()
    assert snap.directory == v1.resolve()
    assert snap.artifact == result.artifact
    assert snap.artifact_id == result.artifact.tree  # type: ignore[union-attr]
    assert snap.last_build == result


def test_set_artifact_refuses_failed_builds_and_missing_directories(tmp_path: Path) -> None:
    state = LiveState()
    site = write_site(tmp_path / "site", {"index.html": page("x")})
    with pytest.raises(ValueError, match="servable"):
        state.set_artifact(site, failed_result("x"))
    with pytest.raises(ValueError, match="not readable"):
        state.set_artifact(tmp_path / "missing", green_result("x"))
    with pytest.raises(ValueError, match="not a directory"):
        state.set_artifact(site / "index.html", green_result("x"))
    assert state.snapshot().directory is None


def test_a_failed_build_keeps_serving_the_last_green(tmp_path: Path) -> None:
    state = LiveState()
    site = write_site(tmp_path / "site", {"index.html": page("x")})
    good = green_result("good")
    state.set_artifact(site, good)
    bad = failed_result("bad")
    state.push_build(bad)
    snap = state.snapshot()
    assert snap.directory == site.resolve()
    assert snap.artifact == good.artifact
    assert snap.last_build == bad


def test_subscriber_gets_sync_first_then_every_change_in_order(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    state = LiveState()
    state.push_state(BecameRed(diagnostics=[diagnostic()]))
    subscription = state.subscribe(loop)
    site = write_site(tmp_path / "site", {"index.html": page("x")})
    state.push_state(BecameGreen(identity=identity()))
    state.push_build(green_result("a"))
    state.set_artifact(site, green_result("a"))

    messages = [json.loads(m) for m in drain(loop, subscription) if m is not None]
    assert [m["type"] for m in messages] == ["sync", "state", "build", "artifact"]
    assert messages[0]["status"]["verdict"] == "red"
    assert messages[0]["status"]["diagnostics_count"] == 1
    assert messages[1]["event"]["kind"] == "became_green"
    assert messages[1]["status"]["verdict"] == "green"
    assert messages[3]["status"]["artifact"]["tree"] == green_result("a").artifact.tree  # type: ignore[union-attr]


def test_changes_from_many_threads_reach_a_subscriber_in_the_states_order(
    loop: asyncio.AbstractEventLoop,
) -> None:
    state = LiveState()
    subscription = state.subscribe(loop)

    def push(n: int) -> None:
        for i in range(20):
            state.push_build(failed_result(f"{n}-{i}", reason=f"{n}-{i}"))

    threads = [threading.Thread(target=push, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    messages = [json.loads(m) for m in drain(loop, subscription) if m is not None]
    builds = messages[1:]
    assert len(builds) == 100
    # Each message's status is the state right after that very change.
    for m in builds:
        assert m["status"]["last_build"] == m["result"]
    for n in range(5):
        mine = [
            m["result"]["outcome"]["reason"]
            for m in builds
            if m["result"]["outcome"]["reason"].startswith(f"{n}-")
        ]
        assert mine == [f"{n}-{i}" for i in range(20)]


def test_a_subscriber_that_lags_too_far_is_hung_up(loop: asyncio.AbstractEventLoop) -> None:
    state = LiveState()
    subscription = state.subscribe(loop)
    for i in range(400):
        state.push_build(failed_result(str(i)))
    received = drain(loop, subscription)
    assert received[-1] is None
    assert len(received) < 400
    state.push_build(failed_result("after"))
    assert state.subscriber_count() == 0


def test_unsubscribe_stops_delivery(loop: asyncio.AbstractEventLoop) -> None:
    state = LiveState()
    subscription = state.subscribe(loop)
    assert state.subscriber_count() == 1
    state.unsubscribe(subscription)
    state.push_build(failed_result("x"))
    assert state.subscriber_count() == 0
    # Even what was queued but not yet delivered is dropped.
    assert drain(loop, subscription) == []
