"""The user's own settings file: how the ``greenloop`` program itself behaves on this machine.

``$GREENLOOP_CONFIG``, else ``$XDG_CONFIG_HOME/greenloop/config.toml``
(``~/.config/greenloop/config.toml``)::

    daemon = false               # never start or use a daemon (true: start one under CI too)
    daemon_idle_timeout = "2h"   # a daemon exits after this long without a command

A missing file means the defaults. The entry point reads this before every
command, so the module imports only the standard library, and ``tomllib`` only
when the file exists.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not typing's: this module is read before every command
if TYPE_CHECKING:
    from typing import Any

CONFIG_ENV = "GREENLOOP_CONFIG"
"""The settings file to read instead of the one in the user's config folder."""
DEFAULT_IDLE_TIMEOUT = 30 * 60.0
"""Seconds a daemon waits for a command before it exits, unless the settings say otherwise."""

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(Exception):
    """The settings file exists but cannot be used; the message names the file and the fault."""


class UserConfig:
    """What the settings file says, and the defaults for what it does not say.

    ``daemon`` is None when the file does not set it: a daemon starts by itself,
    except under CI. True asks for one under CI too; False turns it off.
    """

    __slots__ = ("daemon", "daemon_idle_timeout", "path")

    def __init__(
        self,
        path: str,
        daemon: bool | None = None,
        daemon_idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self.path = path
        self.daemon = daemon
        self.daemon_idle_timeout = daemon_idle_timeout


def config_path() -> str:
    """The settings file this process reads (it need not exist)."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return explicit
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "greenloop", "config.toml")


def load() -> UserConfig:
    """Read the settings file (defaults when there is none); ``ConfigError`` when it is unusable."""
    path = config_path()
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return UserConfig(path)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it: {e.strerror}") from None
    import tomllib  # only here: most machines have no settings file

    try:
        settings: dict[str, Any] = tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    config = UserConfig(path)
    for key, value in settings.items():
        if key == "daemon":
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: daemon must be true or false, not {value!r}")
            config.daemon = value
        elif key == "daemon_idle_timeout":
            config.daemon_idle_timeout = _seconds(path, key, value)
        else:
            # A misspelt setting would otherwise be silently ignored.
            raise ConfigError(
                f"{path}: unknown setting {key!r} (known: daemon, daemon_idle_timeout)"
            )
    return config


def _seconds(path: str, key: str, value: object) -> float:
    """A duration: a number of seconds, or a string such as ``"90s"``, ``"30m"``, ``"2h"``."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        unit = _UNITS.get(text[-1], 0.0)
        try:
            seconds = float(text[:-1] if unit else text) * (unit or 1.0)
        except ValueError:
            seconds = None
    if seconds is None or not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(
            f'{path}: {key} must be a number of seconds or a duration like "30m" or "2h", '
            f"not {value!r}"
        )
    return seconds
