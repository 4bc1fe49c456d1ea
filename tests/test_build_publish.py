"""Building green trees through the engine, and publishing them atomically."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from greenloop.dev.builder import Builder, output_step
from greenloop.dev.publisher import POINTER, Publisher, read_pointer
from greenloop.plugins.discovery import Executors
from greenloop.protocol import (
    BuildIdentity,
    BuildTrigger,
    Compiled,
    Deduplicated,
    Failed,
    PublishedArtifact,
    SetupError,
)
from greenloop.sdk.loader import load
from greenloop.store import Store
from tests.conftest import cli, write_pipeline

SITE = """
@gl.pipeline("build")
def build():
    gl.sh("mkdir -p dist && cp page.html dist/index.html"
          " && echo \\"$(cat page.html)\\" > dist/copy", label="site", artifacts=["dist"])
"""


def trigger(source: str) -> BuildTrigger:
    h = "0" * 64
    identity = BuildIdentity(
        source_tree=source * 64,
        lockfiles=h,
        toolchain=h,
        config=h,
        pipeline=h,
        target="web",
        profile="dev",
    )
    return BuildTrigger.for_identity(identity)


def builder(store: Store, project: Path) -> Builder:
    pipeline = load(project / ".greenloop" / "pipeline.py").pipeline("build")
    return Builder(store, project, pipeline, Executors(store))


def test_build_dedup_and_failure(store: Store, project: Path) -> None:
    write_pipeline(project, SITE)
    (project / "page.html").write_text("<h1>v1</h1>")
    b = builder(store, project)
    first = b.build(trigger("1"))
    assert isinstance(first.outcome, Compiled) and first.artifact is not None
    runs_before = len(store.index.runs())
    again = b.build(trigger("1"))
    assert isinstance(again.outcome, Deduplicated) and again.artifact == first.artifact
    assert len(store.index.runs()) == runs_before  # nothing ran

    (project / "page.html").unlink()
    failed = b.build(trigger("2"))
    assert isinstance(failed.outcome, Failed) and failed.artifact is None
    assert "site" in failed.outcome.reason


def test_output_step_needs_artifacts(project: Path) -> None:
    write_pipeline(project, '@gl.pipeline("build")\ndef build():\n    gl.sh("true")\n')
    with pytest.raises(ValueError, match="declares no artifacts"):
        output_step(load(project / ".greenloop" / "pipeline.py").pipeline("build"))


def test_publish_moves_pointer_and_out_only_when_servable(store: Store, project: Path) -> None:
    write_pipeline(project, SITE)
    (project / "page.html").write_text("<h1>v1</h1>")
    b = builder(store, project)
    out = project.parent / "site"
    publisher = Publisher(store, project, out)
    record = publisher.publish(b.build(trigger("1")))
    assert record is not None
    assert (out / "index.html").read_text() == "<h1>v1</h1>"
    pointer = (project / POINTER).read_bytes()
    assert PublishedArtifact.parse(pointer) == record
    assert store.put_tree(out.resolve()) == record.artifact  # --out is what the pointer names
    assert read_pointer(project) == (record, None)

    (project / "page.html").unlink()
    assert publisher.publish(b.build(trigger("2"))) is None
    assert (project / POINTER).read_bytes() == pointer
    assert (out / "index.html").read_text() == "<h1>v1</h1>"


def test_corrupt_pointer_reads_as_no_green_yet(project: Path) -> None:
    (project / POINTER).write_text("garbage\n")
    record, warning = read_pointer(project)
    assert record is None and warning is not None and "corrupt" in warning


def test_status_reads_a_pointer_from_the_far_future(project: Path) -> None:
    # Valid for the codec (any unsigned 64-bit time); `status` must still say it.
    record = PublishedArtifact.parse(
        PublishedArtifact(
            input_hash="6" * 64,
            artifact="7" * 64,
            identity=trigger("1").identity,
            published_at=2**64 - 1,
        ).render()
    )
    (project / POINTER).write_text(record.render())
    done = cli("status", cwd=project)
    assert done.returncode == 0, done.stderr
    assert f"latest_green: published at {2**64 - 1} s after the epoch" in done.stdout


def test_an_unreadable_pointer_reads_as_no_green_yet(project: Path) -> None:
    (project / POINTER).mkdir()  # not a file at all
    record, warning = read_pointer(project)
    assert record is None and warning is not None and str(project / POINTER) in warning
    done = cli("status", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "no green build published yet (warning: cannot read" in done.stdout


def test_out_cannot_be_the_pointer(store: Store, project: Path) -> None:
    with pytest.raises(SetupError, match="latest-green pointer"):
        Publisher(store, project, project / POINTER)


def test_out_that_is_not_ours_is_refused(store: Store, project: Path) -> None:
    out = project.parent / "precious"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SetupError, match="not managed by greenloop"):
        Publisher(store, project, out)
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("target", ["folder", "dangling"])
def test_a_symlink_out_the_user_made_is_refused(store: Store, project: Path, target: str) -> None:
    # The user's own link (to their folder, or to nothing yet) is theirs, as a folder is.
    mine = project.parent / "mine"
    if target == "folder":
        mine.mkdir()
        (mine / "keep.txt").write_text("mine")
    out = project.parent / "link"
    out.symlink_to(mine)
    with pytest.raises(SetupError, match=r"--out .*link is a symlink greenloop did not make"):
        Publisher(store, project, out)
    assert out.is_symlink() and out.readlink() == mine
    if target == "folder":
        assert (mine / "keep.txt").read_text() == "mine"


def test_greenloops_own_out_link_is_taken_over(store: Store, project: Path) -> None:
    write_pipeline(project, SITE)
    (project / "page.html").write_text("<h1>v1</h1>")
    out = project.parent / "site"
    first = Publisher(store, project, out)
    record = first.publish(builder(store, project).build(trigger("1")))
    assert record is not None and out.is_symlink()
    again = Publisher(store, project, out)  # a restarted dev: the link is its own
    assert again.current() == first.current()


@pytest.mark.parametrize("where", ["/proc/greenloop-out", "file/out"])
def test_an_out_that_cannot_be_made_is_refused_at_start(
    store: Store, project: Path, where: str
) -> None:
    (project.parent / "file").write_text("a file, not a folder")
    out = project.parent / where
    with pytest.raises(SetupError, match=r"--out .* cannot be written"):
        Publisher(store, project, out)


def test_an_out_folder_that_does_not_exist_yet_is_made(store: Store, project: Path) -> None:
    out = project.parent / "build" / "web" / "site"
    Publisher(store, project, out)
    assert out.parent.is_dir() and not out.exists()


def test_a_publish_that_fails_raises_and_the_next_one_succeeds(store: Store, project: Path) -> None:
    write_pipeline(project, SITE)
    (project / "page.html").write_text("<h1>v1</h1>")
    out = project.parent / "outs" / "site"
    publisher = Publisher(store, project, out)
    built = builder(store, project).build(trigger("1"))
    (project.parent / "outs").rmdir()  # the folder --out lives in went away
    with pytest.raises(OSError):
        publisher.publish(built)
    assert read_pointer(project) == (None, None)  # nothing moved
    assert not any((publisher.state / "publish").iterdir())  # nor is a half publish left
    (project.parent / "outs").mkdir()
    record = publisher.publish(built)
    assert record is not None and (out / "index.html").read_text() == "<h1>v1</h1>"
    assert read_pointer(project) == (record, None)


def test_readers_never_see_a_mix(store: Store, project: Path) -> None:
    write_pipeline(project, SITE)
    b = builder(store, project)
    out = project.parent / "site"
    publisher = Publisher(store, project, out)
    (project / "page.html").write_text("v0")
    publisher.publish(b.build(trigger("0")))
    stop = threading.Event()
    mixed: list[tuple[str, str]] = []

    def read() -> None:
        while not stop.is_set():
            try:
                folder = out.resolve()
                pair = ((folder / "index.html").read_text(), (folder / "copy").read_text())
            except FileNotFoundError:
                continue  # resolved an old version just pruned; a fresh resolve follows
            if pair[0] + "\n" != pair[1]:
                mixed.append(pair)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for version in range(1, 15):
            (project / "page.html").write_text(f"v{version}")
            publisher.publish(b.build(trigger(format(version % 16, "x"))))
    finally:
        stop.set()
        reader.join()
    assert mixed == []
    assert (out / "index.html").read_text() == "v14"
