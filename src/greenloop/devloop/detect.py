"""Zero-config detection: which kinds of project live at the root, and their default checkers."""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path

from greenloop.devloop.config import Kind

PYTHON_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg")
"""Files that make a folder a Python project (so do ``*.py`` files at the root)."""


def detect_kinds(root: Path) -> list[Kind]:
    """The kinds of project at ``root``, from its marker files, in a fixed order."""
    kinds = []
    if (root / "Cargo.toml").is_file():
        kinds.append(Kind.RUST)
    if any((root / m).is_file() for m in PYTHON_MARKERS) or any(root.glob("*.py")):
        kinds.append(Kind.PYTHON)
    if (root / "tsconfig.json").is_file():
        kinds.append(Kind.TYPESCRIPT)
    return kinds


def python_type_checker(root: Path) -> str:
    """``pyright`` when the project configures pyright, else ``mypy``."""
    if (root / "pyrightconfig.json").is_file() or "pyright" in _pyproject_tool(root):
        return "pyright"
    return "mypy"


def mypy_has_targets(root: Path) -> bool:
    """True when mypy's own config (the file mypy would read) says what to check."""
    keys = ("files", "packages", "modules")
    for name in ("mypy.ini", ".mypy.ini"):
        section = _ini_section(root / name, "mypy")
        if section is not None:
            return any(k in section for k in keys)
    mypy = _pyproject_tool(root).get("mypy")
    if isinstance(mypy, dict):
        return any(k in mypy for k in keys)
    section = _ini_section(root / "setup.cfg", "mypy")
    return section is not None and any(k in section for k in keys)


def mypy_supports_json(version: str) -> bool:
    """mypy gained ``-O json`` in 1.11; older (or unknown) versions get the text format."""
    match = re.search(r"(\d+)\.(\d+)", version)
    return match is not None and (int(match[1]), int(match[2])) >= (1, 11)


def _pyproject_tool(root: Path) -> dict[str, object]:
    try:
        tool = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("tool")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    return tool if isinstance(tool, dict) else {}


def _ini_section(path: Path, name: str) -> dict[str, str] | None:
    if not path.is_file():
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return None
    return dict(parser[name]) if parser.has_section(name) else None
