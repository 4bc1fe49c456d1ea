"""The pipeline DSL users import as ``import greenloop as gl``."""

from greenloop.sdk.cache_dirs import CacheDirSpec, cache_dir
from greenloop.sdk.compiler import pipeline
from greenloop.sdk.matrix import Cell, matrix
from greenloop.sdk.policies import compose, forever, on_change, sandbox, ttl
from greenloop.sdk.secrets import Secret, secret, secret_file
from greenloop.sdk.services import Service, service
from greenloop.sdk.steps import (
    Chain,
    FreshStepOptions,
    Join,
    PipelineDefinitionError,
    StepOptions,
    sh,
    wait,
)
from greenloop.sdk.targets import Target, target
from greenloop.sdk.toolchains import Toolchain, node, python, rust

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
