"""A real nginx WebDAV server on loopback, the remote cache the remote tests talk to.

``NginxServer`` writes its own nginx.conf (private prefix, pid file, logs,
temp paths, ``daemon off``) and runs nginx as a child process in single-process
mode, so killing that one process really takes the server down. The tests in
this file only check the server itself; ``bench/remote_cache.py`` uses it too.

Set ``GREENLOOP_REQUIRE_NGINX=1`` (CI does) to fail instead of skipping when
nginx is missing.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx
import pytest

REQUIRE_ENV = "GREENLOOP_REQUIRE_NGINX"


def nginx_binary() -> str | None:
    """Where nginx is installed (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def require_nginx() -> str:
    """The nginx binary, or skip the test (fail under ``GREENLOOP_REQUIRE_NGINX=1``)."""
    binary = nginx_binary()
    if binary is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"nginx is not installed and {REQUIRE_ENV}=1")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return binary


_AS_USER = ["setpriv", "--regid=nogroup", "--clear-groups"]
"""The start of a command running the rest as another user (``--reuid=USER`` follows)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NginxServer:
    """nginx serving ``data/`` under ``directory`` with WebDAV PUT, on a free loopback port.

    With ``user``, nginx runs as that user (root only) and ``directory`` is
    handed to it; every folder above ``directory`` must let that user through.
    """

    def __init__(
        self,
        directory: Path,
        *,
        binary: str,
        token: str | None = None,
        basic: tuple[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
        user: str | None = None,
    ) -> None:
        self.directory = directory
        self.root = directory / "data"
        self.access_log = directory / "access.log"
        self.binary = binary
        self.token = token
        self.basic = basic
        self.tls = tls
        self.user = user
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> NginxServer:
        """Start nginx and wait until it accepts connections (a few tries for port races)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            self.port = free_port()
            conf = self._write_conf()
            # Run as another user: root reads and writes every folder, a real server does not.
            drop = [] if self.user is None else [*_AS_USER, f"--reuid={self.user}"]
            if self.user is not None:
                shutil.chown(self.directory, self.user)
                for path in self.directory.rglob("*"):
                    shutil.chown(path, self.user)
            self.proc = subprocess.Popen(
                [*drop, self.binary, "-p", str(self.directory), "-c", str(conf), "-e", "error.log"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if self._wait_listening():
                return self
            self.stop()
        log = (self.directory / "error.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"nginx did not start; error.log ends:\n{log}")

    def stop(self) -> None:
        """Stop nginx (SIGKILL: it runs as one process, so this takes everything down)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> NginxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def files(self) -> list[Path]:
        """Every file the server stores, relative to its root, sorted."""
        return sorted(p.relative_to(self.root) for p in self.root.rglob("*") if p.is_file())

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request logged so far."""
        if not self.access_log.exists():
            return []
        out = []
        for line in self.access_log.read_text().splitlines():
            method, path, status = line.split(" ")
            out.append((method, path, int(status)))
        return out

    def _wait_listening(self) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def _write_conf(self) -> Path:
        d = self.directory
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (d / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        checks = ""
        if self.token is not None:
            checks = f'if ($http_authorization != "Bearer {self.token}") {{ return 401; }}'
        elif self.basic is not None:
            pair = base64.b64encode(f"{self.basic[0]}:{self.basic[1]}".encode()).decode()
            checks = f'if ($http_authorization != "Basic {pair}") {{ return 401; }}'
        listen = f"127.0.0.1:{self.port}"
        tls = ""
        if self.tls is not None:
            cert, key = self.tls
            listen += " ssl"
            tls = f"ssl_certificate {cert}; ssl_certificate_key {key};"
        conf = d / "nginx.conf"
        conf.write_text(
            f"""
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format plain '$request_method $uri $status';
    access_log {d}/access.log plain;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    client_max_body_size 0;
    keepalive_requests 100000;
    default_type application/octet-stream;
    server {{
        listen {listen};
        {tls}
        root {self.root};
        {checks}
        location / {{
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
    }}
}}
"""
        )
        return conf


def test_nginx_stores_and_serves_blobs(tmp_path: Path) -> None:
    with NginxServer(tmp_path / "nginx", binary=require_nginx()) as server:
        with httpx.Client(base_url=server.url) as client:
            assert client.head("/team/cas/abc").status_code == 404
            assert client.put("/team/cas/abc", content=b"hello").status_code in (201, 204)
            assert client.get("/team/cas/abc").content == b"hello"
            assert client.head("/team/cas/abc").status_code == 200
        assert server.files() == [Path("team/cas/abc")]
        assert ("PUT", "/team/cas/abc", 201) in server.requests()


def test_nginx_checks_a_bearer_token(tmp_path: Path) -> None:
    with NginxServer(tmp_path / "nginx", binary=require_nginx(), token="s3cret") as server:
        assert httpx.get(server.url + "/x").status_code == 401
        ok = httpx.get(server.url + "/x", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 404


def test_stopped_nginx_refuses_connections(tmp_path: Path) -> None:
    server = NginxServer(tmp_path / "nginx", binary=require_nginx()).start()
    url = server.url
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/x")
