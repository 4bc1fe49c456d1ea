"""The workspace archive is packed only when a step is to run, and only from what was keyed.

A run keys its steps on each file's digest; the archive a step runs on is
packed from the same files afterwards, so it must hold exactly those bytes: a
file that changed in between stops the run (exit 2) rather than letting a step
run on content its key does not describe.
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest

from greenloop.engine.workspace import pack
from greenloop.protocol.errors import SetupError
from greenloop.store import Store
from tests.conftest import cli, write_pipeline


def _objects(store: Store) -> set[Path]:
    return {p for p in store.root.rglob("*") if p.is_file() and "objects" in p.parts}


def _files(root: Path) -> None:
    (root / "a.txt").write_text("alpha\n")
    (root / "sub").mkdir()
    (root / "sub" / "b.txt").write_text("beta\n")
    (root / "link").symlink_to("a.txt")


def test_packing_keys_the_files_and_stores_nothing(store: Store, project: Path) -> None:
    _files(project)
    before = _objects(store)
    workspace = pack(project, store)
    assert _objects(store) == before
    assert workspace.files["a.txt"] == hashlib.sha256(b"alpha\n").hexdigest()
    assert workspace.files["link"] == hashlib.sha256(b"link:a.txt").hexdigest()
    assert set(workspace.files) == {"a.txt", "sub/b.txt", "link"}


def test_the_archive_holds_the_keyed_files(store: Store, project: Path) -> None:
    _files(project)
    workspace = pack(project, store)
    digest = workspace.archive()
    assert workspace.archive() == digest  # packed once
    assert pack(project, store).archive() == digest  # deterministic
    with tarfile.open(store.blob_path(digest)) as tar:
        assert tar.getnames() == sorted(workspace.files)
        member = tar.extractfile("sub/b.txt")
        assert member is not None and member.read() == b"beta\n"
        assert tar.getmember("link").linkname == "a.txt"


@pytest.mark.parametrize("change", ["edit", "delete", "retarget"])
def test_a_file_changed_after_keying_stops_the_packing(
    store: Store, project: Path, change: str
) -> None:
    _files(project)
    workspace = pack(project, store)
    if change == "edit":
        (project / "sub" / "b.txt").write_text("gamma\n")
        culprit = "sub/b.txt"
    elif change == "delete":
        (project / "a.txt").unlink()
        culprit = "a.txt"
    else:
        (project / "link").unlink()
        (project / "link").symlink_to("sub/b.txt")
        culprit = "link"
    with pytest.raises(SetupError, match=f"^{culprit} changed while the run was starting"):
        workspace.archive()


def test_a_fully_cached_run_packs_no_archive(store: Store, project: Path) -> None:
    _files(project)
    write_pipeline(
        project,
        """\
        @gl.pipeline("ci")
        def ci():
            keyed = gl.on_change("*.txt", "sub/*")
            gl.sh("cat a.txt sub/b.txt", label="show", cache=keyed, sandbox="none")
        """,
    )
    first = cli("run", "ci", "--format", "plain", cwd=project)
    assert first.returncode == 0, first.stderr
    archive = store.blob_path(pack(project, store).archive())
    archive.unlink()  # what a packing run would store again
    cached = cli("run", "ci", "--format", "plain", cwd=project)
    assert cached.returncode == 0, cached.stderr
    assert "show cached" in cached.stdout
    assert not archive.exists()
    (project / "a.txt").write_text("changed\n")
    again = cli("run", "ci", "--format", "plain", cwd=project)
    assert again.returncode == 0, again.stderr
    assert "changed" in again.stdout and "show passed" in again.stdout


def test_a_script_that_loses_its_execute_bit_reruns_its_step(store: Store, project: Path) -> None:
    script = project / "check.sh"
    script.write_text("#!/bin/sh\necho checked\n")
    script.chmod(0o755)
    write_pipeline(
        project,
        """\
        @gl.pipeline("ci")
        def ci():
            gl.sh("./check.sh", label="check", cache=gl.on_change("*.sh"), sandbox="none")
        """,
    )
    first = cli("run", "ci", "--format", "plain", cwd=project)
    assert first.returncode == 0, first.stderr
    assert "check cached" in cli("run", "ci", "--format", "plain", cwd=project).stdout
    script.chmod(0o644)  # the same bytes, no longer a program
    again = cli("run", "ci", "--format", "plain", cwd=project)
    assert again.returncode != 0 and "check failed" in again.stdout, again.stdout
