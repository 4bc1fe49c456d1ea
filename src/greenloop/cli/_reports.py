"""Report files a run writes: ``--junit FILE`` (JUnit XML) and ``--summary FILE`` (Markdown).

Both are event listeners, fed the same build events as the formatter, so the
engine knows nothing of them. Each rewrites its file (atomically) at the end of
every run, covering every run so far: ``run --event`` runs several pipelines
into one report. JUnit XML that steps wrote themselves and declared as
artifacts (a pytest ``--junitxml`` file, or a folder of them) is read back from
the store and merged in.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from greenloop._fs import write_atomically
from greenloop.cli._transcript import RunTranscript, Transcript, plain_text
from greenloop.protocol import BuildEvent, RunFinished, StepFinished
from greenloop.store import Store, StoreError
from greenloop.store.artifacts import DIRECTORY_MIME

TAIL_LINES = 50
"""How many of a failed step's last log lines a report quotes."""

# Characters XML 1.0 cannot carry even escaped (a log's colour codes leave some).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_COUNTS = ("tests", "failures", "errors", "skipped")


def xml_text(text: str) -> str:
    """``text`` fit for an XML document: escape sequences and forbidden characters dropped."""
    return _NOT_XML.sub("", plain_text(text))


@dataclass(frozen=True)
class SuiteCounts:
    """How many tests a JUnit suite holds, and how many failed, errored or were skipped."""

    tests: int
    failures: int
    errors: int
    skipped: int

    @classmethod
    def of(cls, suite: ET.Element) -> SuiteCounts:
        """The counts ``suite`` declares, or, where it declares none, counted from its cases."""
        cases = suite.findall(".//testcase")
        counted = {
            "tests": len(cases),
            "failures": sum(c.find("failure") is not None for c in cases),
            "errors": sum(c.find("error") is not None for c in cases),
            "skipped": sum(c.find("skipped") is not None for c in cases),
        }
        values = {}
        for name in _COUNTS:
            declared = suite.get(name, "")
            values[name] = int(declared) if declared.isdigit() else counted[name]
        return cls(**values)


def step_suites(store: Store, step: StepFinished) -> Iterator[ET.Element]:
    """The JUnit ``<testsuite>`` elements among ``step``'s artifacts (files and folders).

    An artifact that is not XML, not JUnit, or whose bytes the store cannot give
    is passed over: it is the step's business, not a report's.
    """
    for ref in step.artifacts:
        try:
            if ref.mime == DIRECTORY_MIME:
                blobs = [
                    e.blob
                    for e in store.get_tree(ref.key)
                    if e.blob is not None and e.kind == "file" and e.path.endswith(".xml")
                ]
            elif "xml" in ref.mime:
                blobs = [ref.key]
            else:
                continue
            for blob in blobs:
                yield from _suites(store.read_bytes(blob))
        except StoreError:
            continue


def _suites(data: bytes) -> list[ET.Element]:
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return []
    if root.tag == "testsuite":
        return [root]
    if root.tag == "testsuites":
        return root.findall("testsuite")
    return []


class Report:
    """A report file: fed every event, rewritten at the end of each run."""

    option = ""

    def __init__(self, path: Path, store: Store) -> None:
        self.path = path
        self.error: str | None = None
        self._store = store
        self._transcript = Transcript(keep=TAIL_LINES)

    def __call__(self, event: BuildEvent) -> None:
        """Take ``event`` in; at a run's end, rewrite the file (a failure is kept in ``error``)."""
        run = self._transcript.add(event)
        if run is not None and isinstance(event, RunFinished):
            try:
                write_atomically(self.path, self.render(), durable=False)
            except OSError as e:
                self.error = f"cannot write {self.option} {self.path}: {e.strerror or e}"

    def render(self) -> bytes:
        """The file's content for every run so far."""
        raise NotImplementedError


class JUnitReport(Report):
    """Writes ``path``: a ``<testsuite>`` per run, a ``<testcase>`` per step, plus the
    suites steps wrote themselves as artifacts."""

    option = "--junit"

    def render(self) -> bytes:
        """The XML document for every run so far."""
        root = ET.Element("testsuites", name="greenloop")
        for run in self._transcript.runs:
            root.append(self._run_suite(run))
            for step in run.steps:
                for suite in step_suites(self._store, step):
                    suite.set("name", f"{step.step}: {suite.get('name', 'tests')}")
                    root.append(suite)
        totals = [SuiteCounts.of(s) for s in root.findall("testsuite")]
        for name in _COUNTS:
            root.set(name, str(sum(getattr(t, name) for t in totals)))
        root.set("time", f"{sum(float(s.get('time') or 0) for s in root):.3f}")
        ET.indent(root)
        document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        return document + b"\n"

    def _run_suite(self, run: RunTranscript) -> ET.Element:
        pipeline = run.started.pipeline
        suite = ET.Element(
            "testsuite",
            name=f"greenloop {pipeline}",
            timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(run.started.at)),
            time=f"{run.finished.duration_s if run.finished else 0.0:.3f}",
        )
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", name="run_id", value=str(run.started.run_id))
        for step in run.steps:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"greenloop.{pipeline}",
                name=step.step,
                time=f"{step.duration_s:.3f}",
            )
            why = xml_text(step.error or "")
            if step.status == "failed":
                kind = "failure" if step.exit_code is not None else "error"
                message = why or f"exit {step.exit_code}"
                detail = ET.SubElement(case, kind, message=message, type=kind)
                detail.text = xml_text("\n".join(run.logs.get(step.step, [])))
            elif step.status in ("skipped", "cancelled"):
                ET.SubElement(case, "skipped", message=f"{step.status}: {why}" if why else "")
            elif step.status == "cached":
                ET.SubElement(case, "system-out").text = "answered from the cache"
        counts = SuiteCounts.of(suite)
        for name in _COUNTS:
            suite.set(name, str(getattr(counts, name)))
        return suite


_ICONS = {
    "passed": "✅",
    "cached": "♻️",
    "failed": "❌",
    "skipped": "⏭️",
    "cancelled": "⏹️",
}


class MarkdownSummary(Report):
    """Writes ``path``: Markdown in the shape of a GitHub Actions job summary.

    A heading per run with its verdict, a table of its steps, the test counts of
    the JUnit files steps wrote, and each failed step's log tail in a fold.
    """

    option = "--summary"

    def render(self) -> bytes:
        """The Markdown for every run so far."""
        return "\n".join(self._run(run) for run in self._transcript.runs).encode()

    def _run(self, run: RunTranscript) -> str:
        status = run.finished.status if run.finished else "failed"
        took = f" in {run.finished.duration_s:.2f}s" if run.finished else ""
        out = [f"## {_ICONS[status]} greenloop `{run.started.pipeline}` {status}{took}", ""]
        if run.finished is not None and run.finished.error:
            out += [_cell(run.finished.error), ""]
        counts = {s: sum(step.status == s for step in run.steps) for s in _ICONS}
        tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        out += [f"{len(run.steps)} steps: {tally or 'none ran'}", ""]
        if run.steps:
            out += ["| | step | result | time |", "| :-: | --- | --- | --: |"]
            for step in run.steps:
                result: str = step.status
                if step.status == "failed" and step.exit_code is not None:
                    result += f" (exit {step.exit_code})"
                if step.error:
                    result += f": {step.error}"
                took_s = f"{step.duration_s:.2f}s" if step.status in ("passed", "failed") else ""
                out.append(
                    f"| {_ICONS[step.status]} | `{step.step}` | {_cell(result)} | {took_s} |"
                )
            out.append("")
        tests = [
            (step, SuiteCounts.of(s)) for step in run.steps for s in step_suites(self._store, step)
        ]
        if tests:
            out += [
                "| tests in | tests | failed | errors | skipped |",
                "| --- | --: | --: | --: | --: |",
            ]
            for step, c in tests:
                out.append(
                    f"| `{step.step}` | {c.tests} | {c.failures} | {c.errors} | {c.skipped} |"
                )
            out.append("")
        for step in run.failed:
            log = [plain_text(line) for line in run.logs.get(step.step, [])]
            fence = "`" * max(3, 1 + max((len(r) for r in _backtick_runs(log)), default=0))
            out += [
                "<details open>",
                f"<summary>❌ <code>{_html(step.step)}</code>: the last {len(log)} lines "
                "of its log</summary>",
                "",
                f"{fence}text",
                *log,
                fence,
                "",
                "</details>",
                "",
            ]
        return "\n".join(out)


def _backtick_runs(lines: list[str]) -> Iterator[str]:
    for line in lines:
        yield from re.findall(r"`+", line)


def _cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell: one line, pipes escaped."""
    return " ".join(plain_text(text).split()).replace("|", "\\|")


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def open_reports(junit: Path | None, summary: Path | None, store: Store) -> list[Report]:
    """The report files asked for, as listeners; ``ValueError`` for a path that cannot be one."""
    reports: list[Report] = []
    kinds: list[tuple[Path | None, type[Report]]] = [
        (junit, JUnitReport),
        (summary, MarkdownSummary),
    ]
    for path, kind in kinds:
        if path is None:
            continue
        if path.is_dir():
            raise ValueError(f"{kind.option} {path}: is a folder, not a file")
        reports.append(kind(path, store))
    return reports


def tee(*listeners: Callable[[BuildEvent], None]) -> Callable[[BuildEvent], None]:
    """One listener that hands each event to every one of ``listeners``, in order."""

    def emit(event: BuildEvent) -> None:
        for listener in listeners:
            listener(event)

    return emit
