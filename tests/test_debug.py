"""``greenloop debug STEP`` and ``run --shell-on-failure``: a shell, in a real terminal (tmux),
in the filesystem a failed step left."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from greenloop.engine.debug import kept_as
from greenloop.store import Store
from tests.conftest import cli, wait_until, write_pipeline
from tests.docker_image import IMAGE
from tests.test_docker import client  # noqa: F401  (the docker fixture)
from tests.test_live import Terminal
from tests.test_live import terminal as terminal

GREENLOOP = f"{shlex.quote(sys.executable)} -m greenloop"
PIPELINE = """
@gl.pipeline("ci", env={{"MODE": "debugging"}}{extra})
def ci():
    base = gl.sh("mkdir -p lib && echo from-parent > lib/x", label="base", cache=gl.forever())
    base.sh("echo made-by-step > made.txt; exit 3", label="bad")
"""


def _in_the_shell(terminal: Terminal, command: str, project: Path) -> str:
    """Start ``command`` (which opens the shell), look around in it, leave with exit 7."""
    terminal.start(command, project)
    wait_until(lambda: "exit to leave" in terminal.screen(), what="the debug shell")
    terminal.send("cat made.txt lib/x src.txt; echo mode=$MODE; pwd; exit 7")
    wait_until(lambda: "EXIT=" in terminal.screen(), what="the shell to end")
    return terminal.screen()


def _looked_around(screen: str, workdir: str = "\n/workspace\n", code: int = 7) -> None:
    for seen in ("made-by-step", "from-parent", "the source", "mode=debugging", f"EXIT={code}"):
        assert seen in screen, screen
    assert workdir in screen.replace("\r", ""), screen


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_debug_opens_a_shell_where_a_local_step_failed(
    terminal: Terminal,
    project: Path,
    sandbox: str,
) -> None:
    write_pipeline(project, PIPELINE.format(extra=f", sandbox={sandbox!r}"))
    (project / "src.txt").write_text("the source\n")
    assert cli("run", cwd=project).returncode == 1
    screen = _in_the_shell(terminal, f"{GREENLOOP} debug bad", project)
    # Without a sandbox the step ran in a private copy at its real path, and so does the shell.
    _looked_around(screen, "\n/workspace\n" if sandbox == "bwrap" else "/root/workspace\n")


def test_shell_on_failure_opens_it_at_the_end_of_the_run(
    terminal: Terminal,
    project: Path,
) -> None:
    write_pipeline(project, PIPELINE.format(extra=""))
    (project / "src.txt").write_text("the source\n")
    screen = _in_the_shell(terminal, f"{GREENLOOP} run --shell-on-failure", project)
    assert "bad failed (exit 3)" in screen
    _looked_around(screen, code=1)  # the run's own verdict, whatever the shell said


def test_debug_opens_a_shell_in_a_failed_container(
    terminal: Terminal,
    client: Any,  # noqa: F811
    project: Path,
) -> None:
    write_pipeline(project, PIPELINE.format(extra=f', default_image="{IMAGE}", executor="docker"'))
    (project / "src.txt").write_text("the source\n")
    assert cli("run", cwd=project).returncode == 1
    screen = _in_the_shell(terminal, f"{GREENLOOP} debug bad", project)
    _looked_around(screen)


def test_debug_errors_are_exit_2(project: Path, tmp_path: Path) -> None:
    write_pipeline(project, PIPELINE.format(extra=""))
    (project / "src.txt").write_text("the source\n")
    never = cli("debug", "bad", cwd=project)
    assert never.returncode == 2 and "has not failed in any recorded run" in never.stderr
    assert cli("run", cwd=project).returncode == 1
    no_tty = cli("debug", "bad", cwd=project)
    assert no_tty.returncode == 2 and "needs a terminal" in no_tty.stderr
    on_run = cli("run", "--shell-on-failure", cwd=project)
    assert on_run.returncode == 2 and "needs a terminal" in on_run.stderr
    unknown = cli("debug", "bda", "--run", _last_run(project), cwd=project)
    assert unknown.returncode == 2 and "has no step 'bda'" in unknown.stderr


def test_a_kept_filesystem_that_is_gone_is_exit_2(
    terminal: Terminal,
    project: Path,
    tmp_path: Path,
) -> None:
    write_pipeline(project, PIPELINE.format(extra=""))
    assert cli("run", cwd=project).returncode == 1
    with Store.open(tmp_path / "cache") as store:
        store.delete_ref(kept_as(_last_run(project), "bad"))
    terminal.start(f"{GREENLOOP} debug bad", project)
    wait_until(lambda: "EXIT=" in terminal.screen(), what="debug to end")
    assert "is no longer kept" in terminal.screen() and "EXIT=2" in terminal.screen()


def _last_run(project: Path) -> str:
    import json

    return str(json.loads(cli("runs", "--json", cwd=project).stdout)[0]["run_id"])
