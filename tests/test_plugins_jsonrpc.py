"""The JSON-RPC 2.0 line-framed connection, over real OS pipes."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from typing import IO, Any

import pytest

from greenloop.plugins.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    CallTimeout,
    Connection,
    ConnectionClosed,
    Handler,
    ProtocolError,
    RpcError,
)


def _pipe() -> tuple[IO[bytes], IO[bytes]]:
    r, w = os.pipe()
    return os.fdopen(r, "rb"), os.fdopen(w, "wb")


class _Pair:
    """Two connected endpoints, ``a`` and ``b``."""

    def __init__(self, a: dict[str, Handler], b: dict[str, Handler]) -> None:
        a_in, b_out = _pipe()
        b_in, a_out = _pipe()
        self.a = Connection(a_in, a_out, a)
        self.b = Connection(b_in, b_out, b)
        self.a.start()
        self.b.start()

    def close(self) -> None:
        self.a.close()
        self.b.close()
        self.a.join(5)
        self.b.join(5)


@pytest.fixture
def pair_of() -> Iterator[Any]:
    made: list[_Pair] = []

    def make(a: dict[str, Handler] | None = None, b: dict[str, Handler] | None = None) -> _Pair:
        made.append(_Pair(a or {}, b or {}))
        return made[-1]

    yield make
    for pair in made:
        pair.close()


class _Raw:
    """A connection whose peer is raw bytes we write and read ourselves."""

    def __init__(self, handlers: dict[str, Handler] | None = None, max_line: int = 1 << 20):
        conn_in, self.to_conn = _pipe()
        self.from_conn, conn_out = _pipe()
        self.conn = Connection(conn_in, conn_out, handlers, max_line=max_line)
        self.conn.start()

    def write(self, data: bytes) -> None:
        self.to_conn.write(data)
        self.to_conn.flush()

    def read(self) -> dict[str, Any]:
        line = self.from_conn.readline()
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        message: dict[str, Any] = json.loads(line)
        return message

    def close(self) -> None:
        self.to_conn.close()
        self.conn.close()
        self.conn.join(5)
        self.from_conn.close()


@pytest.fixture
def raw() -> Iterator[Any]:
    made: list[_Raw] = []

    def make(handlers: dict[str, Handler] | None = None, max_line: int = 1 << 20) -> _Raw:
        made.append(_Raw(handlers, max_line))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_request_response_and_error_objects(pair_of: Any) -> None:
    def fail(params: Any) -> Any:
        raise RpcError(-32000, "no docker", {"hint": "install it"})

    def boom(params: Any) -> Any:
        raise KeyError("x")

    pair = pair_of(b={"add": lambda p: p["x"] + p["y"], "fail": fail, "boom": boom})
    assert pair.a.request("add", {"x": 2, "y": 3}, timeout=10) == 5
    with pytest.raises(RpcError) as e:
        pair.a.request("fail", timeout=10)
    assert (e.value.code, e.value.message, e.value.data) == (
        -32000,
        "no docker",
        {"hint": "install it"},
    )
    with pytest.raises(RpcError) as e:
        pair.a.request("nope", timeout=10)
    assert e.value.code == METHOD_NOT_FOUND
    with pytest.raises(RpcError) as e:
        pair.a.request("boom", timeout=10)
    assert e.value.code == INTERNAL_ERROR and "KeyError" in e.value.message
    # The connection survives errors.
    assert pair.a.request("add", {"x": 1, "y": 1}, timeout=10) == 2


def test_peer_can_call_back_while_a_request_is_in_flight(pair_of: Any) -> None:
    box: dict[str, Any] = {}

    def outer(params: Any) -> Any:
        # Served by b while a is waiting for this very answer.
        return box["b"].request("inner", {"n": params["n"]}, timeout=10) * 10

    pair = pair_of(a={"inner": lambda p: p["n"] + 1}, b={"outer": outer})
    box["b"] = pair.b
    assert pair.a.request("outer", {"n": 4}, timeout=10) == 50


def test_notifications_sent_before_an_answer_are_served_before_it_returns(pair_of: Any) -> None:
    seen: list[int] = []
    box: dict[str, Any] = {}

    def work(params: Any) -> str:
        for i in range(200):
            box["b"].notify("log", {"i": i})
        return "done"

    pair = pair_of(a={"log": lambda p: seen.append(p["i"])}, b={"work": work})
    box["b"] = pair.b
    assert pair.a.request("work", timeout=10) == "done"
    assert seen == list(range(200))


def test_concurrent_callers_get_their_own_answers(pair_of: Any) -> None:
    pair = pair_of(b={"echo": lambda p: p})
    results: dict[int, Any] = {}

    def caller(n: int) -> None:
        for i in range(20):
            results[n * 100 + i] = pair.a.request("echo", {"n": n, "i": i}, timeout=10)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {n * 100 + i: {"n": n, "i": i} for n in range(8) for i in range(20)}


def test_every_message_is_one_line(raw: Any) -> None:
    r = raw()
    call = r.conn.call("say", {"text": "two\nlines and \u00e9"})
    message = r.read()
    assert message == {
        "jsonrpc": "2.0",
        "id": call.id,
        "method": "say",
        "params": {"text": "two\nlines and \u00e9"},
    }
    r.write(json.dumps({"jsonrpc": "2.0", "id": call.id, "result": None}).encode() + b"\n")
    assert call.result(10) is None


def test_peer_requests_get_answers_with_their_id(raw: Any) -> None:
    r = raw({"double": lambda p: p[0] * 2})
    r.write(b'{"jsonrpc":"2.0","id":"abc","method":"double","params":[21]}\n')
    assert r.read() == {"jsonrpc": "2.0", "id": "abc", "result": 42}
    r.write(b'{"jsonrpc":"2.0","id":7,"method":"missing"}\n')
    answer = r.read()
    assert answer["id"] == 7 and answer["error"]["code"] == METHOD_NOT_FOUND


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"hello, I am not JSON\n", PARSE_ERROR),
        (b'{"jsonrpc": "1.0", "id": 1, "result": 1}\n', INVALID_REQUEST),
        (b'[{"jsonrpc": "2.0", "id": 1, "result": 1}]\n', INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "id": 1, "result": 1, "error": {}}\n', INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "id": 1, "error": {"message": "no code"}}\n', INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "id": 999, "result": 1}\n', INVALID_REQUEST),
        (b"\xff\xfe\n", PARSE_ERROR),
        # Found by the property test: these killed the reader and left calls waiting.
        (b"[" * 5000 + b"\n", PARSE_ERROR),
        (b'{"jsonrpc": "2.0", "id": ' + b"9" * 5000 + b', "result": 1}\n', PARSE_ERROR),
    ],
)
def test_garbage_fails_waiting_calls_and_is_answered(raw: Any, line: bytes, code: int) -> None:
    r = raw()
    call = r.conn.call("anything")
    r.read()
    r.write(line)
    with pytest.raises(ProtocolError):
        call.result(10)
    assert r.read()["error"]["code"] == code
    assert isinstance(r.conn.failure, ProtocolError)
    # Later calls fail at once rather than hang.
    with pytest.raises(ProtocolError):
        r.conn.request("again", timeout=10)


def test_overlong_line_is_garbage(raw: Any) -> None:
    r = raw(max_line=100)
    call = r.conn.call("anything")
    r.write(b'{"jsonrpc": "2.0", "id": 1, "result": "' + b"x" * 200 + b'"}\n')
    with pytest.raises(ProtocolError, match="longer than"):
        call.result(10)


def test_peer_hanging_up_fails_waiting_calls(raw: Any) -> None:
    r = raw()
    call = r.conn.call("anything")
    r.to_conn.close()
    with pytest.raises(ConnectionClosed):
        call.result(10)


def test_timeout_then_late_answer_is_ignored(raw: Any) -> None:
    r = raw()
    with pytest.raises(CallTimeout):
        r.conn.request("slow", timeout=0.05)
    late = r.read()
    r.write(json.dumps({"jsonrpc": "2.0", "id": late["id"], "result": 1}).encode() + b"\n")
    call = r.conn.call("next")
    nxt = r.read()
    r.write(json.dumps({"jsonrpc": "2.0", "id": nxt["id"], "result": 2}).encode() + b"\n")
    assert call.result(10) == 2
    assert r.conn.failure is None
