"""Dev-loop settings: ``greenloop.toml`` or ``[tool.greenloop]`` in ``pyproject.toml``.

Every table is strict (unknown keys are an error naming the key), so a typo can
never silently change which checkers vouch for the tree.
"""

from __future__ import annotations

import shlex
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from greenloop.protocol import Profile, SetupError, TargetTriple

CONFIG_FILE = "greenloop.toml"
"""The dedicated config file at the project root; its top level is the settings table."""

PYPROJECT = "pyproject.toml"
"""The Python project file whose ``[tool.greenloop]`` table also holds settings."""

DEFAULT_CHECKER_TIMEOUT_S = 600.0
"""Seconds a checker may run before it is killed and the tree is red (``checker_timeout_s``)."""

MAX_CHECKER_TIMEOUT_S = 86_400.0
"""The longest timeout accepted: a day is far past any real check, and "never" is not offered."""

DEFAULT_MAX_DIAGNOSTICS = 1_000
"""Diagnostics kept from one checker's run (``max_diagnostics``); the rest are only counted."""


class ConfigError(SetupError):
    """The greenloop config is unreadable or invalid; the message names the file and key."""


class Kind(StrEnum):
    """A project kind greenloop knows checkers for."""

    RUST = "rust"
    PYTHON = "python"
    TYPESCRIPT = "typescript"
    JAVASCRIPT = "javascript"
    """A ``package.json``: its linters (eslint, biome), for TypeScript and JavaScript alike."""


class Role(StrEnum):
    """What a checker's verdict may do to the tree.

    Authoritative checkers must all complete cleanly for the tree to turn green;
    advisory ones can only turn it red.
    """

    AUTHORITATIVE = "authoritative"
    ADVISORY = "advisory"


class Format(StrEnum):
    """How a checker's output is parsed into diagnostics.

    Each is read by the parser of the checker module that brings it (``gnu`` by
    :mod:`greenloop.devloop.checkers.formats`); the names live here so that a
    ``format`` setting is validated with the rest of the settings.
    ``lsp`` is not an output: the checker is a language server on stdio, kept
    running between rounds (see :mod:`greenloop.devloop.lsp`).
    """

    CARGO_JSON = "cargo-json"
    RUFF_JSON = "ruff-json"
    MYPY_JSON = "mypy-json"
    PYRIGHT_JSON = "pyright-json"
    RUFF_FORMAT = "ruff-format"
    FLAKE8 = "flake8"
    ESLINT_JSON = "eslint-json"
    BIOME_GITHUB = "biome-github"
    TSC = "tsc"
    GNU = "gnu"
    LSP = "lsp"


class CheckerSettings(BaseModel):
    """One ``[checkers.NAME]`` table: overrides a built-in checker or defines a new one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    command: list[str] | None = Field(
        default=None, description="argv, or one string split like a shell would."
    )
    format: Format | None = None
    role: Role | None = None
    source: str | None = Field(default=None, description="Diagnostic source (default: NAME).")
    install: str | None = Field(default=None, description="How to install the program.")
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_CHECKER_TIMEOUT_S,
        allow_inf_nan=False,
        description="Seconds before the checker is killed (default: checker_timeout_s).",
    )

    @field_validator("timeout_s", mode="before")
    @classmethod
    def _no_bool(cls, v: object) -> object:
        return _reject_bool(v)

    @field_validator("command", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            return shlex.split(v)
        return v

    @field_validator("command")
    @classmethod
    def _non_empty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("command must name a program")
        return v


class Settings(BaseModel):
    """The whole greenloop settings table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: list[Kind] | None = Field(
        default=None, description="Project kinds to check (default: detected from the files)."
    )
    checkers: dict[str, CheckerSettings] = Field(default_factory=dict)
    ignore: list[str] = Field(
        default_factory=list, description="Extra gitignore-style patterns the dev loop skips."
    )
    debounce_ms: int = Field(
        default=120,
        ge=0,
        le=60_000,
        description="Quiet time ending a burst of changes; checkers start after a quarter of it.",
    )
    checker_timeout_s: float = Field(
        default=DEFAULT_CHECKER_TIMEOUT_S,
        gt=0,
        le=MAX_CHECKER_TIMEOUT_S,
        allow_inf_nan=False,
        description="Seconds any checker may run before it is killed and the tree is red.",
    )
    max_diagnostics: int = Field(
        default=DEFAULT_MAX_DIAGNOSTICS,
        ge=1,
        le=1_000_000,
        strict=True,
        description=(
            "Diagnostics kept from each checker's run, errors first; the rest are counted "
            "per file and severity, and still make the tree red."
        ),
    )
    target: TargetTriple | None = Field(default=None, description="Default: the host triple.")
    profile: Profile = Profile.DEV

    @field_validator("checker_timeout_s", mode="before")
    @classmethod
    def _no_bool(cls, v: object) -> object:
        return _reject_bool(v)


def _reject_bool(v: object) -> object:
    # TOML `true` would otherwise pass as 1.0 seconds, which nobody means.
    if isinstance(v, bool):
        raise ValueError("must be a number of seconds")
    return v


@dataclass(frozen=True)
class Config:
    """Validated settings plus where they came from (the build identity hashes the source)."""

    settings: Settings = field(default_factory=Settings)
    source: Path | None = None
    table: dict[str, Any] = field(default_factory=dict)


def load_config(root: Path) -> Config:
    """Read and validate the project's greenloop settings (defaults when there are none).

    Raises :class:`ConfigError` for unreadable TOML, unknown keys, bad values, or
    settings in both ``greenloop.toml`` and ``pyproject.toml``.
    """
    dedicated = root / CONFIG_FILE
    pyproject = root / PYPROJECT
    table: dict[str, Any] | None = None
    source: Path | None = None
    if pyproject.is_file():
        tool = _read_toml(pyproject).get("tool", {})
        if isinstance(tool, dict) and "greenloop" in tool:
            table, source = tool["greenloop"], pyproject
            if not isinstance(table, dict):
                raise ConfigError(f"{pyproject}: [tool.greenloop] must be a table")
    if dedicated.is_file():
        if source is not None:
            raise ConfigError(
                f"greenloop settings in both {dedicated} and {pyproject} [tool.greenloop]; keep one"
            )
        table, source = _read_toml(dedicated), dedicated
    if table is None:
        return Config()
    try:
        settings = Settings.model_validate(table)
    except ValidationError as e:
        raise ConfigError(_describe(e, source)) from None
    return Config(settings=settings, source=source, table=table)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None


def _describe(error: ValidationError, source: Path | None) -> str:
    prefix = "tool.greenloop." if source is not None and source.name == PYPROJECT else ""
    problems = []
    for item in error.errors():
        key = prefix + ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown key {key!r}")
        else:
            problems.append(f"{key}: {item['msg']}")
    return f"{source}: " + "; ".join(problems)
