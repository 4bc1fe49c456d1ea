"""The pipeline IR: a versioned JSON document the SDK compiles pipelines to.

The IR is the boundary between the Python pipeline file and the engine: the
engine never imports the user's code, only this document. Every model here
rejects unknown fields so that a typo or a document from a newer greenloop is
an error, not a silently ignored setting.
"""

from __future__ import annotations

import json
import posixpath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IR_VERSION = 1
"""Version of the IR document format written by ``greenloop render``."""


class _IR(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class Forever(_IR):
    """Valid until the command or anything upstream changes."""

    kind: Literal["forever"] = "forever"


class Ttl(_IR):
    """Valid for ``seconds`` after it was recorded (and while nothing upstream changes)."""

    kind: Literal["ttl"] = "ttl"
    seconds: float = Field(gt=0)


class OnChange(_IR):
    """Valid until the content of the workspace files matching ``globs`` changes."""

    kind: Literal["on_change"] = "on_change"
    globs: list[str] = Field(min_length=1)
    optional: bool = Field(
        default=False,
        description="When false, a glob that matches no workspace file is an error: a "
        "policy watching nothing would keep the step cached whatever changes.",
    )


class Compose(_IR):
    """Valid only while every one of ``policies`` holds."""

    kind: Literal["compose"] = "compose"
    policies: list[CachePolicy] = Field(min_length=1)


CachePolicy = Annotated[
    Forever | Ttl | OnChange | Compose,
    Field(discriminator="kind", title="CachePolicy"),
]


class SecretUse(_IR):
    """A secret a step reads, by name: its value never enters the IR, a key or the store."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    env: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="The variable the step reads it from."
    )
    as_file: bool = Field(
        default=False,
        description="The variable holds the path of a file with the value, not the value.",
    )


class Service(_IR):
    """A server steps talk to (a database, a web server), started by the engine for them.

    ``run`` (a host command under the local executor, the container's command under
    docker) and ``ready`` may use ``{port}``, ``{host}`` and ``{dir}`` (a private
    scratch folder, local only); the engine fills them in at run time.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    run: str | None = None
    image: str | None = None
    ports: list[int] = Field(default_factory=list)
    ready: str = Field(min_length=1, description="A command that exits 0 once it is ready.")
    ready_timeout_seconds: float = Field(default=60.0, gt=0)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[SecretUse] = Field(
        default_factory=list, description="Secrets in the service's env (names, never values)."
    )

    @model_validator(mode="after")
    def _runs_something(self) -> Service:
        if self.run is None and self.image is None:
            raise ValueError(f"service {self.name!r} needs run=... (local) or image=... (docker)")
        return self

    @property
    def env_prefix(self) -> str:
        """What its variables start with: ``db`` -> ``DB`` (``DB_HOST``, ``DB_PORT``)."""
        return self.name.upper().replace("-", "_")


CacheSharing = Literal["shared", "locked", "private"]
"""How steps running at once use one cache folder (BuildKit's names): all together,
one at a time, or each its own copy when another holds it."""


class CacheDir(_IR):
    """A folder that persists across runs for the steps that name it (a package cache).

    Never part of a snapshot, nor of a key beyond its name, path and sharing.
    ``path`` is ``~/...`` (the step's home: its ``HOME``, else ``/root`` in a container) or a path
    inside the step's workdir. ``env`` names the variable a tool reads the folder
    from, for where it cannot be mounted (the local executor without a sandbox).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    path: str = Field(min_length=1)
    sharing: CacheSharing = "shared"
    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @field_validator("path")
    @classmethod
    def _home_or_absolute(cls, path: str) -> str:
        parts = path.split("/")
        if ".." in parts or "\0" in path or not (path.startswith("~/") or path.startswith("/")):
            raise ValueError(
                f"cache dir path {path!r} must be ~/... or a path inside the step's workdir"
            )
        return path


SandboxMode = Literal["bwrap", "none"]
"""How the ``local`` executor isolates a step: under bubblewrap, or not at all."""


class Sandbox(_IR):
    """How the ``local`` executor isolates a step (other executors ignore it).

    ``bwrap``: the step's root is an overlay of its parent's snapshot under
    bubblewrap, with ``workdir`` at its real path, the host's system folders
    (and ``ro_binds``) read-only, ``rw_binds`` (cache folders) read-write, a
    private ``/tmp``, an empty ``$HOME`` unless ``home``, and no network unless
    ``network``. ``none``: ``sh -c`` on the host in a private copy of the snapshot.
    """

    mode: SandboxMode
    network: bool = True
    ro_binds: list[str] = Field(default_factory=list)
    rw_binds: list[str] = Field(default_factory=list)
    home: bool = False

    @field_validator("ro_binds", "rw_binds")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not path.startswith("/") or "\0" in path:
                raise ValueError(f"a bind must be an absolute host path, got {path!r}")
        return paths


class CommandStep(_IR):
    """One shell step of a pipeline."""

    key: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(\[[A-Za-z0-9_.\-]+=[A-Za-z0-9_.\-]+"
        r"(,[A-Za-z0-9_.\-]+=[A-Za-z0-9_.\-]+)*\])?$",
        description="Stable id: explicit, else the label's slug, else a short hash; a "
        "matrix cell adds [axis=value,...].",
    )
    label: str
    command: str
    image: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str = "/workspace"
    timeout_seconds: float | None = Field(default=None, gt=0)
    artifacts: list[str] = Field(default_factory=list)
    cache: CachePolicy | None = None
    builds_in: str | None = Field(
        default=None, description="Key of the step whose snapshot this step boots from."
    )
    depends_on: list[str] = Field(
        default_factory=list, description="Keys of steps that must finish first (ordering only)."
    )
    executor: str | None = None
    secrets: list[SecretUse] = Field(
        default_factory=list, description="Secrets the step reads (names, never values)."
    )
    runs_after_failure: bool = Field(
        default=False,
        description="Run once the steps in depends_on have finished, passed or not "
        "(wait(..., continue_on_failure=True)).",
    )

    sandbox: Sandbox | None = Field(
        default=None, description="The local executor's isolation (None: the pipeline's)."
    )
    services: list[str] = Field(
        default_factory=list, description="Names of the pipeline's services the step talks to."
    )
    cache_dirs: list[CacheDir] = Field(
        default_factory=list, description="Folders kept across runs (package caches)."
    )
    git: bool = Field(
        default=False,
        description="The step sees the project's git metadata: a read-only .git in its "
        "workdir for the commit the workspace was taken from; its key holds the commit id.",
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="What the step needs of the machine that runs it, for executors that "
        "place steps on a cluster (ray): cpu, gpu, memory (bytes) or a custom resource's "
        "name, each an amount >= 0. Not part of the cache key: where a step runs never "
        "changes what it makes.",
    )

    @field_validator("resources")
    @classmethod
    def _resources_are_amounts(cls, resources: dict[str, float]) -> dict[str, float]:
        for name, amount in resources.items():
            if not name.strip():
                raise ValueError("a resource needs a name")
            if not amount >= 0 or amount == float("inf"):
                raise ValueError(f"resource {name!r} must be a finite amount >= 0, got {amount}")
        return resources

    @field_validator("artifacts")
    @classmethod
    def _artifacts_stay_inside(cls, paths: list[str]) -> list[str]:
        for path in paths:
            parts = posixpath.normpath(path.lstrip("/") or ".").split("/")
            if not path.strip() or parts[0] == ".." or parts == ["."]:
                raise ValueError(f"artifact path {path!r} escapes the step's folder")
        return paths

    @model_validator(mode="after")
    def _cache_dirs_at_home_or_inside(self) -> CommandStep:
        names: set[str] = set()
        for cache in self.cache_dirs:
            if cache.name in names:
                raise ValueError(f"step {self.key!r} names cache dir {cache.name!r} twice")
            names.add(cache.name)
            inside = posixpath.normpath(cache.path).startswith(self.workdir.rstrip("/") + "/")
            if cache.path.startswith("/") and not inside:
                raise ValueError(
                    f"step {self.key!r}: cache dir {cache.name!r} at {cache.path} is neither "
                    f"under ~ nor inside its workdir {self.workdir}"
                )
        return self


class Pipeline(_IR):
    """A named pipeline: a DAG of steps."""

    name: str
    env: dict[str, str] = Field(default_factory=dict)
    default_image: str | None = None
    executor: str | None = None
    timeout_seconds: float | None = Field(
        default=None, gt=0, description="The whole run's time limit; running out fails it (124)."
    )
    on: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$")]] = Field(
        default_factory=list,
        description="Events that trigger this pipeline (push, pull_request, ...): "
        "`greenloop run --event EVENT` runs every pipeline listing EVENT.",
    )
    sandbox: Sandbox | None = None
    services: list[Service] = Field(
        default_factory=list, description="Servers started for the steps that name them."
    )
    steps: list[CommandStep]

    @property
    def wants_git(self) -> bool:
        """Whether a step asks for the project's git metadata."""
        return any(step.git for step in self.steps)

    @model_validator(mode="after")
    def _well_formed_graph(self) -> Pipeline:
        keys = [s.key for s in self.steps]
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                raise ValueError(f"pipeline {self.name!r}: duplicate step key {key!r}")
            seen.add(key)
        for step in self.steps:
            for ref in [step.builds_in, *step.depends_on]:
                if ref is not None and ref not in seen:
                    raise ValueError(
                        f"pipeline {self.name!r}: step {step.key!r} refers to unknown step {ref!r}"
                    )
        declared = {s.name for s in self.services}
        if len(declared) < len(self.services):
            raise ValueError(f"pipeline {self.name!r}: a service name is declared twice")
        for step in self.steps:
            for name in step.services:
                if name not in declared:
                    raise ValueError(
                        f"pipeline {self.name!r}: step {step.key!r} names undeclared service "
                        f"{name!r}"
                    )
        caches: dict[str, tuple[str, str]] = {}
        for step in self.steps:
            for cache in step.cache_dirs:
                first = caches.setdefault(cache.name, (cache.path, step.key))
                if first[0] != cache.path:
                    raise ValueError(
                        f"pipeline {self.name!r}: cache dir {cache.name!r} is {first[0]} in "
                        f"step {first[1]!r} but {cache.path} in step {step.key!r}"
                    )
        cycle = find_cycle(self.steps)
        if cycle:
            raise ValueError(f"pipeline {self.name!r}: cycle {' -> '.join(repr(k) for k in cycle)}")
        return self

    def service(self, name: str) -> Service:
        """Return the service called ``name`` or raise ``KeyError``."""
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)

    def step(self, key: str) -> CommandStep:
        """Return the step with ``key`` or raise ``KeyError``."""
        for s in self.steps:
            if s.key == key:
                return s
        raise KeyError(key)


def parents(step: CommandStep) -> list[str]:
    """Keys of every step ``step`` waits for: its snapshot parent, then its ordering deps."""
    return ([step.builds_in] if step.builds_in else []) + list(step.depends_on)


def topological(steps: list[CommandStep]) -> list[CommandStep]:
    """``steps`` ordered so every step comes after the steps it waits for (file order otherwise)."""
    by_key = {s.key: s for s in steps}
    done: set[str] = set()
    order: list[CommandStep] = []

    def visit(step: CommandStep) -> None:
        if step.key in done:
            return
        done.add(step.key)
        for parent in parents(step):
            visit(by_key[parent])
        order.append(step)

    for step in steps:
        visit(step)
    return order


def find_cycle(steps: list[CommandStep]) -> list[str] | None:
    """A cycle among ``steps`` as a list of keys (first == last), or ``None``."""
    by_key = {s.key: s for s in steps}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(key: str) -> list[str] | None:
        state[key] = 1
        path.append(key)
        for parent in parents(by_key[key]):
            if parent not in by_key:
                continue
            if state.get(parent) == 1:
                return [*path[path.index(parent) :], parent]
            if parent not in state and (found := visit(parent)):
                return found
        path.pop()
        state[key] = 2
        return None

    for step in steps:
        if step.key not in state and (found := visit(step.key)):
            return found
    return None


class IRDocument(_IR):
    """The whole IR document: every pipeline a pipeline file defines."""

    version: int = IR_VERSION
    pipelines: list[Pipeline]

    @field_validator("version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != IR_VERSION:
            raise ValueError(
                f"unsupported IR version {v}; this greenloop reads version {IR_VERSION}"
            )
        return v

    def pipeline(self, name: str) -> Pipeline:
        """Return the pipeline called ``name`` or raise ``KeyError``."""
        for p in self.pipelines:
            if p.name == name:
                return p
        raise KeyError(name)

    def triggered_by(self, event: str) -> list[Pipeline]:
        """The pipelines whose ``on`` lists ``event``, in the order they are defined."""
        return [p for p in self.pipelines if event in p.on]


def parse_document(data: bytes | str) -> IRDocument:
    """Parse an IR document from JSON text, stricter than JSON itself.

    Raises ``ValueError`` for text that is not JSON, is nested absurdly deep, or
    repeats a key in one object (JSON parsers silently keep the last one, so
    ``"command": "a", "command": "b"`` would run ``b`` without a word), and
    pydantic's ``ValidationError`` for JSON that is not a valid document.
    """
    try:
        raw = json.loads(data, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    return IRDocument.model_validate(raw)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r} in one JSON object")
        seen[key] = value
    return seen
