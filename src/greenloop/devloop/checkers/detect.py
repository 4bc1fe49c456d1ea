"""Zero-config detection: the kinds of project at the root, and reading tools' own config files.

Which checkers a kind gets is each checker's business (its ``kind`` and
``wanted``); the readers here serve the checkers that look at a tool's config.
"""

from __future__ import annotations

import configparser
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
