"""greenloop: local CI and an always-green dev loop from one engine.

Pipeline files use this module as their DSL::

    import greenloop as gl

    @gl.pipeline("ci")
    def ci():
        deps = gl.python.install()
        gl.python.lint(deps)
        gl.python.test(deps)
"""

from __future__ import annotations

from greenloop._version import __version__

# Not ``typing.TYPE_CHECKING``: every command imports this package first, and
# importing typing here would cost each of them milliseconds (mypy reads this too).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from greenloop.sdk import (
        CacheDirSpec,
        Cell,
        Chain,
        FreshStepOptions,
        Join,
        PipelineDefinitionError,
        Secret,
        Service,
        StepOptions,
        Target,
        Toolchain,
        cache_dir,
        compose,
        forever,
        matrix,
        node,
        on_change,
        pipeline,
        python,
        rust,
        sandbox,
        secret,
        secret_file,
        service,
        sh,
        target,
        ttl,
        wait,
    )

__all__ = [
    "CacheDirSpec",
    "Cell",
    "Chain",
    "FreshStepOptions",
    "Join",
    "PipelineDefinitionError",
    "Secret",
    "Service",
    "StepOptions",
    "Target",
    "Toolchain",
    "__version__",
    "cache_dir",
    "compose",
    "forever",
    "matrix",
    "node",
    "on_change",
    "pipeline",
    "python",
    "rust",
    "sandbox",
    "secret",
    "secret_file",
    "service",
    "sh",
    "target",
    "ttl",
    "wait",
]


def __getattr__(name: str) -> Any:
    # The DSL loads on first use, so commands that never read a pipeline file
    # (and `greenloop.cli` itself) do not pay for it.
    if name in __all__:
        from greenloop import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'greenloop' has no attribute {name!r}")
