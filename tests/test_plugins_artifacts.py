"""``artifact.put``: how an out-of-process executor puts its step's artifacts in the store.

The handler is exercised directly (it is what the host serves over JSON-RPC);
``tests/test_executor_suite.py`` runs it end to end through the example plugin.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from greenloop.plugins import stdio
from greenloop.plugins.jsonrpc import INVALID_PARAMS, RpcError
from greenloop.protocol import ArtifactRef, ExecutorInput, MissNoCommit
from greenloop.protocol.ir import CommandStep
from greenloop.store import Store
from tests.conftest import write_pipeline
from tests.test_plugins_stdio import run


def request(*artifacts: str) -> ExecutorInput:
    step = CommandStep(key="s", label="s", command="true", artifacts=list(artifacts))
    return ExecutorInput(
        step=step,
        workspace_archive_id=uuid.uuid4(),
        env={},
        workdir="/workspace",
        run_id=uuid.uuid4(),
        step_id=uuid.uuid4(),
        cache_lookup=MissNoCommit(),
    )


@pytest.fixture
def step() -> ExecutorInput:
    return request("dist", "notes.txt", "out/report.bin")


@pytest.fixture
def uploads(store: Store, step: ExecutorInput) -> Any:
    u = stdio.ArtifactUploads(store, step)
    yield u
    u.close()


def put(uploads: stdio.ArtifactUploads, step: ExecutorInput, **params: Any) -> Any:
    if "data" in params and isinstance(params["data"], bytes):
        params["data"] = base64.b64encode(params["data"]).decode()
    return uploads.put({"step_id": str(step.step_id), **params})


def refused(uploads: stdio.ArtifactUploads, step: ExecutorInput, **params: Any) -> str:
    with pytest.raises(RpcError) as error:
        put(uploads, step, **params)
    assert error.value.code == INVALID_PARAMS
    return error.value.message


def tar_of(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def file_member(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def link_member(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def test_a_file_in_one_call(uploads: Any, step: ExecutorInput, store: Store) -> None:
    ref = ArtifactRef.model_validate(put(uploads, step, path="notes.txt", kind="file", data=b"hi"))
    assert (ref.mime, ref.size_bytes) == ("text/plain", 2)
    assert store.read_bytes(ref.key) == b"hi"
    custom = put(uploads, step, path="out/report.bin", kind="file", data=b"", mime="x/y")
    assert (custom["mime"], custom["size_bytes"]) == ("x/y", 0)


def test_a_file_in_chunks(uploads: Any, step: ExecutorInput, store: Store) -> None:
    data = os.urandom(10_000)
    parts = [data[:4000], data[4000:8000], data[8000:]]
    offset = 0
    for index, part in enumerate(parts):
        final = index == len(parts) - 1
        answer = put(
            uploads, step, path="out/report.bin", kind="file", data=part, offset=offset, final=final
        )
        offset += len(part)
        assert (answer is None) != final
    assert answer["mime"] == "application/octet-stream" and answer["size_bytes"] == len(data)
    assert store.read_bytes(answer["key"]) == data


def test_chunks_must_follow_on(uploads: Any, step: ExecutorInput) -> None:
    assert put(uploads, step, path="notes.txt", kind="file", data=b"abc", final=False) is None
    message = refused(uploads, step, path="notes.txt", kind="file", data=b"x", offset=2)
    assert "offset 2, but 3 bytes of a file received" in message
    # A refused chunk ends that upload; it starts again at offset 0.
    assert "nothing received" in refused(
        uploads, step, path="notes.txt", kind="file", data=b"d", offset=3
    )
    assert put(uploads, step, path="notes.txt", kind="file", data=b"abc", final=False) is None
    assert "3 bytes of a file" in refused(
        uploads, step, path="notes.txt", kind="directory", data=b"", offset=3
    )
    assert "nothing received" in refused(uploads, step, path="dist", kind="file", offset=1)


def test_only_the_steps_own_declared_artifacts(uploads: Any, step: ExecutorInput) -> None:
    assert "not an artifact of this step" in refused(uploads, step, path="other", kind="file")
    assert "declared: 'dist', 'notes.txt'" in refused(uploads, step, path="../x", kind="file")
    with pytest.raises(RpcError, match="is not this plugin's step"):
        uploads.put({"step_id": str(uuid.uuid4()), "path": "dist", "kind": "file"})
    assert "invalid params" in refused(uploads, step, path="dist", kind="socket")
    assert "not base64" in refused(uploads, step, path="notes.txt", kind="file", data="***")


def test_chunks_are_size_limited(
    uploads: Any, step: ExecutorInput, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stdio.uploads, "MAX_PUT", 8)
    assert "at most 8 bytes" in refused(uploads, step, path="notes.txt", kind="file", data=b"9" * 9)
    assert put(uploads, step, path="notes.txt", kind="file", data=b"8" * 8)["size_bytes"] == 8


def test_a_directory_is_the_same_tree_as_on_disk(
    uploads: Any, step: ExecutorInput, store: Store, tmp_path: Path
) -> None:
    folder = tmp_path / "dist"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.txt").write_text("a\n")
    (folder / "run.sh").write_text("echo\n")
    (folder / "run.sh").chmod(0o755)
    (folder / "link").symlink_to("sub/a.txt")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=".")  # "./sub/a.txt" style names are fine too
    data = buffer.getvalue()
    half = len(data) // 2
    assert put(uploads, step, path="dist", kind="directory", data=data[:half], final=False) is None
    ref = put(uploads, step, path="dist", kind="directory", data=data[half:], offset=half)
    assert ref["key"] == store.put_tree(folder)
    assert ref["mime"] == "inode/directory"
    # Regular files only, as every executor counts: the symlink adds nothing.
    assert ref["size_bytes"] == len("a\n") + len("echo\n")


@pytest.mark.parametrize(
    ("member", "says"),
    [
        (file_member("../escape.txt", b"x"), "unsafe tar member '../escape.txt'"),
        (file_member("a/../../escape.txt", b"x"), "unsafe tar member"),
        (file_member("/tmp/escape.txt", b"x"), "unsafe tar member '/tmp/escape.txt'"),
        (link_member("passwd", "/etc/passwd"), "cannot unpack the tar"),
        (link_member("up", "../../outside"), "cannot unpack the tar"),
    ],
)
def test_a_tar_cannot_reach_outside_its_tree(
    uploads: Any,
    step: ExecutorInput,
    store: Store,
    member: tuple[tarfile.TarInfo, bytes | None],
    says: str,
) -> None:
    data = tar_of([file_member("fine.txt", b"ok"), member])
    assert says in refused(uploads, step, path="dist", kind="directory", data=data)
    assert not (store.root / "uploads" / "escape.txt").exists()
    assert not (store.root / "escape.txt").exists()


def test_not_a_tar_is_refused(uploads: Any, step: ExecutorInput) -> None:
    message = refused(uploads, step, path="dist", kind="directory", data=b"definitely not a tar")
    assert "cannot unpack the tar" in message


def test_closing_drops_unfinished_uploads(uploads: Any, step: ExecutorInput, store: Store) -> None:
    assert put(uploads, step, path="notes.txt", kind="file", data=b"part", final=False) is None
    folder = store.root / "uploads" / f"{os.getpid()}-{step.step_id}"
    assert folder.is_dir()
    uploads.close()
    assert not folder.exists()
    assert "the step is over" in refused(uploads, step, path="notes.txt", kind="file")


def test_uploads_of_dead_processes_are_swept(store: Store, tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = store.root / "uploads" / f"{dead.pid}-{uuid.uuid4()}"
    mine = store.root / "uploads" / f"{os.getpid()}-{uuid.uuid4()}"
    leftover.mkdir(parents=True)
    mine.mkdir()
    stdio.StdioExecutor("p", tmp_path / "nowhere", store)
    assert not leftover.exists() and mine.exists()


_FAKER = r"""#!@PYTHON@
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m["method"] == "initialize":
        r = {"name": "faker", "kind": "executor", "version": "1", "protocol_version": 1}
    elif m["method"] == "executor.run":
        fake = {"key": "0" * 64, "mime": "text/plain", "size_bytes": 1}
        r = {"exit_code": 0, "artifacts": [fake]}
    else:
        r = None
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": r}) + "\n")
    sys.stdout.flush()
    if m["method"] == "shutdown":
        break
"""


def test_artifacts_not_in_the_store_are_an_invalid_result(
    store: Store, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    faker = plugins / "greenloop-executor-faker"
    faker.write_text(_FAKER.replace("@PYTHON@", sys.executable))
    faker.chmod(0o755)
    monkeypatch.setenv("GREENLOOP_PLUGIN_PATH", str(plugins))
    write_pipeline(
        project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("true", label="s", executor="faker")\n'
    )
    result, _ = run(store, project)
    error = result.steps["s"].error or ""
    assert error.startswith("plugin 'faker' invalid_result: "), error
    assert "is not in greenloop's store" in error
