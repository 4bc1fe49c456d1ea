"""The pipeline DSL and its compilation to IR."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from greenloop.protocol import IR_VERSION, IRDocument, OnChange
from greenloop.sdk.loader import PipelineFileError, load
from tests.conftest import cli, write_pipeline


def test_chain_fork_wait_compile_to_edges(project: Path) -> None:
    path = write_pipeline(
        project,
        """
        @gl.pipeline("ci", env={"A": "1"}, default_image="busybox")
        def ci():
            deps = gl.sh("make deps", label="deps", cache=gl.on_change("*.lock"))
            lint = deps.fork("lint").sh("make lint", label="run")
            test = deps.sh("make test", label="test", env={"B": "2"}, timeout=5)
            gl.wait(lint, test).sh("echo done", label="report", artifacts=["out"])
        """,
    )
    document = load(path)
    assert document.version == IR_VERSION
    ci = document.pipeline("ci")
    assert ci.env == {"A": "1"}
    deps, lint, test, report = ci.steps
    assert (deps.key, lint.key, test.key, report.key) == ("deps", "lint.run", "test", "report")
    assert deps.image == "busybox" and deps.builds_in is None
    assert lint.builds_in == "deps" and test.builds_in == "deps" and lint.image is None
    assert report.builds_in is None and sorted(report.depends_on) == ["lint.run", "test"]
    assert isinstance(deps.cache, OnChange) and deps.cache.globs == ["*.lock"]
    assert test.timeout_seconds == 5 and test.env == {"B": "2"}
    assert report.artifacts == ["out"]


def test_keys_are_stable_across_unrelated_edits(project: Path) -> None:
    body = """
        @gl.pipeline("ci")
        def ci():
            a = gl.sh("echo a")
            {extra}
            a.sh("echo b")
        """
    before = load(write_pipeline(project, body.format(extra="")))
    after = load(write_pipeline(project, body.format(extra='gl.sh("echo new", label="new")')))
    keys_before = [s.key for s in before.pipeline("ci").steps]
    keys_after = [s.key for s in after.pipeline("ci").steps if s.label != "new"]
    assert keys_before == keys_after


def test_ir_round_trips_and_rejects_unknown_fields_and_versions(project: Path) -> None:
    document = load(write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true")\n'))
    raw = json.loads(document.model_dump_json())
    assert IRDocument.model_validate(raw) == document
    raw["pipelines"][0]["steps"][0]["colour"] = "red"
    with pytest.raises(ValidationError, match="colour"):
        IRDocument.model_validate(raw)
    with pytest.raises(ValidationError, match="unsupported IR version 99"):
        IRDocument.model_validate({"version": 99, "pipelines": []})


def test_ir_rejects_cycles_and_dangling_edges() -> None:
    steps = [
        {"key": "a", "label": "a", "command": "x", "depends_on": ["b"]},
        {"key": "b", "label": "b", "command": "x", "builds_in": "a"},
    ]
    with pytest.raises(ValidationError, match="cycle"):
        IRDocument.model_validate({"pipelines": [{"name": "p", "steps": steps}]})
    dangling = [{"key": "a", "label": "a", "command": "x", "builds_in": "zz"}]
    with pytest.raises(ValidationError, match="unknown step 'zz'"):
        IRDocument.model_validate({"pipelines": [{"name": "p", "steps": dangling}]})


@pytest.mark.parametrize(
    ("body", "line", "text"),
    [
        ("import no_such_module_here\n", 3, "ModuleNotFoundError"),
        ('@gl.pipeline("ci")\ndef ci():\n    raise RuntimeError("boom")\n', 5, "boom"),
        ('@gl.pipeline("ci")\ndef ci(:\n', 4, "syntax error"),
        (
            '@gl.pipeline("ci")\ndef ci():\n    a = gl.sh("a", label="a")\n'
            '    b = a.sh("b", label="b")\n    a.after(b)\n',
            7,
            "cycle",
        ),
        ('@gl.pipeline("ci")\ndef ci():\n    gl.sh("")\n', 5, "non-empty"),
        (
            '@gl.pipeline("ci")\ndef ci():\n    gl.sh("a", key="x")\n    gl.sh("b", key="x")\n',
            6,
            "duplicate step key",
        ),
    ],
)
def test_broken_pipeline_files_name_file_and_line(
    project: Path, body: str, line: int, text: str
) -> None:
    path = write_pipeline(project, body)
    with pytest.raises(PipelineFileError) as err:
        load(path)
    assert err.value.where == f"{path.resolve()}:{line}"
    assert text in err.value.message


@pytest.mark.parametrize(
    ("ending", "line", "text"),
    [
        ("    raise SystemExit(0)\n", 6, "called sys.exit(0)"),
        ("    import sys\n    sys.exit()\n", 7, "called sys.exit(None)"),
        (
            "    import os\n    os._exit(0)\n",
            None,
            "ended the process that loads it (exit status 0)",
        ),
        (
            "    import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)\n",
            None,
            "(signal 9)",
        ),
    ],
)
def test_a_pipeline_file_that_exits_is_an_error_not_an_empty_success(
    project: Path, ending: str, line: int | None, text: str
) -> None:
    # Regression: `raise SystemExit(0)` made run, render and pipelines exit 0 with
    # no step run.
    path = write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("false")\n' + ending)
    with pytest.raises(PipelineFileError) as err:
        load(path)
    assert err.value.where == (f"{path.resolve()}:{line}" if line else str(path.resolve()))
    assert text in err.value.message


def test_what_a_pipeline_file_does_stays_in_its_loader(project: Path) -> None:
    path = write_pipeline(
        project,
        "import os\nos.chdir('/')\ngl.injected = True\n"
        '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true")\n',
    )
    here = Path.cwd()
    assert load(path).pipeline("ci").steps[0].command == "true"
    import greenloop as gl

    assert Path.cwd() == here and not hasattr(gl, "injected")


def test_file_without_pipelines_is_an_error(project: Path) -> None:
    with pytest.raises(PipelineFileError, match="no pipelines"):
        load(write_pipeline(project, "x = 1\n"))


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_toolchain_steps_find_what_the_install_put_on_path(project: Path, sandbox: str) -> None:
    # A real venv: `python` on PATH must be the venv's (pyright --verifytypes, tox and
    # friends look themselves up that way), and an npm-installed binary must run by name.
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci", sandbox="{sandbox}")
        def ci():
            venv = gl.python.install(command="python3 -m venv .venv")
            gl.python.test(venv, command="echo prefix=$(python -c 'import sys; print(sys.prefix)')")
            npm = gl.node.install(
                command="mkdir -p node_modules/.bin && printf '#!/bin/sh\\necho hi from bin\\n'"
                " > node_modules/.bin/hello && chmod +x node_modules/.bin/hello"
            )
            gl.node.lint(npm, command="hello")
        """,
    )
    done = cli("run", "--format", "plain", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    prefix = next(line for line in done.stdout.splitlines() if "prefix=" in line)
    assert prefix.rstrip().endswith("/.venv"), prefix
    assert "hi from bin" in done.stdout


def test_toolchains_cache_installs_on_their_lock_files(project: Path) -> None:
    path = write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            for tc in (gl.python, gl.rust, gl.node):
                deps = tc.install()
                tc.lint(deps)
                tc.test(deps)
                tc.build(deps)
        """,
    )
    steps = load(path).pipeline("ci").steps
    installs = [s for s in steps if s.key.endswith("-install")]
    assert [s.key for s in installs] == ["python-install", "rust-install", "node-install"]
    assert all(isinstance(s.cache, OnChange) for s in installs)
    rust_install = installs[1]
    assert isinstance(rust_install.cache, OnChange) and "Cargo.lock" in rust_install.cache.globs
    assert {s.builds_in for s in steps if not s.key.endswith("-install")} == {
        s.key for s in installs
    }


def test_resources_reach_the_ir_and_stay_out_of_the_cache_key(project: Path) -> None:
    from greenloop.engine.keys import step_key

    body = '@gl.pipeline("ci")\ndef ci():\n    gl.sh("make", label="build"{extra})\n'
    plain = load(write_pipeline(project, body.format(extra=""))).pipeline("ci")
    wide = load(
        write_pipeline(project, body.format(extra=', resources={"cpu": 4, "big-box": 1}'))
    ).pipeline("ci")
    [step], [asking] = plain.steps, wide.steps
    assert step.resources == {} and asking.resources == {"cpu": 4.0, "big-box": 1.0}
    # Where a step runs never changes what it makes: the same key either way.
    assert step_key(step, plain, "ray", None, {}) == step_key(asking, wide, "ray", None, {})
    with pytest.raises(PipelineFileError, match="resource 'cpu' must be a finite amount"):
        load(write_pipeline(project, body.format(extra=', resources={"cpu": -1}')))
