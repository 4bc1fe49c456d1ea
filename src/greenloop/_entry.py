"""The ``greenloop`` console command: through the daemon when one is up, else here."""

from __future__ import annotations

import os
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
    from greenloop._lazy import imports_without_collection

    with imports_without_collection():
        from greenloop.cli import main as cli

    try:
        cli(prog_name="greenloop")
    except SystemExit as stop:
        leave(stop)
        raise


def leave(stop: SystemExit) -> None:
    """End the process with ``stop``'s exit code now, as a command forked from the daemon
    ends, without taking the interpreter apart: that costs a command that imported
    greenloop ~30 ms (every module and object freed one by one) and changes nothing.

    First what the interpreter itself does first as it ends: wait for the threads that
    are not daemons, run the ``atexit`` functions, flush stdout and stderr. Returns,
    and the interpreter ends the usual way, where that could differ: a message for
    an exit code (it prints it), a profiler or tracer watching (they write out at the
    end), ``python -i``, or a stream that cannot be flushed (it reports that).
    """
    code = stop.code
    if code is None:
        code = 0
    if not isinstance(code, int) or sys.flags.inspect:
        return
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return
    import atexit
    import threading

    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is None:
        return  # not the CPython this was written for: let it end its own way
    shutdown()
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except Exception:
        # What could not be written is still buffered: the interpreter tries again as
        # it ends, and reports the failure as it always has.
        return
    os._exit(code)
