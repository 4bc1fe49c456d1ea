"""The ``greenloop`` console command: through the daemon when one is up, else here."""

from __future__ import annotations

import sys

# A usage or setup error (greenloop.cli._exit.EXIT_SETUP, not imported: click is heavy).
_EXIT_SETUP = 2


def main() -> None:
    """Hand the command line to a running ``greenloop daemon``, or run it in-process
    (and start a daemon in the background for the next command, where allowed)."""
    from greenloop._config import ConfigError
    from greenloop.daemon.client import forward

    try:
        code = forward(sys.argv)
    except ConfigError as e:
        # Every command reads the settings file: one that cannot be used is the
        # same setup error for all of them, in the daemon or not.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(_EXIT_SETUP)
    if code is not None:
        sys.exit(code)
    from greenloop.cli import main as cli

    cli(prog_name="greenloop")
