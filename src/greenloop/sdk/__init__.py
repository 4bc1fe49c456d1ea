"""The pipeline DSL users import as ``import greenloop as gl``."""

from greenloop.sdk.compiler import pipeline
from greenloop.sdk.policies import compose, forever, on_change, sandbox, ttl
from greenloop.sdk.steps import Chain, Join, PipelineDefinitionError, sh, wait
from greenloop.sdk.toolchains import Toolchain, node, python, rust

__all__ = [
    "Chain",
    "Join",
    "PipelineDefinitionError",
    "Toolchain",
    "compose",
    "forever",
    "node",
    "on_change",
    "pipeline",
    "python",
    "rust",
    "sandbox",
    "sh",
    "ttl",
    "wait",
]
