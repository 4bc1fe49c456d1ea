"""The remote cache against a real nginx WebDAV server: sharing, verification, failure."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from greenloop.engine.run import Run, RunOptions, RunResult
from greenloop.plugins.discovery import Executors
from greenloop.protocol import ArtifactRef, BuildEvent, StepLog
from greenloop.sdk.loader import load
from greenloop.store import CacheEntry, Store
from greenloop.store.remote import (
    HttpRemoteCache,
    RemoteEntry,
    ac_key,
    open_remote,
)
from greenloop.store.remote.refused import REFUSED_FILE
from tests.conftest import cli, write_pipeline
from tests.test_remote_server import NginxServer, require_nginx

CHAIN = """
@gl.pipeline("ci")
def ci():
    deps = gl.sh(
        "mkdir -p lib && echo dep-v1 > lib/dep.txt"
        " && head -c 3000000 /dev/zero | tr '\\\\0' x > lib/big.bin",
        label="deps", cache=gl.forever())
    build = deps.sh(
        "mkdir -p dist && cat lib/dep.txt src.txt > dist/app.txt && cp lib/big.bin dist/",
        label="build", cache=gl.on_change("src.txt"), artifacts=["dist"])
    build.sh("cat dist/app.txt", label="smoke")
"""


class Remote:
    """An :class:`HttpRemoteCache` plus the warnings it printed."""

    def __init__(self, store: Store, url: str, **kwargs: object) -> None:
        self.warnings: list[str] = []
        self.cache = HttpRemoteCache(store, url, warn=self.warnings.append, **kwargs)  # type: ignore[arg-type]


def run(
    store: Store, root: Path, remote: Remote | None, name: str = "ci"
) -> tuple[RunResult, list[BuildEvent]]:
    events: list[BuildEvent] = []
    pipeline = load(root / ".greenloop" / "pipeline.py").pipeline(name)
    the_run = Run(
        store,
        pipeline,
        root,
        Executors(store),
        events.append,
        RunOptions(),
        remote=remote.cache if remote else None,
    )
    return the_run.execute(), events


def logs(events: list[BuildEvent], step: str) -> list[str]:
    return [e.line for e in events if isinstance(e, StepLog) and e.step == step]


def statuses(result: RunResult) -> dict[str, str]:
    return {k: o.status for k, o in result.steps.items()}


def tree_bytes(store: Store, digest: str, dest: Path) -> dict[str, bytes]:
    store.materialize(digest, dest)
    return {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxServer]:
    with NginxServer(tmp_path / "nginx", binary=require_nginx()) as server:
        yield server


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    a, b = Store.open(tmp_path / "machine-a"), Store.open(tmp_path / "machine-b")
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def chain(project: Path) -> Path:
    write_pipeline(project, CHAIN)
    (project / "src.txt").write_text("source one\n")
    return project


def test_a_fresh_machine_is_fully_cached_from_the_remote(
    nginx: NginxServer, stores: tuple[Store, Store], chain: Path, tmp_path: Path
) -> None:
    store_a, store_b = stores
    remote_a = Remote(store_a, nginx.url)
    first, _ = run(store_a, chain, remote_a)
    assert statuses(first) == {"deps": "passed", "build": "passed", "smoke": "passed"}
    up = remote_a.cache.stats
    assert (up.published, up.hits, up.errors) == (2, 0, 0)
    assert up.bytes_uploaded > 3_000_000 and up.bytes_downloaded == 0

    remote_b = Remote(store_b, nginx.url)
    second, events = run(store_b, chain, remote_b)
    assert statuses(second) == {"deps": "cached", "build": "cached", "smoke": "passed"}
    # The uncached step booted from the build snapshot that came over the wire.
    assert logs(events, "smoke") == ["dep-v1", "source one"]
    assert not logs(events, "deps") and not logs(events, "build")
    down = remote_b.cache.stats
    assert (down.lookups, down.hits, down.published, down.blobs_uploaded) == (2, 2, 0, 0)
    assert down.bytes_downloaded > 3_000_000
    assert remote_a.warnings == remote_b.warnings == []

    # Byte-identical artifacts, and nothing unverified in the new store.
    [artifact_a] = first.steps["build"].artifacts
    [artifact_b] = second.steps["build"].artifacts
    assert artifact_a == artifact_b
    files_a = tree_bytes(store_a, artifact_a.key, tmp_path / "out-a")
    assert files_a == tree_bytes(store_b, artifact_b.key, tmp_path / "out-b")
    assert files_a["app.txt"] == b"dep-v1\nsource one\n" and len(files_a["big.bin"]) == 3_000_000
    assert store_b.verify() == []

    # The statistics are in B's index, and B is now warm on its own.
    [recorded] = store_b.index.remote_stats([str(second.run_id)])
    assert (recorded.hits, recorded.bytes_downloaded) == (2, down.bytes_downloaded)
    third, _ = run(store_b, chain, None)
    assert statuses(third) == {"deps": "cached", "build": "cached", "smoke": "passed"}


def test_a_changed_child_reruns_from_the_imported_parent_snapshot(
    nginx: NginxServer, stores: tuple[Store, Store], chain: Path
) -> None:
    store_a, store_b = stores
    run(store_a, chain, Remote(store_a, nginx.url))
    (chain / "src.txt").write_text("source two\n")
    remote_b = Remote(store_b, nginx.url)
    result, events = run(store_b, chain, remote_b)
    assert statuses(result) == {"deps": "cached", "build": "passed", "smoke": "passed"}
    # build ran on B inside deps' snapshot from A: lib/ was there.
    assert logs(events, "smoke") == ["dep-v1", "source two"]
    assert remote_b.cache.stats.published == 1 and remote_b.warnings == []


def test_a_corrupt_blob_on_the_server_is_caught_and_the_step_reruns(
    nginx: NginxServer, stores: tuple[Store, Store], chain: Path, tmp_path: Path
) -> None:
    store_a, store_b = stores
    first, _ = run(store_a, chain, Remote(store_a, nginx.url))
    [artifact] = first.steps["build"].artifacts
    [app] = [e.blob for e in store_a.get_tree(artifact.key) if e.path == "app.txt"]
    assert app is not None
    on_server = nginx.root / "cas" / app
    on_server.write_bytes(b"dep-v1\nsource evil\n")

    remote_b = Remote(store_b, nginx.url)
    second, events = run(store_b, chain, remote_b)
    assert statuses(second) == {"deps": "cached", "build": "passed", "smoke": "passed"}
    assert logs(events, "smoke") == ["dep-v1", "source one"]
    assert len(remote_b.warnings) == 1 and "does not match its hash" in remote_b.warnings[0]
    assert store_b.verify() == []
    # The rerun re-uploaded the blob rather than trusting HEAD: the server is healed,
    # and B no longer holds the refusal against it.
    assert hashlib.sha256(on_server.read_bytes()).hexdigest() == app
    assert app not in (store_b.root / REFUSED_FILE).read_text()
    store_c = Store.open(tmp_path / "machine-c")
    third, _ = run(store_c, chain, Remote(store_c, nginx.url))
    assert statuses(third)["build"] == "cached"
    store_c.close()


def test_an_invalid_entry_document_is_a_miss(
    nginx: NginxServer, stores: tuple[Store, Store], chain: Path
) -> None:
    store_a, store_b = stores
    run(store_a, chain, Remote(store_a, nginx.url))
    for doc in (nginx.root / "ac").iterdir():
        body = json.loads(doc.read_bytes())
        body["artifacts"] = [{"key": "../../etc/passwd", "mime": "x", "size_bytes": 1}]
        doc.write_text(json.dumps(body))
    remote_b = Remote(store_b, nginx.url)
    result, _ = run(store_b, chain, remote_b)
    assert statuses(result) == {"deps": "passed", "build": "passed", "smoke": "passed"}
    assert len(remote_b.warnings) == 1 and "invalid entry document" in remote_b.warnings[0]
    # build then misses cleanly: deps reran here, so its key names a new snapshot.
    assert (remote_b.cache.stats.errors, remote_b.cache.stats.lookups) == (1, 2)


def test_an_entry_never_repoints_a_local_snapshot_nor_outlives_a_ttl(
    nginx: NginxServer, stores: tuple[Store, Store], chain: Path, tmp_path: Path
) -> None:
    store_a, store_b = stores
    first, _ = run(store_a, chain, Remote(store_a, nginx.url))
    snapshot = first.steps["deps"].snapshot
    assert snapshot is not None
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("mine")
    store_b.set_ref(snapshot, store_b.put_tree(tmp_path / "other"))
    remote = Remote(store_b, nginx.url)
    result, _ = run(store_b, chain, remote)
    assert statuses(result)["deps"] == "passed"
    assert len(remote.warnings) == 1 and "already names another tree" in remote.warnings[0]

    # A creation time from the future is clamped to now.
    for doc in (nginx.root / "ac").iterdir():
        body = json.loads(doc.read_bytes())
        body["created_at"] = time.time() + 10 * 365 * 86400
        doc.write_text(json.dumps(body))
    store_c = Store.open(tmp_path / "machine-c")
    before = time.time()
    remote_c = Remote(store_c, nginx.url).cache
    entry = remote_c.lookup(json.loads(doc.read_bytes())["key"])
    remote_c.close()
    store_c.close()
    assert entry is not None and before <= entry.created_at <= time.time()


def test_a_server_killed_mid_run_degrades_to_local_with_one_warning(
    nginx: NginxServer, store: Store, project: Path
) -> None:
    assert nginx.proc is not None
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci")
        def ci():
            a = gl.sh("echo a > a.txt", label="a", cache=gl.forever())
            # Unsandboxed: a bwrap step sees only its own processes.
            b = a.sh("kill -9 {nginx.proc.pid}; echo b > b.txt", label="b", cache=gl.forever(),
                     sandbox="none")
            c = b.sh("cat a.txt b.txt", label="c", cache=gl.forever())
            c.sh("echo d", label="d", cache=gl.forever())
        """,
    )
    remote = Remote(store, nginx.url)
    result, events = run(store, project, remote)
    assert result.status == "passed", statuses(result)
    assert logs(events, "c") == ["a", "b"]
    assert len(remote.warnings) == 1, remote.warnings
    assert "using the local cache only" in remote.warnings[0]
    [recorded] = store.index.remote_stats([str(result.run_id)])
    assert recorded.errors >= 1 and recorded.warning == remote.warnings[0]
    # The local cache took every entry all the same.
    again, _ = run(store, project, None)
    assert set(statuses(again).values()) == {"cached"}


def test_a_silent_server_times_out_into_a_local_miss(store: Store, project: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def swallow() -> None:
        # Accept and never answer, like a wedged server.
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=swallow, daemon=True).start()
    write_pipeline(
        project,
        '@gl.pipeline("ci")\ndef ci():\n'
        '    gl.sh("echo 1", label="one", cache=gl.forever())'
        '.sh("echo 2", label="two", cache=gl.forever())\n',
    )
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    remote = Remote(store, url, timeout=0.5)
    started = time.monotonic()
    try:
        result, _ = run(store, project, remote)
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    assert result.status == "passed"
    assert time.monotonic() - started < 10
    assert len(remote.warnings) == 1 and "Timeout" in remote.warnings[0]


class LyingServer(ThreadingHTTPServer):
    """Serves another server's files, but truncates blobs or fails, as ``behaviour`` says."""

    def __init__(self, root: Path, behaviour: str) -> None:
        super().__init__(("127.0.0.1", 0), _LyingHandler)
        self.root, self.behaviour = root, behaviour
        self.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _LyingHandler(BaseHTTPRequestHandler):
    server: LyingServer

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send(500 if self.server.behaviour == "5xx" else 201, b"")

    def _answer(self, body: bool) -> None:
        if self.server.behaviour == "5xx":
            return self._send(503, b"")
        path = self.server.root / self.path.lstrip("/")
        if not path.is_file():
            return self._send(404, b"")
        data = path.read_bytes()
        if body and "/cas/" in self.path and self.server.behaviour == "truncate":
            # Promise the whole blob, send half, hang up.
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return None
        return self._send(200, data if body else b"", length=len(data))

    def _send(self, status: int, data: bytes, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("behaviour", "symptom"), [("truncate", "RemoteProtocolError"), ("5xx", "HTTP 503")]
)
def test_a_truncating_or_failing_server_degrades_to_local(
    nginx: NginxServer, stores: tuple[Store, Store], chain: Path, behaviour: str, symptom: str
) -> None:
    store_a, store_b = stores
    run(store_a, chain, Remote(store_a, nginx.url))
    server = LyingServer(nginx.root, behaviour)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = Remote(store_b, server.url)
        result, events = run(store_b, chain, remote)
    finally:
        server.shutdown()
        server.server_close()
    assert statuses(result) == {"deps": "passed", "build": "passed", "smoke": "passed"}
    assert logs(events, "smoke") == ["dep-v1", "source one"]
    assert len(remote.warnings) == 1 and symptom in remote.warnings[0], remote.warnings
    assert remote.cache.stats.published == 0  # the remote was given up on
    assert store_b.verify() == []


def test_read_mode_looks_up_but_never_uploads(
    nginx: NginxServer, stores: tuple[Store, Store], chain: Path, tmp_path: Path
) -> None:
    store_a, store_b = stores
    reader = Remote(store_b, nginx.url, mode="read")
    result, _ = run(store_b, chain, reader)
    assert result.status == "passed"
    assert nginx.files() == []
    assert {method for method, _, _ in nginx.requests()} == {"GET"}
    assert reader.cache.stats.lookups == 2 and reader.cache.stats.published == 0

    run(store_a, chain, Remote(store_a, nginx.url))
    before, seen = nginx.files(), len(nginx.requests())
    (chain / "src.txt").write_text("changed\n")
    store_c = Store.open(tmp_path / "machine-c")
    reader = Remote(store_c, nginx.url, mode="read")
    result, _ = run(store_c, chain, reader)
    store_c.close()
    assert statuses(result) == {"deps": "cached", "build": "passed", "smoke": "passed"}
    assert reader.cache.stats.hits == 1
    assert nginx.files() == before
    # C read (GET, and HEAD to check a hit's lazy snapshot blobs) and wrote nothing.
    assert {method for method, _, _ in nginx.requests()[seen:]} == {"GET", "HEAD"}
    assert sum(r[0] == "PUT" for r in nginx.requests()) == len(before)


def test_a_bearer_token_is_sent(tmp_path: Path, stores: tuple[Store, Store], chain: Path) -> None:
    store_a, store_b = stores
    with NginxServer(tmp_path / "nginx", binary=require_nginx(), token="s3cret") as server:
        run(store_a, chain, Remote(store_a, server.url, token="s3cret"))
        assert nginx_statuses(server) <= {200, 201, 204, 404}
        assert server.files()
        anonymous = Remote(store_b, server.url)
        result, _ = run(store_b, chain, anonymous)
        assert statuses(result)["build"] == "passed"
        assert len(anonymous.warnings) == 1 and "HTTP 401" in anonymous.warnings[0]
        store_c = Store.open(tmp_path / "machine-c")
        authorised = Remote(store_c, server.url, token="s3cret")
        result, _ = run(store_c, chain, authorised)
        store_c.close()
        assert statuses(result)["build"] == "cached" and authorised.warnings == []


def test_basic_auth_and_an_instance_prefix_come_from_the_url(
    tmp_path: Path, stores: tuple[Store, Store], chain: Path
) -> None:
    store_a, store_b = stores
    with NginxServer(
        tmp_path / "nginx", binary=require_nginx(), basic=("ci", "p@ss:word")
    ) as server:
        url = server.url.replace("://", "://ci:p%40ss%3Aword@") + "/team-a/"
        remote_a = Remote(store_a, url)
        run(store_a, chain, remote_a)
        assert remote_a.cache.url == server.url + "/team-a"  # no credentials to print
        assert {p.parts[:2] for p in server.files()} == {("team-a", "cas"), ("team-a", "ac")}
        result, _ = run(store_b, chain, Remote(store_b, url))
        assert statuses(result)["build"] == "cached"


def test_tls_trusts_ssl_cert_file(
    tmp_path: Path, stores: tuple[Store, Store], chain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_a, store_b = stores
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        capture_output=True,
    )
    if made.returncode != 0:
        pytest.skip(f"openssl cannot make a test certificate: {made.stderr!r}")
    with NginxServer(tmp_path / "nginx", binary=require_nginx(), tls=(cert, key)) as server:
        assert server.url.startswith("https://")
        untrusting = Remote(store_a, server.url)
        run(store_a, chain, untrusting)
        [warning] = untrusting.warnings
        assert "CERTIFICATE_VERIFY_FAILED" in warning
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        store_c = Store.open(tmp_path / "machine-c")
        run(store_c, chain, Remote(store_c, server.url))
        store_c.close()
        trusting = Remote(store_b, server.url)
        result, _ = run(store_b, chain, trusting)
        assert statuses(result)["build"] == "cached" and trusting.warnings == []


def test_docker_snapshots_stay_local(nginx: NginxServer, store: Store) -> None:
    remote = Remote(store, nginx.url)
    blob = store.put_bytes(b"report")
    remote.cache.publish(
        CacheEntry(
            key="d" * 64,
            snapshot="greenloop-snap:dddd-1234",  # an image tag, not a store ref
            executor="docker",
            tree=None,
            artifacts=[ArtifactRef(key=blob, mime="text/plain", size_bytes=6)],
            created_at=time.time(),
            last_used=time.time(),
            policy='{"kind":"forever"}',
        )
    )
    remote.cache.close()
    assert nginx.files() == [] and remote.cache.stats.published == 0


def test_entry_documents_are_validated() -> None:
    good = {
        "greenloop_remote_entry": 2,
        "key": "a" * 64,
        "snapshot": "greenloop-snap:x",
        "snapshot_tree": "b" * 64,
        "executor": "local",
        "artifacts": [{"key": "c" * 64, "mime": "text/plain", "size_bytes": 3}],
        "created_at": 1.0,
        "policy": "{}",
        "max_object_bytes": 3,
    }
    assert RemoteEntry.model_validate(good).roots() == ["b" * 64, "c" * 64]
    for bad in (
        {"greenloop_remote_entry": 1},
        {"snapshot_tree": "../x"},
        {"max_object_bytes": -1},
        {"artifacts": [{"key": "/etc/passwd", "mime": "x", "size_bytes": 1}]},
        {"created_at": float("inf")},
        {"surprise": True},
    ):
        with pytest.raises(ValueError):
            RemoteEntry.model_validate({**good, **bad})
    assert ac_key("a" * 64) != "a" * 64 and len(ac_key("a" * 64)) == 64
    assert ac_key("a" * 64) == ac_key("a" * 64) != ac_key("b" * 64)


def test_configuration_from_the_environment(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GREENLOOP_REMOTE_CACHE", raising=False)
    assert open_remote(store) is None
    monkeypatch.setenv("GREENLOOP_REMOTE_CACHE", "http://u:p@cache.invalid:9/x")
    monkeypatch.setenv("GREENLOOP_REMOTE_CACHE_MODE", "read")
    remote = open_remote(store)
    assert remote is not None and (remote.url, remote.mode) == ("http://cache.invalid:9/x", "read")
    remote.close()
    assert open_remote(store, "") is None  # an empty flag turns an env remote off
    for url, mode in (("ftp://x", None), ("http://x", "write"), ("not a url", None)):
        with pytest.raises(ValueError):
            open_remote(store, url, mode)
    monkeypatch.setenv("GREENLOOP_REMOTE_CACHE_TIMEOUT", "soon")
    with pytest.raises(ValueError):
        open_remote(store)


def test_cli_flags_env_and_stats(nginx: NginxServer, chain: Path, tmp_path: Path) -> None:
    env_a = {"GREENLOOP_CACHE_DIR": str(tmp_path / "cli-a")}
    first = cli("run", "--remote-cache", nginx.url, "--format", "plain", cwd=chain, env=env_a)
    assert first.returncode == 0, first.stderr
    env_b = {"GREENLOOP_CACHE_DIR": str(tmp_path / "cli-b"), "GREENLOOP_REMOTE_CACHE": nginx.url}
    second = cli("run", "--format", "plain", cwd=chain, env=env_b)
    assert second.returncode == 0 and "warning" not in second.stderr, second.stderr
    stats = cli("cache", "stats", "--json", cwd=chain, env=env_b)
    data = json.loads(stats.stdout)
    assert data["remote"]["hits"] == 2 and data["remote"]["bytes_downloaded"] > 3_000_000
    assert data["local"] == {"hits": 0, "misses": 3}
    text = cli("cache", "stats", cwd=chain, env=env_b).stdout
    assert "remote 2 hits, 0 misses, 0 errors in 1 runs" in text
    bad = cli("run", "--remote-cache-mode", "write", cwd=chain, env=env_b)
    assert bad.returncode == 2
    bad = cli("run", "--remote-cache", "ftp://x", cwd=chain, env=env_b)
    assert bad.returncode == 2 and "http:// or https://" in bad.stderr
    down = {**env_b, "GREENLOOP_REMOTE_CACHE": "http://127.0.0.1:9"}
    (chain / "src.txt").write_text("new\n")
    degraded = cli("run", "--format", "plain", cwd=chain, env=down)
    assert degraded.returncode == 0
    assert degraded.stderr.count("greenloop: warning: remote cache") == 1, degraded.stderr


def nginx_statuses(server: NginxServer) -> set[int]:
    return {status for _, _, status in server.requests()}


class HugeBodyServer(ThreadingHTTPServer):
    """Serves another server's entries, but answers every blob with far too many bytes.

    ``declared`` sends ``Content-Length: 10**10``; ``undeclared`` sends no length
    and just streams. Either stops after 2 GB, so an unbounded client ends too.
    """

    def __init__(self, root: Path, declared: bool) -> None:
        super().__init__(("127.0.0.1", 0), _HugeBodyHandler)
        self.root, self.declared = root, declared
        self.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _HugeBodyHandler(BaseHTTPRequestHandler):
    server: HugeBodyServer

    def do_GET(self) -> None:
        path = self.server.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        if "/cas/" not in self.path:
            data = path.read_bytes()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if self.server.declared:
            self.send_header("Content-Length", str(10**10))
        self.end_headers()
        self.close_connection = True
        chunk = b"\0" * (1 << 20)
        try:
            for _ in range(2000):
                self.wfile.write(chunk)
        except OSError:
            return  # the client hung up: what a bounded client does

    def do_HEAD(self) -> None:
        path = self.server.root / self.path.lstrip("/")
        self.send_response(200 if path.is_file() else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("declared", [True, False], ids=["content-length-1e10", "no-length"])
def test_a_body_longer_than_its_object_is_refused_before_it_is_read(
    nginx: NginxServer, stores: tuple[Store, Store], chain: Path, declared: bool
) -> None:
    store_a, store_b = stores
    run(store_a, chain, Remote(store_a, nginx.url))
    server = HugeBodyServer(nginx.root, declared)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = Remote(store_b, server.url, mode="read")
        result, events = run(store_b, chain, remote)
    finally:
        server.shutdown()
        server.server_close()
    assert statuses(result) == {"deps": "passed", "build": "passed", "smoke": "passed"}
    assert logs(events, "smoke") == ["dep-v1", "source one"]
    # The largest object here is 3 MB: no download may read much past that.
    stats = remote.cache.stats
    assert stats.bytes_downloaded < 8 * 3_100_000, stats
    [warning] = remote.warnings
    assert "is larger than" in warning and "treated as a miss" in warning, warning
    assert store_b.verify() == []


def test_an_entry_document_promising_a_huge_body_is_refused_unread(
    stores: tuple[Store, Store], nginx: NginxServer, chain: Path
) -> None:
    store_a, store_b = stores
    run(store_a, chain, Remote(store_a, nginx.url))
    for doc in (nginx.root / "ac").iterdir():
        doc.write_bytes(b" " * (5 << 20))
    remote = Remote(store_b, nginx.url, mode="read")
    result, _ = run(store_b, chain, remote)
    assert statuses(result)["deps"] == "passed"
    [warning] = remote.warnings
    assert "entry document is larger than" in warning
    assert remote.cache.stats.bytes_downloaded == 0  # refused on its Content-Length


@pytest.fixture
def unprivileged_dir() -> Iterator[Path]:
    """A folder outside pytest's (root-only) tree that user ``nobody`` can reach."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run nginx as another user")
    path = Path(tempfile.mkdtemp(prefix="greenloop-nginx-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_403_from_a_server_that_cannot_read_its_folder_is_not_called_credentials(
    unprivileged_dir: Path, store: Store, chain: Path
) -> None:
    server = NginxServer(unprivileged_dir, binary=require_nginx(), user="nobody")
    # A blob folder the server's user may not enter: nginx answers 403 for it.
    (server.root / "cas").mkdir(parents=True)
    with server:
        (server.root / "cas").chmod(0o700)
        os.chown(server.root / "cas", 0, 0)
        remote = Remote(store, server.url)
        result, _ = run(store, chain, remote)
    assert result.status == "passed"
    assert any(status == 403 for _, _, status in server.requests())
    [warning] = remote.warnings
    assert "refused (HTTP 403: credentials or server permissions)" in warning, warning
    assert "credentials refused" not in warning


def test_a_500_from_a_server_that_cannot_write_its_folder_says_so(
    unprivileged_dir: Path, store: Store, chain: Path
) -> None:
    server = NginxServer(unprivileged_dir, binary=require_nginx(), user="nobody")
    with server:
        # nginx's users may read but not write its folder, as after a careless set-up.
        os.chown(server.root, 0, 0)
        server.root.chmod(0o755)
        remote = Remote(store, server.url)
        result, _ = run(store, chain, remote)
    assert result.status == "passed"
    assert any(status == 500 for _, _, status in server.requests())
    [warning] = remote.warnings
    assert "HTTP 500 for PUT" in warning and "needs to write its folder" in warning, warning
