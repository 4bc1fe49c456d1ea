"""CI for a Python project with a database: lint, tests against PostgreSQL, a release."""

import greenloop as gl

# PostgreSQL from the machine's packages (Debian: `postgresql`), started for the
# steps that name it on a free port, and stopped after them. PostgreSQL refuses
# to run as root: as root it runs as the postgres user.
PG = "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
SERVER = (
    f"{PG}/initdb -D {{dir}}/data -A trust -U postgres >/dev/null && "
    f"exec {PG}/postgres -D {{dir}}/data -p {{port}} -k {{dir}} -h 127.0.0.1"
)
db = gl.service(
    "db",
    run=(
        'if [ "$(id -u)" = 0 ]; then chown postgres {dir}; '
        f"exec runuser -u postgres -- sh -c '{SERVER}'; fi; exec sh -c '{SERVER}'"
    ),
    ready="pg_isready -q -h {host} -p {port}",
)


@gl.target
def deps() -> gl.Chain:
    """The virtualenv: rebuilt only when the requirements change, pip's cache kept."""
    return gl.sh(
        "python3 -m venv .venv && .venv/bin/pip install -q -r requirements-dev.txt",
        label="install",
        cache=gl.on_change("requirements-dev.txt"),
        cache_dirs={"pip": "~/.cache/pip"},
    )


@gl.target
def lint(deps: gl.Chain) -> gl.Chain:
    """ruff, rerun only when Python files change."""
    return deps.sh(
        ".venv/bin/ruff check . && .venv/bin/ruff format --check .",
        label="ruff",
        cache=gl.on_change("**/*.py", "pyproject.toml"),
    )


@gl.target
def tests(deps: gl.Chain) -> gl.Chain:
    """The test suite, against the database; JUnit report kept as an artifact."""
    return deps.sh(
        ".venv/bin/pytest -q --junitxml=report.xml",
        label="pytest",
        services=[db],
        artifacts=["report.xml"],
        timeout=600,
    )


@gl.pipeline("ci", env={"CI": "1"})
def ci() -> None:
    """Every push: lint and tests in parallel, then a summary whatever they said."""
    gl.wait(lint(), tests(), continue_on_failure=True).sh("echo checked", label="summary")


@gl.pipeline("release", on=["release"])
def release() -> None:
    """A tagged commit: once lint and tests pass, its version from git, then the
    upload (a dry run here) with the token only that step sees."""
    # git=True on this step alone: the commit is in its key, not in the install's.
    version = deps().sh("git describe --tags --always > VERSION", label="version", git=True)
    version.after(lint(), tests())
    version.sh(
        'test -n "$TWINE_PASSWORD" && echo "would upload notes $(cat VERSION)"',
        label="upload",
        env={"TWINE_PASSWORD": gl.secret("PYPI_TOKEN")},
    )
