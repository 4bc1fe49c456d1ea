"""Starter pipeline files for ``greenloop init``."""

from __future__ import annotations

from pathlib import Path

from greenloop._project import PROJECT_DIR

_HEADER = '''"""greenloop pipelines for this project.

`greenloop run ci` runs the `ci` pipeline.
"""

import greenloop as gl

'''

TEMPLATES = {
    "python": _HEADER
    + """
@gl.pipeline("ci")
def ci() -> None:
    \"\"\"Lint and test; the install is cached until its files change.\"\"\"
    deps = gl.python.install()
    # lint and test fork off the install and run in parallel.
    gl.python.lint(deps)
    gl.python.test(deps)
""",
    "rust": _HEADER
    + """
@gl.pipeline("ci")
def ci() -> None:
    \"\"\"Clippy and the tests, after a cached `cargo fetch`.\"\"\"
    deps = gl.rust.install()
    gl.rust.lint(deps)
    gl.rust.test(deps)
""",
    "node": _HEADER
    + """
@gl.pipeline("ci")
def ci() -> None:
    \"\"\"Lint, test and build, after a cached `npm ci`.\"\"\"
    deps = gl.node.install()
    gl.node.lint(deps)
    gl.node.test(deps)
    gl.node.build(deps)
""",
    "generic": _HEADER
    + """
@gl.pipeline("ci")
def ci() -> None:
    \"\"\"Prepare once, then check the files; put your own commands here.\"\"\"
    setup = gl.sh("echo preparing", label="setup", cache=gl.forever())
    setup.sh("ls -la", label="list files")
    setup.sh('test -n "$(ls)"', label="workspace is not empty")
""",
}
"""Starter pipeline files. Each passes ruff (its defaults, and ``--select ALL`` but for
INP001, as ``.greenloop/`` is no package, and CPY001, copyright notices), flake8 with
its defaults (79 columns), ``mypy --strict`` and pyright as written: the pipeline is a
project file like any other, checked by the project's own rules."""

_GITIGNORE = (
    "# greenloop's links (latest-green, out); only the pipeline and config belong in git\n"
    "*\n!.gitignore\n!*.py\n!*.toml\n"
)


def detect(root: Path) -> str:
    """The template that fits the project at ``root``."""
    if (root / "Cargo.toml").exists():
        return "rust"
    if (root / "package.json").exists():
        return "node"
    if any((root / f).exists() for f in ("pyproject.toml", "setup.py", "requirements.txt")):
        return "python"
    return "generic"


def write(root: Path, template: str) -> Path:
    """Write ``.greenloop/pipeline.py`` (and its ``.gitignore``) from ``template``."""
    return write_source(root, TEMPLATES[template])


def write_source(root: Path, source: str) -> Path:
    """Write ``source`` as ``.greenloop/pipeline.py`` (and the folder's ``.gitignore``)."""
    folder = root / PROJECT_DIR
    folder.mkdir(exist_ok=True)
    if not (folder / ".gitignore").exists():
        (folder / ".gitignore").write_text(_GITIGNORE)
    target = folder / "pipeline.py"
    target.write_text(source)
    return target
