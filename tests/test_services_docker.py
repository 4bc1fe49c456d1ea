"""Services under the docker executor: a busybox ``httpd`` container on the run's network,
on Docker and on rootless Podman's Docker API.

Skipped without an engine, as the executor suite is (unless GREENLOOP_REQUIRE_DOCKER=1
or GREENLOOP_REQUIRE_PODMAN=1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from greenloop.store import Store
from tests.conftest import cli, write_pipeline
from tests.docker_image import IMAGE
from tests.test_docker import _client
from tests.test_executor_suite import use_executor
from tests.test_run import logs, run, statuses


@pytest.fixture(params=["docker", "docker+podman"])
def client(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client of the engine under test, whose DOCKER_HOST the run uses too."""
    use_executor(request.param, tmp_path, monkeypatch)
    return _client()


def services_left(client: Any) -> list[Any]:
    return client.containers.list(all=True, filters={"label": "greenloop.service"})


def networks_left(client: Any, run_id: str) -> list[Any]:
    return client.networks.list(names=[f"greenloop-{run_id.replace('-', '')[:12]}"])


def test_a_step_container_reaches_the_service_by_name(
    client: Any,
    store: Store,
    project: Path,
) -> None:
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci", default_image="{IMAGE}", executor="docker")
        def ci():
            web = gl.service("web", image="{IMAGE}", ports=[8080],
                             run="sh -c 'echo hello from web > /tmp/index.html && "
                                 "exec httpd -f -p 8080 -h /tmp'",
                             ready="wget -q -O- http://{{host}}:{{port}}/")
            gl.sh('echo "$WEB_HOST:$WEB_PORT"; wget -q -O- "http://$WEB_HOST:$WEB_PORT/"',
                  label="fetch", services=[web])
            gl.sh("exit 1", label="breaks", services=[web])
        """,
    )
    result, events = run(store, project, jobs=1)
    assert statuses(result) == {"fetch": "passed", "breaks": "failed"}, logs(events, "fetch")
    assert logs(events, "fetch") == ["web:8080", "hello from web"]
    assert services_left(client) == []
    assert networks_left(client, str(result.run_id)) == []


def test_a_container_service_that_never_gets_ready_fails_with_its_log(
    client: Any,
    store: Store,
    project: Path,
) -> None:
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci", default_image="{IMAGE}", executor="docker")
        def ci():
            web = gl.service("web", image="{IMAGE}", ports=[8080], ready_timeout=1,
                             run="sh -c 'echo listening nowhere; exec sleep 600'",
                             ready="wget -q -O- http://{{host}}:{{port}}/")
            gl.sh("true", label="fetch", services=[web])
        """,
    )
    result, _ = run(store, project)
    error = result.steps["fetch"].error or ""
    assert "service 'web' was not ready after 1s" in error and "listening nowhere" in error
    assert services_left(client) == []
    assert networks_left(client, str(result.run_id)) == []


def test_a_run_only_service_for_a_docker_step_is_an_error(client: Any, project: Path) -> None:
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci", default_image="{IMAGE}", executor="docker")
        def ci():
            db = gl.service("db", run="postgres", ready="true")
            gl.sh("true", label="t", services=[db])
        """,
    )
    done = cli("run", cwd=project)
    assert done.returncode == 2, done.stderr
    assert "service 'db' has no image=...: the docker executor runs services" in done.stderr


def test_a_cached_step_reruns_when_its_service_image_tag_moves(
    client: Any, store: Store, project: Path
) -> None:
    from tests.test_docker import MOVING, move_the_tag, moving_tag

    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci", default_image="{IMAGE}", executor="docker")
        def ci():
            web = gl.service("web", image="{MOVING}", ports=[8080],
                             run="sh -c 'cat /version > /tmp/index.html 2>/dev/null || "
                                 "echo none > /tmp/index.html; exec httpd -f -p 8080 -h /tmp'",
                             ready="wget -q -O- http://{{host}}:{{port}}/")
            gl.sh('wget -q -O- "http://$WEB_HOST:$WEB_PORT/"', label="fetch", services=[web],
                  cache=gl.forever())
        """,
    )
    with moving_tag(client):
        first, events = run(store, project)
        assert statuses(first) == {"fetch": "passed"} and logs(events, "fetch") == ["none"]
        assert statuses(run(store, project)[0]) == {"fetch": "cached"}
        # The service's image built again under its tag: the step's answer may differ.
        move_the_tag(client)
        moved, events = run(store, project)
        assert statuses(moved) == {"fetch": "passed"} and logs(events, "fetch") == ["v2"]
        assert statuses(run(store, project)[0]) == {"fetch": "cached"}
