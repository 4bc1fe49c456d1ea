"""The ``greenloop`` command line.

Exit codes: 0 success (green), 1 the thing checked failed (red tree, failed
step), 2 usage or setup error (bad pipeline file, missing program, bad input),
130 interrupted.
"""

from __future__ import annotations

import errno
import importlib
import sys
from typing import Any

import click

from greenloop._lazy import imports_without_collection
from greenloop._version import __version__
from greenloop.cli._exit import fail

# Subcommands load on demand: a cached `greenloop run` must not pay for the
# imports of every other command.
_COMMANDS = {
    "run": "greenloop.cli._pipeline:run",
    "render": "greenloop.cli._pipeline:render",
    "pipelines": "greenloop.cli._pipeline:pipelines",
    "explain": "greenloop.cli._explain:explain",
    "debug": "greenloop.cli._debug:debug",
    "init": "greenloop.cli._init:init",
    "runs": "greenloop.cli._history:runs",
    "logs": "greenloop.cli._history:logs",
    "artifacts": "greenloop.cli._history:artifacts",
    "cache": "greenloop.cli._cache:cache",
    "schema": "greenloop.cli._schema:schema",
    "plugins": "greenloop.cli._plugins:plugins",
    "check": "greenloop.cli._devloop:check",
    "watch": "greenloop.cli._devloop:watch",
    "status": "greenloop.cli._devloop:status",
    "dev": "greenloop.cli._devloop:dev",
    "serve": "greenloop.cli._serve:serve",
    "daemon": "greenloop.cli._daemon:daemon",
    "hook": "greenloop.cli._hook:hook",
}


# A disk that cannot take a write is the machine's state, not greenloop's bug:
# a one-line error (exit 2) rather than a traceback.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a store failure or a disk that refuses writes is one line, exit 2."""
        try:
            return super().invoke(ctx)
        except OSError as e:
            if e.errno not in _DISK_ERRNOS:
                raise
            fail(f"{e.filename or 'a write'}: {e.strerror}")
        except Exception as e:
            # Only a command that used the store can raise its error, so its module
            # is loaded then, and commands that never touch the store do not load it.
            errors = sys.modules.get("greenloop.store.exceptions")
            if errors is None or not isinstance(e, errors.StoreError):
                raise
            fail(str(e))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        with imports_without_collection():
            command: click.Command = getattr(importlib.import_module(module), attr)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="greenloop")
def main() -> None:
    """greenloop: local CI and an always-green dev loop from one engine."""
