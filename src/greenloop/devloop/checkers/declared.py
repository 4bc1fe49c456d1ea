"""What a project runs to check itself: its commands and pre-commit hooks, wherever declared.

Read from the files a project's own CI and developers use — ``package.json``
scripts, tox, nox, ``.greenloop/pipeline.py``, GitHub Actions and GitLab CI
workflows, and ``.pre-commit-config.yaml`` — without running anything. Which
checker a command or hook is, is the checkers' business (their ``claims`` and
``hooks``); this module only finds the commands and says where each came from.
A source that cannot be read is skipped and named in ``problems``, never fatal:
the project may be mid-edit.
"""

from __future__ import annotations

import ast
import configparser
import json
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from greenloop.devloop.checkers.base import Evidence
from greenloop.devloop.checkers.commands import shell_commands, unwrap
from greenloop.devloop.checkers.detect import pyproject_tool

PRE_COMMIT_CONFIG = ".pre-commit-config.yaml"
"""Where pre-commit's hooks are declared."""

_LINT_SCRIPT = re.compile(r"^(lint|typecheck|type-check|types|tsc|check)(:.+)?$")
"""``package.json`` scripts that check the project (``lint``, ``lint:css``, ``typecheck``…)."""
_FIX_SCRIPT = re.compile(r"(^|[:\-])(fix|format|write)$")
_NPM_RUN = {
    ("npm", "run"),
    ("npm", "run-script"),
    ("yarn", "run"),
    ("pnpm", "run"),
    ("bun", "run"),
}
_BARE_RUNNERS = {"yarn", "pnpm"}
"""Package managers that also run a script named right after them (``yarn lint``)."""
_MAX_DEPTH = 5
"""How deep ``npm run`` scripts calling scripts are followed."""
_RUFF_ACTIONS = ("astral-sh/ruff-action", "chartboost/ruff-action")
_GITLAB_KEYWORDS = frozenset(
    {"stages", "variables", "default", "include", "workflow", "image", "services", "cache"}
)
_DEFAULT_STAGES = frozenset({"pre-commit", "commit"})


@dataclass(frozen=True)
class Command:
    """One command the project runs (launchers off), where it is declared, and why it is there.

    ``lint`` is True where every command is meant as a check (a ``lint`` script,
    a pre-commit hook), so one that no checker claims is worth mentioning.
    ``hook`` is True for a pre-commit hook, which fails when it rewrote a file.
    """

    argv: tuple[str, ...]
    evidence: Evidence
    lint: bool = False
    hook: bool = False


@dataclass(frozen=True)
class Hook:
    """A pre-commit hook: its id and arguments, and for a local hook the command it runs."""

    id: str
    args: tuple[str, ...]
    entry: str | None
    evidence: Evidence


@dataclass
class Declarations:
    """Everything the project declares it runs, in the order it is reported."""

    commands: list[Command] = field(default_factory=list)
    hooks: list[Hook] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Sources that could not be read, each naming the file and what was wrong."""


def read_declarations(root: Path) -> Declarations:
    """What the project at ``root`` declares it runs: named scripts, task runners, CI, hooks.

    Commands come in the order their arguments are preferred when a tool is
    declared in several places: the project's named scripts and task runners
    first (``package.json``, tox, nox), then its greenloop pipeline, then CI.
    """
    found = Declarations()
    scripts = _package_scripts(root, found)
    for name in sorted(scripts, key=lambda n: (":" in n, n)):
        if _LINT_SCRIPT.match(name) and not _FIX_SCRIPT.search(name):
            where = Evidence("package.json", f"scripts.{name}")
            found.commands += _expanded(scripts[name], where, scripts, lint=True)
    for source in (_tox, _nox, _pipeline, _github, _gitlab):
        for script, where in source(root, found):
            found.commands += _expanded(script, where, scripts)
    found.hooks = _pre_commit(root, found)
    return found


def _expanded(
    script: str | list[str],
    where: Evidence,
    scripts: dict[str, str],
    *,
    lint: bool = False,
    depth: int = 0,
) -> list[Command]:
    # A script is shell text; tox's native TOML gives one argv instead.
    argvs = shell_commands(script) if isinstance(script, str) else [script]
    commands = []
    for argv in argvs:
        tool = unwrap(argv)
        called = _script_called(tool, scripts)
        if called is not None and depth < _MAX_DEPTH:
            inner = Evidence(where.file, f"{where.key} → package.json scripts.{called}")
            commands += _expanded(scripts[called], inner, scripts, lint=lint, depth=depth + 1)
            continue
        if tool:
            commands.append(Command(tuple(tool), _with_command(where, tool), lint=lint))
    return commands


def _with_command(where: Evidence, tool: list[str]) -> Evidence:
    return Evidence(where.file, where.key, tuple(tool))


def _script_called(argv: list[str], scripts: dict[str, str]) -> str | None:
    """The ``package.json`` script ``argv`` runs (``npm run lint``, ``yarn lint``), if any."""
    if len(argv) >= 3 and (argv[0], argv[1]) in _NPM_RUN and argv[2] in scripts:
        return argv[2]
    if len(argv) >= 2 and argv[0] in _BARE_RUNNERS and argv[1] in scripts:
        return argv[1]
    return None


def _package_scripts(root: Path, found: Declarations) -> dict[str, str]:
    path = root / "package.json"
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        found.problems.append(f"package.json: {e}")
        return {}
    scripts = document.get("scripts") if isinstance(document, dict) else None
    if not isinstance(scripts, dict):
        return {}
    return {k: v for k, v in scripts.items() if isinstance(k, str) and isinstance(v, str)}


# --- tox ---------------------------------------------------------------------------

_TOX_FACTOR = re.compile(r"^[\w\-!,{}]+:\s+")
_TOX_POSARGS = re.compile(r"\{posargs(?::([^}]*))?\}")
_TOX_PATHS = re.compile(r"\{(toxinidir|tox_root|toxworkdir)\}")


def _tox(root: Path, found: Declarations) -> Iterator[tuple[str | list[str], Evidence]]:
    """``commands`` of every tox environment: tox.ini, setup.cfg, tox.toml or pyproject.toml."""
    ini = root / "tox.ini"
    if ini.is_file():
        yield from _tox_ini(_read_ini(ini, found), "tox.ini")
    cfg = root / "setup.cfg"
    if cfg.is_file():
        parser = _read_ini(cfg, found)
        if parser is not None and parser.has_section("tox:tox"):
            yield from _tox_ini(parser, "setup.cfg")
    tool = pyproject_tool(root).get("tox")
    if isinstance(tool, dict):
        legacy = tool.get("legacy_tox_ini")
        if isinstance(legacy, str):
            parser = configparser.ConfigParser(interpolation=None)
            try:
                parser.read_string(legacy)
            except configparser.Error as e:
                found.problems.append(f"pyproject.toml [tool.tox] legacy_tox_ini: {e}")
            else:
                yield from _tox_ini(parser, "pyproject.toml")
        yield from _tox_toml(tool, "pyproject.toml", "tool.tox.")
    toml = root / "tox.toml"
    if toml.is_file():
        try:
            document = tomllib.loads(toml.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            found.problems.append(f"tox.toml: {e}")
        else:
            yield from _tox_toml(document, "tox.toml", "")


def _read_ini(path: Path, found: Declarations) -> configparser.ConfigParser | None:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as e:
        found.problems.append(f"{path.name}: {e}")
        return None
    return parser


def _tox_ini(parser: configparser.ConfigParser | None, file: str) -> Iterator[tuple[str, Evidence]]:
    if parser is None:
        return
    for section in parser.sections():
        if section != "testenv" and not section.startswith("testenv:"):
            continue
        for line in parser[section].get("commands", "").splitlines():
            line = _TOX_FACTOR.sub("", line.strip())
            # A leading `-` tells tox to ignore the command's exit status: no check.
            if not line or line.startswith("-"):
                continue
            yield _tox_substituted(line), Evidence(file, f"[{section}] commands")


def _tox_substituted(line: str) -> str:
    line = _TOX_POSARGS.sub(lambda m: m[1] or "", line)
    line = _TOX_PATHS.sub(".", line)
    return line.replace("{envpython}", "python").replace("{env_python}", "python")


def _tox_toml(
    document: dict[str, Any], file: str, prefix: str
) -> Iterator[tuple[list[str], Evidence]]:
    envs: list[tuple[str, object]] = [("env_run_base", document.get("env_run_base"))]
    named = document.get("env")
    if isinstance(named, dict):
        envs += [(f"env.{name}", table) for name, table in named.items()]
    for key, table in envs:
        commands = table.get("commands") if isinstance(table, dict) else None
        for command in commands if isinstance(commands, list) else []:
            if not isinstance(command, list):
                continue
            argv = [_tox_word(word) for word in command]
            # `{ replace = "posargs" }` and the like: their defaults, when they have any.
            flat = [w for word in argv for w in word]
            if flat and not flat[0].startswith("-"):
                yield flat, Evidence(file, f"[{prefix}{key}] commands")


def _tox_word(word: object) -> list[str]:
    if isinstance(word, str):
        return [_tox_substituted(word)]
    if isinstance(word, dict) and isinstance(word.get("default"), list):
        return [str(w) for w in word["default"]]
    return []


# --- nox and greenloop's own pipeline ------------------------------------------------


def _nox(root: Path, found: Declarations) -> Iterator[tuple[list[str], Evidence]]:
    """Every ``session.run("tool", "arg", …)`` in ``noxfile.py`` whose words are literals."""
    tree = _python_tree(root / "noxfile.py", found)
    if tree is None:
        return
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "run"
            ):
                words = _literal_words(node.args)
                if words:
                    yield words, Evidence("noxfile.py", f"session {function.name}")


def _pipeline(root: Path, found: Declarations) -> Iterator[tuple[str, Evidence]]:
    """The literal shell commands of ``.greenloop/pipeline.py``: ``sh("…")`` and ``command="…"``."""
    tree = _python_tree(root / ".greenloop" / "pipeline.py", found)
    if tree is None:
        return
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        texts = [node.args[0]] if name == "sh" and node.args else []
        texts += [k.value for k in node.keywords if k.arg == "command"]
        for text in texts:
            if isinstance(text, ast.Constant) and isinstance(text.value, str):
                yield text.value, Evidence(".greenloop/pipeline.py", f"line {node.lineno}")


def _python_tree(path: Path, found: Declarations) -> ast.Module | None:
    if not path.is_file():
        return None
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError) as e:
        found.problems.append(f"{path.name}: {e}")
        return None


def _literal_words(args: list[ast.expr]) -> list[str]:
    words = []
    for arg in args:
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            break
        words.append(arg.value)
    return words


# --- CI workflows ----------------------------------------------------------------------


def _github(root: Path, found: Declarations) -> Iterator[tuple[str | list[str], Evidence]]:
    """Each ``run`` step of ``.github/workflows/*.yml``, and the ruff action's command."""
    folder = root / ".github" / "workflows"
    if not folder.is_dir():
        return
    for path in sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]):
        file = f".github/workflows/{path.name}"
        jobs = _as_dict(_read_yaml(path, file, found)).get("jobs")
        for job_name, job in _as_dict(jobs).items():
            steps = _as_dict(job).get("steps")
            for i, step in enumerate(steps if isinstance(steps, list) else []):
                step = _as_dict(step)
                where = Evidence(file, f"jobs.{job_name}.steps[{i}]")
                if isinstance(step.get("run"), str):
                    yield step["run"], where
                uses = step.get("uses")
                if isinstance(uses, str) and uses.partition("@")[0] in _RUFF_ACTIONS:
                    given = _as_dict(step.get("with"))
                    yield f"ruff {given.get('args') or 'check'} {given.get('src') or ''}", where


def _gitlab(root: Path, found: Declarations) -> Iterator[tuple[str, Evidence]]:
    """Each line of every job's ``script`` in ``.gitlab-ci.yml``."""
    path = root / ".gitlab-ci.yml"
    if not path.is_file():
        return
    for name, job in _as_dict(_read_yaml(path, ".gitlab-ci.yml", found)).items():
        if name in _GITLAB_KEYWORDS:
            continue
        script = _as_dict(job).get("script")
        lines = [script] if isinstance(script, str) else script if isinstance(script, list) else []
        for line in lines:
            if isinstance(line, str):
                yield line, Evidence(".gitlab-ci.yml", f"{name}.script")


def _read_yaml(path: Path, file: str, found: Declarations) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        found.problems.append(f"{file}: {e}")
        return None


def _as_dict(value: object) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


# --- pre-commit ----------------------------------------------------------------------


def _pre_commit(root: Path, found: Declarations) -> list[Hook]:
    """The hooks ``pre-commit run`` runs at commit time (``manual``/``pre-push`` ones are not)."""
    path = root / PRE_COMMIT_CONFIG
    if not path.is_file():
        return []
    document = _as_dict(_read_yaml(path, PRE_COMMIT_CONFIG, found))
    default_stages = _stages(document.get("default_stages")) or _DEFAULT_STAGES
    repos = document.get("repos")
    hooks = []
    for repo in repos if isinstance(repos, list) else []:
        repo = _as_dict(repo)
        local = repo.get("repo") == "local"
        if repo.get("repo") == "meta":
            continue
        listed = repo.get("hooks")
        for hook in listed if isinstance(listed, list) else []:
            hook = _as_dict(hook)
            hook_id = hook.get("id")
            if not isinstance(hook_id, str):
                continue
            if not (_stages(hook.get("stages")) or default_stages) & _DEFAULT_STAGES:
                continue
            args = hook.get("args")
            entry = hook.get("entry") if local else None
            hooks.append(
                Hook(
                    hook_id,
                    tuple(str(a) for a in args) if isinstance(args, list) else (),
                    entry if isinstance(entry, str) else None,
                    Evidence(PRE_COMMIT_CONFIG, f"hook {hook_id}"),
                )
            )
    return hooks


def _stages(value: object) -> frozenset[str]:
    return frozenset(str(s) for s in value) if isinstance(value, list) else frozenset()
