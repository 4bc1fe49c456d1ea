"""``greenloop cache export/import``: a cache carried between machines as a folder."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import cli, write_pipeline

PIPELINE = """
@gl.pipeline("ci")
def ci():
    deps = gl.sh("mkdir -p lib && echo v1 > lib/x && echo built", label="deps",
                 cache=gl.forever(), artifacts=["lib"])
    deps.sh("cat lib/x", label="use", cache=gl.forever())
"""


def _statuses(result: object) -> dict[str, str]:
    lines = [json.loads(line) for line in result.stdout.splitlines()]  # type: ignore[attr-defined]
    return {e["step"]: e["status"] for e in lines if e["type"] == "step_finished"}


def test_an_exported_cache_answers_a_run_on_another_store(project: Path, tmp_path: Path) -> None:
    write_pipeline(project, PIPELINE)
    assert cli("run", cwd=project).returncode == 0
    exported = cli("cache", "export", str(tmp_path / "carried"), "--json", cwd=project)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["entries"] == 2
    other = {"GREENLOOP_CACHE_DIR": str(tmp_path / "runner-2")}
    imported = cli("cache", "import", str(tmp_path / "carried"), "--json", cwd=project, env=other)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["entries"] == 2
    rerun = cli("run", "--json", cwd=project, env=other)
    assert _statuses(rerun) == {"deps": "cached", "use": "cached"}
    assert cli("cache", "verify", cwd=project, env=other).returncode == 0
    # Importing again changes nothing; exporting again replaces the folder's export.
    again = cli("cache", "import", str(tmp_path / "carried"), "--json", cwd=project, env=other)
    assert json.loads(again.stdout)["entries"] == 0
    assert cli("cache", "export", str(tmp_path / "carried"), cwd=project).returncode == 0


def test_a_damaged_object_is_never_imported(project: Path, tmp_path: Path) -> None:
    write_pipeline(project, PIPELINE)
    assert cli("run", cwd=project).returncode == 0
    carried = tmp_path / "carried"
    assert cli("cache", "export", str(carried), cwd=project).returncode == 0
    for blob in (carried / "objects").iterdir():
        if blob.read_bytes() == b"v1\n":
            blob.write_bytes(b"v2\n")  # same size, other bytes
    other = {"GREENLOOP_CACHE_DIR": str(tmp_path / "runner-2")}
    imported = cli("cache", "import", str(carried), "--json", cwd=project, env=other)
    assert imported.returncode == 0, imported.stderr
    report = json.loads(imported.stdout)
    assert report["entries"] == 0 and len(report["skipped"]) == 2
    rerun = cli("run", "--json", cwd=project, env=other)
    assert _statuses(rerun) == {"deps": "passed", "use": "passed"}
    assert "v1" in rerun.stdout


def test_bad_folders_are_refused_with_exit_2(project: Path, tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    refused = cli("cache", "export", str(tmp_path / "notes"), cwd=project)
    assert refused.returncode == 2 and "holds no greenloop cache export" in refused.stderr
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"
    missing = cli("cache", "import", str(tmp_path / "notes"), cwd=project)
    assert missing.returncode == 2 and "holds no greenloop cache export" in missing.stderr
    (tmp_path / "notes" / "greenloop-cache.json").write_text('{"entries": [{"key": "zz"}]}')
    garbled = cli("cache", "import", str(tmp_path / "notes"), cwd=project)
    assert garbled.returncode == 2 and "is not a greenloop cache export" in garbled.stderr
