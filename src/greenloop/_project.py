"""Where greenloop keeps its files inside a project: the one description of ``.greenloop/``.

Only the pipeline file and ``*.toml`` settings in it belong to the project
(they are checked, hashed and packed like any source file); everything else
in it is greenloop's own state and never part of a workspace or a verdict.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_DIR = Path(".greenloop")
"""greenloop's folder at the project root."""
PIPELINE_FILE = PROJECT_DIR / "pipeline.py"
"""The pipeline file, relative to the project root."""
LATEST_GREEN = PROJECT_DIR / "latest-green"
"""The published latest-green pointer (``greenloop dev``)."""
DEFAULT_OUT = PROJECT_DIR / "out"
"""Where ``greenloop dev`` keeps the latest green build unless ``--out`` says otherwise."""
LEGACY_SITE = PROJECT_DIR / "current" / "site"
"""Where the first ``dev`` kept the served build; replaced by :data:`DEFAULT_OUT` on sight."""

STATE_IGNORES = (
    f"{PROJECT_DIR}/*",
    f"!{PIPELINE_FILE}",
    f"!{PROJECT_DIR}/*.toml",
)
"""Gitignore-style lines for greenloop's own state in ``.greenloop/`` (the project's files stay)."""
