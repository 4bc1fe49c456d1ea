"""The ``greenloop`` command line.

Exit codes: 0 success (green), 1 the thing checked failed (red tree, failed
step), 2 usage or setup error (bad pipeline file, missing program, bad input),
130 interrupted.
"""

from __future__ import annotations

import click

from greenloop._version import __version__
from greenloop.cli import _cache, _pipeline, _schema


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="greenloop")
def main() -> None:
    """greenloop: local CI and an always-green dev loop from one engine."""


main.add_command(_schema.schema)
main.add_command(_cache.cache)
for _command in _pipeline.COMMANDS:
    main.add_command(_command)
