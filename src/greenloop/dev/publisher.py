"""The publisher: make a servable build the latest green, atomically.

Two things move on a servable :class:`BuildResult`, together, and nothing moves
otherwise: ``.greenloop/latest-green`` (the v1 pointer) and ``--out DIR`` (the
artifact). Both are fixed symlinks through one switch, ``current`` in the tree's
state folder ``S`` (outside the tree, see :mod:`greenloop.devloop.treestate`)::

    S/sites/<tree>/…                        each artifact, materialized once, complete
    S/publish/<stamp>/latest-green          the pointer of one publish (written, fsynced)
    S/publish/<stamp>/site -> ../../sites/<tree>
    S/current -> publish/<stamp>            swapped by one rename + directory fsync
    .greenloop/latest-green -> S/current/latest-green
    DIR -> S/current/site

So a crash at any moment leaves the old pointer and the old tree, or the new
pointer and the new tree — never a pointer that disagrees with ``DIR``, never a
half-written file or tree — and a reader of ``DIR`` sees one tree or the other.
The tree itself gets only the two links the user sees.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from greenloop._fs import fsync_dir, write_atomically
from greenloop._project import DEFAULT_OUT, LATEST_GREEN, LEGACY_SITE
from greenloop.devloop.treestate import state_dir
from greenloop.protocol import BuildResult, PointerFormatError, PublishedArtifact, SetupError
from greenloop.store import Store

POINTER = LATEST_GREEN
"""The latest-green pointer, relative to the project root."""
_KEEP = 2  # the current publish and the one before: a reader may still be walking it


class Publisher:
    """Publishes servable builds of the project at ``root``; ``out`` always shows the latest."""

    def __init__(self, store: Store, root: Path, out: Path | None = None) -> None:
        self.store = store
        self.root = root
        self.state = state_dir(root)
        self.out = (out if out is not None else root / DEFAULT_OUT).absolute()
        self.pointer = root / POINTER
        self._held: Counter[Path] = Counter()  # a site may be held by two apps of one build
        self._held_lock = threading.Lock()
        self._claim_out()

    def _claim_out(self) -> None:
        """Make sure ``out`` can become greenloop's link, or raise SetupError saying why not.

        What the user made there — a folder with files, a symlink of their own,
        even a dangling one — is theirs and is never replaced; an empty folder or
        greenloop's own link is. The folder ``out`` lives in is made now, and a
        link is made and removed there, so an unwritable ``out`` fails at start
        rather than at the first publish.
        """
        out, own = self.out, self.state / "current" / "site"
        refusal = "give a new path (greenloop keeps --out as its own symlink to the latest build)"
        if out == self.pointer.absolute():
            raise SetupError(f"--out {out} is greenloop's latest-green pointer; " + refusal)
        if out.is_symlink():
            target = Path(os.readlink(out))
            # Ours: into this tree's state folder (wherever GREENLOOP_STATE_DIR put it),
            # or where greenloop pointed it before the state left the tree.
            ours = target.parts[-3:] == (self.state.name, "current", "site")
            if not ours and target != self.root.absolute() / LEGACY_SITE:
                raise SetupError(
                    f"--out {out} is a symlink greenloop did not make (to {os.readlink(out)}); "
                    + refusal
                )
        elif out.exists() and not (out.is_dir() and not any(out.iterdir())):
            raise SetupError(f"--out {out} exists and is not managed by greenloop; " + refusal)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            why = (
                "is not a folder"
                if isinstance(e, FileExistsError)
                else f"cannot be made: {e.strerror}"
            )
            raise SetupError(f"--out {out} cannot be written: {e.filename} {why}") from None
        probe = out.parent / f".{out.name}.probe-{os.getpid()}"
        try:
            probe.unlink(missing_ok=True)
            os.symlink(own, probe)
            probe.unlink()
        except OSError as e:
            raise SetupError(
                f"--out {out} cannot be written: cannot make a link in {out.parent}: {e.strerror}"
            ) from None
        if out.is_dir() and not out.is_symlink():
            out.rmdir()  # an empty folder is ours to replace with the managed link

    def publish(self, result: BuildResult) -> PublishedArtifact | None:
        """Publish ``result`` if it is servable; return the pointer record (None otherwise).

        Raises OSError when the disk refuses (``--out``'s folder went away, a full
        disk): then nothing moved, and a later publish tries again from scratch.
        """
        if not result.servable or result.artifact is None:
            return None
        meta = result.artifact
        site = self._site(meta.tree)
        record = PublishedArtifact(
            input_hash=meta.input_hash,
            artifact=meta.tree,
            identity=meta.identity,
            published_at=int(time.time()),
        )
        publishes = self.state / "publish"
        publishes.mkdir(parents=True, exist_ok=True)
        stamp = Path(tempfile.mkdtemp(prefix=f"{time.time_ns()}-", dir=publishes))
        stamp.chmod(0o755)  # mkdtemp makes it private; the published site is for everyone
        os.symlink(os.path.relpath(site, stamp), stamp / "site")
        try:
            write_atomically(stamp / "latest-green", record.render().encode())
            self.pointer.parent.mkdir(exist_ok=True)
            _link(self.pointer, self.state / "current" / "latest-green")
            _link(self.out, self.state / "current" / "site")
        except OSError:
            _discard(stamp)  # never switched to, so pruning must not count it as a publish
            raise
        _link(self.state / "current", stamp.relative_to(self.state))  # the one switch
        self._prune(publishes, current=stamp)
        return record

    def hold(self, site: Path) -> None:
        """Keep the published folder ``site`` (as :meth:`current` gave it) through later publishes.

        Pruning keeps only the last two publishes; an app still running from an
        older one (its newer builds failed to start) must keep its files.
        """
        with self._held_lock:
            self._held[site.resolve()] += 1

    def release(self, site: Path) -> None:
        """Let a later publish prune ``site`` again."""
        with self._held_lock:
            held = site.resolve()
            self._held[held] -= 1
            if self._held[held] <= 0:
                del self._held[held]

    def current(self) -> Path | None:
        """The folder ``out`` shows now, or None before the first publish."""
        return self.out.resolve() if self.out.is_dir() else None

    def _site(self, tree: str) -> Path:
        """The artifact ``tree`` materialized in full (only once per tree)."""
        sites = self.state / "sites"
        site = sites / tree[:32]
        if not site.is_dir():
            sites.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=sites))
            staging.chmod(0o755)
            self.store.materialize(tree, staging)
            os.replace(staging, site)
            fsync_dir(sites)
        return site

    def _prune(self, publishes: Path, current: Path) -> None:
        ordered = sorted((p for p in publishes.iterdir() if p.is_dir()), key=lambda p: p.name)
        earlier = [p for p in ordered if p != current]
        keep = [*earlier[len(earlier) - (_KEEP - 1) :], current]
        for old in ordered:
            if old not in keep:
                _discard(old)
        with self._held_lock:
            used = {(p / "site").resolve() for p in keep} | set(self._held)
        for site in (self.state / "sites").iterdir():
            if site.resolve() not in used:
                _discard(site)


def _discard(folder: Path) -> None:
    """Delete ``folder`` so that a crash midway never leaves a partial one under its name.

    It is renamed out of the way first: a folder named for a tree is always complete.
    """
    trash = folder.with_name(f".trash-{uuid.uuid4().hex}")
    try:
        os.replace(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def read_pointer(root: Path) -> tuple[PublishedArtifact | None, str | None]:
    """The latest-green record of ``root`` and a warning; a corrupt pointer is "no green yet"."""
    path = root / POINTER
    try:
        return PublishedArtifact.parse(path.read_bytes()), None
    except FileNotFoundError:
        return None, None
    except PointerFormatError as e:
        return None, f"ignoring corrupt {path}: {e}"
    except OSError as e:  # a folder, a link loop, no permission: no green to show either
        return None, f"cannot read {path}: {e.strerror}"


def _link(link: Path, target: Path) -> None:
    """Make ``link`` a symlink to ``target`` by renaming a new link over it (atomic)."""
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    temporary = link.parent / f".{link.name}.link-{os.getpid()}"
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary)
    os.replace(temporary, link)
    fsync_dir(link.parent)


def latest_green_section(root: Path) -> dict[str, Any]:
    """The published latest-green pointer; a corrupt one reads as no green yet, with a warning."""
    record, warning = read_pointer(root)
    section: dict[str, Any] = {"state": "none" if record is None else "published"}
    if warning is not None:
        section["warning"] = warning
    if record is not None:
        section.update(
            published_at=record.published_at,
            input_hash=record.input_hash,
            artifact=record.artifact,
            identity=record.identity.model_dump(mode="json"),
        )
    return section
