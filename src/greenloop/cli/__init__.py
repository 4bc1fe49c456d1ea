"""The ``greenloop`` command line.

Exit codes: 0 success (green), 1 the thing checked failed (red tree, failed
step), 2 usage or setup error (bad pipeline file, missing program, bad input),
130 interrupted.
"""

from __future__ import annotations

import importlib

import click

from greenloop._version import __version__

# Subcommands load on demand: a cached `greenloop run` must not pay for the
# imports of every other command.
_COMMANDS = {
    "run": "greenloop.cli._pipeline:run",
    "render": "greenloop.cli._pipeline:render",
    "pipelines": "greenloop.cli._pipeline:pipelines",
    "init": "greenloop.cli._pipeline:init",
    "runs": "greenloop.cli._pipeline:runs",
    "cache": "greenloop.cli._cache:cache",
    "schema": "greenloop.cli._schema:schema",
    "plugins": "greenloop.cli._plugins:plugins",
    "check": "greenloop.cli._devloop:check",
    "watch": "greenloop.cli._devloop:watch",
    "status": "greenloop.cli._devloop:status",
    "dev": "greenloop.cli._devloop:dev",
    "daemon": "greenloop.cli._daemon:daemon",
    "hook": "greenloop.cli._hook:hook",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="greenloop")
def main() -> None:
    """greenloop: local CI and an always-green dev loop from one engine."""
