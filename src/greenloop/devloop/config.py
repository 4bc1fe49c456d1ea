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
        return _split_command(v)

    @field_validator("command")
    @classmethod
    def _non_empty(cls, v: list[str] | None) -> list[str] | None:
        return _names_a_program("command", v)


DEFAULT_READY_TIMEOUT_S = 30.0
"""Seconds a new app may take to become ready before it counts as a failed start."""


class DevSettings(BaseModel):
    """The ``[dev]`` table: what ``greenloop dev`` runs when the project is an app."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    app: list[str] | None = Field(
        default=None,
        description=(
            "The command that runs the app (argv, or one string split like a shell would); "
            "{port} is replaced by the port it must listen on (also in $PORT)."
        ),
    )
    ready: str | None = Field(
        default=None,
        description=(
            "When a new app is ready: an HTTP path ('/healthz': starts with /, no spaces) "
            "that must answer 2xx/3xx, or else a command that must exit 0 (default: its "
            "port accepts connections)."
        ),
    )
    ready_timeout_s: float = Field(
        default=DEFAULT_READY_TIMEOUT_S,
        gt=0,
        le=MAX_CHECKER_TIMEOUT_S,
        allow_inf_nan=False,
        description="Seconds a new app may take to become ready before it counts as failed.",
    )
    stop_timeout_s: float = Field(
        default=5.0,
        ge=0,
        le=3_600,
        allow_inf_nan=False,
        description="Seconds an old app gets between SIGTERM and SIGKILL.",
    )
    drain_timeout_s: float = Field(
        default=10.0,
        ge=0,
        le=3_600,
        allow_inf_nan=False,
        description="Seconds the old app's in-flight requests may take to finish after a swap.",
    )
    build: str | None = Field(
        default=None,
        description=(
            "The pipeline whose output the app runs from (default: a snapshot of the green tree)."
        ),
    )

    @field_validator("ready_timeout_s", "stop_timeout_s", "drain_timeout_s", mode="before")
    @classmethod
    def _no_bool(cls, v: object) -> object:
        return _reject_bool(v)

    @field_validator("app", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        return _split_command(v)

    @field_validator("app")
    @classmethod
    def _non_empty(cls, v: list[str] | None) -> list[str] | None:
        return _names_a_program("app", v)

    @field_validator("ready")
    @classmethod
    def _ready(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("ready must be an HTTP path ('/healthz') or a command")
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
    dev: DevSettings = Field(
        default_factory=DevSettings, description="What `greenloop dev` runs for an app."
    )

    @field_validator("checker_timeout_s", mode="before")
    @classmethod
    def _no_bool(cls, v: object) -> object:
        return _reject_bool(v)


def _split_command(v: object) -> object:
    # One string is split like a shell would; a list is the argv as given.
    return shlex.split(v) if isinstance(v, str) else v


def _names_a_program(key: str, v: list[str] | None) -> list[str] | None:
    if v is not None and not v:
        raise ValueError(f"{key} must name a program")
    return v


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
