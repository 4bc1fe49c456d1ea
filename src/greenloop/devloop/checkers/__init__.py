"""Which checkers vouch for a project: detected defaults, overridden by the settings."""

from greenloop.devloop.checkers.resolve import BUILTINS, Checker, default_checkers, resolve_checkers

__all__ = ["BUILTINS", "Checker", "default_checkers", "resolve_checkers"]
