"""The ``greenloop`` console command: through the daemon when one is up, else here."""

from __future__ import annotations

import sys


def main() -> None:
    """Hand the command line to a running ``greenloop daemon``, or run it in-process."""
    from greenloop.daemon.client import forward

    code = forward(sys.argv)
    if code is not None:
        sys.exit(code)
    from greenloop.cli import main as cli

    cli(prog_name="greenloop")
