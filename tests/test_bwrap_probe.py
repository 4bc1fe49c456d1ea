"""Whether the bwrap sandbox runs here: probed once, and a success kept for later processes.

The probe starts ``unshare``, ``mount`` and ``bwrap`` (~30 ms of every cached
local run), so a process finding the record of a probe that worked under the
very same conditions (this boot, the same programs, this code, the same ids,
capabilities, namespaces and mounts) does not probe again; any of them changed,
it does. A failure is never kept.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from greenloop.executors import bwrap
from tests.test_sandbox import require_bwrap


@pytest.fixture
def probes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Each real probe from now on (the scratch folder it ran in); each call a new process."""
    require_bwrap(tmp_path)
    ran: list[Path] = []
    probe = bwrap._probe

    def counted(scratch: Path) -> str | None:
        ran.append(scratch)
        return probe(scratch)

    monkeypatch.setattr(bwrap, "_probe", counted)
    return ran


def _new_process() -> None:
    bwrap._probed.clear()


def _unavailable(scratch: Path) -> str | None:
    _new_process()
    return bwrap.unavailable(scratch)


def test_a_success_is_kept_for_the_next_process(tmp_path: Path, probes: list[Path]) -> None:
    scratch = tmp_path / "store" / "sandboxes"
    assert _unavailable(scratch) is None
    assert (scratch.parent / "bwrap-worked").is_file()
    assert _unavailable(scratch) is None
    assert probes == [scratch]  # the second process read the record


def test_a_changed_bwrap_binary_is_probed_again(
    tmp_path: Path, probes: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real = shutil.which("bwrap")
    assert real is not None
    ours = bin_dir / "bwrap"
    shutil.copy2(real, ours)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    scratch = tmp_path / "store" / "sandboxes"
    assert _unavailable(scratch) is None
    assert _unavailable(scratch) is None
    assert len(probes) == 1
    before = ours.stat()
    ours.write_bytes(ours.read_bytes())  # the same bytes, written anew (an upgrade in place)
    os.utime(ours, ns=(before.st_atime_ns, before.st_mtime_ns))  # even its mtime kept
    assert _unavailable(scratch) is None
    assert len(probes) == 2
    ours.unlink()  # another bwrap on the path now
    assert _unavailable(scratch) is None
    assert len(probes) == 3


def test_other_conditions_are_probed_again(tmp_path: Path, probes: list[Path]) -> None:
    scratch = tmp_path / "store" / "sandboxes"
    assert _unavailable(scratch) is None
    other = tmp_path / "store" / "elsewhere"  # another scratch folder beside it
    assert _unavailable(other) is None
    assert len(probes) == 2
    record = scratch.parent / "bwrap-worked"
    record.write_text(record.read_text().replace('"format": 1', '"format": 0'))
    assert _unavailable(other) is None
    assert len(probes) == 3


def test_a_failure_is_never_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failures: list[Path] = []

    def fails(scratch: Path) -> str:
        failures.append(scratch)
        return "no user namespaces here"

    monkeypatch.setattr(bwrap, "_probe", fails)
    scratch = tmp_path / "store" / "sandboxes"
    assert _unavailable(scratch) == "no user namespaces here"
    assert not (scratch.parent / "bwrap-worked").exists()
    assert _unavailable(scratch) == "no user namespaces here"
    assert len(failures) == 2


def test_within_a_process_it_is_probed_once(tmp_path: Path, probes: list[Path]) -> None:
    scratch = tmp_path / "store" / "sandboxes"
    (scratch.parent).mkdir(parents=True)
    _new_process()
    assert bwrap.unavailable(scratch) is None
    (scratch.parent / "bwrap-worked").unlink()
    assert bwrap.unavailable(scratch) is None
    assert len(probes) == 1
