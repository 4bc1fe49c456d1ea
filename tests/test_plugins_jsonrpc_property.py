"""Property test: any bytes a plugin writes on stdout give a message or a clear error.

The reader (:class:`~greenloop.plugins.jsonrpc.Connection`) gets arbitrary
bytes, mostly shaped like JSON-RPC lines so that the interesting branches are
reached. Every outcome must be one of: a message served or an answer
delivered, or the connection failing with :class:`ProtocolError` (or
:class:`ConnectionClosed` at the end of the input) -- never another
exception in its threads, and never a call left waiting for ever.
"""

from __future__ import annotations

import io
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenloop.plugins import stdio
from greenloop.plugins.jsonrpc import (
    Connection,
    ConnectionClosed,
    JsonRpcError,
    ProtocolError,
    RpcError,
)
from greenloop.protocol.errors import PluginFailure

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_ids = st.sampled_from([1, 2, 0, -1, "1", None, True, 1.0, [1], {"id": 1}])


@st.composite
def _messages(draw: st.DrawFn) -> dict[str, Any]:
    """Something near a JSON-RPC message: every field may be missing, extra or of the wrong type."""
    message: dict[str, Any] = {}
    if draw(st.booleans()):
        message["jsonrpc"] = draw(st.sampled_from(["2.0", "2.0", "1.0", 2, None]))
    for field, values in (
        ("id", _ids),
        ("method", st.sampled_from(["echo", "boom", "nope", 7, None])),
        ("params", _json),
        ("result", _json),
        (
            "error",
            st.fixed_dictionaries(
                {"code": st.sampled_from([-32000, 1, "x", True]), "message": _scalars}
            )
            | _json,
        ),
    ):
        if draw(st.booleans()):
            message[field] = draw(values)
    return message


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


# Hostile lines: deep nesting, huge numbers, bad UTF-8, NUL, CR, lone surrogates.
_hostile = st.sampled_from(
    [
        b"[" * 5000 + b"\n",
        b'{"jsonrpc":"2.0","id":1,"result":' + b'{"a":' * 5000 + b"\n",
        b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"result":1}\n',
        b'{"jsonrpc":"2.0","id":1,"result":1e999999}\n',
        b'{"jsonrpc":"2.0","id":1,"result":NaN}\n',
        b'{"jsonrpc":"2.0","method":"echo","params":{"a":"\\ud800"}}\n',
        b"\xff\xfe\x00\n",
        b"\x00" * 10 + b"\n",
        b'{"jsonrpc":"2.0","id":1,"result":null}\r\n',
        b"\n\n   \n",
    ]
)
_lines = st.lists(
    _messages().map(_encode) | _hostile | st.binary(max_size=40),
    min_size=1,
    max_size=6,
)


@pytest.fixture
def thread_errors() -> Iterator[list[BaseException]]:
    """Exceptions that escaped any thread while the test ran (there must be none)."""
    caught: list[BaseException] = []
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        caught.append(args.exc_value or Exception(str(args.exc_type)))

    threading.excepthook = hook
    yield caught
    threading.excepthook = previous


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=_lines)
def test_any_bytes_give_messages_or_a_protocol_error(
    lines: list[bytes], thread_errors: list[BaseException]
) -> None:
    served: list[Any] = []

    def echo(params: Any) -> Any:
        served.append(params)
        return params

    def boom(params: Any) -> Any:
        raise ValueError("handler failure")

    out = io.BytesIO()
    conn = Connection(io.BytesIO(b"".join(lines)), out, {"echo": echo, "boom": boom})
    call = conn.call("ours")  # id 1, in flight while the bytes arrive
    conn.start()
    conn.join(60)  # a guard against a hang, not a measurement
    assert not thread_errors, thread_errors
    # The input ended, so the reader is done and the connection failed, clearly.
    assert conn.failure is not None
    assert isinstance(conn.failure, ProtocolError | ConnectionClosed), repr(conn.failure)
    # Our call was answered or failed with the connection: never left waiting.
    assert call.wait(60)
    try:
        call.result(0)
    except (RpcError, ProtocolError, ConnectionClosed):
        pass
    except JsonRpcError as e:  # pragma: no cover - the assertion says what it was
        pytest.fail(f"unexpected {type(e).__name__}: {e}")
    # Whatever we wrote back is JSON-RPC, one message a line.
    for line in out.getvalue().splitlines():
        assert json.loads(line)["jsonrpc"] == "2.0"


_PLUGIN = """#!{python}
import sys
sys.stdin.buffer.readline()
sys.stdout.buffer.write(open({data!r}, "rb").read())
sys.stdout.buffer.flush()
"""
# It exits once it has written: a plugin that says nothing and waits would only time out.


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=_lines)
def test_a_plugin_writing_any_bytes_fails_clearly_or_says_hello(
    lines: list[bytes], tmp_path: Path, thread_errors: list[BaseException]
) -> None:
    data = tmp_path / "stdout.bin"
    data.write_bytes(b"".join(lines))
    path = tmp_path / "greenloop-hook-fuzz"
    path.write_text(_PLUGIN.format(python=sys.executable, data=str(data)))
    path.chmod(0o755)
    try:
        hello = stdio.probe("fuzz", "hook", path, timeout=30)
    except PluginFailure as e:
        assert e.error.plugin == "fuzz"
        assert e.error.kind in (
            "garbage",
            "crashed",
            "invalid_result",
            "protocol_mismatch",
            "error",
        )
    else:
        assert hello.kind == "hook"
    assert not thread_errors, thread_errors
