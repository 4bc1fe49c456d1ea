"""The resident daemon: greenloop's imports paid once, every command forked from them.

A ``greenloop`` command spends most of a fully cached run starting CPython and
importing pydantic, click and the engine. ``greenloop daemon start`` keeps one
process with all of that imported; the ``greenloop`` entry point hands each
command to it (argv, cwd, environment, umask and the terminal's own stdin,
stdout and stderr, passed as file descriptors), and the daemon forks a child
that runs the command exactly as a fresh process would. With no daemon, or one
that does not match (another interpreter, ``sys.path``, Python settings or
locale), the command runs in-process as before.

This module only names where a daemon lives; it imports nothing heavy because
the entry point reads it before every command.
"""

from __future__ import annotations

import os
import sys
import zlib

DAEMON_DIR_ENV = "GREENLOOP_DAEMON_DIR"
NO_DAEMON_ENV = "GREENLOOP_NO_DAEMON"


def identity() -> str:
    """What a daemon must share with a client to run its commands faithfully.

    The interpreter, its flags and import path (``sys.path[0]``, the script's
    or current folder, is set per command), and the environment variables read
    only at interpreter start-up: ``PYTHON*`` and the locale.
    """
    settings = sorted(
        (k, v) for k, v in os.environ.items() if k.startswith(("PYTHON", "LC_", "LANG"))
    )
    return repr(
        (sys.executable, sys.path[1:], tuple(sys.flags), sorted(sys._xoptions.items()), settings)
    )


class DaemonPaths:
    """The files of the daemon that serves this interpreter and settings: in
    ``$GREENLOOP_DAEMON_DIR``, or a per-user folder in ``$TMPDIR`` (``/tmp``)."""

    def __init__(self) -> None:
        self.folder = os.environ.get(DAEMON_DIR_ENV) or os.path.join(
            os.environ.get("TMPDIR") or "/tmp", f"greenloop-daemon-{os.getuid()}"
        )
        self.identity = identity()
        # A short name for the file; the daemon checks the full identity itself.
        name = os.path.join(self.folder, f"daemon-{zlib.crc32(self.identity.encode()):08x}")
        self.socket = f"{name}.sock"
        self.lock = f"{name}.lock"
        self.log = f"{name}.log"
