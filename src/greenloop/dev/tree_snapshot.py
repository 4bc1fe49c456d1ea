"""The green tree itself as the build: what an app without a build pipeline runs from.

An app such as ``uvicorn app:app`` needs no build step, but it must not run from
the working tree, which changes under it with every save (and may be red). So
each green tree is copied into the store as a tree artifact, exactly the files
the dev loop checked, and published like any build.

Exactly: each file is read once, and the same bytes are both stored and hashed
the way the build identity hashes them. If the result does not match the
identity the verdict vouched for, a file changed after the check, and the
snapshot is dropped (:class:`StaleSnapshot`): the watcher has seen that change
and the next green edge snapshots again.

Snapshots are not recorded in the store's artifact index: the index answers
"this input is built" for the ``build`` pipeline, and a plain ``greenloop dev``
of the same input must never be handed the source tree as its site.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path

from greenloop.devloop.config import ConfigError, load_config
from greenloop.devloop.file_digests import DigestCache
from greenloop.devloop.identity import source_tree_hash
from greenloop.devloop.ignores import Ignores
from greenloop.protocol import ArtifactMeta, BuildResult, BuildTrigger, Compiled
from greenloop.store import Store, TreeEntry
from greenloop.store.trees import normalize_mode


class StaleSnapshot(Exception):
    """The tree changed after the check that made it green; nothing was published."""


class TreeSnapshot:
    """Copies the green tree at ``root`` into the store, as a build whose artifact is that tree."""

    def __init__(self, store: Store, root: Path) -> None:
        """Snapshot ``root`` minus what the dev loop ignores."""
        self.store = store
        self.root = root

    def build(self, trigger: BuildTrigger) -> BuildResult:
        """The snapshot of the tree ``trigger`` names; raises :class:`StaleSnapshot` if it moved.

        The settings' ``ignore`` list is read now, as the round that checked the
        tree read it: an edit of the list changes which files are the tree.
        """
        started = time.monotonic()
        try:
            ignore = load_config(self.root).settings.ignore
        except ConfigError as e:  # the round that made it green read them; they changed since
            raise StaleSnapshot(str(e)) from None
        files = Ignores(self.root, ignore).files()
        entries: list[TreeEntry] = []
        digests: dict[Path, str | None] = {}
        size = 0
        for rel in files:
            path = self.root / rel
            entry, digest, length = self._take(rel, path)
            digests[path] = digest
            size += length
            if entry is not None:
                entries.append(entry)
        if source_tree_hash(self.root, files, _Known(digests)) != trigger.identity.source_tree:
            raise StaleSnapshot(f"{self.root} changed after its check")
        tree = self.store.put_tree_entries(entries)
        meta = ArtifactMeta(
            input_hash=trigger.input_hash,
            identity=trigger.identity,
            tree=tree,
            size_bytes=size,
            built_at=int(time.time()),
            build_duration_ms=int((time.monotonic() - started) * 1000),
        )
        return BuildResult(input_hash=trigger.input_hash, outcome=Compiled(), artifact=meta)

    def _take(self, rel: str, path: Path) -> tuple[TreeEntry | None, str | None, int]:
        """Store one file; its entry, its identity digest (as DigestCache makes it) and size."""
        try:
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                digest = hashlib.sha256(b"symlink\0" + os.fsencode(target)).hexdigest()
                return (
                    TreeEntry(rel, "symlink", normalize_mode("symlink", 0), target=target),
                    digest,
                    0,
                )
            if not stat.S_ISREG(st.st_mode):
                return None, None, 0
            data = path.read_bytes()
        except OSError:  # gone since it was listed: absent, as the identity hashes it
            return None, None, 0
        digest = hashlib.sha256(b"file\0" + data).hexdigest()
        blob = self.store.put_bytes(data)
        mode = normalize_mode("file", st.st_mode)
        return TreeEntry(rel, "file", mode, blob=blob), digest, len(data)


class _Known(DigestCache):
    """The digests of the bytes just stored, so the identity is computed over exactly those."""

    def __init__(self, digests: dict[Path, str | None]) -> None:
        super().__init__()
        self._known = digests

    def digest(self, path: Path) -> str | None:
        return self._known.get(path)
