"""How a command fails: one line on stderr and an exit code (imports nothing heavy)."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

EXIT_SETUP = 2
"""Exit code of a usage or setup error."""


def fail(message: str, code: int = EXIT_SETUP) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
