"""An app's output: the last lines it printed, and the error and place they point at.

The overlay shows the tail as the app printed it, plus what a reader looks for
first: the error line (``NameError: name 'x' is not defined``, ``Error: boom``)
and the file and line in the project where it happened. Tracebacks name files
in the published build the app runs from; where such a file has the same path
in the project tree (always, for a snapshot of the tree) the project's file is
named instead, the one the developer edits.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from greenloop.server import AppProblem
from greenloop.server.app_status import SourceLocation

TAIL_LINES = 60
"""Lines of the app's output kept for the overlay and the status."""

_PYTHON_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+)')
# Node's stack frames ("at f (/x/server.js:5:11)") and its header for an uncaught
# throw ("/x/server.js:5"); also any tool that prints path:line[:col].
_PATH_LINE = re.compile(r"(?P<path>(?:file://)?/[^\s():\"']+):(?P<line>\d+)(?::(?P<col>\d+))?")
_ERROR_LINE = re.compile(
    r"^(?:Uncaught )?(?:[A-Za-z_][\w.]*\.)?(?:[A-Z]\w*)?(?:Error|Exception|Exit|Interrupt)\b"
    r"(?::.*)?$"
)


class LogTail:
    """The last :data:`TAIL_LINES` lines of an app's output; thread-safe."""

    def __init__(self, on_line: Callable[[str], None] | None = None) -> None:
        """An empty tail; ``on_line`` is told of each line as it arrives."""
        self._lines: deque[str] = deque(maxlen=TAIL_LINES)
        self._lock = threading.Lock()
        self._on_line = on_line

    def add(self, line: str) -> None:
        """Append one line (without its newline)."""
        with self._lock:
            self._lines.append(line)
        if self._on_line is not None:
            self._on_line(line)

    def lines(self) -> list[str]:
        """The lines kept, oldest first."""
        with self._lock:
            return list(self._lines)


def problem_of(summary: str, lines: Sequence[str], site: Path, root: Path) -> AppProblem:
    """An :class:`AppProblem` saying ``summary``, with the error and place ``lines`` show."""
    return AppProblem(
        summary=summary,
        error=error_line(lines),
        location=location_of(lines, site, root),
        log_tail=list(lines),
    )


def error_line(lines: Sequence[str]) -> str | None:
    """The last line that names an exception, as Python and Node print them."""
    for line in reversed(lines):
        text = line.strip()
        if _ERROR_LINE.match(text):
            return text
    return None


def location_of(lines: Sequence[str], site: Path, root: Path) -> SourceLocation | None:
    """Where the traceback in ``lines`` points in the app's own code (files under ``site``).

    A Python traceback is read innermost frame last, so its last frame in the
    app's code wins; a Node stack is read innermost first, so its first does.
    Without a frame in the app's code, the innermost frame of any file.
    """
    python = [m for line in lines if (m := _PYTHON_FRAME.match(line))]
    if python:
        frames: list[tuple[str, int, int | None]] = [
            (m["path"], int(m["line"]), None) for m in python
        ]
        ours = [f for f in frames if _inside(f[0], site)]
        path, line, col = (ours or frames)[-1]
        return SourceLocation(path=_in_project(path, site, root), line=line, col=col)
    other = [
        (m["path"].removeprefix("file://"), int(m["line"]), int(m["col"]) if m["col"] else None)
        for line in lines
        for m in _PATH_LINE.finditer(line)
    ]
    ours = [f for f in other if _inside(f[0], site)]
    if not (ours or other):
        return None
    path, line, col = (ours or other)[0]
    return SourceLocation(path=_in_project(path, site, root), line=line, col=col)


def _inside(path: str, site: Path) -> bool:
    return Path(path).is_relative_to(site)


def _in_project(path: str, site: Path, root: Path) -> str:
    if not _inside(path, site):
        return path
    mirrored = root / Path(path).relative_to(site)
    return str(mirrored) if mirrored.is_file() else path
