"""Language servers kept warm between rounds: checkers that answer in milliseconds.

A checker whose format is ``lsp`` is a language server on stdin/stdout (for
example ``pyright-langserver --stdio``). greenloop starts it once, opens every
project file in one of its languages, and then each round sends the files whose
text changed (whole text, ``didChange``) and *pulls* each open file's
diagnostics (``textDocument/diagnostic``, LSP 3.17). Pulling, unlike waiting
for pushed diagnostics, says when the server is done. The server's warm state
makes a round cost what the edit touched, not a fresh start of the tool.

A tree is a :class:`Folder` of a server (an LSP workspace folder). A server
that supports multi-root workspaces can hold many, one per tree, each with its
own open documents and its own configuration (``greenloop serve`` shares one
server among worktrees that way: :mod:`greenloop.devloop.lsp_shared`).

A server that dies, breaks the protocol or stops answering raises
:class:`ServerFailed`; the runner reports that checker as crashed (red, never
green), the pool forgets the server, and the next round starts a fresh one.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from greenloop._procs import stop_group, wait_exit
from greenloop.devloop.checkers.formats import lsp_diagnostics
from greenloop.protocol import Diagnostic

LANGUAGES = {
    ".py": "python",
    ".pyi": "python",
    ".ts": "typescript",
    ".tsx": "typescriptreact",
    ".js": "javascript",
    ".jsx": "javascriptreact",
    ".rs": "rust",
}
"""File suffix → LSP language id; files with other suffixes are never opened."""

START_TIMEOUT_S = 60.0
"""How long a server may take to answer ``initialize``."""

REGISTRATION_WAIT_S = 10.0
"""How long, once initialized, a server may take to offer pulled diagnostics."""

_STDERR_LINES = 12


class ServerFailed(Exception):
    """The language server died, broke the protocol, refused, or did not answer in time."""


class LanguageServer:
    """One language server process and the documents greenloop has opened in it."""

    def __init__(self, argv: Sequence[str], root: Path, env: Mapping[str, str]) -> None:
        self.argv = tuple(argv)
        self.root = root
        try:
            self._proc = subprocess.Popen(
                list(argv),
                cwd=root,
                env=dict(env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # stopped with its helpers, like every checker
            )
        except OSError as e:
            raise ServerFailed(f"could not start {argv[0]}: {e}") from e
        self._write_lock = threading.Lock()
        self._replies: dict[int, dict[str, Any]] = {}
        self._pending: set[int] = set()  # requests someone still waits for
        self._pulls = threading.Event()  # the server offers textDocument/diagnostic
        self._arrived = threading.Condition()
        self._next_id = 0
        self._failure: str | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._multi_root = False
        self._folders = {root: Folder(self, root)}
        assert self._proc.stdout is not None and self._proc.stderr is not None
        threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True).start()
        self._stderr_reader = threading.Thread(
            target=self._read_stderr, args=(self._proc.stderr,), daemon=True
        )
        self._stderr_reader.start()
        try:
            self._initialize()
        except BaseException:
            self.close()
            raise

    @property
    def alive(self) -> bool:
        """False once the process exited or the conversation broke."""
        return self._failure is None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self._proc.pid

    @property
    def multi_root(self) -> bool:
        """Whether the server takes more workspace folders once started."""
        return self._multi_root

    @property
    def folders(self) -> list[Folder]:
        """Its workspace folders, the one it was started in first."""
        with self._arrived:
            return list(self._folders.values())

    def folder(self, root: Path) -> Folder:
        """The folder of the tree at ``root``; ``KeyError`` when it is not one."""
        with self._arrived:
            return self._folders[root]

    def add_folder(self, root: Path) -> Folder:
        """Make the tree at ``root`` one more workspace folder (:attr:`multi_root` only).

        Raises :class:`ServerFailed`.
        """
        if not self._multi_root:
            raise ValueError(f"{self.argv[0]} takes no more workspace folders")
        with self._arrived:
            if root in self._folders:
                return self._folders[root]
            folder = self._folders[root] = Folder(self, root)
        self._change_folders(added=[root], removed=[])
        return folder

    def remove_folder(self, folder: Folder) -> None:
        """Close ``folder``'s documents and take it out of the workspace."""
        with self._arrived:
            if self._folders.get(folder.root) is not folder:
                return
            del self._folders[folder.root]
        with contextlib.suppress(ServerFailed):
            folder.close_documents()
            self._change_folders(added=[], removed=[folder.root])

    def close(self) -> None:
        """Ask the server to shut down; kill its process group if it does not."""
        if self.alive:
            with contextlib.suppress(ServerFailed):
                request_id = self._request("shutdown", None)
                self._await({request_id: "shutdown"}, threading.Event(), time.monotonic() + 2)
                self._notify("exit", None)
        # A server that took its exit cue is gone by now; one that did not, and what it
        # started, is stopped here.
        wait_exit(self._proc, 2)
        stop_group(self._proc, 0)

    # --- the conversation -----------------------------------------------------------

    def _initialize(self) -> None:
        request_id = self._request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": self.root.as_uri(),
                "workspaceFolders": [_folder(self.root)],
                "capabilities": {
                    "textDocument": {
                        "diagnostic": {"dynamicRegistration": True},
                        "synchronization": {"dynamicRegistration": False},
                    },
                    "workspace": {"configuration": True, "workspaceFolders": True},
                },
            },
        )
        reply = self._await(
            {request_id: "initialize"}, threading.Event(), time.monotonic() + START_TIMEOUT_S
        )
        assert reply is not None  # never cancelled
        capabilities = (reply[request_id] or {}).get("capabilities") or {}
        if capabilities.get("diagnosticProvider"):
            self._pulls.set()
        folders = (capabilities.get("workspace") or {}).get("workspaceFolders") or {}
        self._multi_root = bool(folders.get("supported") and folders.get("changeNotifications"))
        self._notify("initialized", {})
        # Some servers (pyright) offer it only by registering it once initialized.
        if not self._pulls.wait(REGISTRATION_WAIT_S):
            raise ServerFailed(
                f"{self.argv[0]} does not offer pulled diagnostics (LSP 3.17 "
                "textDocument/diagnostic), which greenloop needs to know when it is done"
            )

    def _pull(
        self, uris: Sequence[str], cancel: threading.Event, deadline: float
    ) -> list[Any] | None:
        """Each document's pulled diagnostics (its items), in order; None when cancelled."""
        asked = {self._request("textDocument/diagnostic", _document(uri)): uri for uri in uris}
        replies = self._await(asked, cancel, deadline)
        if replies is None:
            return None
        found = []
        for request_id in asked:
            result = replies[request_id]
            found.append((result.get("items") if isinstance(result, dict) else None) or [])
        return found

    def _change_folders(self, added: Sequence[Path], removed: Sequence[Path]) -> None:
        event = {"added": [_folder(r) for r in added], "removed": [_folder(r) for r in removed]}
        self._notify("workspace/didChangeWorkspaceFolders", {"event": event})

    def _request(self, method: str, params: object) -> int:
        with self._arrived:
            self._next_id += 1
            request_id = self._next_id
            self._pending.add(request_id)
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        return request_id

    def _notify(self, method: str, params: object) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode()
        stdin = self._proc.stdin
        assert stdin is not None
        with self._write_lock:
            try:
                stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                stdin.flush()
            except (OSError, ValueError) as e:
                raise ServerFailed(
                    self._describe(f"stopped reading its input ({e})", ended=True)
                ) from e

    def _await(
        self, asked: Mapping[int, str], cancel: threading.Event, deadline: float
    ) -> dict[int, Any] | None:
        with self._arrived:
            try:
                while not all(i in self._replies for i in asked):
                    if cancel.is_set():
                        return None
                    if self._failure is not None:
                        raise ServerFailed(self._describe(self._failure))
                    left = deadline - time.monotonic()
                    if left <= 0:
                        waiting = sorted({asked[i] for i in asked if i not in self._replies})
                        raise ServerFailed(f"{self.argv[0]} did not answer {', '.join(waiting)}")
                    self._arrived.wait(min(left, 0.05))  # looks at ``cancel`` now and then
                replies = {i: self._replies[i] for i in asked}
            finally:
                # Answers still to come for these (a cancelled round's) are dropped on arrival.
                self._pending.difference_update(asked)
                for i in asked:
                    self._replies.pop(i, None)
        for request_id, reply in replies.items():
            if "error" in reply:
                error = reply["error"] or {}
                raise ServerFailed(
                    f"{self.argv[0]} refused {asked[request_id]}: {error.get('message', error)}"
                )
        return {i: reply.get("result") for i, reply in replies.items()}

    def _read(self, stream: BinaryIO) -> None:
        try:
            for message in _messages(stream):
                if "method" in message:
                    if "id" in message:
                        self._answer(message)
                    continue  # notifications (logs, pushed diagnostics) are not needed
                with self._arrived:
                    if message.get("id") in self._pending:
                        self._replies[message["id"]] = message
                        self._arrived.notify_all()
            failure = "exited"
        except (OSError, ValueError) as e:
            failure = f"broke the protocol ({e})"
        with self._arrived:
            self._failure = failure
            self._arrived.notify_all()

    def _answer(self, request: dict[str, Any]) -> None:
        # The server asks for settings (none: its defaults and the project's own
        # config files apply) or to register features; anything else gets null too.
        result: object = None
        params = request.get("params") or {}
        if request["method"] == "workspace/configuration":
            result = [None] * len(params.get("items") or [])
        elif request["method"] == "workspace/workspaceFolders":
            result = [_folder(folder.root) for folder in self.folders]
        elif request["method"] == "client/registerCapability":
            methods = {r.get("method") for r in params.get("registrations") or []}
            if "textDocument/diagnostic" in methods:
                self._pulls.set()
        with contextlib.suppress(ServerFailed):
            self._send({"jsonrpc": "2.0", "id": request["id"], "result": result})

    def _read_stderr(self, stream: BinaryIO) -> None:
        for line in stream:
            self._stderr.append(line.decode("utf-8", "replace").rstrip())

    def _describe(self, what: str, *, ended: bool = False) -> str:
        code = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            # Its output closes a moment before it is reaped: give the status that moment.
            code = self._proc.wait(timeout=1 if ended or self._failure == "exited" else 0)
        if code is not None:
            what += f" (killed by signal {-code})" if code < 0 else f" (exit status {code})"
            # A dead server's last words may still be in the pipe: read them before quoting.
            self._stderr_reader.join(timeout=1)
        tail = " | ".join(line for line in self._stderr if line.strip())
        return f"{self.argv[0]} {what}" + (f"; it said: {tail}" if tail else "")


class Folder:
    """One tree as a workspace folder of a server, and the documents open from it."""

    def __init__(self, server: LanguageServer, root: Path) -> None:
        self.server = server
        self.root = root
        self._documents: dict[str, tuple[int, bytes]] = {}  # rel path -> (version, text digest)
        self._lock = threading.Lock()  # one round of this tree at a time

    def check(
        self, files: Sequence[str], source: str, cancel: threading.Event, timeout_s: float
    ) -> list[Diagnostic] | None:
        """Bring the server's view of this tree up to ``files`` (relative paths); their
        diagnostics. None when ``cancel`` was set first. Raises :class:`ServerFailed`.
        """
        deadline = time.monotonic() + timeout_s
        wanted = [rel for rel in files if Path(rel).suffix in LANGUAGES]
        with self._lock:
            self._sync(wanted)
            pulled = self.server._pull([self._uri(rel) for rel in wanted], cancel, deadline)
        if pulled is None:
            return None
        found: list[Diagnostic] = []
        for rel, items in zip(wanted, pulled, strict=True):
            found += lsp_diagnostics(items, str(self.root / rel), source)
        return found

    def close_documents(self) -> None:
        """Close every document opened from this tree."""
        with self._lock:
            self._sync([])

    def _sync(self, wanted: Sequence[str]) -> None:
        server = self.server
        for rel in set(self._documents) - set(wanted):
            del self._documents[rel]
            server._notify("textDocument/didClose", _document(self._uri(rel)))
        for rel in wanted:
            try:
                text = (self.root / rel).read_bytes().decode("utf-8", "replace")
            except OSError:
                text = ""  # vanished since the listing: the next round closes it
            digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
            known = self._documents.get(rel)
            uri = self._uri(rel)
            if known is None:
                self._documents[rel] = (1, digest)
                language = LANGUAGES[Path(rel).suffix]
                item = {"uri": uri, "languageId": language, "version": 1, "text": text}
                server._notify("textDocument/didOpen", {"textDocument": item})
            elif known[1] != digest:
                version = known[0] + 1
                self._documents[rel] = (version, digest)
                server._notify(
                    "textDocument/didChange",
                    {
                        "textDocument": {"uri": uri, "version": version},
                        "contentChanges": [{"text": text}],
                    },
                )

    def _uri(self, rel: str) -> str:
        return (self.root / rel).as_uri()


def _messages(stream: BinaryIO) -> Iterator[dict[str, Any]]:
    """JSON-RPC messages framed by ``Content-Length`` headers, until end of stream."""
    while True:
        length = None
        while (line := stream.readline()) not in (b"\r\n", b"\n"):
            if not line:
                return
            name, _, value = line.decode("ascii", "replace").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length is None:
            raise ValueError("a message without Content-Length")
        message = json.loads(stream.read(length))
        if not isinstance(message, dict):
            raise ValueError("a message that is not a JSON object")
        yield message


def _document(uri: str) -> dict[str, Any]:
    return {"textDocument": {"uri": uri}}


def _folder(root: Path) -> dict[str, str]:
    return {"uri": root.as_uri(), "name": root.name}


class ServerPool(Protocol):
    """Where a runner gets the warm server folder of a checker for a tree."""

    def get(self, argv: Sequence[str], root: Path, env: Mapping[str, str]) -> Folder:
        """The live folder of ``root`` in a server of ``argv``, started when needed.

        Raises :class:`ServerFailed`.
        """

    def discard(self, folder: Folder) -> None:
        """``folder``'s server failed: forget and stop it; the next ``get`` starts another."""

    def close_root(self, root: Path) -> None:
        """The tree at ``root`` is no longer checked: let its folders go."""

    def close(self) -> None:
        """Shut every server down."""


class LanguageServers:
    """The warm servers of one watcher (or one ``check``), by argv and root: one
    server a tree.

    A context manager: leaving it shuts every server down.
    """

    def __init__(self) -> None:
        self._servers: dict[tuple[tuple[str, ...], Path], LanguageServer] = {}
        self._lock = threading.Lock()

    def get(self, argv: Sequence[str], root: Path, env: Mapping[str, str]) -> Folder:
        """The live server for ``argv`` at ``root`` (its folder), started (or restarted)
        when needed.
        """
        key = (tuple(argv), root)
        with self._lock:
            server = self._servers.get(key)
            if server is not None and server.alive:
                return server.folder(root)
            self._servers.pop(key, None)
        if server is not None:
            server.close()
        server = LanguageServer(argv, root, env)
        with self._lock:
            self._servers[key] = server
        return server.folder(root)

    def discard(self, folder: Folder) -> None:
        """Forget ``folder``'s server (it failed) and stop it; the next ``get`` starts another."""
        server = folder.server
        with self._lock:
            if self._servers.get((server.argv, server.root)) is server:
                del self._servers[(server.argv, server.root)]
        server.close()

    def close_root(self, root: Path) -> None:
        """Shut down the servers of the tree at ``root`` (it is no longer watched)."""
        with self._lock:
            gone = [key for key in self._servers if key[1] == root]
            servers = [self._servers.pop(key) for key in gone]
        for server in servers:
            server.close()

    def close(self) -> None:
        """Shut every server down."""
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.close()

    def __enter__(self) -> LanguageServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
