"""The terminal formatter's live step tree in a real terminal (tmux), and the end-of-run summary."""

from __future__ import annotations

import os
import pty
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import cli, wait_until, write_pipeline

TMUX = shutil.which("tmux")


class Terminal:
    """A tmux server of our own (its own socket) running one command in a 120x40 pane."""

    def __init__(self, socket: Path) -> None:
        self._base = ["tmux", "-S", str(socket)]

    def start(self, command: str, cwd: Path) -> None:
        """Run ``command`` in the pane; the pane stays open afterwards (``cat`` holds it)."""
        script = f"cd {shlex.quote(str(cwd))} && {command}; echo EXIT=$?; exec cat"
        # tmux runs the command with the server's environment: pass ours on explicitly.
        env = " ".join(
            f"{k}={shlex.quote(v)}"
            for k, v in os.environ.items()
            if k.startswith("GREENLOOP_") or k in ("DOCKER_HOST", "PATH")
        )
        self._tmux(
            "new-session", "-d", "-x", "120", "-y", "40", f"env {env} sh -c {shlex.quote(script)}"
        )

    def send(self, line: str) -> None:
        """Type ``line`` and Enter into the pane."""
        self._tmux("send-keys", "-l", line)
        self._tmux("send-keys", "Enter")

    def screen(self) -> str:
        """What the pane shows now, with its scrollback."""
        return self._tmux("capture-pane", "-p", "-S", "-").stdout

    def close(self) -> None:
        """Stop this server (and only it)."""
        subprocess.run([*self._base, "kill-server"], capture_output=True, check=False)

    def _tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._base, *args], capture_output=True, text=True, check=True)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    if TMUX is None:
        pytest.skip("tmux is not installed (.ci/run installs it)")
    term = Terminal(tmp_path / "tmux.sock")
    yield term
    term.close()


def test_the_live_tree_shows_running_steps_and_ends_with_the_failed_log(
    terminal: Terminal, project: Path, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci", sandbox="none")  # the steps wait for a file the test makes
        def ci():
            setup = gl.sh("echo ready", label="setup", cache=gl.forever())
            setup.sh("for i in 1 2 3 4 5; do echo unit line $i; done; "
                     "until [ -e {release} ]; do sleep 0.05; done", label="unit")
            setup.sh("for i in $(seq 1 30); do echo lint line $i; done; exit 3", label="lint")
            gl.sh("echo done", label="after", cache=gl.forever()).sh("echo x", label="tail")
        """,
    )
    terminal.start(f"{shlex.quote(sys.executable)} -m greenloop run -j 4", project)

    # While `unit` runs: its line with a spinner and elapsed time, its last log
    # lines under it (not the earlier ones), and the footer.
    def unit_running() -> bool:
        screen = terminal.screen()
        return "unit line 5" in screen and "1 running · 4 done · 0 waiting" in screen

    wait_until(unit_running, what="the live tree with unit running")
    screen = terminal.screen()
    running = next(line for line in screen.splitlines() if "unit [local]" in line)
    assert running.split()[0] in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏", running  # a spinner frame
    assert running.rstrip().endswith("s"), running  # elapsed seconds
    assert "  │ unit line 3" in screen and "  │ unit line 5" in screen
    assert "unit line 1" not in screen  # only the tail while it runs
    assert "lint line 12" not in screen  # a failed step's log waits for the end
    assert "✓ setup passed" in screen and "✓ after passed" in screen
    assert "✗ lint failed (exit 3)" in screen

    release.write_text("")
    wait_until(lambda: "EXIT=" in terminal.screen(), what="the run's end")
    final = terminal.screen()
    lines = final.splitlines()
    assert "EXIT=1" in final
    assert "✓ unit passed" in final
    # The whole log of the failed step, then the summary, then the run's line.
    log = [line for line in lines if line.startswith("  │ lint line")]
    assert log == [f"  │ lint line {i}" for i in range(1, 31)]
    assert lines.index("1 step failed: lint (exit 3)") < next(
        i for i, line in enumerate(lines) if line.startswith("✗ run failed in")
    )
    # The live region is gone: no spinner or footer left behind.
    assert "running ·" not in final and "unit [local]" not in final
    # One line per step.
    for label in ("setup", "unit", "lint", "after", "tail"):
        ends = [line for line in lines if line.startswith(("✓", "✗", "↺")) and "—" not in line]
        assert sum(f" {label} " in line for line in ends) == 1, ends


def _run_on_a_pty(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[str, str, int]:
    """``python -X importtime -m greenloop ARGS`` with stdout on a pseudo-terminal."""
    main, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "greenloop", *args],
        cwd=project,
        stdout=secondary,
        stderr=subprocess.PIPE,
        env={**os.environ, "GREENLOOP_NO_DAEMON": "1", "TERM": "xterm", **(env or {})},
    )
    os.close(secondary)
    output = bytearray()
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(main)
    _, errors = process.communicate()
    return output.decode(), errors.decode(), process.returncode


def test_a_fully_cached_run_on_a_terminal_never_imports_rich(project: Path) -> None:
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            a = gl.sh("echo a", label="a", cache=gl.forever())
            a.sh("echo b", label="b", cache=gl.forever())
        """,
    )
    output, imports, code = _run_on_a_pty(project, "run")
    assert code == 0, output
    assert " rich" in imports  # steps ran: the live tree was drawn
    output, imports, code = _run_on_a_pty(project, "run")
    assert code == 0, output
    assert "\x1b[36m↺ b cached\x1b[0m" in output  # the terminal formatter, in colour
    assert " rich" not in imports, [line for line in imports.splitlines() if "rich" in line]
    output, _, code = _run_on_a_pty(project, "run", env={"NO_COLOR": "1"})
    assert code == 0 and "↺ b cached" in output and "\x1b[" not in output


def test_plain_output_ends_a_failed_run_with_each_failed_steps_log_tail(project: Path) -> None:
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            gl.sh("for i in $(seq 1 50); do echo noise $i; done", label="chatty")
            gl.sh("for i in $(seq 1 40); do echo bad $i; done; exit 4", label="bad")
            gl.sh("echo oops >&2; exit 1", label="worse")
        """,
    )
    result = cli("run", "--format", "plain", "-j", "1", cwd=project)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    start = lines.index("") + 1
    summary = lines[start:]
    header = next(i for i, line in enumerate(summary) if line.startswith("✗ bad failed (exit 4)"))
    assert summary[header].endswith("the last 20 lines of its log:")
    assert summary[header + 1 : header + 21] == [f"  │ bad {i}" for i in range(21, 41)]
    assert any(line.startswith("✗ worse failed (exit 1)") for line in summary)
    assert "  │ oops" in summary
    failed, _, names = summary[-2].partition(": ")
    assert failed == "2 steps failed"
    assert sorted(names.split(", ")) == ["bad (exit 4)", "worse (exit 1)"]
    assert summary[-1].startswith("✗ run failed in")
    assert not any("noise" in line for line in summary)


def test_a_green_run_has_no_summary(project: Path) -> None:
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo hi", label="hi")\n')
    result = cli("run", "--format", "plain", cwd=project)
    assert result.returncode == 0
    assert "failed" not in result.stdout and "" not in result.stdout.splitlines()


def test_the_live_tree_lists_the_steps_still_waiting(
    terminal: Terminal, project: Path, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci", sandbox="none")  # the step waits for a file the test makes
        def ci():
            gl.sh("until [ -e {release} ]; do sleep 0.05; done", label="first")
            gl.sh("echo two", label="second")
            gl.sh("echo three", label="third")
        """,
    )
    terminal.start(f"{shlex.quote(sys.executable)} -m greenloop run -j 1", project)
    wait_until(lambda: "○ third  waiting" in terminal.screen(), what="the waiting steps")
    screen = terminal.screen()
    assert "○ second  waiting" in screen and "○ first" not in screen
    release.write_text("")
    wait_until(lambda: "EXIT=0" in terminal.screen(), what="the run to end")
    assert "waiting" not in terminal.screen().split("✓ third passed")[-1]
