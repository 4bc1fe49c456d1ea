"""Ready-made steps for common toolchains.

Each toolchain's ``install`` starts a chain whose dependency install is cached
with ``on_change`` on the lock file, so it reruns only when dependencies change;
``build``/``test``/``lint`` fork off that chain and therefore run in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass

from greenloop.sdk.policies import on_change
from greenloop.sdk.registry import recorder
from greenloop.sdk.steps import Chain, sh


def path_first(*dirs: str) -> str:
    """A shell prefix putting ``dirs`` (relative to the step's working folder) first on
    ``PATH`` for the command after it."""
    joined = ":".join(f"$PWD/{d}" for d in dirs)
    return f'export PATH="{joined}:$PATH"; '


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
    bin_dirs: tuple[str, ...] = ()
    """Folders (relative to the workdir) the install fills with programs: put first on
    ``PATH`` for every step after it, so a tool that looks itself or its peers up on
    ``PATH`` (``pyright --verifytypes``, an npm script's binaries) finds them."""

    def _activated(self, command: str) -> str:
        return path_first(*self.bin_dirs) + command if self.bin_dirs else command

    def install(
        self, *, lockfile: str | None = None, command: str | None = None, image: str | None = None
    ) -> Chain:
        """Install dependencies; cached until ``lockfile`` (default: any usual one) changes.

        As a target is: asked again in the same pipeline with the same arguments, it
        gives the same step, so ``build``, ``test`` and ``lint`` share one install.
        """
        # The usual lock files are alternatives: a project has some of them, never all.
        cache = on_change(lockfile) if lockfile else on_change(*self.lockfiles, optional=True)

        def make() -> Chain:
            return sh(
                command or self.install_cmd,
                label=f"{self.name} install",
                key=f"{self.name}-install",
                image=image or self.image,
                cache=cache,
            )

        current = recorder()
        if current is None:
            return make()  # sh() says where steps can be made
        chain: Chain = current.once((self.name, "install", lockfile, command, image), make)
        return chain

    def build(self, deps: Chain | None = None, command: str | None = None) -> Chain:
        """Build after ``deps`` (default: :meth:`install`), in its filesystem."""
        deps = deps or self.install()
        return deps.sh(self._activated(command or self.build_cmd), label=f"{self.name} build")

    def test(self, deps: Chain | None = None, command: str | None = None) -> Chain:
        """Run the tests after ``deps`` (default: :meth:`install`), in its filesystem."""
        deps = deps or self.install()
        return deps.sh(self._activated(command or self.test_cmd), label=f"{self.name} test")

    def lint(self, deps: Chain | None = None, command: str | None = None) -> Chain:
        """Run the linter after ``deps`` (default: :meth:`install`), in its filesystem."""
        deps = deps or self.install()
        return deps.sh(self._activated(command or self.lint_cmd), label=f"{self.name} lint")


# The project's own code is never installed into the cached venv: a cached install
# would freeze the sources of the day the lock last changed, and every later test
# would import that copy. The install step installs the project to get its
# dependencies, then removes the project itself; the steps after it import the
# current sources from the workspace (src layout or flat).
_PYTHON_SOURCES = 'PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" '
_PYTHON_PROJECT_NAME = (
    ".venv/bin/python -c 'import tomllib; "
    'print(tomllib.load(open("pyproject.toml", "rb"))["project"]["name"])\' 2>/dev/null'
    " || .venv/bin/python setup.py --name"
)

python = Toolchain(
    name="python",
    image="python:3.12-slim",
    lockfiles=(
        "requirements*.txt",
        "pyproject.toml",
        "setup.py",
        "setup.cfg",
        "poetry.lock",
        "uv.lock",
    ),
    # `python -m pip` rather than .venv/bin/pip: a script's shebang names the sandbox
    # it was installed in, which a later step does not share.
    install_cmd=(
        "python3 -m venv .venv && if [ -f requirements.txt ]; then"
        " .venv/bin/python -m pip install -q -r requirements.txt;"
        " elif [ -f pyproject.toml ] || [ -f setup.py ]; then"
        " .venv/bin/python -m pip install -q . &&"
        f' .venv/bin/python -m pip uninstall -q -y "$({_PYTHON_PROJECT_NAME})"; fi'
        " && .venv/bin/python -m pip install -q pytest ruff"
    ),
    build_cmd=_PYTHON_SOURCES + ".venv/bin/python -m compileall -q .",
    test_cmd=_PYTHON_SOURCES + ".venv/bin/python -m pytest -q",
    lint_cmd=".venv/bin/python -m ruff check .",
    bin_dirs=(".venv/bin",),
)
"""Python: a virtualenv in the workspace with the project's dependencies (from
requirements.txt, or the project's own metadata), pytest and ruff; the steps after
it import the project from the workspace's current sources, never an installed copy;
they run with ``.venv/bin`` first on ``PATH``."""

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
    bin_dirs=("node_modules/.bin",),
)
"""Node: npm ci, then the package's build, test and lint scripts, with ``node_modules/.bin``
first on ``PATH``."""
