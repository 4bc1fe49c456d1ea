"""The resident daemon: greenloop's imports paid once, every command forked from them.

A ``greenloop`` command spends most of a fully cached run starting CPython and
importing pydantic, click and the engine. A daemon keeps one process with all
of that imported; the ``greenloop`` entry point hands each command to it (argv,
cwd, environment, umask and the terminal's own stdin, stdout and stderr, passed
as file descriptors), and the daemon forks a child that runs the command
exactly as a fresh process would. With no daemon, or one that does not match
(another interpreter, ``sys.path``, Python settings or locale), the command
runs in-process as before, and starts a daemon in the background for the next
command (:mod:`greenloop.daemon.spawn`), unless the user turned that off or it
runs under CI.

This module only names where a daemon lives and when one may start by itself;
it imports nothing heavy because the entry point reads it before every command.
"""

from __future__ import annotations

import os
import sys
import zlib

DAEMON_DIR_ENV = "GREENLOOP_DAEMON_DIR"
NO_DAEMON_ENV = "GREENLOOP_NO_DAEMON"
SERVER_MODULE = "greenloop.daemon.server"
"""What ``python -m`` runs to serve as a daemon."""

# Values of $CI that mean "not CI": CI services set it to "true" (some to "1").
_NOT_CI = ("", "0", "false", "no", "off")


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
        """Held (``flock``) by the one daemon of these settings, starting or serving;
        it holds that daemon's pid."""
        self.log = f"{name}.log"


def interpreter_options() -> list[str]:
    """The command-line options that give a new interpreter this one's ``sys.flags``,
    ``-W`` and ``-X`` settings: what a daemon needs to share this process's identity."""
    import subprocess  # only where a daemon is started: its import costs ~15 ms

    # What multiprocessing uses for the same purpose; private, but there since Python 3.2.
    options: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    return options


def in_ci() -> bool:
    """Whether this command runs under CI (``$CI`` set, as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() not in _NOT_CI


def may_start_itself(wanted: bool | None) -> bool:
    """Whether a command with no daemon to serve it should start one for the next.

    ``wanted`` is the user's ``daemon`` setting (None: not set). Never under CI
    unless asked, and never for an interpreter started to be looked into (``-X``
    options such as ``importtime``, ``-v``, ``-X dev``, import profiling): a
    daemon would answer those commands without the output they were run for.
    """
    if wanted is False or (wanted is None and in_ci()):
        return False
    if sys._xoptions or sys.flags.verbose or sys.flags.dev_mode:
        return False
    return not any(
        os.environ.get(v) for v in ("PYTHONPROFILEIMPORTTIME", "PYTHONTRACEMALLOC", "PYTHONVERBOSE")
    )
