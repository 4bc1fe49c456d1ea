"""Cache semantics and recovery of ``greenloop run`` (local executor)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from greenloop.store import Store
from tests.conftest import cli, wait_until, write_pipeline
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


def test_on_change_brace_sets_watch_every_alternative(store: Store, project: Path) -> None:
    # Regression: "**/*.{ts,js}" matched nothing, so the lint step stayed cached
    # while the code it lints broke.
    write_pipeline(
        project,
        '@gl.pipeline("ci")\ndef ci():\n'
        '    gl.sh("cat src/*", label="lint", cache=gl.on_change("**/*.{ts,js}"))\n',
    )
    (project / "src").mkdir()
    (project / "src" / "a.ts").write_text("ok\n")
    (project / "src" / "b.js").write_text("ok\n")
    run(store, project)
    (project / "src" / "b.js").write_text("broken\n")
    edited, events = run(store, project)
    assert statuses(edited) == {"lint": "passed"}
    assert "broken" in logs(events, "lint")


def test_an_on_change_glob_matching_nothing_is_a_setup_error(project: Path) -> None:
    write_pipeline(
        project,
        '@gl.pipeline("ci")\ndef ci():\n'
        '    gl.sh("true", label="lint", cache=gl.on_change("*.lock", "src/**/*.tss"))\n',
    )
    (project / "a.lock").write_text("")
    result = cli("run", cwd=project)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "step 'lint': on_change('src/**/*.tss') matches no file" in result.stderr
    assert "optional=True" in result.stderr
    assert json.loads(cli("runs", "--json", cwd=project).stdout) == []  # nothing ran
    write_pipeline(
        project,
        '@gl.pipeline("ci")\ndef ci():\n'
        '    gl.sh("true", label="lint",\n'
        '          cache=gl.on_change("*.lock", "src/**/*.tss", optional=True))\n',
    )
    assert cli("run", cwd=project).returncode == 0


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
        # bad object), and gc sweeps it at once, its writer being gone.
        assert store.verify() == []
        store.gc()
        assert store.leftovers() == []


def test_a_killed_run_reads_as_interrupted_in_the_history(project: Path) -> None:
    marker = project.parent / "step-pid"
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci", sandbox="none")  # the test reads the step's pid from a host file
        def ci():
            gl.sh("echo $$ > {marker}.tmp && mv {marker}.tmp {marker}; sleep 60", label="slow")
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "greenloop", "run", "--format", "plain"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "GREENLOOP_NO_DAEMON": "1"},
    )
    wait_until(marker.exists, what="the step to start")

    def history() -> list[str]:
        listed = cli("runs", "--json", cwd=project)
        assert listed.returncode == 0, listed.stderr
        return [r["status"] for r in json.loads(listed.stdout)]

    assert history() == ["running"]
    proc.kill()  # greenloop, with no chance to record the run's end
    proc.wait()
    os.killpg(int(marker.read_text()), signal.SIGKILL)  # its step, a session of its own
    assert history() == ["interrupted"]
    text = cli("runs", cwd=project)
    assert text.returncode == 0 and "interrupted" in text.stdout, text.stdout


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


# Unsandboxed: a copied snapshot is read from its objects every time. (The bwrap
# sandbox boots from a checkout made, and verified, once per tree.)
DAMAGEABLE = """
@gl.pipeline("ci", sandbox="none")
def ci():
    base = gl.sh("printf 'exit 3\\\\n' > verdict.sh", label="base", cache=gl.forever())
    mid = base.sh("echo more > more.txt", label="mid", cache=gl.forever())
    mid.sh("sh verdict.sh", label="one")
    mid.sh("sh verdict.sh", label="two")
"""


def _damage(store: Store, digest: str, data: bytes) -> None:
    path = store.blob_path(digest)
    path.chmod(0o644)
    path.write_bytes(data)


def _warnings(events: list) -> list[str]:
    return logs(events, "greenloop")


def test_a_damaged_blob_in_a_cached_snapshot_is_a_miss_not_a_wrong_green(
    store: Store, project: Path
) -> None:
    write_pipeline(project, DAMAGEABLE)
    first, _ = run(store, project)
    assert statuses(first) == {"base": "passed", "mid": "passed", "one": "failed", "two": "failed"}
    # The bytes a cached snapshot holds are changed on disk (same size, so only a
    # hash can tell): 'exit 3' becomes 'exit 0', and the steps would pass.
    verdict = hashlib.sha256(b"exit 3\n").hexdigest()
    _damage(store, verdict, b"exit 0\n")

    second, events = run(store, project)
    assert statuses(second) == {"base": "passed", "mid": "passed", "one": "failed", "two": "failed"}
    assert [o.exit_code for k, o in second.steps.items() if k in ("one", "two")] == [3, 3]
    warnings = _warnings(events)
    assert len(warnings) == 1, warnings  # both forks found it; the first one says so
    assert verdict in warnings[0] and "does not match its hash" in warnings[0]
    assert "running 'base', 'mid' again" in warnings[0]
    assert store.verify() == []
    third, _ = run(store, project)
    assert statuses(third)["base"] == "cached" and statuses(third)["mid"] == "cached"


def test_a_damaged_snapshot_manifest_is_a_miss(store: Store, project: Path) -> None:
    write_pipeline(project, DAMAGEABLE)
    run(store, project)
    trees = [store.get_ref(e.snapshot) or "" for e in store.index.entries()]
    [tree] = [t for t in trees if any(x.path.endswith("more.txt") for x in store.get_tree(t))]
    manifest = store.read_bytes(tree)
    _damage(store, tree, manifest.replace(b'"mode":420', b'"mode":493', 1))

    again, events = run(store, project)
    assert statuses(again) == {"base": "cached", "mid": "passed", "one": "failed", "two": "failed"}
    assert len(_warnings(events)) == 1 and "running 'mid' again" in _warnings(events)[0]
    assert store.verify() == []


def test_a_damaged_workspace_archive_is_replaced_not_served(store: Store, project: Path) -> None:
    write_pipeline(
        project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("sh verdict.sh", label="check")\n'
    )
    (project / "verdict.sh").write_text("exit 3\n")
    run(store, project)
    # The tar holding verdict.sh, not the blob of verdict.sh the failed step kept.
    [archive] = [
        f
        for f in (store.root / "objects").rglob("*")
        if f.is_file() and b"exit 3" in f.read_bytes() and f.read_bytes() != b"exit 3\n"
    ]
    archive.chmod(0o644)
    archive.write_bytes(archive.read_bytes().replace(b"exit 3", b"exit 0"))
    again, _ = run(store, project)
    assert statuses(again) == {"check": "failed"}
    assert store.verify() == []
