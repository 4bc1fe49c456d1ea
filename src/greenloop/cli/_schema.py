"""``greenloop schema``: print the JSON Schema of the wire types."""

from __future__ import annotations

import json

import click

from greenloop.protocol.schema import WIRE_TYPES, all_schemas, json_schema


@click.command()
@click.argument("name", required=False)
def schema(name: str | None) -> None:
    """Print the JSON Schema of wire type NAME (all of them with no NAME)."""
    if name is None:
        click.echo(json.dumps(all_schemas(), indent=2))
        return
    if name not in WIRE_TYPES:
        raise click.BadParameter(
            f"unknown type {name!r}; known: {', '.join(sorted(WIRE_TYPES))}", param_hint="NAME"
        )
    click.echo(json.dumps(json_schema(name), indent=2))
