"""How the client and the daemon frame their messages: a 4-byte length, then a
``marshal``-ed dict of plain values.

Not JSON: its import costs a fast command several milliseconds, and both ends
are always the same interpreter (the daemon checks the client's identity).
Only processes of the daemon's own user can connect (a 0700 folder, and the
peer's uid is checked), so nothing untrusted is ever unmarshalled.
"""

from __future__ import annotations

import marshal

TYPE_CHECKING = False  # not typing's: the client imports this before every command
if TYPE_CHECKING:
    from typing import Any

_HEADER = 4


def frame(message: dict[str, Any]) -> bytes:
    """One message, ready to send."""
    body = marshal.dumps(message)
    return len(body).to_bytes(_HEADER, "big") + body


def unframe(buffer: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """The whole messages at the start of ``buffer``, and the bytes left over."""
    messages = []
    while len(buffer) >= _HEADER:
        end = _HEADER + int.from_bytes(buffer[:_HEADER], "big")
        if len(buffer) < end:
            break
        message = marshal.loads(buffer[_HEADER:end])
        if not isinstance(message, dict):
            raise ValueError("a daemon message must be a dict")
        messages.append(message)
        buffer = buffer[end:]
    return messages, buffer
