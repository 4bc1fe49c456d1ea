"""What a daemon loads once, before it forks its first command."""

from __future__ import annotations

import codecs
import gc
import importlib

# What a command may import: everything but the user's pipeline file. Forked
# children share these pages, so preloading much costs little.
PRELOAD = (
    "greenloop.cli",
    "greenloop.cli._pipeline",
    "greenloop.cli._cache",
    "greenloop.cli._devloop",
    "greenloop.cli._plugins",
    "greenloop.cli._schema",
    "greenloop.cli.formatters",
    "greenloop.cli._live",
    "greenloop.cli._reports",
    "greenloop.cli._hook",
    "greenloop.cli._history",
    "greenloop.cli._explain",
    "greenloop.cli._debug",
    "greenloop.sdk.loader",
    "greenloop.engine.run",
    "greenloop.executors.local",
    "greenloop.executors.docker",
    "greenloop.executors.docker_image_id",  # a docker step's key asks for its image's id
    "greenloop.daemon.spare",
    "greenloop.sdk",
    "greenloop.protocol",
    "docker",
    "rich.console",
)


def preload() -> None:
    """Import what commands need, finish pydantic's models and freeze the heap, once."""
    for module in PRELOAD:
        importlib.import_module(module)
    from pydantic import BaseModel

    from greenloop import protocol
    from greenloop.daemon import pages
    from greenloop.engine import project_files
    from greenloop.plugins import discovery

    for name in protocol.__all__:
        getattr(protocol, name)
    # Models with forward references finish building on first use: do it now,
    # once, rather than in every child.
    models = BaseModel.__subclasses__()
    while models:
        model = models.pop()
        models.extend(model.__subclasses__())
        if model.__module__.startswith("greenloop.") and not model.__pydantic_complete__:
            model.model_rebuild()
    discovery.available("executor")  # the scan of installed entry points
    codecs.lookup("ascii")  # a run reads /proc files as ascii (greenloop._fs.process_start)
    pages.prepare()
    project_files.workspace_ignores()
    gc.collect()
    gc.freeze()  # children then leave the shared pages alone
