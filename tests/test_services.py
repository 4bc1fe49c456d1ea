"""Services under the local executor: real servers started for the steps that name them.

PostgreSQL from Debian's package (a step's test suite queries it with ``psql``),
Python's ``http.server``, and small processes whose command line carries a
token, so that the test can see in ``/proc`` whether a service is still alive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from greenloop.store import Store
from tests.conftest import cli, write_pipeline
from tests.test_executor_suite import use_executor
from tests.test_run import logs, run, statuses

# Debian's postgresql package keeps its servers off PATH, one folder a major version.
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), default=Path("/nonexistent"))


def alive(token: str) -> bool:
    """Whether any process has ``token`` in its command line."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if token.encode() in (proc / "cmdline").read_bytes():
                    return True
            except OSError:
                continue
    return False


def sleeper(token: str) -> str:
    """A service command that is ready once it wrote ``{dir}/up`` and then just lives."""
    return f"echo booting; touch {{dir}}/up; exec python3 -c 'import time; time.sleep(600)' {token}"


@pytest.mark.skipif(
    not (PG_BIN / "postgres").exists(), reason="Debian's postgresql is not installed"
)
def test_postgres_service_answers_a_step_test_suite(store: Store, project: Path) -> None:
    # PostgreSQL refuses to run as root: as root the service hands its folder to the
    # postgres user and runs the server as that user.
    drop = "chown postgres {dir} && exec runuser -u postgres -- " if os.geteuid() == 0 else "exec "
    server = (
        f"{PG_BIN}/initdb -D {{dir}}/data -A trust -U postgres >/dev/null && "
        f"exec {PG_BIN}/postgres -D {{dir}}/data -p {{port}} -k {{dir}} -h 127.0.0.1"
    )
    suite = (
        'psql -v ON_ERROR_STOP=1 -h "$DB_HOST" -p "$DB_PORT" -U postgres -Atc '
        "'create table t (x int); insert into t values (1), (2), (40); select sum(x) from t' "
        '| grep -qx 43 && echo "test_sum passed"; '
        'psql -h "$DB_HOST" -p "$DB_PORT" -U postgres -Atc "select current_user" '
        '| grep -qx postgres && echo "test_user passed"'
    )
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci")
        def ci():
            db = gl.service("db", run={drop + f"sh -c '{server}'"!r},
                            ready="pg_isready -q -h {{host}} -p {{port}}")
            gl.sh({suite!r}, label="tests", services=[db])
        """,
    )
    result, events = run(store, project)
    assert statuses(result) == {"tests": "passed"}, result.steps["tests"].error
    assert logs(events, "tests") == ["test_sum passed", "test_user passed"]
    assert not alive(f"{PG_BIN}/postgres -D /"), "postgres still runs after the run"


def test_env_names_the_service_and_it_stops_after_its_last_step(
    store: Store, project: Path, tmp_path: Path
) -> None:
    token = uuid.uuid4().hex
    pid_file = tmp_path / "web.pid"
    served = tmp_path / token  # the server's command line carries it
    served.mkdir()
    (served / "index.html").write_text("hello from web\n")
    fetch = (
        "python3 -c 'import os, urllib.request; print(urllib.request.urlopen("
        '"http://%s:%s/" % (os.environ["WEB_HOST"], os.environ["WEB_PORT"]))'
        ".read().decode().strip())'"
    )
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci")
        def ci():
            web = gl.service(
                "web",
                run="echo $$ > {pid_file}; exec python3 -m http.server {{port}} "
                    "--bind 127.0.0.1 --directory {served}",
                ready="python3 -c 'import urllib.request; "
                      "urllib.request.urlopen(\\"http://{{host}}:{{port}}/\\")'",
            )
            first = gl.sh({fetch!r}, label="first", services=[web])
            second = first.sh({fetch!r}, label="second", services=["web"])
            # Reads the pid file outside its workspace: no sandbox.
            second.sh("! kill -0 $(cat {pid_file})", label="after", sandbox="none")
        """,
    )
    result, events = run(store, project)
    assert statuses(result) == {"first": "passed", "second": "passed", "after": "passed"}, {
        k: o.error for k, o in result.steps.items()
    }
    assert logs(events, "first") == ["hello from web"]
    assert logs(events, "second") == ["hello from web"]
    assert not alive(token)


def test_a_cached_step_starts_no_service_and_the_definition_is_keyed(
    store: Store, project: Path, tmp_path: Path
) -> None:
    started = tmp_path / "started"

    def pipeline(ready: str) -> str:
        return f"""
        @gl.pipeline("ci")
        def ci():
            svc = gl.service("svc", run="echo run >> {started}; {sleeper("k" + uuid.uuid4().hex)}",
                             ready={ready!r})
            gl.sh("echo $SVC_HOST", label="uses", services=[svc], cache=gl.forever())
        """

    write_pipeline(project, pipeline("test -f {dir}/up"))
    first, _ = run(store, project)
    second, _ = run(store, project)
    assert statuses(first) == {"uses": "passed"}
    assert statuses(second) == {"uses": "cached"}
    assert started.read_text() == "run\n"  # the cached run never started it
    # A different definition is a different key; the port picked is not part of it.
    write_pipeline(project, pipeline("test -e {dir}/up"))
    explained = cli("explain", "ci", "uses", "--json", cwd=project)
    assert explained.returncode == 0, explained.stderr
    (step,) = json.loads(explained.stdout)
    assert step["outcome"] == "miss" and "services" in step["changed"], step
    third, _ = run(store, project)
    assert statuses(third) == {"uses": "passed"}
    assert started.read_text() == "run\nrun\n"


def test_a_service_that_never_gets_ready_fails_its_steps_with_its_log(
    store: Store, project: Path
) -> None:
    token = uuid.uuid4().hex
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci")
        def ci():
            db = gl.service("db", run="echo 'FATAL: no such role'; "
                                      "exec python3 -c 'import time; time.sleep(600)' {token}",
                            ready="echo not yet; false", ready_timeout=1)
            gl.sh("echo never", label="a", services=[db])
            gl.sh("echo never", label="b", services=[db])
            gl.sh("echo fine", label="c")
        """,
    )
    result, events = run(store, project, jobs=1)
    assert statuses(result) == {"a": "failed", "b": "failed", "c": "passed"}
    for key in ("a", "b"):
        error = result.steps[key].error or ""
        assert "service 'db' was not ready after 1s" in error
        assert "FATAL: no such role" in error and "not yet" in error
        assert logs(events, key) == []
    assert not alive(token)


def test_a_service_that_exits_fails_its_step_with_its_exit_code(
    store: Store, project: Path
) -> None:
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            db = gl.service("db", run="echo cannot bind >&2; exit 3", ready="false")
            gl.sh("echo never", label="a", services=[db])
        """,
    )
    result, _ = run(store, project)
    error = result.steps["a"].error or ""
    assert "exited with code 3 before it was ready" in error and "cannot bind" in error


def test_failure_and_fail_fast_stop_the_service(store: Store, project: Path) -> None:
    token = uuid.uuid4().hex
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci")
        def ci():
            svc = gl.service("svc", run={sleeper(token)!r}, ready="test -f {{dir}}/up")
            gl.sh("sleep 600", label="long", services=[svc])
            gl.sh("sleep 1; exit 1", label="breaks")
        """,
    )
    result, _ = run(store, project, jobs=2, fail_fast=True)
    assert statuses(result) == {"long": "cancelled", "breaks": "failed"}
    assert not alive(token)


def test_ctrl_c_stops_the_service_and_exits_130(project: Path, tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    marker = tmp_path / "step-started"
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci")
        def ci():
            svc = gl.service("svc", run={sleeper(token)!r}, ready="test -f {{dir}}/up")
            # Touches a file outside its workspace for the test to see: no sandbox.
            gl.sh("touch {marker}; sleep 600", label="slow", services=[svc], sandbox="none")
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "greenloop", "run", "--format", "plain"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not marker.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert alive(token)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert not alive(token)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('gl.service("db", run="x")', "service 'db' needs ready=..."),
        ('gl.service("db", ready="true")', "service 'db' needs run=... (local executor) or image="),
        ('gl.service("DB!", run="x", ready="true")', "service name 'DB!' must be lower-case"),
        ('gl.sh("true", services=["db"])', "step names undeclared service 'db'"),
        ('gl.sh("true", services=[3])', "services= takes gl.service(...) handles or names"),
        (
            'gl.sh("true", services=[gl.service("db", run="a", ready="true")]);'
            ' gl.service("db", run="b", ready="true")',
            "service 'db' is declared twice, differently",
        ),
    ],
)
def test_bad_service_definitions_exit_2_naming_the_line(
    project: Path, body: str, message: str
) -> None:
    write_pipeline(project, f'@gl.pipeline("ci")\ndef ci():\n    gl.sh("true")\n    {body}\n')
    done = cli("run", cwd=project)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "pipeline.py:6: " in done.stderr


def test_a_service_for_a_step_without_network_is_an_error(project: Path) -> None:
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            db = gl.service("db", run="sleep 60", ready="true")
            gl.sh("true", label="t", services=[db], sandbox=gl.sandbox("bwrap", network=False))
        """,
    )
    done = cli("run", cwd=project)
    assert done.returncode == 2, done.stderr
    assert "step 't' names service(s) db but its sandbox has no network" in done.stderr


def test_render_carries_services_and_older_ir_reads(project: Path) -> None:
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            gl.sh("true", services=[gl.service("db", run="x -p {port}", ready="true")])
        """,
    )
    done = cli("render", cwd=project)
    document = json.loads(done.stdout)
    (pipeline,) = document["pipelines"]
    assert pipeline["services"][0]["run"] == "x -p {port}"
    assert pipeline["steps"][0]["services"] == ["db"]
    from greenloop.protocol.ir import parse_document

    del pipeline["services"], pipeline["steps"][0]["services"]
    assert parse_document(json.dumps(document)).pipelines[0].services == []


def test_the_pipeline_timeout_stops_the_service(store: Store, project: Path) -> None:
    token = uuid.uuid4().hex
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci", timeout=2)
        def ci():
            svc = gl.service("svc", run={sleeper(token)!r}, ready="test -f {{dir}}/up")
            gl.sh("sleep 600", label="long", services=[svc])
        """,
    )
    result, _ = run(store, project)
    assert result.timed_out and statuses(result) == {"long": "cancelled"}
    assert not alive(token)


def test_a_plugin_executor_step_gets_the_host_service_in_its_env(
    store: Store, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_executor("echo", tmp_path, monkeypatch)
    served = tmp_path / "served"
    served.mkdir()
    (served / "index.html").write_text("hello from web\n")
    fetch = (
        "python3 -c 'import os, urllib.request; print(urllib.request.urlopen("
        '"http://%s:%s/" % (os.environ["WEB_HOST"], os.environ["WEB_PORT"]))'
        ".read().decode().strip())'"
    )
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci", executor="echo")
        def ci():
            web = gl.service(
                "web",
                run="exec python3 -m http.server {{port}} --bind 127.0.0.1 --directory {served}",
                ready="python3 -c 'import urllib.request; "
                      "urllib.request.urlopen(\\"http://{{host}}:{{port}}/\\")'",
            )
            gl.sh({fetch!r}, label="fetch", services=[web])
        """,
    )
    result, events = run(store, project)
    assert statuses(result) == {"fetch": "passed"}, result.steps["fetch"].error
    assert "hello from web" in logs(events, "fetch")  # among the plugin's own lines


def test_an_image_only_service_for_a_local_step_is_an_error(project: Path) -> None:
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            web = gl.service("web", image="busybox", ports=[80], ready="true")
            gl.sh("true", label="t", services=[web])
        """,
    )
    done = cli("run", cwd=project)
    assert done.returncode == 2, done.stderr
    assert "service 'web' (step 't') has no run=... command, and the local executor" in done.stderr
