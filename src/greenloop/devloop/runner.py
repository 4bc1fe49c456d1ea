"""Running the checkers for one state of the tree and turning what they say into reports.

A checker that exits unsuccessfully without reporting an error it could be
parsed for still makes the tree red: the runner adds an error naming the
checker, its exit status and the end of its output. A checker still running at
its timeout has its process group killed and gets an error naming the checker
and the timeout, in an incomplete report. Nothing is ever assumed green because
its output could not be read or never came.

A report keeps at most the checker's ``max_diagnostics`` diagnostics, errors
first (:func:`collect`); the others are counted per file and severity, so a
checker printing a million of them costs a pass over its output, not a
million validated models, and its errors still make the tree red.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from greenloop.devloop import process
from greenloop.devloop.checkers import Checker
from greenloop.devloop.checkers.formats import Found
from greenloop.devloop.checkers.table import parse_output
from greenloop.devloop.config import Format
from greenloop.devloop.lsp import LanguageServers, ServerFailed, ServerPool
from greenloop.devloop.model import CheckerReport, Omitted
from greenloop.protocol import Diagnostic, SetupError, Severity
from greenloop.protocol.devloop import sorted_diagnostics

_TAIL_LINES = 12
"""How much of a failing checker's output its synthetic diagnostic quotes."""

ReportFn = Callable[[CheckerReport], None]
"""Told about each checker's report as soon as that checker is done (from its own thread)."""


def run_checkers(
    root: Path,
    checkers: Sequence[Checker],
    cancel: threading.Event,
    on_report: ReportFn | None = None,
    *,
    files: Sequence[str] = (),
    servers: ServerPool | None = None,
) -> list[CheckerReport] | None:
    """Run every checker at once; their reports, or None when ``cancel`` stopped the round.

    ``on_report`` hears of each report the moment its checker is done, while
    the others may still run (never after ``cancel`` is set). Language-server
    checkers are told about ``files`` (the project's, relative) and run in
    ``servers``, which keeps them warm for the next round (None: started for
    this round only). Raises :class:`SetupError` when a program cannot be started.
    """
    if servers is None and any(c.format is Format.LSP for c in checkers):
        with LanguageServers() as own:
            return run_checkers(root, checkers, cancel, on_report, files=files, servers=own)
    reports: dict[str, CheckerReport] = {}
    failures: list[Exception] = []

    def work(checker: Checker) -> None:
        try:
            if checker.format is Format.LSP:
                assert servers is not None
                report = _run_server(root, checker, cancel, files, servers)
            else:
                report = run_checker(root, checker, cancel)
        except Exception as e:  # re-raised in the caller's thread below
            failures.append(e)
            cancel.set()
            return
        if report is not None:
            reports[checker.name] = report
            if on_report is not None and not cancel.is_set():
                on_report(report)

    threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in checkers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    if cancel.is_set():
        return None
    return [reports[c.name] for c in checkers]


def run_checker(root: Path, checker: Checker, cancel: threading.Event) -> CheckerReport | None:
    """Run one checker to the end (or its timeout) and read its output; None when cancelled."""
    if checker.cache_guard is not None:
        checker.cache_guard.prepare(root)
    try:
        done = process.run(
            checker.argv, root, cancel, env=_environment(), timeout_s=checker.timeout_s
        )
    except OSError as e:
        raise SetupError(f"checker {checker.name!r} could not start {checker.program}: {e}") from e
    if done is None:
        return None
    try:
        return _report(root, checker, done)
    finally:
        done.close()


def _report(
    root: Path, checker: Checker, done: process.Completed | process.TimedOut
) -> CheckerReport:
    if isinstance(done, process.TimedOut):
        # Whatever it printed before the kill may be half a record: only the timeout is told.
        diagnostic = _timeout(root, checker, done)
        return CheckerReport(
            checker.name, checker.role, (diagnostic,), complete=False, crashed=True
        )
    found = parse_output(checker, root, done.stdout.lines(), done.stderr.lines())
    diagnostics, omitted = collect(found, checker.max_diagnostics)
    has_errors = omitted.error_paths() or any(d.severity is Severity.ERROR for d in diagnostics)
    if done.returncode != 0 and not has_errors:
        diagnostics.append(_failure(root, checker, done))
    killed = done.returncode < 0  # by a signal nobody here sent: cancelling returns None
    return CheckerReport(
        checker.name,
        checker.role,
        tuple(sorted_diagnostics(diagnostics)),
        complete=not killed,
        crashed=killed,
        omitted=omitted,
    )


def collect(found: Iterable[Found], limit: int) -> tuple[list[Diagnostic], Omitted]:
    """The first ``limit`` diagnostics, errors first, and counts of the rest.

    Errors win places from other severities: once ``limit`` are kept, an
    error pushes out the last non-error kept, so what makes the tree red is
    listed whenever it can be. Only kept ones become :class:`Diagnostic` models.
    """
    errors: list[Diagnostic] = []
    others: list[Diagnostic] = []
    left_out: Counter[tuple[str, Severity]] = Counter()
    for item in found:
        if len(errors) + len(others) < limit:
            (errors if item.severity is Severity.ERROR else others).append(item.diagnostic())
        elif item.severity is Severity.ERROR and others:
            pushed = others.pop()
            left_out[pushed.path, pushed.severity] += 1
            errors.append(item.diagnostic())
        else:
            left_out[item.path, item.severity] += 1
    return errors + others, Omitted.of(left_out)


def _run_server(
    root: Path,
    checker: Checker,
    cancel: threading.Event,
    files: Sequence[str],
    servers: ServerPool,
) -> CheckerReport | None:
    folder = None
    try:
        folder = servers.get(checker.argv, root, _environment())
        diagnostics = folder.check(files, checker.source, cancel, checker.timeout_s)
    except ServerFailed as e:
        if folder is not None:
            servers.discard(folder)  # the next round starts a fresh one
        failure = tree_error(
            root, "checker-failed", f"{checker.name} (a language server) failed: {e}"
        )
        return CheckerReport(checker.name, checker.role, (failure,), complete=False, crashed=True)
    if diagnostics is None:
        return None
    return CheckerReport(checker.name, checker.role, tuple(sorted_diagnostics(diagnostics)))


def tree_error(root: Path, code: str, message: str) -> Diagnostic:
    """An error greenloop itself reports about the tree at ``root`` (source ``greenloop``)."""
    return Diagnostic(
        path=str(root),
        line=1,
        col=1,
        severity=Severity.ERROR,
        code=code,
        message=message,
        source="greenloop",
    )


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    # Machine-readable output must not carry colour codes, whatever the user's shell says.
    env.pop("FORCE_COLOR", None)
    env.pop("CLICOLOR_FORCE", None)
    env["NO_COLOR"] = "1"
    env["CARGO_TERM_COLOR"] = "never"
    return env


def _failure(root: Path, checker: Checker, done: process.Completed) -> Diagnostic:
    how = (
        f"was killed by signal {-done.returncode}"
        if done.returncode < 0
        else f"exited with status {done.returncode}"
    )
    detail = _tail(done.stdout, done.stderr)
    return tree_error(
        root,
        "checker-failed",
        f"{checker.name} {how} without an error greenloop could read: {detail}",
    )


def _timeout(root: Path, checker: Checker, done: process.TimedOut) -> Diagnostic:
    return tree_error(
        root,
        "checker-timeout",
        (
            f"{checker.name} did not finish within its timeout of {done.timeout_s:g}s and was "
            f"stopped (its whole process group killed); last output: "
            f"{_tail(done.stdout, done.stderr)}. If it needs longer, raise "
            f"`checkers.{checker.name}.timeout_s` or `checker_timeout_s`"
        ),
    )


def _tail(stdout: process.Output, stderr: process.Output) -> str:
    output = (stderr.tail().strip() or stdout.tail().strip()).splitlines()[-_TAIL_LINES:]
    return " | ".join(line.strip() for line in output if line.strip()) or "no output"
