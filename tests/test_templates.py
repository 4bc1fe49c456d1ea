"""Every ``greenloop init`` starter passes the checkers greenloop picks, as written:
ruff (its defaults, and ``--select ALL`` less INP001 and CPY001), flake8 (its
defaults), ``mypy --strict`` and pyright in strict mode — so a new project's first
``greenloop check`` is green whichever of them the project runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from greenloop.cli._templates import TEMPLATES
from tests.conftest import cli
from tests.test_devloop_helpers import VENV_BIN, node_bin


def _starter(tmp_path: Path, template: str) -> Path:
    assert cli("init", "--template", template, cwd=tmp_path).returncode == 0
    return tmp_path / ".greenloop" / "pipeline.py"


def _clean(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_a_starter_passes_ruff_flake8_mypy_and_pyright_strict(
    tmp_path: Path, template: str
) -> None:
    path = str(_starter(tmp_path, template))
    # flake8's defaults are the strictest line length a project is likely to keep (79).
    _clean([str(VENV_BIN / "flake8"), "--isolated", path], tmp_path)
    ruff = str(VENV_BIN / "ruff")
    _clean([ruff, "check", "--no-cache", path], tmp_path)
    _clean(
        [ruff, "check", "--no-cache", "--select", "ALL", "--ignore", "INP001,CPY001", path],
        tmp_path,
    )
    _clean([ruff, "format", "--no-cache", "--check", path], tmp_path)
    _clean([str(VENV_BIN / "mypy"), "--strict", "--no-incremental", path], tmp_path)
    (tmp_path / "pyrightconfig.json").write_text(json.dumps({"typeCheckingMode": "strict"}))
    _clean([str(node_bin() / "pyright"), "--pythonpath", str(VENV_BIN / "python"), path], tmp_path)


def test_greenloop_is_typed_for_the_checkers(tmp_path: Path) -> None:
    # Regression: with no py.typed, mypy said "module is installed, but missing
    # library stubs or py.typed marker" on every pipeline file.
    import greenloop

    assert (Path(greenloop.__file__).parent / "py.typed").is_file()


def test_check_is_green_on_a_fresh_python_starter(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "demo"\nversion = "0.1.0"\n')
    (tmp_path / "demo.py").write_text("def add(a: int, b: int) -> int:\n    return a + b\n")
    _starter(tmp_path, "python")
    result = cli("check", cwd=tmp_path, env={"PATH": f"{VENV_BIN}:/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
