"""``eslint``: ``eslint --format json``, advisory, where the project lints with ESLint.

Never a default: it runs where the project configures ESLint (``eslint.config.*``,
``.eslintrc*``, ``eslintConfig`` in ``package.json``) or runs it (a ``lint``
script, a pre-commit hook, CI), keeping the paths and the options that change
the verdict (``--max-warnings``, ``--config``, ``--rule``…) and never
``--fix`` or ``--cache`` (which writes ``.eslintcache`` into the tree). The
program is the project's own (``node_modules/.bin/eslint``), so its config's
imports resolve as they do for ``npm run lint``. Severity 2 is an error, 1 a
warning; the rule id is the code.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from greenloop.devloop.checkers.base import Builtin, Evidence, Invocation
from greenloop.devloop.checkers.commands import Options, claims_for, positional
from greenloop.devloop.checkers.detect import config_files, package_json
from greenloop.devloop.checkers.formats import (
    Found,
    Lines,
    OutputFormat,
    as_int,
    as_text,
    found_at,
    json_document,
)
from greenloop.devloop.config import Format, Kind, Role
from greenloop.protocol import Severity

CONFIG_FILES = tuple(
    [f"eslint.config.{ext}" for ext in ("js", "mjs", "cjs", "ts", "mts", "cts")]
    + [f".eslintrc{ext}" for ext in ("", ".js", ".cjs", ".yaml", ".yml", ".json")]
)
"""ESLint's config files: the flat ``eslint.config.*`` (v9) and the legacy ``.eslintrc*``."""

_OPTIONS = Options(
    keep={
        "-c": True,
        "--config": True,
        "--max-warnings": True,
        "--ext": True,
        "--rule": True,
        "--plugin": True,
        "--parser": True,
        "--parser-options": True,
        "--env": True,
        "--global": True,
        "--ignore-pattern": True,
        "--ignore-path": True,
        "--resolve-plugins-relative-to": True,
        "--report-unused-disable-directives-severity": True,
        "--flag": True,
        "--no-config-lookup": False,
        "--no-eslintrc": False,
        "--no-ignore": False,
        "--no-inline-config": False,
        "--report-unused-disable-directives": False,
        "--no-warn-ignored": False,
        "--no-error-on-unmatched-pattern": False,
        "--pass-on-no-patterns": False,
        "--quiet": False,
    },
    valued=frozenset(
        {"-f", "--format", "-o", "--output-file", "--cache-location", "--cache-strategy"}
        | {"--fix-type", "--stdin-filename", "--rulesdir", "--concurrency"}
    ),
    fixes=frozenset({"--fix", "--fix-dry-run"}),
)


def eslint_json(stdout: Lines, stderr: Lines, base: Path, source: str) -> Iterator[Found]:
    """``eslint --format json``: one array of files, each with its messages."""
    document = json_document(stdout)
    if not isinstance(document, list):
        return
    for result in document:
        if not isinstance(result, dict):
            continue
        path = str(result.get("filePath", ""))
        for message in result.get("messages") or []:
            if not isinstance(message, dict):
                continue
            # 2 is an error, 1 a warning; a fatal one (a parse error) has no rule id.
            level = as_int(message.get("severity"), 2)
            severity = Severity.ERROR if level >= 2 or message.get("fatal") else Severity.WARNING
            yield found_at(
                path,
                as_int(message.get("line"), 1),
                as_int(message.get("column"), 1),
                severity,
                str(message.get("message", "")),
                source,
                base,
                as_text(message.get("ruleId")),
            )


def configs(root: Path) -> list[Evidence]:
    """Where the project configures ESLint."""
    found = config_files(root, CONFIG_FILES)
    if "eslintConfig" in package_json(root):
        found.append(Evidence("package.json", "eslintConfig"))
    return found


def _arguments(run: Invocation) -> tuple[list[str], Format]:
    paths = [] if positional(run.declared, _OPTIONS) else ["."]
    return ["--format", "json", *run.declared, *paths], Format.ESLINT_JSON


CHECKER = Builtin(
    name="eslint",
    program="eslint",
    role=Role.ADVISORY,
    source="eslint",
    format=Format.ESLINT_JSON,
    install="npm install --save-dev eslint",
    arguments=_arguments,
    kind=Kind.JAVASCRIPT,
    configs=configs,
    hooks={"eslint": ("eslint",)},
    claims=claims_for("eslint", _OPTIONS),
    outputs={Format.ESLINT_JSON: OutputFormat(eslint_json)},
)
"""The built-in ``eslint`` checker."""
