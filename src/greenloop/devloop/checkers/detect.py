"""Zero-config detection: the kinds of project at the root, and reading tools' own config files.

Which checkers a kind gets is decided in :mod:`~greenloop.devloop.checkers.choose`
from what the project declares; the readers here serve the checkers that look
for their tool's config (:func:`config_files`, :func:`ini_section`…).
"""

from __future__ import annotations

import configparser
import json
import tomllib
from collections.abc import Iterable
from pathlib import Path

from greenloop.devloop.checkers.base import Evidence
from greenloop.devloop.config import Kind

PYTHON_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg")
"""Files that make a folder a Python project (so do ``*.py`` files at the root)."""

KIND_MARKERS = {
    Kind.RUST: "Cargo.toml",
    Kind.PYTHON: "pyproject.toml, setup.py, setup.cfg or *.py",
    Kind.TYPESCRIPT: "tsconfig.json",
    Kind.JAVASCRIPT: "package.json",
}
"""What makes the root each kind of project, as said to a user."""


def detect_kinds(root: Path) -> list[Kind]:
    """The kinds of project at ``root``, from its marker files, in a fixed order."""
    return list(kind_markers(root))


def kind_markers(root: Path) -> dict[Kind, str]:
    """Each kind of project at ``root`` and the file that shows it, in a fixed order."""
    found: dict[Kind, str] = {}
    if (root / "Cargo.toml").is_file():
        found[Kind.RUST] = "Cargo.toml"
    marker = next((m for m in PYTHON_MARKERS if (root / m).is_file()), None)
    if marker is None:
        marker = next((p.name for p in sorted(root.glob("*.py")) if p.is_file()), None)
    if marker is not None:
        found[Kind.PYTHON] = marker
    if (root / "tsconfig.json").is_file():
        found[Kind.TYPESCRIPT] = "tsconfig.json"
    if (root / "package.json").is_file():
        found[Kind.JAVASCRIPT] = "package.json"
    return found


def config_files(root: Path, names: Iterable[str]) -> list[Evidence]:
    """The files among ``names`` that exist at ``root``, as evidence."""
    return [Evidence(name, "") for name in names if (root / name).is_file()]


def pyproject_table(root: Path, tool: str) -> list[Evidence]:
    """``[tool.TOOL]`` of ``pyproject.toml`` as evidence, when the project has it."""
    return [Evidence("pyproject.toml", f"[tool.{tool}]")] if tool in pyproject_tool(root) else []


def ini_sections(root: Path, name: str, files: Iterable[str]) -> list[Evidence]:
    """Section ``[name]`` of each INI file among ``files`` that has it, as evidence."""
    return [Evidence(f, f"[{name}]") for f in files if ini_section(root / f, name) is not None]


def package_json(root: Path) -> dict[str, object]:
    """The project's ``package.json`` (empty when there is none or it is unreadable)."""
    try:
        document = json.loads((root / "package.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def pyproject_tool(root: Path) -> dict[str, object]:
    """The ``[tool]`` table of the project's ``pyproject.toml`` (empty when there is none)."""
    try:
        tool = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("tool")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    return tool if isinstance(tool, dict) else {}


def ini_section(path: Path, name: str) -> dict[str, str] | None:
    """Section ``name`` of the INI file at ``path``; None if either is missing or unreadable."""
    if not path.is_file():
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return None
    return dict(parser[name]) if parser.has_section(name) else None
