"""greenloop: local CI and an always-green dev loop from one engine.

Pipeline files use this module as their DSL::

    import greenloop as gl

    @gl.pipeline("ci")
    def ci():
        deps = gl.python.install()
        gl.python.lint(deps)
        gl.python.test(deps)
"""

from greenloop._version import __version__
from greenloop.sdk import (
    Chain,
    Join,
    PipelineDefinitionError,
    Toolchain,
    compose,
    forever,
    node,
    on_change,
    pipeline,
    python,
    rust,
    sh,
    ttl,
    wait,
)

__all__ = [
    "Chain",
    "Join",
    "PipelineDefinitionError",
    "Toolchain",
    "__version__",
    "compose",
    "forever",
    "node",
    "on_change",
    "pipeline",
    "python",
    "rust",
    "sh",
    "ttl",
    "wait",
]
