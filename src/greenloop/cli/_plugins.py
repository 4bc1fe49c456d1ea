"""``greenloop plugins``: every plugin found, in process and out of process."""

from __future__ import annotations

import dataclasses

import click

from greenloop.cli._common import echo_json, json_option
from greenloop.plugins import discovery


@click.command()
@json_option
def plugins(as_json: bool) -> None:
    """List every executor, hook and formatter plugin found.

    In-process plugins come from entry points; stdio plugins are executables
    named greenloop-KIND-NAME in GREENLOOP_PLUGIN_PATH or on PATH, asked for
    their version with the initialize handshake.
    """
    found = discovery.plugins()
    if as_json:
        echo_json([dataclasses.asdict(info) for info in found])
        return
    rows = [
        (info.kind, info.name, info.transport, info.version, info.target, info.note)
        for info in found
    ]
    headers = ("KIND", "NAME", "TRANSPORT", "VERSION", "WHERE")
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers[:-1])]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, [*widths, 0], strict=True)).rstrip())
    for *cells, target, note in rows:
        line = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
        click.echo(f"{line}  {target}" + (f"  ({note})" if note else ""))
