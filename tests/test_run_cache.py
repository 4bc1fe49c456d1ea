"""Cache semantics and recovery of ``greenloop run`` (local executor)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from greenloop.store import Store
from greenloop.store.layout import TEMP_PREFIX
from tests.conftest import cli, write_pipeline
from tests.test_run import logs, run, statuses


def test_forks_see_the_parent_but_not_each_other(store: Store, project: Path) -> None:
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            base = gl.sh("echo base > base.txt", label="base")
            base.fork("a").sh("echo a > a.txt; sleep 0.2; ls", label="left")
            base.fork("b").sh("echo b > b.txt; sleep 0.2; ls", label="right")
        """,
    )
    result, events = run(store, project)
    assert result.status == "passed"
    assert logs(events, "a.left") == ["a.txt", "base.txt"]
    assert logs(events, "b.right") == ["b.txt", "base.txt"]


FOREVER = """
@gl.pipeline("ci")
def ci():
    up = gl.sh("echo {up} > up.txt", label="up", cache=gl.forever())
    up.sh("{down}", label="down", cache=gl.forever())
"""


def test_forever_misses_after_command_or_upstream_changes(store: Store, project: Path) -> None:
    write_pipeline(project, FOREVER.format(up="one", down="cat up.txt"))
    run(store, project)
    again, _ = run(store, project)
    assert statuses(again) == {"up": "cached", "down": "cached"}

    write_pipeline(project, FOREVER.format(up="one", down="cat up.txt; echo changed"))
    changed_cmd, _ = run(store, project)
    assert statuses(changed_cmd) == {"up": "cached", "down": "passed"}

    write_pipeline(project, FOREVER.format(up="two", down="cat up.txt; echo changed"))
    changed_up, events = run(store, project)
    assert statuses(changed_up) == {"up": "passed", "down": "passed"}
    assert logs(events, "down") == ["two", "changed"]


def test_on_change_tracks_content_not_mtime(store: Store, project: Path) -> None:
    write_pipeline(
        project,
        '@gl.pipeline("ci")\ndef ci():\n'
        '    gl.sh("cat conf/*.cfg", label="read", cache=gl.on_change("conf/*.cfg"))\n',
    )
    (project / "conf").mkdir()
    cfg = project / "conf" / "a.cfg"
    cfg.write_text("x=1\n")
    (project / "other.txt").write_text("unrelated")
    run(store, project)
    os.utime(cfg, (time.time() + 100, time.time() + 100))  # touched, same content
    (project / "other.txt").write_text("changed but not watched")
    touched, _ = run(store, project)
    assert statuses(touched) == {"read": "cached"}
    cfg.write_text("x=2\n")
    edited, events = run(store, project)
    assert statuses(edited) == {"read": "passed"}
    assert logs(events, "read") == ["x=2"]
    (project / "conf" / "b.cfg").write_text("y=1\n")
    added, _ = run(store, project)
    assert statuses(added) == {"read": "passed"}


def test_a_failed_step_is_never_cached(store: Store, project: Path) -> None:
    flag = project.parent / "fail-once"
    flag.write_text("")
    write_pipeline(
        project,
        f'@gl.pipeline("ci")\ndef ci():\n'
        f'    gl.sh("if [ -e {flag} ]; then exit 1; fi", label="flaky", cache=gl.forever())\n',
    )
    # The flag is a host file, so the step runs unsandboxed (bwrap would hide it).
    failed, _ = run(store, project, sandbox="none")
    assert statuses(failed) == {"flaky": "failed"}
    assert store.index.entries() == []
    flag.unlink()
    passed, _ = run(store, project, sandbox="none")
    assert statuses(passed) == {"flaky": "passed"}
    assert len(store.index.entries()) == 1


def test_a_killed_run_leaves_no_partial_entry_and_the_next_run_recovers(project: Path) -> None:
    marker = project.parent / "started"
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci")
        def ci():
            gl.sh("echo quick", label="quick", cache=gl.forever())
            gl.sh("touch {marker}; sleep 60; echo done > out.txt", label="slow",
                  cache=gl.forever())
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "greenloop", "run", "--format", "plain"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # greenloop, with no chance to clean up
    proc.wait()
    # Its step runs in a process group of its own and outlives it, as after a real crash.
    subprocess.run(["pkill", "-f", f"touch {marker}; sleep 60"], check=False)
    with Store.open() as store:
        # Only the quick step can have finished; the killed one recorded nothing.
        assert len(store.index.entries()) <= 1
    write_pipeline(
        project,
        """
        @gl.pipeline("ci")
        def ci():
            gl.sh("echo quick", label="quick", cache=gl.forever())
            gl.sh("echo done", label="slow", cache=gl.forever())
        """,
    )
    rerun = cli("run", "--json", cwd=project)
    assert rerun.returncode == 0, rerun.stderr
    events = [json.loads(line) for line in rerun.stdout.splitlines()]
    assert events[-1]["status"] == "passed"
    ran = {e["label"]: e["status"] for e in events if e["type"] == "step_finished"}
    assert ran["slow"] == "passed"
    with Store.open() as store:
        leftovers = list((store.root / "sandboxes").iterdir())
        assert leftovers == []  # the killed run's sandbox was swept
        # The kill may land mid-write of an object: a temp file may remain (never a
        # bad object), and gc sweeps it once its grace period is over.
        strays = store.verify()
        assert all(Path(p).name.startswith(TEMP_PREFIX) for p in strays), strays
        store.gc(grace=timedelta(0))
        assert store.verify() == []


def test_invalid_ir_and_unknown_executor_are_setup_errors(project: Path) -> None:
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo hi", label="hi")\n')
    rendered = cli("render", "ci", cwd=project)
    assert rendered.returncode == 0
    ir = json.loads(rendered.stdout)
    good = project / "good.json"
    good.write_text(json.dumps(ir))
    assert cli("run", "--ir", str(good), cwd=project).returncode == 0

    ir["pipelines"][0]["steps"][0]["colour"] = "red"
    bad = project / "bad.json"
    bad.write_text(json.dumps(ir))
    result = cli("run", "--ir", str(bad), cwd=project)
    assert result.returncode == 2
    assert "colour" in result.stderr and "Extra inputs are not permitted" in result.stderr

    bad.write_text(json.dumps({"version": 7, "pipelines": []}))
    result = cli("run", "--ir", str(bad), cwd=project)
    assert result.returncode == 2 and "unsupported IR version 7" in result.stderr

    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("x", executor="nope")\n')
    result = cli("run", cwd=project)
    assert result.returncode == 2 and "no executor named 'nope'" in result.stderr
