"""The ``ray`` executor on a real cluster: a head and two worker nodes on loopback, each
with its own store, the nginx WebDAV cache between them (``tests/ray_cluster.py``).

The conformance suite runs under ``ray`` too (``tests/test_executor_suite.py``);
here: where steps land and what the history says of it, resources, what never
imports Ray, setup errors, cancellation, and nodes dying mid-step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from greenloop.engine.run import Run, RunOptions, RunResult
from greenloop.plugins.discovery import Executors
from greenloop.protocol import BuildEvent, StepLog
from greenloop.sdk.loader import load
from greenloop.store import Store
from tests.conftest import cli, wait_until, write_pipeline
from tests.docker_image import IMAGE, ensure_image
from tests.ray_cluster import RayCluster, RayNode
from tests.test_docker import _client as docker_client
from tests.test_executor_suite import forget_docker_snapshots
from tests.test_remote_server import free_port

NODE_LINE = re.compile(
    r"^(?:\[stderr\] )?greenloop: ray: on node ([0-9a-f]+) \((127\.0\.0\.\d+)\)$"
)

FAN = """
@gl.pipeline("ci")
def ci():
    for i in range(4):
        gl.sh(f"sleep 1 && echo fan-{i} > out.txt && cat out.txt", label=f"fan{i}",
              cache=gl.forever(), artifacts=["out.txt"])
"""


def nodes_in(lines: list[str]) -> list[str]:
    """The node ips the log lines say a step ran on, in order (one a try)."""
    return [m.group(2) for line in lines if (m := NODE_LINE.match(line))]


def run_events(store: Store, project: Path, **options: object) -> tuple[Run, list[BuildEvent]]:
    """A run of the project's ``ci`` on ``ray`` (unless ``executor=`` says), and its events."""
    options.setdefault("executor", "ray")
    events: list[BuildEvent] = []
    pipeline = load(project / ".greenloop" / "pipeline.py").pipeline("ci")
    the_run = Run(
        store,
        pipeline,
        project,
        Executors(store),
        events.append,
        RunOptions(**options),  # type: ignore[arg-type]
    )
    return the_run, events


def step_lines(events: list[BuildEvent], step: str) -> list[str]:
    return [e.line for e in list(events) if isinstance(e, StepLog) and e.step == step]


def test_a_fan_lands_on_both_nodes_and_the_history_names_them(
    on_ray: RayCluster, project: Path, tmp_path: Path
) -> None:
    write_pipeline(project, FAN)
    done = cli("run", "ci", "--executor", "ray", "-j", "4", "--json", cwd=project)
    assert done.returncode == 0, done.stderr + done.stdout
    events = [json.loads(line) for line in done.stdout.splitlines()]
    run_id = next(e["run_id"] for e in events if e["type"] == "run_started")
    placed = {}
    for i in range(4):
        log = cli("logs", "--run", run_id, f"fan{i}", cwd=project)
        assert log.returncode == 0, log.stderr
        assert f"fan-{i}" in log.stdout
        ips = nodes_in(log.stdout.splitlines())
        assert len(ips) == 1, log.stdout
        placed[f"fan{i}"] = ips[0]
    workers = {n.ip for n in on_ray.workers}
    assert set(placed.values()) == workers, placed

    # Rerun from the same store: every step a local hit, nothing sent.
    again = cli("run", "ci", "--executor", "ray", "--json", cwd=project)
    assert again.returncode == 0, again.stderr
    finished = [json.loads(line) for line in again.stdout.splitlines()]
    assert {e["step"] for e in finished if e["type"] == "step_cached"} == {
        f"fan{i}" for i in range(4)
    }


STREAMS = """
@gl.pipeline("ci")
def ci():
    # Lines while it runs (pushed to the relay), then a burst as it ends (they come
    # back with the result): all of them, in order, once.
    gl.sh("for i in $(seq 1 20); do echo early-$i; sleep 0.02; done; seq -f late-%g 1 200",
          label="talks")
    gl.sh("echo before-failing; seq -f dying-%g 1 50; exit 3", label="fails")
"""


def test_every_line_a_step_prints_arrives_in_order_once_finished_or_failed(
    on_ray: RayCluster, store: Store, project: Path
) -> None:
    write_pipeline(project, STREAMS)
    the_run, events = run_events(store, project, jobs=2)
    result = the_run.execute()
    assert result.steps["talks"].status == "passed"
    assert result.steps["fails"].status == "failed"
    printed = [line for line in step_lines(events, "talks") if not NODE_LINE.match(line)]
    assert printed == [f"early-{i}" for i in range(1, 21)] + [f"late-{i}" for i in range(1, 201)]
    printed = [line for line in step_lines(events, "fails") if not NODE_LINE.match(line)]
    assert printed == ["before-failing"] + [f"dying-{i}" for i in range(1, 51)]


def poison(folder: Path, *, findable: bool) -> dict[str, str]:
    """An environment in which ``import ray`` fails: findable (find_spec sees a package
    that raises when imported) or not installed at all."""
    folder.mkdir()
    if findable:
        (folder / "ray").mkdir()
        (folder / "ray" / "__init__.py").write_text(
            "raise ImportError('ray was imported on the cached path')\n"
        )
    else:
        (folder / "sitecustomize.py").write_text(
            "import sys\n"
            "class NoRay:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'ray' or name.startswith('ray.'):\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
            "sys.meta_path.insert(0, NoRay())\n"
        )
    return {"PYTHONPATH": str(folder), "GREENLOOP_NO_DAEMON": "1"}


def test_the_cached_path_never_imports_ray(
    on_ray: RayCluster, project: Path, tmp_path: Path
) -> None:
    write_pipeline(project, FAN)
    first = cli("run", "ci", "--executor", "ray", "-j", "4", "--format", "plain", cwd=project)
    assert first.returncode == 0, first.stderr + first.stdout
    hidden = poison(tmp_path / "poison", findable=True)
    # Local hits, then a fresh machine answered by the remote cache: Ray is never loaded.
    local = cli("run", "ci", "--executor", "ray", "--format", "plain", cwd=project, env=hidden)
    assert local.returncode == 0, local.stderr + local.stdout
    fresh = {**hidden, "GREENLOOP_CACHE_DIR": str(tmp_path / "fresh-store")}
    remote = cli("run", "ci", "--executor", "ray", "--format", "plain", cwd=project, env=fresh)
    assert remote.returncode == 0, remote.stderr + remote.stdout
    assert remote.stdout.count("cached") >= 4, remote.stdout


def test_without_ray_installed_it_is_a_setup_error_with_the_hint(
    project: Path, tmp_path: Path
) -> None:
    write_pipeline(project, FAN)
    env = poison(tmp_path / "no-ray", findable=False)
    done = cli("run", "ci", "--executor", "ray", cwd=project, env=env)
    assert done.returncode == 2, done.stderr
    assert "pip install 'greenloop[ray]'" in done.stderr


def test_a_cluster_address_nobody_answers_fails_at_once_and_a_malformed_one_is_exit_2(
    on_ray: RayCluster, project: Path
) -> None:
    # Its own command: the shared server answers FAN's steps, with no cluster needed.
    write_pipeline(
        project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo unanswered", label="u")\n'
    )
    port = free_port()  # nothing listens there: Ray alone would retry for minutes
    env = {"RAY_ADDRESS": f"127.0.0.1:{port}"}
    down = cli(
        "run", "ci", "--executor", "ray", "-j", "4", "--format", "plain", cwd=project, env=env
    )
    assert down.returncode == 1, down.stderr + down.stdout
    assert f"nothing answers at 127.0.0.1:{port}" in down.stdout, down.stdout
    bad = cli("run", "ci", "--executor", "ray", "--ray-address", "head-node", cwd=project)
    assert bad.returncode == 2, bad.stderr + bad.stdout
    assert "'head-node' is not HOST:PORT (or auto)" in bad.stderr, bad.stderr


def test_without_a_remote_cache_it_is_a_setup_error_and_an_impossible_step_fails(
    on_ray: RayCluster, project: Path
) -> None:
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true", label="one")\n')
    done = cli("run", "ci", "--executor", "ray", cwd=project, env={"GREENLOOP_REMOTE_CACHE": ""})
    assert done.returncode == 2, done.stderr
    assert "--remote-cache URL" in done.stderr
    # The flag reaches the executor as the variable would.
    url = os.environ["GREENLOOP_REMOTE_CACHE"]
    flagged = cli(
        "run", "ci", "--executor", "ray", "--remote-cache", url, cwd=project,
        env={"GREENLOOP_REMOTE_CACHE": ""},
    )  # fmt: skip
    assert flagged.returncode == 0, flagged.stderr
    read_only = cli("run", "ci", "--executor", "ray", "--remote-cache-mode", "read", cwd=project)
    assert read_only.returncode == 2 and "readwrite" in read_only.stderr, read_only.stderr
    write_pipeline(
        project,
        '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true", label="wide", resources={"cpu": 2})\n',
    )
    # Only the first step sent contacts the cluster (a remote hit never loads Ray), so a
    # step no node can hold fails, saying why, rather than waiting forever.
    done = cli("run", "ci", "--executor", "ray", "--format", "plain", cwd=project)
    assert done.returncode == 1, done.stderr
    assert "step 'wide' asks for cpu=2" in done.stdout and "never start" in done.stdout


def test_a_custom_resource_puts_the_step_on_the_node_that_has_it(
    on_ray: RayCluster, store: Store, project: Path
) -> None:
    write_pipeline(
        project,
        '@gl.pipeline("ci")\ndef ci():\n'
        "    for i in range(3):\n"
        '        gl.sh("echo big", label=f"big{i}", resources={"big": 0.1, "cpu": 0.5})\n',
    )
    the_run, events = run_events(store, project, jobs=3)
    result = the_run.execute()
    assert result.status == "passed", events
    big = next(n for n in on_ray.workers if n.resources)
    for i in range(3):
        assert nodes_in(step_lines(events, f"big{i}")) == [big.ip]


def running_on(events: list[BuildEvent], step: str, cluster: RayCluster, tries: int) -> RayNode:
    """The worker node the ``tries``-th try of ``step`` runs on, once its command started."""
    wait_until(
        lambda: (
            len(nodes_in(step_lines(events, step))) >= tries
            and step_lines(events, step).count("started") >= tries
        ),
        timeout=60,
        what=f"try {tries} of {step} to start",
    )
    ip = nodes_in(step_lines(events, step))[tries - 1]
    return next(n for n in cluster.workers if n.ip == ip)


class Going:
    """A run going on in a thread; ``result()`` waits for it."""

    def __init__(self, thread: threading.Thread, results: list[RunResult], timeout: float):
        self.thread, self.results, self.timeout = thread, results, timeout

    def result(self) -> RunResult:
        self.thread.join(self.timeout)
        assert not self.thread.is_alive(), "the run did not finish"
        return self.results[0]


def finish(the_run: Run, timeout: float = 90) -> Going:
    """Start ``the_run`` in a thread."""
    results: list[RunResult] = []
    thread = threading.Thread(target=lambda: results.append(the_run.execute()), daemon=True)
    thread.start()
    return Going(thread, results, timeout)


def sleeping(marker: str) -> list[int]:
    """Pids of live processes whose command line holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_cancel_reaches_the_remote_process(on_ray: RayCluster, store: Store, project: Path) -> None:
    write_pipeline(
        project,
        '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo started; sleep 61.25", label="s")\n',
    )
    the_run, events = run_events(store, project)
    going = finish(the_run)
    running_on(events, "s", on_ray, 1)
    assert sleeping("61.25")
    began = time.monotonic()
    the_run.cancel()
    result = going.result()
    assert result.status == "cancelled"
    assert result.steps["s"].exit_code == 130
    assert time.monotonic() - began < 8
    wait_until(lambda: not sleeping("61.25"), timeout=10, what="the remote sleep to end")


def test_ctrl_c_reaches_the_remote_process_and_exits_130(on_ray: RayCluster, project: Path) -> None:
    write_pipeline(
        project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo started; sleep 62.5", label="s")\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "greenloop", "run", "--executor", "ray", "--format", "plain"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "GREENLOOP_NO_DAEMON": "1"},
    )
    try:
        wait_until(lambda: bool(sleeping("62.5")), timeout=60, what="the step to start")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "cancelled" in out
    wait_until(lambda: not sleeping("62.5"), timeout=10, what="the remote sleep to end")


KILLED = """
@gl.pipeline("ci")
def ci():
    gl.sh("echo started; sleep 3; echo done > out.txt", label="victim",
          cache=gl.forever(), artifacts=["out.txt"])
"""


def test_a_node_killed_mid_step_is_retried_on_another_node(
    on_ray: RayCluster, store: Store, project: Path
) -> None:
    write_pipeline(project, KILLED)
    the_run, events = run_events(store, project)
    going = finish(the_run)
    first = running_on(events, "victim", on_ray, 1)
    first.kill()
    try:
        result = going.result()
        outcome = result.steps["victim"]
        assert result.status == "passed", (outcome.error, step_lines(events, "victim"))
        second = nodes_in(step_lines(events, "victim"))
        assert len(second) == 2 and second[1] != first.ip, second
        [artifact] = result.steps["victim"].artifacts
        assert store.read_bytes(artifact.key) == b"done\n"
        # One entry, from the try that finished.
        assert [e.key for e in store.index.entries()] == [result.steps["victim"].cache_key]
    finally:
        on_ray.add(first)


def test_a_step_whose_retry_is_lost_too_fails_with_the_reason(
    on_ray: RayCluster, store: Store, project: Path
) -> None:
    write_pipeline(project, KILLED)
    the_run, events = run_events(store, project)
    going = finish(the_run)
    killed = []
    try:
        for tries in (1, 2):
            node = running_on(events, "victim", on_ray, tries)
            node.kill()
            killed.append(node)
        result = going.result()
        outcome = result.steps["victim"]
        assert outcome.status == "failed"
        assert "the node running the step was lost" in (outcome.error or ""), outcome.error
        assert store.index.entries() == []  # nothing cached from a half-finished step
    finally:
        for node in killed:
            on_ray.add(node)


CHAINED_IMAGES = f"""
@gl.pipeline("ci", default_image={IMAGE!r})
def ci():
    base = gl.sh("echo base > b.txt", label="base", cache=gl.forever())
    base.sh("cat b.txt", label="child")
"""


def test_ray_docker_pins_a_chain_to_its_parents_node_and_rebuilds_a_lost_one(
    on_ray: RayCluster, store: Store, project: Path
) -> None:
    ensure_image(docker_client())  # skips without a Docker engine
    write_pipeline(project, CHAINED_IMAGES)
    try:
        the_run, events = run_events(store, project, executor="ray-docker")
        first = the_run.execute()
        assert first.status == "passed", first.steps
        [where] = nodes_in(step_lines(events, "base"))
        # The child boots from an image only that node's engine holds.
        assert nodes_in(step_lines(events, "child")) == [where]
        node = next(n for n in on_ray.workers if n.ip == where)
        node.kill()
        on_ray.add(node)  # back, as a new node: the image's node has left the cluster
        the_run, events = run_events(store, project, executor="ray-docker")
        second = the_run.execute()
        assert {k: o.status for k, o in second.steps.items()} == {
            "base": "passed",
            "child": "passed",
        }, second.steps
        assert "base" in step_lines(events, "child")
    finally:
        forget_docker_snapshots(store)
