"""``greenloop init``: a starter pipeline file, or one translated from a GitHub Actions workflow."""

from __future__ import annotations

from pathlib import Path

import click

from greenloop._project import PIPELINE_FILE
from greenloop.cli import _templates
from greenloop.cli._common import echo_json, fail, json_option


@click.command()
@click.option(
    "--template",
    type=click.Choice(sorted(_templates.TEMPLATES)),
    default=None,
    help="Starter to write (default: detected from the project's files).",
)
@click.option(
    "--from-github-actions",
    "from_actions",
    is_flag=True,
    help="Translate a GitHub Actions workflow instead: WORKFLOW, or the one "
    ".github/workflows/*.yml. What it cannot translate is listed in comments.",
)
@click.argument("workflow", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing pipeline file.")
@json_option
def init(
    template: str | None, from_actions: bool, workflow: Path | None, force: bool, as_json: bool
) -> None:
    """Write a starter .greenloop/pipeline.py for the project in this directory.

    With --from-github-actions [WORKFLOW], write one from a GitHub Actions
    workflow's run: steps instead: jobs become chains, needs: their order,
    strategy.matrix cells, services: services, secrets.X gl.secret("X").
    """
    root = Path.cwd()
    if workflow is not None and not from_actions:
        fail(f"{workflow}: a WORKFLOW is read with --from-github-actions")
    if from_actions and template is not None:
        fail("give --template or --from-github-actions, not both")
    target = root / PIPELINE_FILE
    if target.exists() and not force:
        fail(f"{target} exists; use --force to overwrite it")
    if from_actions:
        _init_from_actions(root, workflow, as_json)
        return
    chosen = template or _templates.detect(root)
    _templates.write(root, chosen)
    if as_json:
        echo_json({"path": str(target), "template": chosen})
        return
    click.echo(f"wrote {target} ({chosen} template); run it with `greenloop run ci`")


def _init_from_actions(root: Path, workflow: Path | None, as_json: bool) -> None:
    """Write the pipeline file translated from ``workflow`` (default: the project's one)."""
    # Imported here: only this form of init pays for the YAML parser.
    from greenloop.cli import _github_actions

    try:
        path = workflow if workflow is not None else _github_actions.find_workflow(root)
        shown = path.resolve().relative_to(root.resolve()).as_posix()
    except _github_actions.WorkflowError as e:
        fail(str(e))
    except ValueError:  # a workflow outside the project
        shown = str(path)
    try:
        translation = _github_actions.translate(path, shown)
    except _github_actions.WorkflowError as e:
        fail(str(e))
    target = _templates.write_source(root, translation.source)
    if as_json:
        echo_json(
            {"path": str(target), "workflow": shown, "not_translated": translation.not_translated}
        )
        return
    click.echo(f"wrote {target} from {shown}; run it with `greenloop run ci`")
    if translation.not_translated:
        click.echo(f"not translated ({len(translation.not_translated)}, marked in the file):")
        for item in translation.not_translated:
            click.echo(f"  - {item}")
