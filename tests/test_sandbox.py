"""The local executor's sandboxes: ``bwrap`` (overlay roots) against ``none`` (copied roots).

The bwrap cases skip where bubblewrap or unprivileged overlay mounts cannot run,
unless ``GREENLOOP_REQUIRE_BWRAP=1`` (CI sets it), in which case they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from greenloop.executors.bwrap import unavailable
from greenloop.store import CacheEntry, Store
from tests.conftest import cli, write_pipeline
from tests.test_run import logs, run, statuses


def require_bwrap(scratch: Path) -> None:
    """Skip the test where the bwrap sandbox cannot run (fail under GREENLOOP_REQUIRE_BWRAP=1)."""
    why = unavailable(scratch / "bwrap-probe")
    if why is None:
        return
    if os.environ.get("GREENLOOP_REQUIRE_BWRAP") == "1":
        raise RuntimeError(f"GREENLOOP_REQUIRE_BWRAP=1 but the bwrap sandbox cannot run: {why}")
    pytest.skip(f"the bwrap sandbox cannot run here: {why}")


@pytest.fixture
def bwrap_works(tmp_path: Path) -> None:
    """Skip unless the bwrap sandbox runs on this machine."""
    require_bwrap(tmp_path)


# A script whose shebang is an absolute path into the step's own root, as a
# virtualenv's scripts (and an editable install's .pth) are.
VENV = """
@gl.pipeline("ci")
def ci():
    venv = gl.sh("python3 -m venv --without-pip .venv"
                 " && printf '#!/workspace/.venv/bin/python\\\\nimport sys; print(sys.prefix)\\\\n'"
                 " > .venv/bin/where && chmod +x .venv/bin/where", label="venv")
    venv.sh(".venv/bin/where", label="use")
"""


def test_absolute_paths_survive_from_step_to_step_under_bwrap(
    store: Store, project: Path, bwrap_works: None
) -> None:
    write_pipeline(project, VENV)
    result, events = run(store, project, sandbox="bwrap")
    assert statuses(result) == {"venv": "passed", "use": "passed"}, events
    assert logs(events, "use") == ["/workspace/.venv"]
    # A copied root lives in another folder each step: the shebang points nowhere.
    copied, _ = run(store, project, sandbox="none")
    assert statuses(copied) == {"venv": "passed", "use": "failed"}


def test_a_write_outside_the_root_fails_and_leaves_the_host_untouched(
    store: Store, project: Path, tmp_path: Path, bwrap_works: None
) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "kept.txt").write_text("host\n")
    probe = f"/etc/greenloop-sandbox-test-{os.getpid()}"
    steps = {
        "into-host-folder": f"echo bad > {host}/kept.txt",
        "new-in-host-folder": f"mkdir -p {host} && echo bad > {host}/new.txt && ls {host}",
        "into-etc": f"echo bad > {probe}",
    }
    body = "".join(f"    gl.sh({cmd!r}, label={label!r})\n" for label, cmd in steps.items())
    write_pipeline(project, f'@gl.pipeline("ci")\ndef ci():\n{body}')
    result, events = run(store, project, sandbox="bwrap")
    # The host folder is not there at all: the first fails, the second writes only
    # into the step's own root (and sees nothing of the host's files).
    assert result.steps["into-host-folder"].status == "failed"
    assert logs(events, "new-in-host-folder") == ["new.txt"]
    assert result.steps["into-etc"].status == "failed"
    assert sorted(os.listdir(host)) == ["kept.txt"]
    assert (host / "kept.txt").read_text() == "host\n"
    assert not os.path.exists(probe)


# Deletions, a folder removed and made anew, a file turned into a folder and a
# folder into a file: every kind of change an upper layer records.
CHANGES = """
@gl.pipeline("ci")
def ci():
    base = gl.sh("mkdir -p build/sub build/dir && echo a > build/a && echo b > build/sub/b"
                 " && echo f > build/file && echo d > build/dir/d && echo k > ../kept"
                 " && ln -s a build/link && echo x > build/exe && chmod +x build/exe",
                 label="base")
    mid = base.sh("rm build/a ../kept && rm -r build/sub && mkdir build/sub"
                  " && echo c > build/sub/c && rm build/file && mkdir build/file"
                  " && echo in > build/file/in && rm -r build/dir && echo now > build/dir"
                  " && echo src-edit > src.txt && echo new > ../new",
                  label="mid", cache=gl.forever())
    mid.sh("find build ../new ../kept 2>/dev/null | sort; cat src.txt", label="look")
"""


def test_an_overlay_commit_equals_a_copied_one(
    store: Store, project: Path, bwrap_works: None
) -> None:
    (project / "src.txt").write_text("source\n")
    write_pipeline(project, CHANGES)
    seen: dict[str, tuple[list[str], str]] = {}
    for mode in ("none", "bwrap"):
        result, events = run(store, project, sandbox=mode)
        assert result.status == "passed", events
        tree = store.get_ref(result.steps["mid"].snapshot or "")
        assert tree is not None
        seen[mode] = (logs(events, "look"), tree)
    listed = seen["none"][0]
    assert "build/sub/c" in listed and "build/a" not in listed and "../new" in listed
    assert listed[-1] == "source"  # the workspace wins over what mid did to it
    # The same changes give the same tree, byte for byte: an overlay root stores
    # what a copied root stores.
    assert seen["bwrap"] == seen["none"]


def test_a_child_commit_stores_only_what_it_changed(
    store: Store, project: Path, monkeypatch: pytest.MonkeyPatch, bwrap_works: None
) -> None:
    write_pipeline(
        project,
        """
@gl.pipeline("ci")
def ci():
    big = gl.sh("mkdir -p deps && for i in $(seq 1 500); do echo $i > deps/f$i; done",
                label="big", cache=gl.forever())
    big.sh("echo changed > deps/f7 && touch one-more", label="small", cache=gl.forever())
""",
    )
    result, _ = run(store, project, sandbox="bwrap")
    assert statuses(result) == {"big": "passed", "small": "passed"}
    (project / "edit.txt").write_text("invalidate nothing cached\n")
    stored: list[Path] = []
    real = store.put_file

    def counting(path: Path, *, verify_existing: bool = False) -> str:
        stored.append(path)
        return real(path, verify_existing=verify_existing)

    real_many = store.adopt_files

    def counting_many(paths: Sequence[Path]) -> list[str]:
        stored.extend(paths)
        return real_many(paths)

    monkeypatch.setattr(store, "put_file", counting)
    monkeypatch.setattr(store, "adopt_files", counting_many)
    # Rerun only the child: a new command, the same cached 500-file parent.
    write_pipeline(
        project,
        """
@gl.pipeline("ci")
def ci():
    big = gl.sh("mkdir -p deps && for i in $(seq 1 500); do echo $i > deps/f$i; done",
                label="big", cache=gl.forever())
    big.sh("echo again > deps/f8", label="small", cache=gl.forever())
""",
    )
    again, _ = run(store, project, sandbox="bwrap")
    assert statuses(again) == {"big": "cached", "small": "passed"}
    # (The workspace archive is stored too, once per run, outside any step's root.)
    assert [p.name for p in stored if "sandboxes" in p.parts] == ["f8"]
    tree = store.get_ref(again.steps["small"].snapshot or "")
    files = {e.path for e in store.get_tree(tree or "") if e.kind == "file"}
    assert len(files) == 500 and "workspace/deps/f1" in files


def test_the_sandbox_is_part_of_the_cache_key(
    store: Store, project: Path, bwrap_works: None
) -> None:
    write_pipeline(
        project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true", label="t", cache=gl.forever())\n'
    )
    assert statuses(run(store, project, sandbox="none")[0]) == {"t": "passed"}
    assert statuses(run(store, project, sandbox="bwrap")[0]) == {"t": "passed"}
    assert statuses(run(store, project, sandbox="bwrap")[0]) == {"t": "cached"}


def test_offline_steps_see_only_loopback(store: Store, project: Path, bwrap_works: None) -> None:
    command = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"
    write_pipeline(project, f'@gl.pipeline("ci")\ndef ci():\n    gl.sh({command!r}, label="net")\n')
    _, online = run(store, project, sandbox="bwrap")
    _, offline = run(store, project, hermetic=True)
    assert logs(offline, "net") == ["lo"]
    assert len(logs(online, "net")) > 1


def test_checkouts_go_with_their_tree_and_stay_while_used(store: Store, tmp_path: Path) -> None:
    for name in ("used", "dropped"):
        (tmp_path / name / "t").mkdir(parents=True)
        (tmp_path / name / "t" / "f").write_text(f"{name}\n")
    used, dropped = store.put_tree(tmp_path / "used"), store.put_tree(tmp_path / "dropped")
    with store.checkout(dropped) as folder:
        assert (folder / "t" / "f").read_text() == "dropped\n"
    with store.checkout(used) as held:
        # Nothing names either tree: gc drops both objects; the held checkout stays.
        store.gc(grace=timedelta(0))
        assert not store.has(used) and held.is_dir()
    assert not folder.exists()
    store.gc(grace=timedelta(0))
    assert not held.exists()


def test_checkouts_count_in_the_size_budget_and_go_before_any_entry(
    store: Store, tmp_path: Path
) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "big").write_bytes(os.urandom(200_000))
    tree = store.put_tree(tmp_path / "t")
    now = time.time()
    store.set_ref("snap", tree)
    entry = CacheEntry("k" * 64, "snap", "local", tree, [], now, now, "{}", None)
    store.index.put_entry(entry)  # the entry keeps the tree's objects
    with store.checkout(tree):
        pass
    assert store.checkout_bytes() >= 200_000
    objects = store.size_bytes()
    # Room for the objects but not for a second copy of them: the checkout goes.
    report = store.gc(grace=timedelta(0), max_bytes=objects + 1000)
    assert report.checkouts_removed == 1 and report.objects_removed == 0
    assert report.entries_removed == 0
    assert store.checkout_bytes() == 0 and store.has(tree)
    with store.checkout(tree) as again:  # rebuilt on demand
        assert (again / "big").stat().st_size == 200_000


# -- the plan line says which mode ran -------------------------------------------------------


def no_bwrap_path(tmp_path: Path) -> str:
    """A PATH with sh and python but no bwrap on it."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("sh", "python3", "true", "echo"):
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True)
        (folder / tool).symlink_to(found.stdout.strip())
    return str(folder)


def test_the_plan_line_names_the_sandbox_and_why_it_fell_back(
    project: Path, tmp_path: Path
) -> None:
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo hi", label="hi")\n')
    env = {"GREENLOOP_CACHE_DIR": str(tmp_path / "cache"), "GREENLOOP_NO_DAEMON": "1"}
    none = cli("run", "--format", "plain", "--sandbox", "none", cwd=project, env=env)
    assert "local: no sandbox, copied snapshots" in none.stdout, none.stdout + none.stderr
    lacking = {**env, "PATH": no_bwrap_path(tmp_path)}
    fallback = cli("run", "--format", "plain", cwd=project, env=lacking)
    assert fallback.returncode == 0, fallback.stdout + fallback.stderr
    assert "copied snapshots (bwrap unavailable: bwrap is not installed)" in fallback.stdout
    asked = cli("run", "--format", "plain", "--sandbox", "bwrap", cwd=project, env=lacking)
    assert asked.returncode == 2
    assert "step 'hi' runs in the bwrap sandbox, which cannot run here" in asked.stderr


def test_the_plan_line_names_bwrap_when_it_runs(
    project: Path, tmp_path: Path, bwrap_works: None
) -> None:
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo hi", label="hi")\n')
    env = {"GREENLOOP_CACHE_DIR": str(tmp_path / "cache"), "GREENLOOP_NO_DAEMON": "1"}
    done = cli("run", "--format", "plain", cwd=project, env=env)
    assert "local: bwrap sandbox, overlay snapshots" in done.stdout, done.stdout + done.stderr


def test_binds_share_host_folders_read_only_or_read_write(
    store: Store, project: Path, tmp_path: Path, bwrap_works: None
) -> None:
    shared, cache = tmp_path / "shared", tmp_path / "cache-dir"
    shared.mkdir()
    cache.mkdir()
    (shared / "tool.txt").write_text("tool\n")
    sandbox = f"gl.sandbox(ro_binds=[{str(shared)!r}], rw_binds=[{str(cache)!r}])"
    write_pipeline(
        project,
        f'@gl.pipeline("ci", sandbox={sandbox})\ndef ci():\n'
        f'    gl.sh("cat {shared}/tool.txt && echo hit > {cache}/entry", label="use")\n'
        f'    gl.sh("echo bad > {shared}/tool.txt", label="write-ro")\n',
    )
    result, events = run(store, project)
    assert logs(events, "use") == ["tool"]
    assert (cache / "entry").read_text() == "hit\n"
    assert result.steps["write-ro"].status == "failed"
    assert (shared / "tool.txt").read_text() == "tool\n"


def test_sandbox_settings_render_into_the_ir_and_bad_ones_are_exit_2(project: Path) -> None:
    write_pipeline(
        project,
        '@gl.pipeline("ci", sandbox="none")\ndef ci():\n'
        '    gl.sh("true", label="a")\n'
        '    gl.sh("true", label="b", sandbox=gl.sandbox(network=False, ro_binds=["/opt"]))\n',
    )
    rendered = json.loads(cli("render", "ci", cwd=project).stdout)["pipelines"][0]
    assert rendered["sandbox"]["mode"] == "none"
    assert rendered["steps"][0]["sandbox"] is None
    assert rendered["steps"][1]["sandbox"] == {
        "mode": "bwrap",
        "network": False,
        "ro_binds": ["/opt"],
        "rw_binds": [],
        "home": False,
    }
    for bad, says in (
        ('"docker"', "invalid sandbox 'docker': expected 'bwrap', 'none' or gl.sandbox(...)"),
        ('gl.sandbox(rw_binds=["rel"])', "invalid sandbox: a bind must be an absolute host path"),
    ):
        write_pipeline(
            project, f'@gl.pipeline("ci")\ndef ci():\n    gl.sh("true", sandbox={bad})\n'
        )
        done = cli("render", "ci", cwd=project)
        assert done.returncode == 2 and says in done.stderr, done.stderr
        assert "pipeline.py:5: " in done.stderr
    conflict = cli("run", "--sandbox", "none", "--hermetic", cwd=project)
    assert conflict.returncode == 2 and "--hermetic needs the bwrap sandbox" in conflict.stderr


def tree_listing(folder: Path) -> dict[str, tuple[str, int, bytes | str]]:
    """Every entry under ``folder``: kind, mode bits, content or link target."""
    found: dict[str, tuple[str, int, bytes | str]] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        mode = path.lstat().st_mode & 0o7777
        if path.is_symlink():
            found[rel] = ("link", 0, os.readlink(path))
        elif path.is_dir():
            found[rel] = ("dir", mode, b"")
        else:
            found[rel] = ("file", mode, path.read_bytes())
    return found


def test_a_root_steps_upper_layer_becomes_the_checkout_its_children_use(
    store: Store, project: Path, tmp_path: Path, bwrap_works: None
) -> None:
    (project / "src.txt").write_text("source\n")
    write_pipeline(
        project,
        """
@gl.pipeline("ci")
def ci():
    deps = gl.sh("umask 077 && mkdir -p lib/sub && echo x > lib/sub/x && echo run > lib/run"
                 " && chmod 700 lib/run && ln -s sub/x lib/link && mkdir empty"
                 " && echo edited > src.txt", label="deps", cache=gl.forever())
    deps.sh("cat lib/sub/x src.txt && ./lib/run 2>/dev/null; ls -l lib/run | cut -c1-10",
            label="use")
""",
    )
    result, events = run(store, project, sandbox="bwrap")
    assert statuses(result) == {"deps": "passed", "use": "passed"}, events
    tree = store.get_ref(result.steps["deps"].snapshot or "")
    assert tree is not None
    adopted = store.root / "checkouts" / tree
    assert adopted.is_dir()
    store.materialize(tree, tmp_path / "materialized")
    # Exactly the folder a checkout made from the store would be: no workspace
    # files, modes normalised, nothing of overlayfs's own left in it.
    assert tree_listing(adopted) == tree_listing(tmp_path / "materialized")
    assert not (adopted / "workspace" / "src.txt").exists()
    assert all(
        not name.startswith("user.overlay.")
        for path in [adopted, *adopted.rglob("*")]
        if not path.is_symlink()
        for name in os.listxattr(path)
    )
    assert logs(events, "use")[:2] == ["x", "source"] and logs(events, "use")[-1] == "-rwxr-xr-x"


def test_a_step_that_changed_nothing_commits_its_parents_tree(
    store: Store, project: Path, bwrap_works: None
) -> None:
    (project / "src.txt").write_text("source\n")
    write_pipeline(
        project,
        """
@gl.pipeline("ci")
def ci():
    deps = gl.sh("mkdir -p lib && echo x > lib/x", label="deps", cache=gl.forever())
    deps.sh("cat lib/x > /dev/null && echo edited > src.txt", label="idle", cache=gl.forever())
    deps.sh("echo y > lib/x", label="busy", cache=gl.forever())
""",
    )
    result, events = run(store, project, sandbox="bwrap")
    assert result.status == "passed", events
    tree = {key: store.get_ref(outcome.snapshot or "") for key, outcome in result.steps.items()}
    # Reading files and editing workspace files leave the snapshot as it was.
    assert tree["idle"] == tree["deps"]
    assert tree["busy"] != tree["deps"]


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ('sandbox=gl.sandbox(rw_binds=["/nonexistent-greenloop"])', "bind /nonexistent-greenloop"),
        ('sandbox="bwrap", workdir="/tmp/app"', "workdir '/tmp/app' is hidden"),
    ],
)
def test_a_bwrap_step_it_cannot_set_up_is_exit_2_before_anything_runs(
    project: Path, tmp_path: Path, settings: str, says: str, bwrap_works: None
) -> None:
    marker = tmp_path / "ran"
    write_pipeline(
        project,
        f'@gl.pipeline("ci")\ndef ci():\n'
        f'    gl.sh("touch {marker}", label="first", sandbox="none")\n'
        f'    gl.sh("true", label="bad", {settings})\n',
    )
    env = {"GREENLOOP_CACHE_DIR": str(tmp_path / "cache"), "GREENLOOP_NO_DAEMON": "1"}
    done = cli("run", "--format", "plain", cwd=project, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"step 'bad': {says}" in done.stderr
    assert not marker.exists()


def test_a_steps_root_is_a_volatile_overlay(store: Store, project: Path, bwrap_works: None) -> None:
    # Volatile: its going never syncs the whole disk (each step waited for every dirty
    # page on it); the commit syncs what the store keeps.
    write_pipeline(
        project,
        '@gl.pipeline("ci")\ndef ci():\n'
        '    gl.sh("grep \' / / \' /proc/self/mountinfo", label="root")\n',
    )
    result, events = run(store, project, sandbox="bwrap")
    assert statuses(result) == {"root": "passed"}, events
    [root] = logs(events, "root")
    assert " - overlay overlay " in root and "volatile" in root.split(" - ")[1], root
