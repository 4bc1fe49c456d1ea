"""The green/red model: edges fire once, file verdicts are resendable, green is earned."""

from __future__ import annotations

from greenloop.devloop.config import Role
from greenloop.devloop.model import CheckerReport, Model, Omitted, Round
from greenloop.protocol import (
    BecameGreen,
    BecameRed,
    BuildIdentity,
    Diagnostic,
    FileState,
    FileVerdict,
    Profile,
    Severity,
    TreeState,
)

A = "/proj/a.py"
B = "/proj/b.py"
FILES = (A, B)


def identity(n: int = 0) -> BuildIdentity:
    h = f"{n:064x}"
    return BuildIdentity(
        source_tree=h,
        lockfiles=h,
        toolchain=h,
        config=h,
        pipeline=h,
        target="x86_64-unknown-linux-gnu",
        profile=Profile.DEV,
    )


def diag(path: str = A, severity: Severity = Severity.ERROR, source: str = "mypy") -> Diagnostic:
    return Diagnostic(
        path=path, line=2, col=12, severity=severity, message="boom", source=source, code="x"
    )


def mypy(*diagnostics: Diagnostic) -> CheckerReport:
    return CheckerReport("mypy", Role.AUTHORITATIVE, diagnostics)


def ruff(*diagnostics: Diagnostic) -> CheckerReport:
    return CheckerReport("ruff", Role.ADVISORY, diagnostics)


def full(*reports: CheckerReport, n: int = 0, ident: bool = True) -> Round:
    return Round(
        reports=reports,
        authoritative=frozenset({"mypy"}),
        files=FILES,
        identity=identity(n) if ident else None,
    )


def edges(events: list) -> list[str]:
    return [e.kind for e in events if isinstance(e, BecameGreen | BecameRed)]


def test_new_model_is_unknown_with_no_files() -> None:
    model = Model()
    assert model.tree is TreeState.UNKNOWN
    assert model.snapshot() == []
    assert model.identity is None


def test_clean_decisive_round_turns_green_once_with_its_identity() -> None:
    model = Model()
    events = model.apply(full(mypy(), ruff()))
    assert edges(events) == ["became_green"]
    assert events[-1] == BecameGreen(identity=identity())
    verdicts = [e for e in events if isinstance(e, FileVerdict)]
    assert {(v.path, v.state) for v in verdicts} == {(A, FileState.GREEN), (B, FileState.GREEN)}
    # The same verdict again is no edge, and no file changed.
    assert model.apply(full(mypy(), ruff())) == []
    assert model.tree is TreeState.GREEN
    assert model.identity == identity()


def test_never_green_before_a_full_authoritative_check() -> None:
    model = Model()
    # Only the advisory checker reported: not decisive, whatever it says.
    assert edges(model.apply(full(ruff()))) == []
    assert model.tree is TreeState.UNKNOWN
    # The authoritative one reported but the tree changed under it (no identity).
    assert edges(model.apply(full(mypy(), ruff(), ident=False))) == []
    assert model.tree is TreeState.UNKNOWN
    # A round with no authoritative checker configured can never be decisive.
    nobody = Round(reports=(ruff(),), authoritative=frozenset(), files=FILES, identity=identity())
    assert edges(model.apply(nobody)) == []
    assert model.tree is TreeState.UNKNOWN
    assert all(v.state is FileState.UNCHECKED for v in model.snapshot())


def test_advisory_red_cannot_be_overruled_into_green() -> None:
    model = Model()
    events = model.apply(full(mypy(), ruff(diag(source="ruff"))))
    assert edges(events) == ["became_red"]
    assert model.tree is TreeState.RED
    # Advisory errors keep it red even though the authoritative checker is clean.
    assert model.apply(full(mypy(), ruff(diag(source="ruff")))) == []
    assert model.tree is TreeState.RED


def test_advisory_errors_alone_make_red_early_and_the_full_round_adds_no_second_edge() -> None:
    model = Model()
    early = Round(reports=(ruff(diag(source="ruff")),), authoritative=frozenset({"mypy"}))
    assert edges(model.apply(early)) == ["became_red"]
    assert edges(model.apply(full(mypy(diag(B)), ruff(diag(source="ruff"))))) == []
    assert model.tree is TreeState.RED
    assert {d.path for d in model.diagnostics} == {A, B}


def test_red_green_red_edges_fire_once_each() -> None:
    model = Model()
    kinds = []
    for round_ in (
        full(mypy(diag())),
        full(mypy(diag(), diag(B))),  # still red: diagnostics change, no new edge
        full(mypy(), n=1),
        full(mypy(), n=1),
        full(mypy(diag(B)), n=2),
    ):
        kinds += edges(model.apply(round_))
    assert kinds == ["became_red", "became_green", "became_red"]


def test_became_red_carries_the_diagnostics() -> None:
    model = Model()
    events = model.apply(full(mypy(diag(), diag(B, Severity.WARNING))))
    red = events[-1]
    assert isinstance(red, BecameRed)
    assert {(d.path, d.severity) for d in red.diagnostics} == {
        (A, Severity.ERROR),
        (B, Severity.WARNING),
    }


def test_warnings_do_not_make_red() -> None:
    model = Model()
    assert edges(model.apply(full(mypy(diag(severity=Severity.WARNING))))) == ["became_green"]
    (a_verdict,) = [v for v in model.snapshot() if v.path == A]
    assert a_verdict.state is FileState.GREEN
    assert len(a_verdict.diagnostics) == 1


def test_a_change_takes_green_away_until_the_next_decisive_round() -> None:
    model = Model()
    model.apply(full(mypy()))
    assert model.invalidate() == []
    assert model.tree is TreeState.UNKNOWN
    assert model.identity is None
    # Green again is a new edge, carrying the new tree's identity.
    events = model.apply(full(mypy(), n=7))
    assert events == [BecameGreen(identity=identity(7))]


def test_invalidating_a_red_tree_keeps_it_red_and_silent() -> None:
    model = Model()
    model.apply(full(mypy(diag())))
    model.invalidate()
    assert model.tree is TreeState.RED
    assert edges(model.apply(full(mypy(diag())))) == []


def test_file_verdicts_are_level_triggered_and_resendable() -> None:
    model = Model()
    first = model.apply(full(mypy(diag())))
    sent = {e.path: e for e in first if isinstance(e, FileVerdict)}
    assert sent[A].state is FileState.RED
    assert sent[B].state is FileState.GREEN
    # A snapshot restates every file exactly as last sent, as often as asked.
    assert {v.path: v for v in model.snapshot()} == sent
    assert model.snapshot() == model.snapshot()
    # Only the file whose verdict changed is sent again.
    second = model.apply(full(mypy()))
    assert [e.path for e in second if isinstance(e, FileVerdict)] == [A]


def test_a_file_gone_from_the_project_is_reported_unchecked_once() -> None:
    model = Model()
    model.apply(full(mypy()))
    smaller = Round(
        reports=(mypy(),), authoritative=frozenset({"mypy"}), files=(A,), identity=identity(1)
    )
    events = model.apply(smaller)
    assert FileVerdict(path=B, state=FileState.UNCHECKED) in events
    assert [v.path for v in model.snapshot()] == [A]
    assert model.apply(smaller) == []


def test_diagnostics_outside_the_file_list_still_get_a_verdict() -> None:
    model = Model()
    elsewhere = "/proj/Cargo.toml"
    model.apply(full(mypy(diag(elsewhere))))
    states = {v.path: v.state for v in model.snapshot()}
    assert states[elsewhere] is FileState.RED


def test_duplicate_diagnostics_are_reported_once() -> None:
    model = Model()
    model.apply(full(mypy(diag(), diag())))
    assert len(model.diagnostics) == 1


def test_an_incomplete_authoritative_report_is_never_decisive() -> None:
    model = Model()
    stopped = CheckerReport("mypy", Role.AUTHORITATIVE, (), complete=False)
    assert not full(stopped).decisive
    assert edges(model.apply(full(stopped))) == []
    assert model.tree is TreeState.UNKNOWN
    # With its timeout error, as the runner reports it: red, and no file is vouched green.
    timeout = diag("/proj", source="greenloop")
    timed_out = CheckerReport("mypy", Role.AUTHORITATIVE, (timeout,), complete=False)
    assert edges(model.apply(full(timed_out, ruff()))) == ["became_red"]
    states = {v.path: v.state for v in model.snapshot()}
    assert states == {"/proj": FileState.RED, A: FileState.UNCHECKED, B: FileState.UNCHECKED}


def test_early_advisory_errors_turn_red_with_their_file_verdicts_first() -> None:
    model = Model()
    model.apply(full(mypy(), ruff(), n=1))
    model.invalidate()
    events = model.early(ruff(diag(source="ruff")))
    assert [(type(e).__name__, getattr(e, "path", None)) for e in events] == [
        ("FileVerdict", A),
        ("BecameRed", None),
    ]
    assert isinstance(events[0], FileVerdict) and events[0].state is FileState.RED
    assert model.tree is TreeState.RED
    # The round then ends with the advisory error standing: still red, no second edge.
    assert edges(model.apply(full(mypy(), ruff(diag(source="ruff")), n=2))) == []
    assert model.tree is TreeState.RED


def test_early_reports_can_only_make_red() -> None:
    model = Model()
    # A clean advisory report, or an authoritative one, waits for the whole round.
    assert model.early(ruff()) == []
    assert model.early(mypy(diag())) == []
    assert model.early(ruff(diag(severity=Severity.WARNING, source="ruff"))) == []
    assert model.tree is TreeState.UNKNOWN
    assert model.diagnostics == []
    # Early red, then a round where the advisory errors are gone: green is earned there only.
    assert edges(model.early(ruff(diag(source="ruff")))) == ["became_red"]
    assert edges(model.apply(full(mypy(), ruff(), n=3))) == ["became_green"]
    assert model.identity == identity(3)


def test_early_red_on_a_red_tree_updates_verdicts_without_an_edge() -> None:
    model = Model()
    model.apply(full(mypy(diag(B))))
    events = model.early(ruff(diag(source="ruff")))
    assert edges(events) == []
    assert [e.path for e in events if isinstance(e, FileVerdict)] == [A]


def test_omitted_errors_make_the_tree_and_their_file_red() -> None:
    model = Model()
    # Only warnings were kept; the errors in B were past the limit and only counted.
    report = CheckerReport(
        "mypy",
        Role.AUTHORITATIVE,
        (diag(A, Severity.WARNING),),
        omitted=Omitted.of({(B, Severity.ERROR): 7, (A, Severity.WARNING): 3}),
    )
    assert report.has_errors
    assert edges(model.apply(full(report))) == ["became_red"]
    verdicts = {v.path: v.state for v in model.snapshot()}
    assert verdicts == {A: FileState.GREEN, B: FileState.RED}
    assert model.omitted == {Severity.ERROR: 7, Severity.WARNING: 3}
    # The next round without them turns green again.
    assert edges(model.apply(full(mypy(), n=1))) == ["became_green"]
    assert model.omitted == {}
