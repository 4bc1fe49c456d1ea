"""The pipeline file: its header, the pipeline's settings, and each job's code in order."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from greenloop.cli._github_actions.book import identifier
from greenloop.cli._github_actions.job_steps import First, Step, Steps
from greenloop.cli._github_actions.jobs import JobParts, cells_node
from greenloop.cli._github_actions.scope import Parts, Scope
from greenloop.cli._github_actions.workflow import Translation, WorkflowError, needs_of, yaml_text
from greenloop.cli._pysource import (
    INDENT,
    Call,
    Dict,
    List,
    Node,
    Str,
    comment,
    inline,
    render,
    text,
)

_ALWAYS = re.compile(
    r"^(\$\{\{\s*)?(always\(\)|!\s*cancelled\(\)|success\(\)\s*\|\|\s*failure\(\))"
)


@dataclass
class _Job:
    """What the jobs needing a job wait for: itself, or (nothing of it translated) its needs."""

    waits: list[str]
    lenient: list[str] = field(default_factory=list)
    """The jobs among those whose failure GitHub lets pass (``continue-on-error: true``)."""


class Translator(JobParts, Steps):
    """Turns one workflow's data into the source of a pipeline file."""

    def __init__(self, doc: dict[str, Any], shown: str) -> None:
        super().__init__(doc)
        self.shown = shown
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
        title = comment(yaml_text(self.doc.get("name"))).replace("\\", "/").replace('"', "'")
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
            events = [yaml_text(e) for e in on]
        elif isinstance(on, dict):
            events = [yaml_text(e) for e in on]
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
        scope = Scope("the workflow's env")
        raw = self.doc.get("env")
        for key, value in (raw if isinstance(raw, dict) else {}).items():
            node = scope.value(value)
            if not isinstance(node, Str):  # a secret: pipeline env holds plain values only
                self.pushed_env.append((text(str(key)), node))
                continue
            for expr in scope.take()[1]:
                self._miss(f"the workflow's env {key}", f"{expr} (kept as written)")
            resolved = Parts.plain(node.parts)
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
            for need in needs_of(self.jobs[job_id]):
                visit(need)
            visiting.pop()
            order.append(job_id)

        for job_id in self.jobs:
            visit(job_id)
        return order

    # -- one job ----------------------------------------------------------------

    def _job(self, job_id: str, job: dict[str, Any], done: dict[str, _Job]) -> _Job:
        where = f"job {job_id}"
        waits = list(dict.fromkeys(w for n in needs_of(job) for w in done[n].waits))
        lenient = list(dict.fromkeys(j for n in needs_of(job) for j in done[n].lenient))
        notes: list[str] = []
        if "uses" in job:
            notes.append(self._miss(where, f"a reusable workflow ({yaml_text(job['uses'])})"))
            return self._empty(job_id, waits, lenient, notes)
        may_fail = job.get("continue-on-error")
        if may_fail is True:
            notes.append(
                "continue-on-error: the jobs needing it run even when it fails "
                "(gl.wait(..., continue_on_failure=True)); the run still fails"
            )
        elif may_fail not in (None, False):
            notes.append(self._miss(where, f"continue-on-error: {yaml_text(may_fail)}"))
        condition = yaml_text(job.get("if")).strip()
        if condition and not _ALWAYS.match(condition):
            runs = "when the jobs it needs pass" if needs_of(job) else "always"
            what = f"if: {comment(condition)} (not evaluated: the job runs {runs})"
            notes.append(self._miss(where, what))
        scope = Scope(where, env=dict(self.workflow_env))
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
        var = self._name(identifier(job_id), "list" if matrix else "chain")
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
                First(image, matrix),
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
        scope: Scope,
        matrix: bool,
        waits: list[str],
        lenient: list[str],
        steps: list[Step],
        first: First,
        notes: list[str],
        service_lines: list[str],
        services: list[str],
        waited: set[str],
    ) -> None:
        body = self.body
        needed = var in waited
        title = yaml_text(job.get("name"))
        runs_on = yaml_text(job.get("runs-on"))
        header = f"job {job_id}" + (f" ({title})" if title else "")
        header += f", on {runs_on} in GitHub" if runs_on else ""
        body += ["", f"{INDENT}# {comment(header)}"]
        body += [f"{INDENT}# {comment(n)}" for n in notes]
        body += service_lines
        start = "gl.sh"
        if waits:
            always = bool(_ALWAYS.match(yaml_text(job.get("if")).strip()))
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
            body += render(cells_node(scope.cells), INDENT, "for cell in ", ":")
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
