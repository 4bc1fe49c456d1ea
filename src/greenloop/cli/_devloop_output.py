"""What the dev-loop commands print: verdict lines, the JSON stream, ``status`` sections."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import click

from greenloop.devloop.loop import Listener, Verdict
from greenloop.protocol import (
    BecameRed,
    Severity,
    StateEvent,
    TreeState,
)


def omitted_line(omitted: Mapping[Severity, int]) -> str:
    """The line saying the list above is cut short, and by how much."""
    total = sum(omitted.values())
    parts = ", ".join(f"{n} {severity.value}" for severity, n in sorted(omitted.items()) if n)
    return (
        f"... and {total} more not listed ({parts}): each checker's report keeps its first "
        "`max_diagnostics` (errors first) and counts the rest"
    )


def summary_line(
    state: TreeState, counts: Mapping[Severity, int], checkers: list[str], duration_ms: int
) -> str:
    """The verdict line: ``GREEN — 0 errors, 0 warnings (ruff, mypy; 0.74s)``."""
    took = f"{', '.join(checkers)}; {duration_ms / 1000:.2f}s"
    if state is TreeState.UNKNOWN:
        return f"UNKNOWN — the tree kept changing while it was checked ({took})"
    errors, warnings = counts.get(Severity.ERROR, 0), counts.get(Severity.WARNING, 0)
    return (
        f"{state.value.upper()} — {errors} error{'s' * (errors != 1)}, "
        f"{warnings} warning{'s' * (warnings != 1)} ({took})"
    )


class TextPrinter(Listener):
    """``[+   0.741s] GREEN — …`` after every round, with the diagnostics under it."""

    def __init__(self) -> None:
        self._started = time.monotonic()

    def early(self, events: list[StateEvent]) -> None:
        # An advisory checker turned the tree red before the round ended: say so now.
        for event in events:
            if isinstance(event, BecameRed):
                elapsed = time.monotonic() - self._started
                click.echo(f"[+{elapsed:8.3f}s] RED (early; the authoritative check goes on)")
                for diagnostic in event.diagnostics:
                    click.echo(f"  {diagnostic.render()}")

    def verdict(self, verdict: Verdict) -> None:
        elapsed = time.monotonic() - self._started
        line = summary_line(verdict.tree, verdict.counts(), verdict.checkers, verdict.duration_ms)
        click.echo(f"[+{elapsed:8.3f}s] {line}")
        for diagnostic in verdict.diagnostics:
            click.echo(f"  {diagnostic.render()}")
        if verdict.omitted:
            click.echo(f"  {omitted_line(verdict.omitted)}")


class JsonPrinter(Listener):
    """One JSON object a line for every state event."""

    def events(self, events: list[StateEvent]) -> None:
        for event in events:
            click.echo(event.model_dump_json())


def _flat(section: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """A section's fields, nested ones named with dots (``lsp_servers.limit``)."""
    for key, value in section.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def describe_section(name: str, section: dict[str, Any]) -> str:
    """One ``greenloop status`` section (``watcher``, ``latest_green``, ``app`` ...) as a line."""
    if name == "latest_green":
        return _describe_latest_green(section)
    if name != "watcher":
        return ", ".join(f"{k}={v}" for k, v in _flat(section))
    state = section["state"]
    if state == "none":
        return "none has run on this tree"
    seen = (
        f"last verdict {str(section['verdict']).upper()}, {section['errors']} errors, "
        f"{section['warnings']} warnings after {section['checks']} checks"
    )
    build = section.get("last_build")
    if build is not None:
        seen += (
            f"; last build FAILED: {build['reason']}"
            if build["outcome"] == "failed"
            else f"; last build {build['outcome']}"
            + ("" if build["published"] else " (not published)")
        )
    app = section.get("app")
    if app is not None:
        seen += _describe_app(app, live=state == "live")
    if state == "live":
        return (
            f"live (pid {section['pid']}, {section['activity']}, heartbeat "
            f"{section['heartbeat_age_s']:.1f}s ago); {seen}"
        )
    if state == "stopped":
        return f"not running (pid {section['pid']} stopped); {seen}"
    return f"not running (pid {section['pid']} died or hung without stopping); {seen}"


def _describe_app(app: dict[str, Any], *, live: bool) -> str:
    current, failed = app.get("current"), app.get("failed_start")
    if current is None:
        text = "; no app serving yet" if live else "; no app was serving"
    else:
        text = (
            f"; app pid {current['pid']} on port {current['port']}, build "
            f"{current['input_hash'][:12]}, {current['health']}"
        )
        problem = current.get("problem")
        if problem:
            text += f" ({problem['summary']})"
    if failed is not None and failed.get("problem"):
        text += (
            f"; the app of build {failed['input_hash'][:12]} did not start: "
            f"{failed['problem']['summary']}"
        )
    return text


def _describe_latest_green(section: dict[str, Any]) -> str:
    warning = f" (warning: {section['warning']})" if "warning" in section else ""
    if section["state"] == "none":
        return f"no green build published yet{warning}"
    try:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(section["published_at"]))
    except (OverflowError, OSError, ValueError):  # a pointer may say any time up to 2**64 - 1
        when = f"at {section['published_at']} s after the epoch"
    identity = section["identity"]
    return (
        f"published {when}, input {section['input_hash'][:12]}, artifact "
        f"{section['artifact'][:12]}, source {identity['source_tree'][:12]}, "
        f"{identity['target']}/{identity['profile']}{warning}"
    )
