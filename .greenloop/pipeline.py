"""greenloop's own CI, run by greenloop: `greenloop run ci`."""

import greenloop as gl

SOURCES = ("src/**/*.py", "tests/**/*.py", "pyproject.toml")


@gl.pipeline("ci", env={"PYTHONPATH": "src", "PYTHONDONTWRITEBYTECODE": "1"})
def ci():
    # Lint, types and a smoke test are independent: they run in parallel, and each
    # is answered from the cache until a source file it reads changes.
    gl.sh(
        "ruff check src tests && ruff format --check src tests",
        label="lint",
        cache=gl.on_change(*SOURCES),
    )
    gl.sh("mypy", label="types", cache=gl.on_change(*SOURCES))
    # Two commands in a sandbox that ends with the step: a daemon would only be started
    # there to be killed.
    gl.sh(
        "python -m greenloop schema > /dev/null && python -m greenloop render ci > /dev/null",
        label="smoke",
        env={"GREENLOOP_NO_DAEMON": "1"},
        cache=gl.on_change(*SOURCES, ".greenloop/pipeline.py"),
    )
