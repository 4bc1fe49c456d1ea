"""``greenloop init --from-github-actions``: a pipeline file from a GitHub Actions workflow.

Each job becomes a chain of its ``run:`` steps (jobs run in parallel, as forks
do), ``needs:`` a ``gl.wait(...)`` before the job's first step, ``strategy.matrix``
a loop over the cells, ``services:`` ``gl.service(...)``, ``env:`` env and
``${{ secrets.X }}`` ``gl.secret("X")``. Whatever has no equivalent (an action
other than checkout, setup-python, setup-node and cache; a GitHub expression;
an ``if:``) is named in a comment where it was and in the list at the top of the
file: never silently dropped.
"""

from __future__ import annotations

import builtins
import functools
import itertools
import json
import keyword
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from greenloop.cli._pysource import (
    INDENT,
    Call,
    Dict,
    Field,
    List,
    Node,
    Part,
    Str,
    comment,
    inline,
    render,
    text,
)


class WorkflowError(Exception):
    """The workflow cannot be read, or is not a GitHub Actions workflow."""


@dataclass(frozen=True)
class Translation:
    """A pipeline file's source, and what of the workflow it could not translate."""

    source: str
    not_translated: list[str]


def find_workflow(root: Path) -> Path:
    """The one workflow in ``root/.github/workflows``; :class:`WorkflowError` if not one."""
    folder = root / ".github" / "workflows"
    found = sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")])
    if not found:
        raise WorkflowError(
            f"no workflow in {folder} (*.yml, *.yaml): name one, "
            "`greenloop init --from-github-actions PATH`"
        )
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(root)) for p in found)
        raise WorkflowError(
            f"{len(found)} workflows in {folder}: {names}; name the one to translate, "
            "`greenloop init --from-github-actions PATH`"
        )
    return found[0]


def translate(path: Path, shown: str) -> Translation:
    """Translate the workflow at ``path`` (named ``shown`` in the file it writes)."""
    return _Translator(load(path), shown).run()


def load(path: Path) -> dict[str, Any]:
    """The workflow at ``path`` as YAML data, checked to have jobs with steps."""
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WorkflowError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        doc = yaml.safe_load(source)
    except (yaml.YAMLError, ValueError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise WorkflowError(f"{path} is not YAML{where}: {problem}") from None
    if not isinstance(doc, dict):
        raise WorkflowError(
            f"{path} is not a GitHub Actions workflow: expected a mapping with jobs:, "
            f"got {_kind(doc)}"
        )
    jobs = doc.get("jobs")
    if not isinstance(jobs, dict) or not jobs:
        raise WorkflowError(f"{path} has no jobs: a GitHub Actions workflow needs a jobs: mapping")
    for job_id, job in jobs.items():
        if not isinstance(job, dict):
            raise WorkflowError(f"{path}: job {job_id!r} is {_kind(job)}, not a mapping")
        steps = job.get("steps", [])
        if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
            raise WorkflowError(f"{path}: the steps of job {job_id!r} are not a list of mappings")
        needs = job.get("needs", [])
        for need in [needs] if isinstance(needs, str) else needs:
            if need not in jobs:
                raise WorkflowError(f"{path}: job {job_id!r} needs {need!r}, which is no job")
    return doc


def _kind(value: object) -> str:
    return "nothing" if value is None else f"a {type(value).__name__}"


def _text(value: object) -> str:
    """A YAML scalar as the text GitHub would put in its place."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value)


_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}", re.S)
_MATRIX_REF = re.compile(r"matrix\.([A-Za-z_][\w-]*)|matrix\[\s*'([^']+)'\s*\]")
_SECRET_REF = re.compile(r"secrets\.([A-Za-z_]\w*)|secrets\[\s*'([A-Za-z_]\w*)'\s*\]")
_ENV_REF = re.compile(r"env\.([A-Za-z_]\w*)|env\[\s*'([A-Za-z_]\w*)'\s*\]")
_PORT_REF = re.compile(r"job\.services\.([\w-]+)\.ports\[\s*'?(\d+)'?\s*\]")
_RUNNER_VARS = re.compile(r"\$\{?((?:GITHUB|RUNNER)_[A-Z_]+)")
_ALWAYS = re.compile(
    r"^(\$\{\{\s*)?(always\(\)|!\s*cancelled\(\)|success\(\)\s*\|\|\s*failure\(\))"
)
# Shell syntax dash (Debian's sh) lacks: a script using it runs under bash, GitHub's
# default shell, instead of sh.
_BASHISMS = re.compile(
    r"\[\[|\bsource\s|<\(|>\(|\bshopt\b|\bdeclare\b|\bmapfile\b|\breadarray\b|\$'|"
    r"\$\{!|\bpushd\b|\bpopd\b|^\s*function\s|pipefail",
    re.M,
)
_PLAIN_WORD = re.compile(r"^[\w./@%+=:,-]+$")

# Package caches `actions/cache` and the setup actions' `cache:` keep, by their usual
# path: the cache_dirs name greenloop gives each, and (for the ones sdk.cache_dirs does
# not know) the variable the tool reads it from.
_CACHE_NAMES = {
    "~/.cache/pip": "pip",
    "~/.cache/uv": "uv",
    "~/.npm": "npm",
    "~/.cache/yarn": "yarn",
    "~/.cache/pnpm": "pnpm",
    "~/.cache/go-build": "go-build",
    "~/go/pkg/mod": "go-mod",
    "~/.cache/pre-commit": "pre-commit",
    "~/.cargo": "cargo",
    "~/.cache/pypoetry": "poetry",
}
_EXTRA_CACHE_ENV = {"~/.cache/pypoetry": "POETRY_CACHE_DIR"}
_SETUP_CACHES = {
    "pip": "~/.cache/pip",
    "pipenv": "~/.cache/pip",
    "poetry": "~/.cache/pypoetry",
    "npm": "~/.npm",
    "yarn": "~/.cache/yarn",
    "pnpm": "~/.cache/pnpm",
}
_CACHE_ACTIONS = {"actions/cache", "actions/cache/restore", "actions/cache/save"}
_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")
_VERSION_X = re.compile(r"^(\d+(?:\.\d+)?)\.x$")
_RESERVED = {"gl", "ci", *keyword.kwlist, *dir(builtins)}
_SHARED = ("str", "loop")
"""Kinds of variable several jobs may each use: a cell's value, the chain in a loop."""
_CONTINUE = 'echo "continue-on-error: this step failed; the job goes on" >&2'


def _image(tool: str, version: str) -> str | None:
    """The docker image for ``setup-<tool>``'s version ``version``, where one is plain."""
    if tool == "python" and (pypy := re.fullmatch(r"pypy-?(\d+\.\d+)", version)):
        return f"pypy:{pypy.group(1)}-slim"
    if tool == "node" and version in ("lts/*", "lts"):
        return "node:lts-slim"
    if tool == "node" and version in ("latest", "current", "node"):
        return "node:current-slim"
    if _VERSION.match(version):
        return f"{tool}:{version}-slim"
    if found := _VERSION_X.match(version):
        return f"{tool}:{found.group(1)}-slim"
    return None


def _slug(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "-", value).strip("-_").lower()[:60].rstrip("-_")


def _identifier(value: str) -> str:
    name = re.sub(r"\W+", "_", value, flags=re.ASCII).strip("_").lower() or "job"
    return f"_{name}" if name[0].isdigit() else name


def _first_line(script: str) -> str:
    """A script's first line, cut to a label's length (never inside an expression)."""
    first = next((line.strip() for line in script.splitlines() if line.strip()), "")
    if len(first) <= 48:
        return first
    cut = first[:47]
    if cut.rfind("${{") > cut.rfind("}}"):
        cut = cut[: cut.rfind("${{")].rstrip()
    return cut + "…"


def _action(uses: str) -> str:
    """``owner/repo[/path]`` of a ``uses:`` reference, lower-case, without its ``@ref``."""
    return uses.split("@", 1)[0].strip().lower()


class _Parts:
    """Helpers on a string made of literal text and fields."""

    @staticmethod
    def merge(parts: Iterable[Part]) -> list[Part]:
        out: list[Part] = []
        for part in parts:
            if isinstance(part, str) and not part:
                continue
            if isinstance(part, str) and out and isinstance(out[-1], str):
                out[-1] += part
            else:
                out.append(part)
        return out

    @staticmethod
    def plain(parts: Iterable[Part]) -> str:
        return "".join(p for p in parts if isinstance(p, str))

    @staticmethod
    def strip(parts: list[Part]) -> list[Part]:
        parts = list(parts)
        if parts and isinstance(parts[0], str):
            parts[0] = parts[0].lstrip()
        if parts and isinstance(parts[-1], str):
            parts[-1] = parts[-1].rstrip()
        return _Parts.merge(parts)

    @staticmethod
    def quoted(parts: list[Part]) -> list[Part]:
        """``parts`` as one shell word (single quotes; a field's value is taken as it is)."""
        if all(isinstance(p, str) for p in parts) and _PLAIN_WORD.match(_Parts.plain(parts)):
            return parts
        inner = [p.replace("'", "'\"'\"'") if isinstance(p, str) else p for p in parts]
        return _Parts.merge(["'", *inner, "'"])


@dataclass
class _Scope:
    """What one job's strings may refer to, and what they referred to."""

    where: str
    axes: dict[str, str] = field(default_factory=dict)
    """GitHub matrix key -> the Python variable holding the cell's value."""
    axis_ids: dict[str, str] = field(default_factory=dict)
    """GitHub matrix key -> greenloop axis (``python-version`` -> ``python_version``)."""
    cells: list[dict[str, str]] = field(default_factory=list)
    """The job's matrix cells, by axis."""
    env: dict[str, str] = field(default_factory=dict)
    """Env values known when writing the file (the workflow's and the job's)."""
    ports: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Service id -> (its variables' prefix, its first container port)."""
    used_axes: set[str] = field(default_factory=set)
    """The matrix keys its strings read (each gets its variable in the loop)."""
    hints: dict[str, str] = field(default_factory=dict)
    """Untranslated expression -> what to use instead, where greenloop has something."""
    prelude: list[str] = field(default_factory=list)
    """Lines the job needs before its matrix loop (a table of images by version)."""
    secrets: list[str] = field(default_factory=list)
    untranslated: list[str] = field(default_factory=list)

    def take(self) -> tuple[list[str], list[str]]:
        """The secrets and untranslated expressions met since the last call."""
        found = (list(dict.fromkeys(self.secrets)), list(dict.fromkeys(self.untranslated)))
        self.secrets.clear()
        self.untranslated.clear()
        return found

    def resolve(self, value: str, *, command: bool) -> list[Part]:
        """``value`` with its ``${{ }}`` expressions replaced where greenloop has their
        meaning: in a command, by shell variables; elsewhere, by values."""
        parts: list[Part] = []
        pos = 0
        for found in _EXPR.finditer(value):
            parts.append(value[pos : found.start()])
            parts.append(self._expression(found.group(1), found.group(0), command))
            pos = found.end()
        parts.append(value[pos:])
        return _Parts.merge(parts)

    def _expression(self, expr: str, whole: str, command: bool) -> Part:
        if ref := _MATRIX_REF.fullmatch(expr):
            key = ref.group(1) or ref.group(2)
            if key in self.axes:
                self.used_axes.add(key)
                return Field(self.axes[key])
        elif (ref := _SECRET_REF.fullmatch(expr)) and command:
            name = ref.group(1) or ref.group(2)
            self.secrets.append(name)
            return "${" + name + "}"
        elif ref := _ENV_REF.fullmatch(expr):
            name = ref.group(1) or ref.group(2)
            if command:
                return "${" + name + "}"
            if name in self.env:
                return self.env[name]
        elif ref := _PORT_REF.fullmatch(expr):
            known = self.ports.get(ref.group(1))
            if known is not None and known[1] == int(ref.group(2)):
                if command:
                    return "${" + known[0] + "_PORT}"
                self.hints[whole] = f"steps get the port as ${known[0]}_PORT"
        self.untranslated.append(whole)
        return whole

    def value(self, raw: object) -> Node:
        """An env value: ``gl.secret(...)`` for a whole ``${{ secrets.X }}``, else a string."""
        value = _text(raw)
        ref = _EXPR.fullmatch(value.strip())
        if ref and (secret := _SECRET_REF.fullmatch(ref.group(1))):
            return f'gl.secret("{secret.group(1) or secret.group(2)}")'
        return Str(tuple(self.resolve(value, command=False)))


@dataclass
class _Step:
    """One translated ``run:`` step, and the comments above (and after) it."""

    command: list[Part]
    label: list[Part]
    key: str
    env: list[tuple[Node, Node]]
    timeout: float | None
    cache_dirs: dict[str, str]
    comments: list[str]
    after: list[str] = field(default_factory=list)
    """Comments after its statement: about the job's steps after the last run: one."""

    def call(self, func: str, first: _First | None, services: list[str]) -> Call:
        """Its ``gl.sh(...)``/``.sh(...)`` call; ``first`` holds what only a job's first
        step takes (its image and cell)."""
        label = Str(tuple(self.label))
        kwargs: list[tuple[str, Node]] = [("label", label), ("key", text(self.key))]
        if first is not None and first.image is not None:
            kwargs.append(("image", first.image))
        if self.env:
            kwargs.append(("env", Dict(tuple(self.env))))
        if self.timeout is not None:
            whole = self.timeout == int(self.timeout)
            kwargs.append(("timeout", str(int(self.timeout)) if whole else str(self.timeout)))
        if first is not None and first.matrix:
            kwargs.append(("matrix", "cell"))
        if services:
            kwargs.append(("services", List(tuple(services))))
        if self.cache_dirs:
            caches = tuple((text(k), _cache_dir(v)) for k, v in self.cache_dirs.items())
            kwargs.append(("cache_dirs", Dict(caches)))
        command = Str(tuple(self.command), split=True)
        return Call(func, (command,), tuple(kwargs), explode=True)


@dataclass(frozen=True)
class _First:
    """What a job's first step takes beyond the others."""

    image: Node | None
    matrix: bool


@dataclass
class _Job:
    """What the jobs needing a job wait for: itself, or (nothing of it translated) its needs."""

    waits: list[str]
    lenient: list[str] = field(default_factory=list)
    """The jobs among those whose failure GitHub lets pass (``continue-on-error: true``)."""


class _Translator:
    """Turns one workflow's data into the source of a pipeline file."""

    def __init__(self, doc: dict[str, Any], shown: str) -> None:
        self.doc = doc
        self.shown = shown
        self.jobs: dict[str, dict[str, Any]] = doc["jobs"]
        self.missed: list[str] = []
        self.names: dict[str, str] = {"cell": "cell", "chain": "loop"}
        """Python variable -> what it holds; only cells' values and loop chains are shared."""
        self.keys: set[str] = set()
        self.services: dict[str, tuple[str, str]] = {}
        """Service name -> (the source of its declaration, its variable)."""
        self.body: list[str] = []
        self.workflow_env: dict[str, str] = {}
        self.pushed_env: list[tuple[Node, Node]] = []
        """Workflow env entries pipeline env cannot hold (secrets): every job's first step's."""
        self.pipeline_notes: list[str] = []
        self.emits: list[Callable[[set[str]], None]] = []
        """Each job's code, written once every job is translated: whether a job's chain is
        kept in its variable depends on whether a later job waits for it."""
        self.waited: set[str] = set()
        """The variables of the jobs some translated job waits for."""

    def run(self) -> Translation:
        """The pipeline file's source and what it could not translate."""
        pipeline_env = self._workflow_env()
        events = self._events()
        done: dict[str, _Job] = {}
        for job_id in self._order():
            done[job_id] = self._job(job_id, self.jobs[job_id], done)
        for emit in self.emits:
            emit(self.waited)
        return Translation(self._file(pipeline_env, events), self.missed)

    # -- the file ---------------------------------------------------------------

    def _file(self, pipeline_env: list[tuple[str, str]], events: list[str]) -> str:
        title = comment(_text(self.doc.get("name"))).replace("\\", "/").replace('"', "'")
        shown = comment(self.shown).replace("\\", "/").replace('"', "'")
        lines = [
            f'"""greenloop pipeline translated from the GitHub Actions workflow {shown}.',
            "",
            "Written by `greenloop init --from-github-actions`; `greenloop run ci` runs it.",
            "What could not be translated is listed below and marked where it was.",
            '"""',
            "",
            "import greenloop as gl",
            "",
        ]
        if self.missed:
            lines.append("# Not translated (each is marked where it was):")
            lines += [f"# - {comment(m)}" for m in self.missed]
        else:
            lines.append("# Every part of the workflow was translated.")
        lines += ["", ""]
        kwargs: list[tuple[str, Node]] = []
        if events:
            kwargs.append(("on", List(tuple(text(e) for e in events))))
        if pipeline_env:
            kwargs.append(("env", Dict(tuple((text(k), text(v)) for k, v in pipeline_env))))
        lines += [f"# {comment(note)}" for note in self.pipeline_notes]
        lines += render(Call("gl.pipeline", (text("ci"),), tuple(kwargs)), "", "@")
        what = f"workflow {title}" if title else "the workflow"
        lines += [
            "def ci() -> None:",
            f'{INDENT}"""The jobs of {what}: each a chain of its steps; needs: orders them."""',
            *self.body,
        ]
        return "\n".join(lines) + "\n"

    def _events(self) -> list[str]:
        # YAML 1.1 reads an unquoted `on:` key as true.
        doc: dict[Any, Any] = self.doc
        on = doc.get("on", doc.get(True))
        if isinstance(on, str):
            events = [on]
        elif isinstance(on, list):
            events = [_text(e) for e in on]
        elif isinstance(on, dict):
            events = [_text(e) for e in on]
            if any(isinstance(v, dict) and v for v in on.values()):
                self.pipeline_notes.append(
                    "the workflow's event filters (branches, paths, ...) are not translated: "
                    "greenloop runs a pipeline on the tree it is given"
                )
        else:
            events = []
        return [e for e in events if re.fullmatch(r"[a-z][a-z0-9_-]*", e)]

    def _workflow_env(self) -> list[tuple[str, str]]:
        """The pipeline's env: the workflow's plain values, and CI=true as GitHub sets it."""
        found: list[tuple[str, str]] = []
        scope = _Scope("the workflow's env")
        raw = self.doc.get("env")
        for key, value in (raw if isinstance(raw, dict) else {}).items():
            node = scope.value(value)
            if not isinstance(node, Str):  # a secret: pipeline env holds plain values only
                self.pushed_env.append((text(str(key)), node))
                continue
            for expr in scope.take()[1]:
                self._miss(f"the workflow's env {key}", f"{expr} (kept as written)")
            resolved = _Parts.plain(node.parts)
            found.append((str(key), resolved))
            self.workflow_env[str(key)] = resolved
        if "CI" not in self.workflow_env:
            found.append(("CI", "true"))
        return found

    def _order(self) -> list[str]:
        """The jobs, each after the jobs it needs (else in the file's order)."""
        order: list[str] = []
        visiting: list[str] = []

        def visit(job_id: str) -> None:
            if job_id in order:
                return
            if job_id in visiting:
                cycle = " -> ".join([*visiting[visiting.index(job_id) :], job_id])
                raise WorkflowError(f"the jobs' needs: form a cycle: {cycle}")
            visiting.append(job_id)
            for need in _needs(self.jobs[job_id]):
                visit(need)
            visiting.pop()
            order.append(job_id)

        for job_id in self.jobs:
            visit(job_id)
        return order

    def _name(self, base: str, kind: str) -> str:
        """A variable for ``kind``, taken by no other kind (``str`` ones are shared)."""
        name, n = base, 2
        while name in _RESERVED or (
            name in self.names and not (self.names[name] == kind and kind in _SHARED)
        ):
            name, n = f"{base}_{n}", n + 1
        self.names[name] = kind
        return name

    def _key(self, job_id: str, label: str) -> str:
        words = _slug(label)
        if len(words) > 40:  # a long command's: its first words
            words = words[:40].rsplit("-", 1)[0]
        base = f"{_slug(job_id) or 'job'}.{words or 'step'}"
        key, n = base, 2
        while key in self.keys:
            key, n = f"{base}-{n}", n + 1
        self.keys.add(key)
        return key

    def _miss(self, where: str, what: str) -> str:
        """Record ``what`` (at ``where``) as not translated; return the comment marking it."""
        self.missed.append(f"{where}: {what}")
        return f"not translated: {what}"

    def _expressions(
        self, scope: _Scope, where: str, within: str, found: list[str] | None = None
    ) -> list[str]:
        """Comments for the expressions ``scope`` could not translate (or ``found``) in
        ``within``."""
        comments = []
        for expr in scope.take()[1] if found is None else found:
            why = scope.hints.get(expr, "a GitHub expression, kept as written")
            comments.append(self._miss(where, f"{expr}{within} ({why})"))
        return comments

    # -- one job ----------------------------------------------------------------

    def _job(self, job_id: str, job: dict[str, Any], done: dict[str, _Job]) -> _Job:
        where = f"job {job_id}"
        waits = list(dict.fromkeys(w for n in _needs(job) for w in done[n].waits))
        lenient = list(dict.fromkeys(j for n in _needs(job) for j in done[n].lenient))
        notes: list[str] = []
        if "uses" in job:
            notes.append(self._miss(where, f"a reusable workflow ({_text(job['uses'])})"))
            return self._empty(job_id, waits, lenient, notes)
        may_fail = job.get("continue-on-error")
        if may_fail is True:
            notes.append(
                "continue-on-error: the jobs needing it run even when it fails "
                "(gl.wait(..., continue_on_failure=True)); the run still fails"
            )
        elif may_fail not in (None, False):
            notes.append(self._miss(where, f"continue-on-error: {_text(may_fail)}"))
        condition = _text(job.get("if")).strip()
        if condition and not _ALWAYS.match(condition):
            runs = "when the jobs it needs pass" if _needs(job) else "always"
            what = f"if: {comment(condition)} (not evaluated: the job runs {runs})"
            notes.append(self._miss(where, what))
        scope = _Scope(where, env=dict(self.workflow_env))
        matrix = self._cells(job_id, job, scope, notes)
        if matrix and not scope.cells:
            return self._empty(job_id, waits, lenient, notes)
        services, service_lines = self._services(job_id, job, scope)
        image = self._image(job_id, job, scope, notes)
        job_env = self._env(job, scope, where, notes)
        steps = self._steps(job_id, job, scope)
        if not steps or not steps[0].command:
            notes.append("no run: step to translate")
            notes += [c for s in steps for c in s.comments]
            return self._empty(job_id, waits, lenient, notes)
        # The job's env goes on its first step: the steps chained after it inherit it.
        first = steps[0]
        merged = {inline(k): (k, v) for k, v in [*self.pushed_env, *job_env, *first.env]}
        first.env = list(merged.values())
        var = self._name(_identifier(job_id), "list" if matrix else "chain")
        self.waited.update(w.lstrip("*") for w in waits)
        self.emits.append(
            functools.partial(
                self._emit,
                job_id,
                job,
                var,
                scope,
                matrix,
                waits,
                lenient,
                steps,
                _First(image, matrix),
                notes,
                service_lines,
                services,
            )
        )
        return _Job([f"*{var}" if matrix else var], [job_id] if may_fail is True else [])

    def _empty(self, job_id: str, waits: list[str], lenient: list[str], notes: list[str]) -> _Job:
        """A job with nothing to run: the jobs needing it wait for what it needs."""
        lines = [
            "",
            *(f"{INDENT}# {comment(n)}" for n in [f"job {job_id}: nothing to run", *notes]),
        ]
        self.emits.append(lambda waited: self.body.extend(lines))
        return _Job(waits, lenient)

    def _emit(
        self,
        job_id: str,
        job: dict[str, Any],
        var: str,
        scope: _Scope,
        matrix: bool,
        waits: list[str],
        lenient: list[str],
        steps: list[_Step],
        first: _First,
        notes: list[str],
        service_lines: list[str],
        services: list[str],
        waited: set[str],
    ) -> None:
        body = self.body
        needed = var in waited
        title = _text(job.get("name"))
        runs_on = _text(job.get("runs-on"))
        header = f"job {job_id}" + (f" ({title})" if title else "")
        header += f", on {runs_on} in GitHub" if runs_on else ""
        body += ["", f"{INDENT}# {comment(header)}"]
        body += [f"{INDENT}# {comment(n)}" for n in notes]
        body += service_lines
        start = "gl.sh"
        if waits:
            always = bool(_ALWAYS.match(_text(job.get("if")).strip()))
            kwargs: tuple[tuple[str, Node], ...] = ()
            if always or lenient:
                why = (
                    "its if: runs it whatever they did"
                    if always
                    else f"{', '.join(lenient)} may fail (continue-on-error)"
                )
                body.append(f"{INDENT}# it runs after the jobs it needs even when they fail: {why}")
                kwargs = (("continue_on_failure", "True"),)
            join = self._name(f"{var}_needs", "join")
            body += render(Call("gl.wait", tuple(waits), kwargs), INDENT, f"{join} = ")
            start = f"{join}.sh"
        body += scope.prelude
        indent, chain = INDENT, var
        if matrix:
            if needed:
                body.append(f"{INDENT}{var}: list[gl.Chain] = []")
            body += render(_cells_node(scope.cells), INDENT, "for cell in ", ":")
            indent, chain = INDENT * 2, self._name("chain", "loop")
            for key in [k for k in scope.axes if k in scope.used_axes]:
                axis = scope.axis_ids[key]
                everywhere = all(axis in c for c in scope.cells)
                got = f'cell["{axis}"]' if everywhere else f'cell.get("{axis}", "")'
                body.append(f"{indent}{scope.axes[key]} = {got}")
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            node = step.call(
                start if i == 0 else f"{chain}.sh", first if i == 0 else None, services
            )
            body += [f"{indent}# {comment(c)}" for c in step.comments]
            if not last or needed:
                body += render(node, indent, f"{chain} = ")
            else:
                body += render(node, indent)
            if last and needed and matrix:
                body.append(f"{indent}{var}.append({chain})")
            body += [f"{indent}# {comment(c)}" for c in step.after]

    # -- matrix -----------------------------------------------------------------

    def _cells(self, job_id: str, job: dict[str, Any], scope: _Scope, notes: list[str]) -> bool:
        """Fill ``scope``'s cells and axes from the job's matrix; whether it has one."""
        where = f"job {job_id}"
        strategy = job.get("strategy")
        matrix = strategy.get("matrix") if isinstance(strategy, dict) else None
        if matrix is None:
            return False
        if not isinstance(matrix, dict):
            notes.append(self._miss(where, f"strategy.matrix {comment(_text(matrix))}"))
            return False
        axes: dict[str, list[str]] = {}
        for key, values in matrix.items():
            if key in ("include", "exclude"):
                continue
            if not isinstance(values, list):
                notes.append(self._miss(where, f"matrix.{key} {comment(_text(values))}"))
                continue
            axes[str(key)] = [_text(v) for v in values]
        combos = itertools.product(*axes.values()) if axes else iter(())
        cells = [dict(zip(axes, combo, strict=True)) for combo in combos]
        for rule in _mappings(matrix.get("exclude")):
            cells = [c for c in cells if any(c.get(k) != v for k, v in rule.items())]
        originals = list(cells)
        for rule in _mappings(matrix.get("include")):
            # GitHub's rule: an include extends each original cell it agrees with on the
            # original axes; one that extends none is a cell of its own.
            matched = False
            for cell in originals:
                if all(cell[k] == v for k, v in rule.items() if k in axes):
                    cell.update({k: v for k, v in rule.items() if k not in axes})
                    matched = True
            if not matched:
                cells.append(dict(rule))
        # An axis only `runs-on` reads picks a machine: here every cell runs on this one.
        rest = json.dumps(
            {k: v for k, v in job.items() if k not in ("runs-on", "name", "strategy")}
        )
        runs_on = json.dumps(job.get("runs-on"))
        keys = list(dict.fromkeys(k for c in cells for k in c))
        for key in list(keys):
            if _mentions(runs_on, key) and not _mentions(rest, key):
                notes.append(
                    f"matrix.{key} only picks the runner (runs-on): every cell runs on this "
                    "machine, so cells differing only in it are one here"
                )
                cells = [{k: v for k, v in c.items() if k != key} for c in cells]
                keys.remove(key)
        unique: list[dict[str, str]] = []
        for cell in cells:
            if cell not in unique:
                unique.append(cell)
        if unique == [{}]:
            return False  # only the runner varied: one run
        if {} in unique:
            # A cell left with no values (it differed from the others in its runner only)
            # would have no key of its own: the runs of the other cells stand for it.
            unique.remove({})
            notes.append("the cells differing only in their runner are the other cells' runs")
        if not unique:
            notes.append("its matrix has no cells")
            return True
        taken: set[str] = set()
        for key in keys:
            axis = _identifier(key).lstrip("_") or "axis"
            axis = axis if axis[0].isalpha() else f"axis_{axis}"
            while axis in taken:
                axis += "_"
            taken.add(axis)
            scope.axis_ids[key] = axis
            scope.axes[key] = self._name(axis, "str")
        scope.cells = [{scope.axis_ids[k]: v for k, v in c.items()} for c in unique]
        return True

    # -- services, image, env ---------------------------------------------------

    def _services(
        self, job_id: str, job: dict[str, Any], scope: _Scope
    ) -> tuple[list[str], list[str]]:
        """The variables of the job's services, and the lines declaring the new ones."""
        raw = job.get("services")
        used: list[str] = []
        lines: list[str] = []
        # Declared before the job's matrix loop, once for every cell: no cell's values.
        values = _Scope(scope.where, env=scope.env)
        for sid, spec in (raw if isinstance(raw, dict) else {}).items():
            where = f"job {job_id}, service {sid}"
            image = spec.get("image") if isinstance(spec, dict) else None
            if not isinstance(image, str) or "${{" in image:
                lines.append(f"{INDENT}# {self._miss(where, f'image {_text(image)}')}")
                continue
            ports = _container_ports(spec.get("ports"))
            ready, others = _health(shlex.split(_text(spec.get("options"))))
            notes: list[str] = []
            if ready is None:
                notes.append(
                    f"{sid} has no --health-cmd: GitHub does not wait for it, nor does this"
                )
                ready = "true"
            notes += [self._miss(where, f"option {option}") for option in others]
            notes += [self._miss(where, f"{k}:") for k in ("credentials", "volumes") if k in spec]
            name = _slug(str(sid)).replace(".", "-") or "service"
            name = name if name[0].isalpha() else f"s-{name}"
            kwargs: list[tuple[str, Node]] = [("image", text(image))]
            if ports:
                kwargs.append(("ports", List(tuple(str(p) for p in ports))))
            kwargs.append(("ready", text(ready)))
            env: list[tuple[Node, Node]] = []
            for key, value in _mapping(spec.get("env")).items():
                env.append((text(str(key)), values.value(value)))
                notes += self._expressions(values, where, f" in env {key}")
            if env:
                kwargs.append(("env", Dict(tuple(env))))
            declared = Call("gl.service", (text(name),), tuple(kwargs), explode=True)
            if name in self.services and self.services[name][0] != inline(declared):
                name = f"{_slug(job_id)}-{name}"  # another job's service of that name differs
                declared = Call("gl.service", (text(name),), tuple(kwargs), explode=True)
            prefix = name.upper().replace("-", "_")
            if ports:
                scope.ports[str(sid)] = (prefix, ports[0])
            if name in self.services:
                used.append(self.services[name][1])
                continue
            var = self._name(_identifier(name), "service")
            self.services[name] = (inline(declared), var)
            used.append(var)
            reach = f"steps reach {sid} at ${prefix}_HOST:${prefix}_PORT"
            reach += f" (in GitHub: localhost:{ports[0]})" if ports else ""
            local = (
                "with only image=, it runs under `greenloop run --executor docker`; "
                "the local executor needs run= (a command starting it on this machine)"
            )
            lines += [f"{INDENT}# {comment(c)}" for c in [reach, local, *notes]]
            lines += render(declared, INDENT, f"{var} = ")
        return used, lines

    def _image(
        self, job_id: str, job: dict[str, Any], scope: _Scope, notes: list[str]
    ) -> Node | None:
        """The image of the job's first step: its container's, else its setup action's."""
        where = f"job {job_id}"
        container = job.get("container")
        if isinstance(container, str):
            container = {"image": container}
        image: Node | None = None
        if isinstance(container, dict) and container.get("image"):
            image = Str(tuple(scope.resolve(_text(container["image"]), command=False)))
            notes += self._expressions(scope, where, " in container")
            for key in ("options", "credentials", "volumes", "ports"):
                if key in container:
                    notes.append(
                        self._miss(where, f"container {key}: {comment(_text(container[key]))}")
                    )
        for step in job.get("steps", []):
            tool = {"actions/setup-python": "python", "actions/setup-node": "node"}.get(
                _action(_text(step.get("uses")))
            )
            if tool is None:
                continue
            given = _mapping(step.get("with"))
            version = _text(given.get(f"{tool}-version")).strip()
            found = self._setup_image(tool, version, scope)
            if image is None and found is not None:
                image = found
            elif found is None:
                notes.append(
                    f"setup-{tool} {version or '(no version)'}: no image for it; give the job's "
                    f"first step image=...; the local executor runs this machine's {tool}"
                )
            else:
                notes.append(f"setup-{tool} {version}: its first step has another image already")
        return image

    def _setup_image(self, tool: str, version: str, scope: _Scope) -> Node | None:
        ref = _EXPR.fullmatch(version)
        axis_ref = _MATRIX_REF.fullmatch(ref.group(1)) if ref else None
        if axis_ref is not None:
            key = axis_ref.group(1) or axis_ref.group(2)
            if key not in scope.axes:
                return None
            values = [c.get(scope.axis_ids[key], "") for c in scope.cells]
            var = scope.axes[key]
            images = {v: _image(tool, v) for v in values}
            if any(image is None for image in images.values()):
                return None
            scope.used_axes.add(key)
            if all(image == f"{tool}:{v}-slim" for v, image in images.items()):
                return Str((f"{tool}:", Field(var), "-slim"))
            # Versions an image tag does not name as they are (3.x, pypy3.10): a table.
            table = self._name(f"{tool}_images", "images")
            entries = tuple((text(v), text(str(image))) for v, image in images.items())
            scope.prelude += render(Dict(entries), INDENT, f"{table} = ")
            return f"{table}[{var}]"
        found = _image(tool, version) if version and "${{" not in version else None
        return text(found) if found else None

    def _env(
        self, job: dict[str, Any], scope: _Scope, where: str, notes: list[str]
    ) -> list[tuple[Node, Node]]:
        """The job's env (its container's, then its own), for its first step."""
        container = job.get("container")
        entries: list[tuple[Node, Node]] = []
        for source in [
            container.get("env") if isinstance(container, dict) else None,
            job.get("env"),
        ]:
            for key, value in (source if isinstance(source, dict) else {}).items():
                node = scope.value(value)
                notes += self._expressions(scope, where, f" in env {key}")
                entries.append((text(str(key)), node))
                if isinstance(node, Str) and all(isinstance(p, str) for p in node.parts):
                    scope.env[str(key)] = _Parts.plain(node.parts)
        return entries

    # -- steps ------------------------------------------------------------------

    def _steps(self, job_id: str, job: dict[str, Any], scope: _Scope) -> list[_Step]:
        """The job's run: steps; each carries the comments about the steps before it that
        were not translated (the last one, those after it too)."""
        steps: list[_Step] = []
        pending: list[str] = []
        cache_dirs: dict[str, str] = {}
        defaults = _defaults(self.doc) | _defaults(job)
        timeout = _minutes(job.get("timeout-minutes"))
        if timeout is None and job.get("timeout-minutes") is not None:
            what = f"timeout-minutes {_text(job['timeout-minutes'])}"
            pending.append(self._miss(f"job {job_id}", what))
        for n, step in enumerate(job.get("steps", []), start=1):
            name = _text(step.get("name"))
            where = f"job {job_id}, " + (f'step "{comment(name)}"' if name else f"step {n}")
            if "run" in step:
                made = self._run(job_id, where, step, scope, defaults, timeout, dict(cache_dirs))
                if isinstance(made, str):
                    pending.append(made)
                    continue
                made.comments[:0] = pending
                pending = []
                steps.append(made)
            elif step.get("uses"):
                pending += self._uses(where, _text(step["uses"]), step, cache_dirs)
            else:
                pending.append(self._miss(where, "a step with neither run: nor uses:"))
        if steps:
            steps[-1].after += pending
        elif pending:
            steps.append(_Step([], [], "", [], None, {}, pending))
        return steps

    def _uses(
        self, where: str, uses: str, step: dict[str, Any], cache_dirs: dict[str, str]
    ) -> list[str]:
        """What a ``uses:`` step becomes: nothing (checkout), cache folders, or a comment."""
        action = _action(uses)
        given = _mapping(step.get("with"))
        if action == "actions/checkout":
            other = [k for k in ("repository", "path") if k in given]
            if other:
                return [
                    self._miss(where, f"{uses} with {', '.join(other)} (this tree is the checkout)")
                ]
            return []
        if action in ("actions/setup-python", "actions/setup-node"):
            cache = _text(given.get("cache")).strip()
            if cache in _SETUP_CACHES:
                path = _SETUP_CACHES[cache]
                cache_dirs[_CACHE_NAMES[path]] = path
            elif cache:
                return [self._miss(where, f"{uses} cache: {cache}")]
            return []
        if action in _CACHE_ACTIONS:
            missed = []
            for line in _text(given.get("path")).splitlines():
                path = line.strip().rstrip("/")
                if path in _CACHE_NAMES:
                    cache_dirs[_CACHE_NAMES[path]] = path
                elif path:
                    missed.append(path)
            if not missed:
                return []
            what = f"{uses} path {', '.join(missed)} (not a known package cache)"
            return [self._miss(where, what)]
        inputs = f" (with: {', '.join(str(k) for k in given)})" if given else ""
        return [self._miss(where, f"uses {uses}{inputs}")]

    def _run(
        self,
        job_id: str,
        where: str,
        step: dict[str, Any],
        scope: _Scope,
        defaults: dict[str, str],
        timeout: float | None,
        cache_dirs: dict[str, str],
    ) -> _Step | str:
        """A ``run:`` step, or the comment saying why it could not be one."""
        comments: list[str] = []
        script = _text(step.get("run"))
        name = _text(step.get("name")) or _first_line(script)
        label = _Parts.merge([f"{job_id}: ", *scope.resolve(comment(name), command=False)])
        scope.take()  # a label's other expressions stay in it as written
        env: list[tuple[Node, Node]] = []
        raw_env = step.get("env")
        for key, value in (raw_env if isinstance(raw_env, dict) else {}).items():
            env.append((text(str(key)), scope.value(value)))
            comments += self._expressions(scope, where, f" in env {key}")
        command = _Parts.strip(scope.resolve(script, command=True))
        if not command:
            return self._miss(where, "an empty run:")
        secrets, untranslated = scope.take()
        comments += self._expressions(scope, where, "", untranslated)
        named = {inline(k) for k, _ in env}
        # A secret the script reads is given it in the variable of the secret's name.
        env += [(text(s), f'gl.secret("{s}")') for s in secrets if inline(text(s)) not in named]
        runner = sorted(set(_RUNNER_VARS.findall(_Parts.plain(command))))
        if runner:
            what = ", ".join(f"${v}" for v in runner) + " (GitHub's runner variables: unset here)"
            comments.append(self._miss(where, what))
        shell = _text(step.get("shell") or defaults.get("shell")).strip()
        directory = _text(step.get("working-directory") or defaults.get("working-directory"))
        cd: list[Part] = []
        if directory.strip() not in ("", "."):
            cd = ["cd ", *_Parts.quoted(scope.resolve(directory.strip(), command=True))]
            comments += self._expressions(scope, where, " in working-directory")
        wrapped = _shell(command, shell, cd, comments)
        if wrapped is None:
            return self._miss(where, f"shell: {shell} (runs sh, bash and python scripts)")
        on_error = step.get("continue-on-error")
        if on_error is True:
            comments.append("continue-on-error: its failure does not stop the job")
            wrapped = ["sh -c ", *_Parts.quoted(wrapped), " || " + _CONTINUE]
        elif on_error not in (None, False):
            comments.append(self._miss(where, f"continue-on-error: {_text(on_error)}"))
        if "if" in step:
            what = f"if: {comment(_text(step['if']))} (not evaluated: the step runs in its turn)"
            comments.append(self._miss(where, what))
        step_timeout = _minutes(step.get("timeout-minutes"))
        if step_timeout is None and step.get("timeout-minutes") is not None:
            comments.append(self._miss(where, f"timeout-minutes {_text(step['timeout-minutes'])}"))
        return _Step(
            command=_Parts.merge(wrapped),
            label=label,
            key=self._key(job_id, _EXPR.sub("", name)),
            env=env,
            timeout=step_timeout or timeout,
            cache_dirs=cache_dirs,
            comments=comments,
        )


def _cache_dir(path: str) -> Node:
    """A ``cache_dirs`` value: the path, with the variable its tool reads where greenloop
    does not know it."""
    env = _EXTRA_CACHE_ENV.get(path)
    return text(path) if env is None else Call("gl.cache_dir", (text(path),), (("env", text(env)),))


def _mapping(value: object) -> dict[str, Any]:
    """``value`` if it is a mapping, else an empty one (a workflow's optional parts)."""
    return value if isinstance(value, dict) else {}


def _needs(job: Mapping[str, Any]) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else [str(n) for n in needs]


def _mappings(raw: object) -> list[dict[str, str]]:
    """A matrix's include/exclude entries, their values as text."""
    items = raw if isinstance(raw, list) else []
    return [{str(k): _text(v) for k, v in i.items()} for i in items if isinstance(i, dict)]


def _cells_node(cells: list[dict[str, str]]) -> Node:
    """``gl.matrix(...)`` where the cells are its product, else the list of ``gl.Cell``\\ s."""
    axes = list(dict.fromkeys(k for c in cells for k in c))
    values = {a: list(dict.fromkeys(c[a] for c in cells if a in c)) for a in axes}
    combos = itertools.product(*values.values())
    if [dict(zip(axes, combo, strict=True)) for combo in combos] == cells:
        return Call(
            "gl.matrix", (), tuple((a, List(tuple(text(v) for v in values[a]))) for a in axes)
        )
    return List(
        tuple(
            Call("gl.Cell", (Dict(tuple((text(k), text(v)) for k, v in c.items())),)) for c in cells
        )
    )


def _mentions(source: str, key: str) -> bool:
    """Whether ``source`` (JSON of a job's part) reads ``matrix.<key>``."""
    name = re.escape(key)
    return bool(re.search(rf"matrix\.{name}(?![\w-])|matrix\[\s*'{name}'", source))


def _defaults(scope: Mapping[str, Any]) -> dict[str, str]:
    defaults = scope.get("defaults")
    run = defaults.get("run") if isinstance(defaults, dict) else None
    return {str(k): _text(v) for k, v in run.items()} if isinstance(run, dict) else {}


def _minutes(value: object) -> float | None:
    """``timeout-minutes`` in seconds; ``None`` for no number (an expression)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value) * 60


def _container_ports(raw: object) -> list[int]:
    """The container side of each ``ports:`` entry (``8080:80`` -> 80)."""
    ports: list[int] = []
    for entry in raw if isinstance(raw, list) else []:
        port = _text(entry).split(":")[-1].split("/")[0].strip()
        if port.isdigit():
            ports.append(int(port))
    return ports


def _health(options: list[str]) -> tuple[str | None, list[str]]:
    """A service's ``--health-cmd`` (its ready command), and its options that are not health's."""
    ready: str | None = None
    others: list[str] = []
    i = 0
    while i < len(options):
        name, eq, value = options[i].partition("=")
        if not eq and i + 1 < len(options) and not options[i + 1].startswith("-"):
            value = options[i + 1]
            i += 1
        if name == "--health-cmd":
            ready = value
        elif not name.startswith("--health-"):
            others.append(f"{name} {value}".strip())
        i += 1
    return ready, others


def _shell(
    command: list[Part], shell: str, cd: list[Part], comments: list[str]
) -> list[Part] | None:
    """The step's command run as GitHub runs its ``shell:`` (``None``: one greenloop lacks)."""
    plain = _Parts.plain(command)
    kind = shell.split()[0] if shell else ""
    if not kind and _BASHISMS.search(plain):
        comments.append("runs under bash: the script uses bash syntax (GitHub's default shell)")
        kind = "bash -e"
    if kind in ("", "sh"):
        # GitHub runs a script with -e: its first failing command fails the step.
        if "\n" in plain:
            return _Parts.merge(["set -e\n", *cd, "\n" if cd else "", *command])
        prefix = "set -e; " if ";" in plain else ""
        return _Parts.merge([prefix, *cd, " && " if cd else "", *command])
    wrap = {"bash": "bash -eo pipefail -c ", "bash -e": "bash -e -c ", "python": "python3 -c "}
    if kind not in wrap:
        return None
    return _Parts.merge([*cd, " && " if cd else "", wrap[kind], *_Parts.quoted(command)])
