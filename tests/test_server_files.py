"""Path lookup, content types and script injection, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from greenloop.server.inject import (
    CLIENT_PATH,
    client_script,
    client_version,
    holding_page,
    inject,
)
from greenloop.server.safe_paths import Found, NeedsSlash, content_type, lookup
from tests.test_server_support import page, write_site


@pytest.fixture
def root(tmp_path: Path) -> Path:
    site = write_site(
        tmp_path / "site",
        {
            "index.html": page("home"),
            "docs/index.html": page("docs"),
            "docs/guide.html": page("guide"),
            "empty/.keep": "",
            "app.js": "console.log(1)",
        },
    )
    (tmp_path / "secret.txt").write_text("secret")
    (site / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (site / "outside").symlink_to(tmp_path)
    (site / "inside.html").symlink_to(site / "docs" / "guide.html")
    (site / "loop").symlink_to(site / "loop")
    return site.resolve()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/", "index.html"),
        ("/index.html", "index.html"),
        ("/docs/", "docs/index.html"),
        ("/docs/guide.html", "docs/guide.html"),
        ("//docs//guide.html", "docs/guide.html"),
        ("/./docs/./guide.html", "docs/guide.html"),
        ("/inside.html", "docs/guide.html"),  # a symlink that stays inside is fine
    ],
)
def test_lookup_finds_files_inside(root: Path, url: str, expected: str) -> None:
    assert lookup(root, url) == Found(root / expected)


@pytest.mark.parametrize(
    "url",
    [
        "/missing.html",
        "/../secret.txt",
        "/docs/../../secret.txt",
        "/docs/../index.html",  # refused outright, even though it would land inside
        "/escape.txt",
        "/outside/secret.txt",
        "/outside/",
        "/loop",
        "/empty/",  # a directory without index.html
        "/index.html/x",
        "/a\0b",
        "/" + "x" * 5000,
    ],
)
def test_lookup_refuses_anything_else(root: Path, url: str) -> None:
    assert lookup(root, url) is None


def test_a_directory_without_its_slash_needs_one(root: Path) -> None:
    assert lookup(root, "/docs") == NeedsSlash()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.html", "text/html; charset=utf-8"),
        ("a.HTM", "text/html; charset=utf-8"),
        ("a.css", "text/css; charset=utf-8"),
        ("a.js", "text/javascript; charset=utf-8"),
        ("a.mjs", "text/javascript; charset=utf-8"),
        ("a.wasm", "application/wasm"),
        ("a.svg", "image/svg+xml"),
        ("a.png", "image/png"),
        ("a.json", "application/json"),
        ("a.woff2", "font/woff2"),
        ("noext", "application/octet-stream"),
    ],
)
def test_content_types(name: str, expected: str) -> None:
    assert content_type(Path(name)) == expected


def test_inject_goes_before_the_last_body_end() -> None:
    html = b"<html><body><!-- </body> --><p>x</p></BODY >\n</html>"
    out = inject(html, "abc")
    tag = f'<script src="{CLIENT_PATH}?v={client_version()}" data-greenloop-artifact="abc">'
    tag += "</script>"
    assert out == b"<html><body><!-- </body> --><p>x</p>" + tag.encode() + b"</BODY >\n</html>"


def test_inject_appends_without_a_body_end() -> None:
    out = inject(b"<p>fragment</p>", "abc")
    assert out.startswith(b"<p>fragment</p><script ")
    assert out.endswith(b"</script>")


def test_inject_escapes_the_artifact_id() -> None:
    assert b'data-greenloop-artifact="&quot;&gt;"' in inject(b"", '">')


def test_holding_page_and_client_ship_with_the_package() -> None:
    holding = holding_page()
    assert b"Waiting for the first green build" in holding
    assert b'data-greenloop-artifact=""' in holding
    script = client_script()
    assert b"/__greenloop/events" in script
    assert b"greenloop-overlay" in script
