"""The publisher: make a servable build the latest green, atomically.

Two things move on a servable :class:`BuildResult` and nothing moves otherwise:

* ``.greenloop/latest-green`` — the v1 pointer — rewritten by temp file, fsync,
  rename and a directory fsync, so a crash leaves the old pointer or the new one;
* ``--out DIR`` — a symlink to a complete, versioned copy of the artifact
  (``.DIR.<tree>`` beside it), swapped by renaming a new symlink over the old,
  so a reader of ``DIR`` sees the old tree or the new one, never a mix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from greenloop._fs import fsync_dir, write_atomically
from greenloop.protocol import BuildResult, PointerFormatError, PublishedArtifact, SetupError
from greenloop.store import Store

POINTER = Path(".greenloop") / "latest-green"
DEFAULT_OUT = Path(".greenloop") / "out"


class Publisher:
    """Publishes servable builds of the project at ``root`` into ``out``."""

    def __init__(self, store: Store, root: Path, out: Path | None = None) -> None:
        self.store = store
        self.root = root
        self.out = (out if out is not None else root / DEFAULT_OUT).absolute()
        self.pointer = root / POINTER
        if self.out.exists() and not self.out.is_symlink():
            if self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()  # an empty folder is ours to replace with the managed link
            else:
                raise SetupError(
                    f"--out {self.out} exists and is not managed by greenloop; "
                    "give a new path (greenloop keeps it as a symlink to the latest build)"
                )

    def publish(self, result: BuildResult) -> PublishedArtifact | None:
        """Publish ``result`` if it is servable; return the pointer record (None otherwise)."""
        if not result.servable or result.artifact is None:
            return None
        meta = result.artifact
        version = self.out.parent / f".{self.out.name}.{meta.tree[:16]}"
        if not version.exists():
            staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
            self.store.materialize(meta.tree, staging)
            os.replace(staging, version)
        _swap_symlink(self.out, version)
        record = PublishedArtifact(
            input_hash=meta.input_hash,
            artifact=meta.tree,
            identity=meta.identity,
            published_at=int(time.time()),
        )
        write_atomically(self.pointer, record.render().encode())
        self._prune(keep={version.name})
        return record

    def current(self) -> Path | None:
        """The folder ``out`` points at now, or None before the first publish."""
        return self.out.resolve() if self.out.is_symlink() else None

    def _prune(self, keep: set[str]) -> None:
        # Keep the one before the current too: a reader may still be walking it.
        versions = sorted(
            self.out.parent.glob(f".{self.out.name}.*"), key=lambda p: p.stat().st_mtime
        )
        stale = [v for v in versions if v.name not in keep][:-1]
        for old in stale:
            shutil.rmtree(old, ignore_errors=True)


def read_pointer(root: Path) -> tuple[PublishedArtifact | None, str | None]:
    """The latest-green record of ``root`` and a warning; a corrupt pointer is "no green yet"."""
    path = root / POINTER
    try:
        return PublishedArtifact.parse(path.read_bytes()), None
    except FileNotFoundError:
        return None, None
    except PointerFormatError as e:
        return None, f"ignoring corrupt {path}: {e}"


def _swap_symlink(link: Path, target: Path) -> None:
    temporary = link.parent / f".{link.name}.link-{os.getpid()}"
    if temporary.is_symlink():
        temporary.unlink()
    os.symlink(target.name, temporary)  # relative, so the pair can move together
    os.replace(temporary, link)
    fsync_dir(link.parent)
