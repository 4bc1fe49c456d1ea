"""Language servers shared by many trees: one server, one workspace folder a tree.

``greenloop serve`` checks every worktree of a repository. Starting one pyright
a worktree would make memory grow with their number; a server that supports
multi-root workspaces (pyright, typescript-language-server) instead takes each
worktree as one more workspace folder, with its own open documents and its own
configuration. :class:`SharedLanguageServers` keeps at most ``per_program``
such servers for each checker command, however many trees there are, and adds
each new tree to the one with the fewest folders.

Some trees still get a server of their own:

- a tree nested in another served tree (a worktree under ``.worktrees/`` of the
  main one), because a server gives a file to the innermost folder that holds
  it, and the outer tree's settings must not decide the inner one's verdict;
- every tree, for a server that does not take more folders once started.

A shared server that fails is stopped and forgotten with all its folders: the
next round of each of its trees starts or joins a healthy one. Verdicts stay
per tree: diagnostics are pulled per document, and documents are per folder.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from greenloop.devloop.lsp import Folder, LanguageServer, ServerFailed

DEFAULT_PER_PROGRAM = 1
"""Shared servers for each checker command by default (``serve --lsp-servers``)."""


class SharedLanguageServers:
    """Every tree's language-server folders, at most ``per_program`` shared servers a
    command (a :class:`~greenloop.devloop.lsp.ServerPool`).
    """

    def __init__(self, per_program: int = DEFAULT_PER_PROGRAM) -> None:
        if per_program < 1:
            raise ValueError("per_program must be at least 1")
        self.per_program = per_program
        self._groups: dict[tuple[str, ...], _Group] = {}
        self._lock = threading.Lock()

    def get(self, argv: Sequence[str], root: Path, env: Mapping[str, str]) -> Folder:
        """The live folder of ``root`` in a server of ``argv``: its own, a shared one
        it joins, or a new one. Raises :class:`~greenloop.devloop.lsp.ServerFailed`.
        """
        with self._lock:
            group = self._groups.setdefault(tuple(argv), _Group(self.per_program))
        return group.get(argv, root, env)

    def discard(self, folder: Folder) -> None:
        """``folder``'s server failed: stop it and forget its folders."""
        with self._lock:
            group = self._groups.get(folder.server.argv)
        if group is not None:
            group.drop(folder.server)

    def close_root(self, root: Path) -> None:
        """Take the tree at ``root`` out of every server; stop servers left with none."""
        for group in self._all():
            group.close_root(root)

    def close(self) -> None:
        """Shut every server down."""
        with self._lock:
            groups, self._groups = list(self._groups.values()), {}
        for group in groups:
            group.close()

    def servers(self) -> list[LanguageServer]:
        """The servers running now (for ``status`` and tests)."""
        return [server for group in self._all() for server in group.servers()]

    def _all(self) -> list[_Group]:
        with self._lock:
            return list(self._groups.values())


class _Group:
    """The servers of one checker command."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._shared: list[LanguageServer] = []  # multi-root, at most ``limit``
        self._alone: dict[Path, LanguageServer] = {}  # a server for one tree
        # Held while a server starts: a tree waiting here joins it instead of starting another.
        self._lock = threading.Lock()

    def get(self, argv: Sequence[str], root: Path, env: Mapping[str, str]) -> Folder:
        with self._lock:
            self._drop_dead()
            alone = self._alone.get(root)
            if alone is not None:
                return alone.folder(root)
            for server in self._shared:
                if root in _roots(server):
                    return server.folder(root)
            if any(_nested(root, other) for s in self._shared for other in _roots(s)):
                server = self._alone[root] = LanguageServer(argv, root, env)
                return server.folder(root)
            if len(self._shared) >= self._limit:
                server = min(self._shared, key=lambda s: len(s.folders))
                try:
                    return server.add_folder(root)
                except ServerFailed:
                    self._stop(server)  # it died meanwhile: start a fresh one below
            server = LanguageServer(argv, root, env)
            if server.multi_root:
                self._shared.append(server)
            else:
                self._alone[root] = server
            return server.folder(root)

    def drop(self, server: LanguageServer) -> None:
        with self._lock:
            if server in self._shared or server in self._alone.values():
                self._stop(server)

    def close_root(self, root: Path) -> None:
        with self._lock:
            alone = self._alone.get(root)
            if alone is not None:
                self._stop(alone)
            for server in list(self._shared):
                if root in _roots(server):
                    server.remove_folder(server.folder(root))
                    if not server.folders:
                        self._stop(server)

    def close(self) -> None:
        with self._lock:
            for server in self.servers():
                self._stop(server)

    def servers(self) -> list[LanguageServer]:
        return [*self._shared, *self._alone.values()]

    def _drop_dead(self) -> None:
        for server in self.servers():
            if not server.alive:
                self._stop(server)

    def _stop(self, server: LanguageServer) -> None:
        if server in self._shared:
            self._shared.remove(server)
        for root, alone in list(self._alone.items()):
            if alone is server:
                del self._alone[root]
        server.close()


def _roots(server: LanguageServer) -> list[Path]:
    return [folder.root for folder in server.folders]


def _nested(a: Path, b: Path) -> bool:
    """Whether one of the two trees holds the other."""
    return a != b and (a.is_relative_to(b) or b.is_relative_to(a))
