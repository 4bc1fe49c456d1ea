"""The live-reload script tag every served HTML page gets, and the holding page.

The tag loads ``/__greenloop/client.js`` (same origin, so a page whose CSP
allows ``'self'`` scripts still works) and tells it which artifact the page
came from; the client reloads as soon as the server serves another one.

The script's URL carries a hash of its content (``?v=…``), so the browser may
keep it: a live reload then refetches only the page, never the script, and a
different script can only ever come under a different URL.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from html import escape
from importlib.resources import files

CLIENT_PATH = "/__greenloop/client.js"

_BODY_END = re.compile(rb"</body\s*>", re.IGNORECASE)


def script_tag(artifact_id: str) -> bytes:
    """The ``<script>`` element for a page served from artifact ``artifact_id`` ("" = none)."""
    return (
        f'<script src="{client_url()}" data-greenloop-artifact="{escape(artifact_id)}"></script>'
    ).encode()


@cache
def client_version() -> str:
    """A hash of ``client.js``: the ``v`` query that makes its URL safe to cache."""
    return hashlib.sha256(client_script()).hexdigest()[:16]


def client_url() -> str:
    """The versioned URL pages load the live-reload script from."""
    return f"{CLIENT_PATH}?v={client_version()}"


def inject(html: bytes, artifact_id: str) -> bytes:
    """``html`` with the script inserted before its last ``</body>``, or appended if none."""
    tag = script_tag(artifact_id)
    # The last one: an earlier "</body>" may sit in a comment or a script string.
    matches = list(_BODY_END.finditer(html))
    if not matches:
        return html + tag
    at = matches[-1].start()
    return html[:at] + tag + html[at:]


@cache
def client_script() -> bytes:
    """The browser side of live reload (``client.js``)."""
    return files("greenloop.server").joinpath("client.js").read_bytes()


def holding_page() -> bytes:
    """The page served before the first green build; it reloads itself when one arrives."""
    return inject(_holding_template(), "")


@cache
def _holding_template() -> bytes:
    return files("greenloop.server").joinpath("holding.html").read_bytes()
