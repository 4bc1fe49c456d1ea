"""``greenloop explain``: the predicted cache outcome of each step, and what changed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.conftest import cli, write_pipeline

PIPELINE = """
@gl.pipeline("ci", env={{"MODE": "{mode}"}})
def ci():
    deps = gl.sh("echo deps", label="deps", cache=gl.on_change("*.lock"))
    deps.sh("{lint}", label="lint", cache=gl.on_change("src/*.py"))
    gl.sh("echo t", label="fresh", cache=gl.ttl(0.5))
    gl.sh("echo always", label="always")
"""


def _explain(project: Path, *args: str) -> dict[str, dict[str, Any]]:
    result = cli("explain", "--json", *args, cwd=project)
    assert result.returncode == 0, result.stderr
    return {e["step"]: e for e in json.loads(result.stdout)}


def test_explain_names_what_changed_since_the_last_entry(project: Path) -> None:
    write_pipeline(project, PIPELINE.format(mode="a", lint="echo lint"))
    (project / "a.lock").write_text("1")
    (project / "src").mkdir()
    (project / "src" / "a.py").write_text("x")
    never = _explain(project)
    assert never["deps"]["reasons"] == ["never cached: no entry for this step yet"]
    assert never["lint"]["reasons"] == ["builds in 'deps', and it will run: a new parent snapshot"]
    assert cli("run", cwd=project).returncode == 0

    cached = _explain(project)
    assert [cached[k]["outcome"] for k in ("deps", "lint", "always")] == ["hit", "hit", "always"]
    human = cli("explain", cwd=project).stdout
    assert "↺ deps: cached" in human and "▶ always: runs" in human

    time.sleep(0.6)
    (project / "src" / "a.py").write_text("y")
    (project / "src" / "b.py").write_text("z")
    edited = _explain(project)
    assert edited["deps"]["outcome"] == "hit"
    assert edited["lint"]["changed"]["watched"] == {
        "added": ["src/b.py"],
        "removed": [],
        "changed": ["src/a.py"],
    }
    assert (
        edited["fresh"]["reasons"][0].endswith("the ttl of 0s ran out")
        or "ttl" in (edited["fresh"]["reasons"][0])
    )

    write_pipeline(project, PIPELINE.format(mode="secret-value", lint="echo linted"))
    changed = _explain(project, "ci", "lint")
    assert list(changed) == ["lint"]
    (project / "src" / "a.py").write_text("x")
    (project / "src" / "b.py").unlink()
    again = _explain(project)
    assert again["deps"]["changed"]["env"] == {"added": [], "removed": [], "changed": ["MODE"]}
    assert "secret-value" not in cli("explain", cwd=project).stdout


def test_a_changed_command_and_a_rerun_parent(project: Path) -> None:
    write_pipeline(project, PIPELINE.format(mode="a", lint="echo lint"))
    (project / "a.lock").write_text("1")
    (project / "src").mkdir()
    (project / "src" / "a.py").write_text("x")
    assert cli("run", cwd=project).returncode == 0
    write_pipeline(project, PIPELINE.format(mode="a", lint="echo lint --strict"))
    found = _explain(project)
    assert found["lint"]["changed"]["command"] == {"was": "echo lint", "now": "echo lint --strict"}
    assert "command changed: 'echo lint' -> 'echo lint --strict'" in found["lint"]["reasons"]
    assert cli("run", cwd=project).returncode == 0
    (project / "a.lock").write_text("2")
    (project / "src" / "a.py").write_text("x")
    assert cli("run", "--only", "deps", cwd=project).returncode == 0
    rerun = _explain(project)
    assert rerun["deps"]["outcome"] == "hit"
    assert rerun["lint"]["reasons"] == ["its parent produced a new snapshot (the parent ran again)"]


def test_explain_errors_are_exit_2(project: Path) -> None:
    write_pipeline(project, PIPELINE.format(mode="a", lint="echo lint"))
    (project / "a.lock").write_text("1")
    (project / "src").mkdir()
    (project / "src" / "a.py").write_text("x")
    unknown = cli("explain", "ci", "lnit", cwd=project)
    assert unknown.returncode == 2 and "has no step 'lnit' (its steps: deps," in unknown.stderr
    assert cli("explain", "nope", cwd=project).returncode == 2
