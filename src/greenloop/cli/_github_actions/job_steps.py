"""A job's steps: ``run:`` scripts as GitHub runs them, and what ``uses:`` actions become."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from greenloop.cli._github_actions.book import Book
from greenloop.cli._github_actions.scope import EXPR, Parts, Scope
from greenloop.cli._github_actions.workflow import mapping, run_defaults, timeout_seconds, yaml_text
from greenloop.cli._pysource import Call, Dict, List, Node, Part, Str, comment, inline, text
from greenloop.sdk.toolchains import path_first

_RUNNER_VARS = re.compile(r"\$\{?((?:GITHUB|RUNNER)_[A-Z_]+)")
# Shell syntax dash (Debian's sh) lacks: a script using it runs under bash, GitHub's
# default shell, instead of sh.
_BASHISMS = re.compile(
    r"\[\[|\bsource\s|<\(|>\(|\bshopt\b|\bdeclare\b|\bmapfile\b|\breadarray\b|\$'|"
    r"\$\{!|\bpushd\b|\bpopd\b|^\s*function\s|pipefail",
    re.M,
)
# Package caches `actions/cache` and the setup actions' `cache:` keep, by their usual
# path: the cache_dirs name greenloop gives each, and (for the ones sdk.cache_dirs does
# not know) the variable the tool reads it from.
CACHE_NAMES = {
    "~/.cache/pip": "pip",
    "~/.cache/uv": "uv",
    "~/.npm": "npm",
    "~/.cache/yarn": "yarn",
    "~/.cache/pnpm": "pnpm",
    "~/.cache/go-build": "go-build",
    "~/go/pkg/mod": "go-mod",
    "~/.cache/pre-commit": "pre-commit",
    "~/.cargo": "cargo",
    "~/.cache/pypoetry": "poetry",
}
EXTRA_CACHE_ENV = {"~/.cache/pypoetry": "POETRY_CACHE_DIR"}
_SETUP_CACHES = {
    "pip": "~/.cache/pip",
    "pipenv": "~/.cache/pip",
    "poetry": "~/.cache/pypoetry",
    "npm": "~/.npm",
    "yarn": "~/.cache/yarn",
    "pnpm": "~/.cache/pnpm",
}
_CACHE_ACTIONS = {"actions/cache", "actions/cache/restore", "actions/cache/save"}
_CONTINUE = 'echo "continue-on-error: this step failed; the job goes on" >&2'
# setup-python gives the job a Python of its own, which `pip install` writes into; here
# the Python is the machine's (or the image's), read-only in a sandbox (and Debian's
# refuses pip), so a virtualenv in the tree stands in for it, first on every later
# step's PATH (bare `python` and `pip` are its). PyPy's images have no python3; a
# Debian without python3-venv has no ensurepip (a job that never runs pip still works).
_VENV = (
    "py=$(command -v python3 || command -v pypy3) ||"
    ' { echo "setup-python: no python3 or pypy3 here" >&2; exit 127; }\n'
    '"$py" -m venv .venv 2>/dev/null || { echo "setup-python: $py has no ensurepip:'
    ' a virtualenv without pip" >&2; "$py" -m venv --without-pip .venv; }'
)
_ACTIVATE = path_first(".venv/bin")
_VENV_NOTE = (
    "setup-python: a virtualenv in .venv stands in for the job's Python; the steps after "
    "it run with .venv/bin first on PATH (under --sandbox none its scripts name another "
    "step's folder: call them as python -m pip, python -m pytest)"
)


def _first_line(script: str) -> str:
    """A script's first line, cut to a label's length (never inside an expression)."""
    first = next((line.strip() for line in script.splitlines() if line.strip()), "")
    if len(first) <= 48:
        return first
    cut = first[:47]
    if cut.rfind("${{") > cut.rfind("}}"):
        cut = cut[: cut.rfind("${{")].rstrip()
    return cut + "…"


def action_of(uses: str) -> str:
    """``owner/repo[/path]`` of a ``uses:`` reference, lower-case, without its ``@ref``."""
    return uses.split("@", 1)[0].strip().lower()


@dataclass
class Step:
    """One translated ``run:`` step, and the comments above (and after) it."""

    command: list[Part]
    label: list[Part]
    key: str
    env: list[tuple[Node, Node]]
    timeout: float | None
    cache_dirs: dict[str, str]
    comments: list[str]
    after: list[str] = field(default_factory=list)
    """Comments after its statement: about the job's steps after the last run: one."""

    def call(self, func: str, first: First | None, services: list[str]) -> Call:
        """Its ``gl.sh(...)``/``.sh(...)`` call; ``first`` holds what only a job's first
        step takes (its image and cell)."""
        label = Str(tuple(self.label))
        kwargs: list[tuple[str, Node]] = [("label", label), ("key", text(self.key))]
        if first is not None and first.image is not None:
            kwargs.append(("image", first.image))
        if self.env:
            kwargs.append(("env", Dict(tuple(self.env))))
        if self.timeout is not None:
            whole = self.timeout == int(self.timeout)
            kwargs.append(("timeout", str(int(self.timeout)) if whole else str(self.timeout)))
        if first is not None and first.matrix:
            kwargs.append(("matrix", "cell"))
        if services:
            kwargs.append(("services", List(tuple(services))))
        if self.cache_dirs:
            caches = tuple((text(k), _cache_dir(v)) for k, v in self.cache_dirs.items())
            kwargs.append(("cache_dirs", Dict(caches)))
        command = Str(tuple(self.command), split=True)
        return Call(func, (command,), tuple(kwargs), explode=True)


@dataclass(frozen=True)
class First:
    """What a job's first step takes beyond the others."""

    image: Node | None
    matrix: bool


class Steps(Book):
    """Translating a job's steps (a part of the translator)."""

    def _steps(self, job_id: str, job: dict[str, Any], scope: Scope) -> list[Step]:
        """The job's run: steps; each carries the comments about the steps before it that
        were not translated (the last one, those after it too)."""
        steps: list[Step] = []
        pending: list[str] = []
        cache_dirs: dict[str, str] = {}
        venv = False
        defaults = run_defaults(self.doc) | run_defaults(job)
        timeout = timeout_seconds(job.get("timeout-minutes"))
        if timeout is None and job.get("timeout-minutes") is not None:
            what = f"timeout-minutes {yaml_text(job['timeout-minutes'])}"
            pending.append(self._miss(f"job {job_id}", what))
        for n, step in enumerate(job.get("steps", []), start=1):
            name = yaml_text(step.get("name"))
            where = f"job {job_id}, " + (f'step "{comment(name)}"' if name else f"step {n}")
            made: Step | str | None = None
            if "run" in step:
                made = self._run(job_id, where, step, scope, defaults, timeout, dict(cache_dirs))
                if isinstance(made, Step) and venv:
                    made.command = Parts.merge([_ACTIVATE, *made.command])
            elif step.get("uses"):
                uses = yaml_text(step["uses"])
                pending += self._uses(where, uses, step, cache_dirs)
                if action_of(uses) == "actions/setup-python" and not venv:
                    venv = True
                    key = self._key(job_id, "python virtualenv")
                    label: list[Part] = [f"{job_id}: Python virtualenv (setup-python)"]
                    made = Step([_VENV], label, key, [], timeout, dict(cache_dirs), [_VENV_NOTE])
            else:
                pending.append(self._miss(where, "a step with neither run: nor uses:"))
            if isinstance(made, str):
                pending.append(made)
            elif made is not None:
                made.comments[:0] = pending
                pending = []
                steps.append(made)
        if steps:
            steps[-1].after += pending
        elif pending:
            steps.append(Step([], [], "", [], None, {}, pending))
        return steps

    def _uses(
        self, where: str, uses: str, step: dict[str, Any], cache_dirs: dict[str, str]
    ) -> list[str]:
        """What a ``uses:`` step becomes: nothing (checkout), cache folders, or a comment."""
        action = action_of(uses)
        given = mapping(step.get("with"))
        if action == "actions/checkout":
            other = [k for k in ("repository", "path") if k in given]
            if other:
                return [
                    self._miss(where, f"{uses} with {', '.join(other)} (this tree is the checkout)")
                ]
            return []
        if action in ("actions/setup-python", "actions/setup-node"):
            cache = yaml_text(given.get("cache")).strip()
            if cache in _SETUP_CACHES:
                path = _SETUP_CACHES[cache]
                cache_dirs[CACHE_NAMES[path]] = path
            elif cache:
                return [self._miss(where, f"{uses} cache: {cache}")]
            return []
        if action in _CACHE_ACTIONS:
            missed = []
            for line in yaml_text(given.get("path")).splitlines():
                path = line.strip().rstrip("/")
                if path in CACHE_NAMES:
                    cache_dirs[CACHE_NAMES[path]] = path
                elif path:
                    missed.append(path)
            if not missed:
                return []
            what = f"{uses} path {', '.join(missed)} (not a known package cache)"
            return [self._miss(where, what)]
        inputs = f" (with: {', '.join(str(k) for k in given)})" if given else ""
        return [self._miss(where, f"uses {uses}{inputs}")]

    def _run(
        self,
        job_id: str,
        where: str,
        step: dict[str, Any],
        scope: Scope,
        defaults: dict[str, str],
        timeout: float | None,
        cache_dirs: dict[str, str],
    ) -> Step | str:
        """A ``run:`` step, or the comment saying why it could not be one."""
        comments: list[str] = []
        script = yaml_text(step.get("run"))
        name = yaml_text(step.get("name")) or _first_line(script)
        label = Parts.merge([f"{job_id}: ", *scope.resolve(comment(name), command=False)])
        scope.take()  # a label's other expressions stay in it as written
        env: list[tuple[Node, Node]] = []
        raw_env = step.get("env")
        for key, value in (raw_env if isinstance(raw_env, dict) else {}).items():
            env.append((text(str(key)), scope.value(value)))
            comments += self._expressions(scope, where, f" in env {key}")
        command = Parts.strip(scope.resolve(script, command=True))
        if not command:
            return self._miss(where, "an empty run:")
        secrets, untranslated = scope.take()
        comments += self._expressions(scope, where, "", untranslated)
        named = {inline(k) for k, _ in env}
        # A secret the script reads is given it in the variable of the secret's name.
        env += [(text(s), f'gl.secret("{s}")') for s in secrets if inline(text(s)) not in named]
        runner = sorted(set(_RUNNER_VARS.findall(Parts.plain(command))))
        if runner:
            what = ", ".join(f"${v}" for v in runner) + " (GitHub's runner variables: unset here)"
            comments.append(self._miss(where, what))
        shell = yaml_text(step.get("shell") or defaults.get("shell")).strip()
        directory = yaml_text(step.get("working-directory") or defaults.get("working-directory"))
        cd: list[Part] = []
        if directory.strip() not in ("", "."):
            cd = ["cd ", *Parts.quoted(scope.resolve(directory.strip(), command=True))]
            comments += self._expressions(scope, where, " in working-directory")
        wrapped = _shell(command, shell, cd, comments)
        if wrapped is None:
            return self._miss(where, f"shell: {shell} (runs sh, bash and python scripts)")
        on_error = step.get("continue-on-error")
        if on_error is True:
            comments.append("continue-on-error: its failure does not stop the job")
            wrapped = ["sh -c ", *Parts.quoted(wrapped), " || " + _CONTINUE]
        elif on_error not in (None, False):
            comments.append(self._miss(where, f"continue-on-error: {yaml_text(on_error)}"))
        if "if" in step:
            what = (
                f"if: {comment(yaml_text(step['if']))} (not evaluated: the step runs in its turn)"
            )
            comments.append(self._miss(where, what))
        step_timeout = timeout_seconds(step.get("timeout-minutes"))
        if step_timeout is None and step.get("timeout-minutes") is not None:
            comments.append(
                self._miss(where, f"timeout-minutes {yaml_text(step['timeout-minutes'])}")
            )
        return Step(
            command=Parts.merge(wrapped),
            label=label,
            key=self._key(job_id, EXPR.sub("", name)),
            env=env,
            timeout=step_timeout or timeout,
            cache_dirs=cache_dirs,
            comments=comments,
        )


def _cache_dir(path: str) -> Node:
    """A ``cache_dirs`` value: the path, with the variable its tool reads where greenloop
    does not know it."""
    env = EXTRA_CACHE_ENV.get(path)
    return text(path) if env is None else Call("gl.cache_dir", (text(path),), (("env", text(env)),))


def _shell(
    command: list[Part], shell: str, cd: list[Part], comments: list[str]
) -> list[Part] | None:
    """The step's command run as GitHub runs its ``shell:`` (``None``: one greenloop lacks)."""
    plain = Parts.plain(command)
    kind = shell.split()[0] if shell else ""
    if not kind and _BASHISMS.search(plain):
        comments.append("runs under bash: the script uses bash syntax (GitHub's default shell)")
        kind = "bash -e"
    if kind in ("", "sh"):
        # GitHub runs a script with -e: its first failing command fails the step.
        if "\n" in plain:
            return Parts.merge(["set -e\n", *cd, "\n" if cd else "", *command])
        prefix = "set -e; " if ";" in plain else ""
        return Parts.merge([prefix, *cd, " && " if cd else "", *command])
    wrap = {"bash": "bash -eo pipefail -c ", "bash -e": "bash -e -c ", "python": "python3 -c "}
    if kind not in wrap:
        return None
    return Parts.merge([*cd, " && " if cd else "", wrap[kind], *Parts.quoted(command)])
