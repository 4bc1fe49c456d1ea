"""A job's matrix, services, image and env."""

from __future__ import annotations

import itertools
import json
import re
import shlex
from typing import Any

from greenloop.cli._github_actions.book import Book, identifier, slug
from greenloop.cli._github_actions.job_steps import action_of
from greenloop.cli._github_actions.scope import EXPR, MATRIX_REF, Parts, Scope
from greenloop.cli._github_actions.workflow import mapping, yaml_text
from greenloop.cli._pysource import (
    INDENT,
    Call,
    Dict,
    Field,
    List,
    Node,
    Str,
    comment,
    inline,
    render,
    text,
)

_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")
_VERSION_X = re.compile(r"^(\d+(?:\.\d+)?)\.x$")


def _image_for(tool: str, version: str) -> str | None:
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


class JobParts(Book):
    """Translating a job's matrix, services, image and env (a part of the translator)."""

    def _cells(self, job_id: str, job: dict[str, Any], scope: Scope, notes: list[str]) -> bool:
        """Fill ``scope``'s cells and axes from the job's matrix; whether it has one."""
        where = f"job {job_id}"
        strategy = job.get("strategy")
        matrix = strategy.get("matrix") if isinstance(strategy, dict) else None
        if matrix is None:
            return False
        if not isinstance(matrix, dict):
            notes.append(self._miss(where, f"strategy.matrix {comment(yaml_text(matrix))}"))
            return False
        axes: dict[str, list[str]] = {}
        for key, values in matrix.items():
            if key in ("include", "exclude"):
                continue
            if not isinstance(values, list):
                notes.append(self._miss(where, f"matrix.{key} {comment(yaml_text(values))}"))
                continue
            axes[str(key)] = [yaml_text(v) for v in values]
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
            axis = identifier(key).lstrip("_") or "axis"
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
        self, job_id: str, job: dict[str, Any], scope: Scope
    ) -> tuple[list[str], list[str]]:
        """The variables of the job's services, and the lines declaring the new ones."""
        raw = job.get("services")
        used: list[str] = []
        lines: list[str] = []
        # Declared before the job's matrix loop, once for every cell: no cell's values.
        values = Scope(scope.where, env=scope.env)
        for sid, spec in (raw if isinstance(raw, dict) else {}).items():
            where = f"job {job_id}, service {sid}"
            image = spec.get("image") if isinstance(spec, dict) else None
            if not isinstance(image, str) or "${{" in image:
                lines.append(f"{INDENT}# {self._miss(where, f'image {yaml_text(image)}')}")
                continue
            ports = _container_ports(spec.get("ports"))
            ready, others = _health(shlex.split(yaml_text(spec.get("options"))))
            notes: list[str] = []
            if ready is None:
                notes.append(
                    f"{sid} has no --health-cmd: GitHub does not wait for it, nor does this"
                )
                ready = "true"
            notes += [self._miss(where, f"option {option}") for option in others]
            notes += [self._miss(where, f"{k}:") for k in ("credentials", "volumes") if k in spec]
            name = slug(str(sid)).replace(".", "-") or "service"
            name = name if name[0].isalpha() else f"s-{name}"
            kwargs: list[tuple[str, Node]] = [("image", text(image))]
            if ports:
                kwargs.append(("ports", List(tuple(str(p) for p in ports))))
            kwargs.append(("ready", text(ready)))
            env: list[tuple[Node, Node]] = []
            for key, value in mapping(spec.get("env")).items():
                env.append((text(str(key)), values.value(value)))
                notes += self._expressions(values, where, f" in env {key}")
            if env:
                kwargs.append(("env", Dict(tuple(env))))
            declared = Call("gl.service", (text(name),), tuple(kwargs), explode=True)
            if name in self.services and self.services[name][0] != inline(declared):
                name = f"{slug(job_id)}-{name}"  # another job's service of that name differs
                declared = Call("gl.service", (text(name),), tuple(kwargs), explode=True)
            prefix = name.upper().replace("-", "_")
            if ports:
                scope.ports[str(sid)] = (prefix, ports[0])
            if name in self.services:
                used.append(self.services[name][1])
                continue
            var = self._name(identifier(name), "service")
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
        self, job_id: str, job: dict[str, Any], scope: Scope, notes: list[str]
    ) -> Node | None:
        """The image of the job's first step: its container's, else its setup action's."""
        where = f"job {job_id}"
        container = job.get("container")
        if isinstance(container, str):
            container = {"image": container}
        image: Node | None = None
        if isinstance(container, dict) and container.get("image"):
            image = Str(tuple(scope.resolve(yaml_text(container["image"]), command=False)))
            notes += self._expressions(scope, where, " in container")
            for key in ("options", "credentials", "volumes", "ports"):
                if key in container:
                    notes.append(
                        self._miss(where, f"container {key}: {comment(yaml_text(container[key]))}")
                    )
        for step in job.get("steps", []):
            tool = {"actions/setup-python": "python", "actions/setup-node": "node"}.get(
                action_of(yaml_text(step.get("uses")))
            )
            if tool is None:
                continue
            given = mapping(step.get("with"))
            version = yaml_text(given.get(f"{tool}-version")).strip()
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

    def _setup_image(self, tool: str, version: str, scope: Scope) -> Node | None:
        ref = EXPR.fullmatch(version)
        axis_ref = MATRIX_REF.fullmatch(ref.group(1)) if ref else None
        if axis_ref is not None:
            key = axis_ref.group(1) or axis_ref.group(2)
            if key not in scope.axes:
                return None
            values = [c.get(scope.axis_ids[key], "") for c in scope.cells]
            var = scope.axes[key]
            images = {v: _image_for(tool, v) for v in values}
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
        found = _image_for(tool, version) if version and "${{" not in version else None
        return text(found) if found else None

    def _env(
        self, job: dict[str, Any], scope: Scope, where: str, notes: list[str]
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
                    scope.env[str(key)] = Parts.plain(node.parts)
        return entries


def _mappings(raw: object) -> list[dict[str, str]]:
    """A matrix's include/exclude entries, their values as text."""
    items = raw if isinstance(raw, list) else []
    return [{str(k): yaml_text(v) for k, v in i.items()} for i in items if isinstance(i, dict)]


def cells_node(cells: list[dict[str, str]]) -> Node:
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


def _container_ports(raw: object) -> list[int]:
    """The container side of each ``ports:`` entry (``8080:80`` -> 80)."""
    ports: list[int] = []
    for entry in raw if isinstance(raw, list) else []:
        port = yaml_text(entry).split(":")[-1].split("/")[0].strip()
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
