"""What a job's strings may refer to: GitHub expressions, and what greenloop puts in
their place (a cell's value, a shell variable, a secret)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from greenloop.cli._github_actions.workflow import yaml_text
from greenloop.cli._pysource import Field, Node, Part, Str

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}", re.S)
MATRIX_REF = re.compile(r"matrix\.([A-Za-z_][\w-]*)|matrix\[\s*'([^']+)'\s*\]")
SECRET_REF = re.compile(r"secrets\.([A-Za-z_]\w*)|secrets\[\s*'([A-Za-z_]\w*)'\s*\]")
ENV_REF = re.compile(r"env\.([A-Za-z_]\w*)|env\[\s*'([A-Za-z_]\w*)'\s*\]")
PORT_REF = re.compile(r"job\.services\.([\w-]+)\.ports\[\s*'?(\d+)'?\s*\]")
"""``${{ ... }}`` and the expressions inside it greenloop has a meaning for: a matrix
value, a secret, an env value, a service's port."""
_PLAIN_WORD = re.compile(r"^[\w./@%+=:,-]+$")


class Parts:
    """Helpers on a string made of literal text and fields."""

    @staticmethod
    def merge(parts: Iterable[Part]) -> list[Part]:
        """``parts`` with empty texts dropped and neighbouring texts joined."""
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
        """The literal text of ``parts`` (fields left out)."""
        return "".join(p for p in parts if isinstance(p, str))

    @staticmethod
    def strip(parts: list[Part]) -> list[Part]:
        """``parts`` without the white space around them."""
        parts = list(parts)
        if parts and isinstance(parts[0], str):
            parts[0] = parts[0].lstrip()
        if parts and isinstance(parts[-1], str):
            parts[-1] = parts[-1].rstrip()
        return Parts.merge(parts)

    @staticmethod
    def quoted(parts: list[Part]) -> list[Part]:
        """``parts`` as one shell word (single quotes; a field's value is taken as it is)."""
        if all(isinstance(p, str) for p in parts) and _PLAIN_WORD.match(Parts.plain(parts)):
            return parts
        inner = [p.replace("'", "'\"'\"'") if isinstance(p, str) else p for p in parts]
        return Parts.merge(["'", *inner, "'"])


@dataclass
class Scope:
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
        for found in EXPR.finditer(value):
            parts.append(value[pos : found.start()])
            parts.append(self._expression(found.group(1), found.group(0), command))
            pos = found.end()
        parts.append(value[pos:])
        return Parts.merge(parts)

    def _expression(self, expr: str, whole: str, command: bool) -> Part:
        if ref := MATRIX_REF.fullmatch(expr):
            key = ref.group(1) or ref.group(2)
            if key in self.axes:
                self.used_axes.add(key)
                return Field(self.axes[key])
        elif (ref := SECRET_REF.fullmatch(expr)) and command:
            name = ref.group(1) or ref.group(2)
            self.secrets.append(name)
            return "${" + name + "}"
        elif ref := ENV_REF.fullmatch(expr):
            name = ref.group(1) or ref.group(2)
            if command:
                return "${" + name + "}"
            if name in self.env:
                return self.env[name]
        elif ref := PORT_REF.fullmatch(expr):
            known = self.ports.get(ref.group(1))
            if known is not None and known[1] == int(ref.group(2)):
                if command:
                    return "${" + known[0] + "_PORT}"
                self.hints[whole] = f"steps get the port as ${known[0]}_PORT"
        self.untranslated.append(whole)
        return whole

    def value(self, raw: object) -> Node:
        """An env value: ``gl.secret(...)`` for a whole ``${{ secrets.X }}``, else a string."""
        value = yaml_text(raw)
        ref = EXPR.fullmatch(value.strip())
        if ref and (secret := SECRET_REF.fullmatch(ref.group(1))):
            return f'gl.secret("{secret.group(1) or secret.group(2)}")'
        return Str(tuple(self.resolve(value, command=False)))
