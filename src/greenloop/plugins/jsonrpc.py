"""JSON-RPC 2.0 over a pair of byte streams, one message per line.

Framing: every message is one UTF-8 JSON object on one line, terminated by
``\\n``; JSON never needs a raw newline, so none appears inside a message.
Batches (JSON arrays) are not part of this framing.

A :class:`Connection` is symmetric: either side can call the other. It sends
requests and notifications, matches responses to requests by ``id``, and
serves the peer's requests and notifications with the handlers it was given —
also while one of its own calls is waiting for an answer. Three threads share
the work: the caller's, a reader (which only parses lines and resolves
responses) and a dispatcher (which runs handlers one at a time, in arrival
order), so a slow handler never delays a response and a handler may itself
call the peer.

Anything the peer writes that is not a JSON-RPC 2.0 message is fatal: the
connection fails with :class:`ProtocolError` and every waiting call with it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import threading
from collections.abc import Callable, Mapping
from typing import IO, Any, Final

PARSE_ERROR: Final = -32700
"""Invalid JSON was received."""
INVALID_REQUEST: Final = -32600
"""The JSON sent is not a valid request object."""
METHOD_NOT_FOUND: Final = -32601
"""The method does not exist or is not available."""
INVALID_PARAMS: Final = -32602
"""Invalid method parameters."""
INTERNAL_ERROR: Final = -32603
"""Internal JSON-RPC error (a handler failed unexpectedly)."""

MAX_LINE: Final = 64 << 20
"""Longest line accepted from the peer, in bytes; a longer one is a protocol error."""

Handler = Callable[[Any], Any]
"""Serves one method: called with the request's ``params`` (``None`` when absent)."""


class JsonRpcError(Exception):
    """Base class of everything a :class:`Connection` raises."""


class RpcError(JsonRpcError):
    """A JSON-RPC error object.

    Raised by :meth:`Call.result` when the peer answered with an error, and
    raised by a handler to answer the peer with this error.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        """The error object as it goes on the wire."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class ProtocolError(JsonRpcError):
    """The peer wrote something that is not a JSON-RPC 2.0 message on one line."""


class ConnectionClosed(JsonRpcError):
    """The peer closed its end (or the connection was closed) before answering."""


class CallTimeout(JsonRpcError, TimeoutError):
    """No answer arrived in time."""


class Call:
    """A request in flight; :meth:`result` waits for its answer."""

    def __init__(self, connection: Connection, call_id: int, method: str) -> None:
        self.id = call_id
        self.method = method
        self._connection = connection
        self._answered = False
        self._result: Any = None
        self._error: JsonRpcError | None = None
        # How many incoming messages were queued before the answer: those are
        # served before the answer is released, so a log line the peer wrote
        # before answering is never reported after the answer.
        self._barrier = 0

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (forever with ``None``); True once answered."""
        return self._connection._wait_for(self, timeout)

    def done(self) -> bool:
        """True once answered (or failed), without waiting."""
        return self.wait(0)

    def result(self, timeout: float | None = None) -> Any:
        """The answer's ``result``; raises :class:`RpcError`, :class:`CallTimeout`, etc."""
        if not self.wait(timeout):
            raise CallTimeout(f"no answer to {self.method!r} within {timeout:g}s")
        if self._error is not None:
            raise self._error
        return self._result

    def _settle(self, result: Any, error: JsonRpcError | None, barrier: int) -> None:
        self._answered = True
        self._result = result
        self._error = error
        self._barrier = barrier


class Connection:
    """A thread-safe JSON-RPC 2.0 endpoint over ``reader`` (incoming) and ``writer`` (outgoing).

    ``handlers`` maps method names to functions serving the peer's requests
    and notifications. A handler returns the result (anything JSON can
    encode) or raises :class:`RpcError`; any other exception is answered as an
    internal error. Errors in notification handlers cannot be answered and go
    to ``on_notification_error``.

    The connection owns both streams: :meth:`close` closes ``writer``, and
    ``reader`` is closed once the peer hangs up.
    """

    def __init__(
        self,
        reader: IO[bytes],
        writer: IO[bytes],
        handlers: Mapping[str, Handler] | None = None,
        *,
        on_notification_error: Callable[[str, BaseException], None] | None = None,
        max_line: int = MAX_LINE,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._handlers = dict(handlers or {})
        self._on_notification_error = on_notification_error
        self._max_line = max_line
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: dict[int, Call] = {}
        self._abandoned: set[int] = set()
        self._failure: JsonRpcError | None = None
        self._received = 0  # incoming requests/notifications queued so far
        self._served = 0  # ... and handled so far
        self._inbox: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._reader_thread = threading.Thread(target=self._read_loop, daemon=True)
        self._dispatcher = threading.Thread(target=self._dispatch_loop, daemon=True)
        self._started = False

    # -- public API ---------------------------------------------------------------------

    def start(self) -> None:
        """Start reading and serving; call once, before the first request."""
        with self._cond:
            if self._started:
                return
            self._started = True
        self._reader_thread.start()
        self._dispatcher.start()

    @property
    def failure(self) -> JsonRpcError | None:
        """Why the connection stopped (``None`` while it is healthy)."""
        with self._cond:
            return self._failure

    def call(self, method: str, params: Any = None) -> Call:
        """Send a request and return at once; :meth:`Call.result` waits for the answer."""
        with self._cond:
            call = Call(self, next(self._ids), method)
            if self._failure is not None:
                call._settle(None, self._failure, self._received)
                return call
            self._pending[call.id] = call
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": call.id, "method": method}
        if params is not None:
            message["params"] = params
        try:
            self._send(message)
        except ConnectionClosed as e:
            self._fail(e)
        return call

    def request(self, method: str, params: Any = None, timeout: float | None = None) -> Any:
        """Send a request and wait for its result (see :meth:`Call.result`)."""
        call = self.call(method, params)
        try:
            return call.result(timeout)
        except CallTimeout:
            self.abandon(call)
            raise

    def notify(self, method: str, params: Any = None) -> None:
        """Send a notification (a request that gets no answer)."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._send(message)

    def abandon(self, call: Call) -> None:
        """Stop waiting for ``call``; a late answer to it is then ignored, not an error."""
        with self._cond:
            if self._pending.pop(call.id, None) is not None:
                self._abandoned.add(call.id)

    def close(self) -> None:
        """Close the outgoing stream (the peer sees end of input); waiting calls fail."""
        with self._write_lock, contextlib.suppress(OSError):
            self._writer.close()
        self._fail(ConnectionClosed("connection closed"))

    def join(self, timeout: float | None = None) -> None:
        """Wait for the reader and dispatcher threads to end (after the peer hung up)."""
        for thread in (self._reader_thread, self._dispatcher):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout)

    # -- sending ------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        try:
            text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (e.g. from a non-UTF-8 environment variable) cannot be
            # UTF-8; the ASCII form escapes it and still parses everywhere.
            data = json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode()
        with self._write_lock:
            try:
                self._writer.write(data + b"\n")
                self._writer.flush()
            except (OSError, ValueError) as e:  # ValueError: write to a closed file
                raise ConnectionClosed(f"cannot write to the peer: {e}") from e

    def _answer(self, call_id: Any, result: Any = None, error: RpcError | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": call_id}
        if error is not None:
            message["error"] = error.to_json()
        else:
            message["result"] = result
        try:
            self._send(message)
        except ConnectionClosed:
            pass  # the peer is gone; the reader reports that
        except (TypeError, ValueError) as e:  # the handler returned something JSON cannot hold
            self._answer(call_id, error=RpcError(INTERNAL_ERROR, f"unencodable result: {e}"))

    # -- receiving ----------------------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            while True:
                try:
                    raw = self._reader.readline(self._max_line + 1)
                except (OSError, ValueError) as e:
                    raise ConnectionClosed(f"cannot read from the peer: {e}") from e
                if not raw:
                    raise ConnectionClosed("the peer closed its output")
                if len(raw) > self._max_line:
                    raise ProtocolError(f"line longer than {self._max_line} bytes")
                if raw.strip():  # tolerate blank lines
                    self._receive(raw)
        except JsonRpcError as e:
            # Fail first: telling the peer may block if it is not reading its input.
            self._fail(e)
            if isinstance(e, ProtocolError):
                self._answer(None, error=RpcError(_code_for(e), str(e)))
        except Exception as e:
            # A reader that dies without failing the connection would leave every
            # waiting call waiting for ever: whatever it was, it is the peer's garbage.
            self._fail(ProtocolError(f"unreadable message ({type(e).__name__}: {e})"))
        finally:
            # Only this thread reads the stream, so only it may close it without racing.
            with contextlib.suppress(OSError, ValueError):
                self._reader.close()
            self._inbox.put(None)

    def _receive(self, raw: bytes) -> None:
        try:
            message = json.loads(raw.decode("utf-8"))
        except RecursionError:
            raise _ParseError(f"JSON nested too deeply: {_excerpt(raw)}") from None
        except ValueError as e:
            # JSONDecodeError and UnicodeDecodeError, and a number with more digits
            # than Python converts (a plain ValueError).
            raise _ParseError(f"not JSON: {e}: {_excerpt(raw)}") from None
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise ProtocolError(f"not a JSON-RPC 2.0 message: {_excerpt(raw)}")
        if "method" in message:
            method, params = message["method"], message.get("params")
            if not isinstance(method, str):
                raise ProtocolError(f"method is not a string: {_excerpt(raw)}")
            if "id" in message and not _valid_id(message["id"]):
                raise ProtocolError(f"bad request id: {_excerpt(raw)}")
            if params is not None and not isinstance(params, dict | list):
                raise ProtocolError(f"params must be an object or array: {_excerpt(raw)}")
            with self._cond:
                self._received += 1
            self._inbox.put(message)
            return
        self._resolve(message, raw)

    def _resolve(self, message: dict[str, Any], raw: bytes) -> None:
        call_id = message.get("id")
        has_result, has_error = "result" in message, "error" in message
        if call_id is None and has_error and not has_result:
            raise ProtocolError(f"the peer could not read a message: {_excerpt(raw)}")
        if has_result == has_error or not _valid_id(call_id):
            raise ProtocolError(f"neither a request nor a response: {_excerpt(raw)}")
        error: RpcError | None = None
        if has_error:
            body = message["error"]
            if (
                not isinstance(body, dict)
                or not _is_int(body.get("code"))
                or not isinstance(body.get("message"), str)
            ):
                raise ProtocolError(f"malformed error object: {_excerpt(raw)}")
            error = RpcError(body["code"], body["message"], body.get("data"))
        with self._cond:
            # We only ever send integer ids, so any other id answers nothing of ours.
            call = self._pending.pop(call_id, None) if isinstance(call_id, int) else None
            if call is None:
                if isinstance(call_id, int) and call_id in self._abandoned:
                    self._abandoned.discard(call_id)
                    return
                raise ProtocolError(f"answer to a request never sent (id {call_id!r})")
            call._settle(message.get("result"), error, self._received)
            self._cond.notify_all()

    def _dispatch_loop(self) -> None:
        while (message := self._inbox.get()) is not None:
            try:
                self._serve(message)
            finally:
                with self._cond:
                    self._served += 1
                    self._cond.notify_all()

    def _serve(self, message: dict[str, Any]) -> None:
        method, params = message["method"], message.get("params")
        is_request = "id" in message
        handler = self._handlers.get(method)
        try:
            if handler is None:
                raise RpcError(METHOD_NOT_FOUND, f"unknown method {method!r}")
            result = handler(params)
        except Exception as e:
            if not is_request:
                if self._on_notification_error is not None:
                    self._on_notification_error(method, e)
                return
            error = (
                e
                if isinstance(e, RpcError)
                else RpcError(INTERNAL_ERROR, f"{type(e).__name__}: {e}")
            )
            self._answer(message["id"], error=error)
            return
        if is_request:
            self._answer(message["id"], result)

    # -- state --------------------------------------------------------------------------

    def _fail(self, error: JsonRpcError) -> None:
        with self._cond:
            if self._failure is None:
                self._failure = error
            for call in self._pending.values():
                call._settle(None, self._failure, self._received)
            self._pending.clear()
            self._cond.notify_all()

    def _wait_for(self, call: Call, timeout: float | None) -> bool:
        def settled() -> bool:
            if not call._answered:
                return False
            # The dispatcher itself may be the caller (a handler calling the peer);
            # waiting for it to drain would wait for ourselves.
            if threading.current_thread() is self._dispatcher or not self._dispatcher.is_alive():
                return True
            return self._served >= call._barrier

        with self._cond:
            return self._cond.wait_for(settled, timeout)


class _ParseError(ProtocolError):
    """The line is not JSON (answered with ``PARSE_ERROR``)."""


def _code_for(error: ProtocolError) -> int:
    return PARSE_ERROR if isinstance(error, _ParseError) else INVALID_REQUEST


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or _is_int(value)


def _excerpt(raw: bytes, limit: int = 120) -> str:
    text = raw.decode("utf-8", "replace").rstrip("\r\n")
    return repr(text if len(text) <= limit else text[:limit] + "…")
