"""``greenloop dev`` never rebuilds an input it has built: a revert is served from the store.

A real ``greenloop dev --json`` runs on a copy of ``examples/site``. The site is
built once as it is, edited (a new input: ``Compiled``), then the edit is
reverted: the tree's input hash is the first one again, so the builder answers
``Deduplicated`` from the store without running the build pipeline, and the
pointer and ``--out`` go back to the first artifact.
"""

from __future__ import annotations

from pathlib import Path

from greenloop.dev.publisher import DEFAULT_OUT, POINTER
from greenloop.protocol import Compiled, Deduplicated, PublishedArtifact
from greenloop.store import Store
from tests.test_dev_faults import DevProcess, copy_site, require_mypy

ALL_RUNS = 1_000_000  # Index.runs() returns the latest 20 by default; count them all


def pointer(site: Path) -> PublishedArtifact:
    """The latest-green record as on disk now."""
    return PublishedArtifact.parse((site / POINTER).read_bytes())


def run_count(cache: Path) -> int:
    """How many pipeline runs the store has on record (each real build is one)."""
    with Store.open(cache) as store:
        return len(store.index.runs(limit=ALL_RUNS))


def served_tree(site: Path, cache: Path) -> str:
    """The store tree of the folder ``--out`` shows."""
    with Store.open(cache) as store:
        return store.put_tree((site / DEFAULT_OUT).resolve())


def test_revert_is_deduplicated_and_republishes_the_first_artifact(tmp_path: Path) -> None:
    require_mypy()
    site = copy_site(tmp_path)
    cache = tmp_path / "cache"
    pages = site / "pages.py"
    original = pages.read_text()
    dev = DevProcess(site, cache)
    try:
        # The tree as it is: built from scratch.
        (first,) = dev.wait_for_builds(1)
        assert isinstance(first.outcome, Compiled) and first.artifact is not None
        # The result line is printed after publishing, so the pointer is already there.
        assert pointer(site).artifact == first.artifact.tree
        assert pointer(site).input_hash == first.input_hash

        pages.write_text(original.replace("Hello from greenloop", "An edit to revert"))
        second = dev.wait_for_builds(2)[1]
        assert isinstance(second.outcome, Compiled) and second.artifact is not None
        assert second.input_hash != first.input_hash
        assert second.artifact.tree != first.artifact.tree
        assert pointer(site).artifact == second.artifact.tree
        runs_before_revert = run_count(cache)
        assert runs_before_revert >= 2  # each build above ran the pipeline once

        pages.write_text(original)
        third = dev.wait_for_builds(3)[2]
        assert isinstance(third.outcome, Deduplicated), third.outcome
        assert third.input_hash == first.input_hash
        assert third.artifact == first.artifact  # the very record of the first build
        assert run_count(cache) == runs_before_revert  # no build ran

        back = pointer(site)
        assert (back.artifact, back.input_hash) == (first.artifact.tree, first.input_hash)
        assert served_tree(site, cache) == first.artifact.tree
        # Nothing else was built meanwhile: exactly three results, in this order.
        assert [r.outcome.kind for r in dev.build_results()] == [
            "compiled",
            "compiled",
            "deduplicated",
        ]
    finally:
        assert dev.stop() == 130
