"""Secrets: a step reads them from its env; their values appear nowhere greenloop writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from greenloop.store import Store
from tests.conftest import cli, write_pipeline
from tests.docker_image import IMAGE
from tests.test_docker import client  # noqa: F401  (the docker fixture)

VALUE = "s3cr3t-Tok3n-9f8e7d"
PIPELINE = """
@gl.pipeline("ci"{extra})
def ci():
    use = gl.sh("echo token=$TOKEN; printf '%s' \\"$TOKEN\\" | wc -c; echo $TOKEN >&2",
                label="use", env={{"TOKEN": gl.secret("API_TOKEN")}}, cache=gl.forever())
    use.sh("echo child=$TOKEN", label="child")
    gl.sh("echo plain=${{API_TOKEN:-unset}}", label="plain")
"""


def _events(result: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def _lines(events: list[dict[str, Any]], step: str) -> list[str]:
    return [e["line"] for e in events if e["type"] == "step_log" and e["step"] == step]


def _grep_tree(folder: Path, needle: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_secret_reaches_its_step_and_nothing_else(project: Path, tmp_path: Path) -> None:
    write_pipeline(project, PIPELINE.format(extra=""))
    env = {"API_TOKEN": VALUE}
    result = cli("run", "--json", cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    events = _events(result)
    # stdout and stderr lines may interleave either way.
    assert sorted(_lines(events, "use")) == sorted(["token=***", f"{len(VALUE)}", "***"])
    assert _lines(events, "child") == ["child=***"]  # a chained step reads it too
    # Only declared steps see it: the caller's variable is not passed through.
    assert _lines(events, "plain") == ["plain=unset"]
    plain = cli("run", "--format", "plain", cwd=project, env=env)
    rendered = cli("render", cwd=project, env=env)
    runs = cli("runs", "--json", cwd=project)
    run_id = json.loads(runs.stdout)[0]["run_id"]
    history = cli("runs", "--run", run_id, "--json", cwd=project)
    logs = cli("logs", "use", cwd=project)
    explained = cli("explain", "--json", cwd=project, env=env)
    assert sorted(logs.stdout.splitlines()) == ["19", "[stderr] ***", "token=***"]
    for output in (result, plain, rendered, runs, history, logs, explained):
        assert VALUE not in output.stdout + output.stderr
    assert '"name": "API_TOKEN"' in rendered.stdout
    # The store: objects, snapshots, the index (cache entries, history, logs).
    assert _grep_tree(tmp_path / "cache", VALUE.encode()) == []


def test_the_key_holds_the_name_not_the_value(project: Path) -> None:
    write_pipeline(project, PIPELINE.format(extra=""))
    assert cli("run", cwd=project, env={"API_TOKEN": VALUE}).returncode == 0
    other = cli("run", "--json", cwd=project, env={"API_TOKEN": "another-value"})
    finished = {e["step"]: e["status"] for e in _events(other) if e["type"] == "step_finished"}
    assert finished["use"] == "cached"


def test_secrets_from_a_file_or_another_variable(project: Path, tmp_path: Path) -> None:
    write_pipeline(project, PIPELINE.format(extra=""))
    (tmp_path / "token").write_text(VALUE + "\n")
    from_file = cli("run", "--json", "--secret", f"API_TOKEN=@{tmp_path / 'token'}", cwd=project)
    assert from_file.returncode == 0, from_file.stderr
    assert _lines(_events(from_file), "child") == ["child=***"]
    assert VALUE not in from_file.stdout
    from_var = cli(
        "run", "--json", "--secret-env", "API_TOKEN=MY_VAR", cwd=project, env={"MY_VAR": VALUE}
    )
    assert from_var.returncode == 0 and _lines(_events(from_var), "child") == ["child=***"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {}, "secret not given: API_TOKEN (read by use, child)"),
        (("--secret", "API_TOKEN=inline"), {}, "expected NAME=@FILE"),
        (("--secret", "API_TOKEN=@/no/such/file"), {}, "cannot read /no/such/file"),
        (("--secret-env", "API_TOKEN=NOPE_NOT_SET"), {}, "the variable NOPE_NOT_SET is not set"),
    ],
)
def test_a_missing_secret_is_exit_2_before_anything_runs(
    project: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    write_pipeline(project, PIPELINE.format(extra=""))
    result = cli("run", *args, cwd=project, env=env)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
    assert json.loads(cli("runs", "--json", cwd=project).stdout) == []


def test_a_bad_secret_name_names_its_line(project: Path) -> None:
    path = write_pipeline(
        project,
        '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true", env={"A": gl.secret("not a name")})\n',
    )
    result = cli("render", cwd=project)
    assert result.returncode == 2
    assert f"{path.resolve()}:5: ValueError: secret name 'not a name'" in result.stderr


def test_a_secret_in_a_container(client: Any, project: Path, tmp_path: Path) -> None:  # noqa: F811
    write_pipeline(project, PIPELINE.format(extra=f', default_image="{IMAGE}", executor="docker"'))
    result = cli("run", "--json", cwd=project, env={"API_TOKEN": VALUE})
    assert result.returncode == 0, result.stdout + result.stderr
    events = _events(result)
    # stdout and stderr lines may interleave either way.
    assert sorted(_lines(events, "use")) == sorted(["token=***", f"{len(VALUE)}", "***"])
    assert _lines(events, "child") == ["child=***"]
    assert VALUE not in result.stdout
    with Store.open(tmp_path / "cache") as store:
        snapshots = [entry.snapshot for entry in store.index.entries()]
    assert snapshots
    for tag in snapshots:
        config = client.api.inspect_image(tag)["Config"]
        assert "TOKEN=" in config["Env"]  # blanked when committed
        assert all(VALUE not in item for item in config["Env"])


FILE_PIPELINE = """
@gl.pipeline("ci"{extra})
def ci():
    gl.sh(
        'printf "%s" "$KEY" | cmp - "$KEY_FILE" && echo same; echo "file=$KEY_FILE"; '
        'ls -l "$KEY_FILE" | cut -c1-10; cat "$KEY_FILE"; echo; '
        'case "$KEY_FILE" in "$PWD"/*) echo inside;; *) echo outside;; esac',
        label="use",
        env={{"KEY_FILE": gl.secret_file("API_TOKEN"), "KEY": gl.secret("API_TOKEN")}},
    )
"""
"""A step that reads a secret from a file and compares it with the same secret from its env."""


@pytest.mark.parametrize("executor", ["local+none", "local+bwrap", "docker", "docker+podman"])
def test_a_secret_file_holds_the_value_outside_the_tree(
    executor: str, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_executor_suite import forget_docker_snapshots, use_executor

    use_executor(executor, tmp_path, monkeypatch)
    mode = executor.partition("+")[2]
    extra = (
        f', default_image="{IMAGE}", executor="docker"'
        if executor.startswith("docker")
        else f', sandbox="{mode}"'
    )
    write_pipeline(project, FILE_PIPELINE.format(extra=extra))
    value = VALUE + "\nsecond line\n"
    result = cli("run", "--json", cwd=project, env={"API_TOKEN": value})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = _lines(_events(result), "use")
    assert lines[0] == "same"  # byte for byte, trailing newline included
    where = lines[1].removeprefix("file=")
    if mode != "none":
        assert where == "/run/secrets/KEY_FILE"
    assert lines[2:] == ["-r--------", "***", "***", "", "outside"]
    assert VALUE not in result.stdout + result.stderr
    with Store.open(tmp_path / "cache") as store:
        if executor.startswith("docker"):
            import docker

            engine = docker.from_env()
            for entry in store.index.entries():
                seen = engine.containers.run(
                    entry.snapshot,
                    ["sh", "-c", "cat /run/secrets/KEY_FILE; env"],
                    entrypoint=[],
                    remove=True,
                    stderr=True,
                )
                assert VALUE.encode() not in seen
            forget_docker_snapshots(store)
    # Nothing greenloop keeps holds it: objects, snapshots, history, logs.
    assert _grep_tree(tmp_path / "cache", VALUE.encode()) == []
    if mode == "none":
        assert not Path(where).exists()  # gone with the step


def test_a_service_cannot_take_a_secret_file(project: Path) -> None:
    path = write_pipeline(
        project,
        '@gl.pipeline("ci")\ndef ci():\n'
        '    gl.service("db", run="sleep 9", ready="true", env={"K": gl.secret_file("K")})\n',
    )
    result = cli("render", cwd=project)
    assert result.returncode == 2
    assert f"{path.resolve()}:5" in result.stderr
    assert "env['K'] is a secret file, which only steps get; use gl.secret('K')" in result.stderr
