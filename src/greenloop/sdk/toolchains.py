"""Ready-made steps for common toolchains.

Each toolchain's ``install`` starts a chain whose dependency install is cached
with ``on_change`` on the lock file, so it reruns only when dependencies change;
``build``/``test``/``lint`` fork off that chain and therefore run in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass

from greenloop.sdk.policies import on_change
from greenloop.sdk.steps import Chain, sh


@dataclass(frozen=True)
class Toolchain:
    """Commands and files for one language ecosystem."""

    name: str
    image: str
    lockfiles: tuple[str, ...]
    install_cmd: str
    build_cmd: str
    test_cmd: str
    lint_cmd: str

    def install(
        self, *, lockfile: str | None = None, command: str | None = None, image: str | None = None
    ) -> Chain:
        """Install dependencies; cached until ``lockfile`` (default: the usual ones) changes."""
        globs = (lockfile,) if lockfile else self.lockfiles
        return sh(
            command or self.install_cmd,
            label=f"{self.name} install",
            key=f"{self.name}-install",
            image=image or self.image,
            cache=on_change(*globs),
        )

    def build(self, deps: Chain, command: str | None = None) -> Chain:
        """Build after ``deps`` (in its filesystem)."""
        return deps.sh(command or self.build_cmd, label=f"{self.name} build")

    def test(self, deps: Chain, command: str | None = None) -> Chain:
        """Run the tests after ``deps`` (in its filesystem)."""
        return deps.sh(command or self.test_cmd, label=f"{self.name} test")

    def lint(self, deps: Chain, command: str | None = None) -> Chain:
        """Run the linter after ``deps`` (in its filesystem)."""
        return deps.sh(command or self.lint_cmd, label=f"{self.name} lint")


python = Toolchain(
    name="python",
    image="python:3.12-slim",
    lockfiles=("requirements*.txt", "pyproject.toml", "poetry.lock", "uv.lock"),
    # `python -m pip` rather than .venv/bin/pip: a script's shebang names the sandbox
    # it was installed in, which a later step does not share.
    install_cmd=(
        "python3 -m venv .venv && if [ -f requirements.txt ]; then"
        " .venv/bin/python -m pip install -q -r requirements.txt;"
        " elif [ -f pyproject.toml ] || [ -f setup.py ]; then"
        " .venv/bin/python -m pip install -q .; fi"
        " && .venv/bin/python -m pip install -q pytest ruff"
    ),
    build_cmd=".venv/bin/python -m compileall -q .",
    test_cmd=".venv/bin/python -m pytest -q",
    lint_cmd=".venv/bin/python -m ruff check .",
)
"""Python: a virtualenv in the workspace with the project (or requirements.txt), pytest and
ruff installed into it."""

rust = Toolchain(
    name="rust",
    image="rust:1-slim",
    lockfiles=("Cargo.lock", "Cargo.toml", "rust-toolchain.toml"),
    install_cmd="cargo fetch --locked",
    build_cmd="cargo build --locked --all-targets",
    test_cmd="cargo test --locked",
    lint_cmd="cargo clippy --locked --all-targets -- -D warnings",
)
"""Rust: cargo fetch, build, test and clippy."""

node = Toolchain(
    name="node",
    image="node:20-slim",
    lockfiles=("package-lock.json", "package.json"),
    install_cmd="npm ci --no-audit --no-fund",
    build_cmd="npm run build",
    test_cmd="npm test",
    lint_cmd="npm run lint",
)
"""Node: npm ci, then the package's build, test and lint scripts."""
