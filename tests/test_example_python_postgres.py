"""examples/python-postgres, as docs/pipelines.md walks through it: run by a new user."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import cli

EXAMPLE = Path(__file__).parent.parent / "examples" / "python-postgres"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        pytest.skip("PostgreSQL's server is not installed (Debian: postgresql)")
    copy = tmp_path / "notes"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
    return copy


def test_ci_lints_and_tests_against_postgres_then_answers_from_the_cache(example: Path) -> None:
    first = cli("run", "ci", "--format", "plain", cwd=example, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 passed" in first.stdout  # the tests really talked to PostgreSQL
    second = cli("run", "ci", "--format", "plain", cwd=example, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "↺ install cached" in second.stdout and "↺ ruff cached" in second.stdout
    (example / "src" / "notes" / "__init__.py").write_text("syntax error(\n")
    broken = cli("run", "ci", "--format", "plain", cwd=example, timeout=600)
    assert broken.returncode == 1
    assert "↺ install cached" in broken.stdout and "✓ summary passed" in broken.stdout


def test_release_reads_its_version_from_git_and_its_token_from_a_secret(example: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(example), *args], check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("-c", "user.email=dev@example.com", "-c", "user.name=dev", "commit", "-qm", "notes")
    git("tag", "v0.1.0")
    missing = cli("run", "release", cwd=example)
    assert missing.returncode == 2 and "PYPI_TOKEN" in missing.stderr
    done = cli(
        "run", "release", "--format", "plain", cwd=example, env={"PYPI_TOKEN": "t0k"}, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "would upload notes v0.1.0" in done.stdout
    assert "t0k" not in done.stdout


def test_the_docs_show_the_example_as_it_is() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "pipelines.md").read_text()
    assert (EXAMPLE / ".greenloop" / "pipeline.py").read_text() in docs
