"""Python source that ruff's formatter leaves as written, for the pipeline files ``init`` writes.

A call, list or dict renders on one line when that line is short, else one item a
line with a trailing comma (the "magic trailing comma" ruff keeps exploded). A
string literal is quoted the way ruff quotes it: double quotes unless the text
holds more double quotes than single ones, escapes as ruff writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

INDENT = "    "
WIDTH = 80
"""Lines up to this long stay on one line: below ruff's 88, so its formatter never
joins or splits them whatever it counts differently (wide characters)."""
SPLIT = 100
"""A multi-line string longer than this is written one line of it per string
(implicit concatenation); ruff joins such parts back only when they fit on 88."""


@dataclass(frozen=True)
class Field:
    """A variable interpolated into a string: ``{name}`` in an f-string."""

    name: str


Part = str | Field
"""A piece of a string: literal text, or a variable's value."""


@dataclass(frozen=True)
class Str:
    """A string literal (an f-string when it holds fields); ``split`` lets a long one
    be written a line per string where it is a call's positional argument."""

    parts: tuple[Part, ...]
    split: bool = False


@dataclass(frozen=True)
class Call:
    """``func(args..., name=value...)``; ``explode`` always writes it an argument a line."""

    func: str
    args: tuple[Node, ...] = ()
    kwargs: tuple[tuple[str, Node], ...] = ()
    explode: bool = False


@dataclass(frozen=True)
class List:
    """``[items...]``."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Dict:
    """``{key: value...}``."""

    items: tuple[tuple[Node, Node], ...]


Node = Str | Call | List | Dict | str
"""An expression; a plain ``str`` is source code written as it is."""


def text(value: str) -> Str:
    """The string literal of ``value``."""
    return Str((value,))


def literal(parts: Sequence[Part]) -> str:
    """The source of the string made of ``parts``: an f-string if a part is a field."""
    fields = any(isinstance(p, Field) for p in parts)
    plain = "".join(p for p in parts if isinstance(p, str))
    quote = "'" if plain.count('"') > plain.count("'") else '"'
    out = []
    for part in parts:
        if isinstance(part, Field):
            out.append("{" + part.name + "}")
            continue
        escaped = _escape(part, quote)
        out.append(escaped.replace("{", "{{").replace("}", "}}") if fields else escaped)
    return ("f" if fields else "") + quote + "".join(out) + quote


def _escape(value: str, quote: str) -> str:
    out = []
    for char in value:
        if char == "\\":
            out.append("\\\\")
        elif char == quote:
            out.append("\\" + quote)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif ord(char) < 32 or ord(char) == 127:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def inline(node: Node) -> str:
    """``node`` on one line."""
    if isinstance(node, str):
        return node
    if isinstance(node, Str):
        return literal(node.parts)
    if isinstance(node, Call):
        args = [inline(a) for a in node.args] + [f"{k}={inline(v)}" for k, v in node.kwargs]
        return f"{node.func}({', '.join(args)})"
    if isinstance(node, List):
        return "[" + ", ".join(inline(i) for i in node.items) + "]"
    return "{" + ", ".join(f"{inline(k)}: {inline(v)}" for k, v in node.items) + "}"


def render(node: Node, indent: str, head: str = "", tail: str = "") -> list[str]:
    """The lines of ``head + node + tail`` at ``indent``, broken where they would be long."""
    one = indent + head + inline(node) + tail
    forced = isinstance(node, Call) and node.explode
    if not forced and len(one) <= WIDTH and one.isascii():
        return [one]
    if isinstance(node, Str):
        if node.split and not head and tail == "," and len(one) > SPLIT:
            split = [indent + literal(line) for line in _lines(node.parts)]
            return [*split[:-1], split[-1] + tail]
        return [one]
    if isinstance(node, str):
        return [one]
    inner = indent + INDENT
    lines: list[str]
    if isinstance(node, Call):
        lines = [indent + head + node.func + "("]
        for arg in node.args:
            lines += render(arg, inner, "", ",")
        for name, value in node.kwargs:
            lines += render(value, inner, name + "=", ",")
        return [*lines, indent + ")" + tail]
    if isinstance(node, List):
        lines = [indent + head + "["]
        for item in node.items:
            lines += render(item, inner, "", ",")
        return [*lines, indent + "]" + tail]
    lines = [indent + head + "{"]
    for key, value in node.items:
        lines += render(value, inner, inline(key) + ": ", ",")
    return [*lines, indent + "}" + tail]


def _lines(parts: Sequence[Part]) -> list[list[Part]]:
    """``parts`` cut after each newline: one string per line of the text."""
    lines: list[list[Part]] = [[]]
    for part in parts:
        if isinstance(part, Field):
            lines[-1].append(part)
            continue
        pieces = part.split("\n")
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            if piece or not last:
                lines[-1].append(piece if last else piece + "\n")
            if not last:
                lines.append([])
    return [line for line in lines if line]


def comment(value: str) -> str:
    """``value`` as the text of one comment line (no line breaks)."""
    return " ".join(value.split())
