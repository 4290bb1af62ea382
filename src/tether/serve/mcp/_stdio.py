"""MCP over stdin/stdout, where a line that is no JSON-RPC message is answered.

The SDK's ``stdio_server`` drops a line it cannot read (it logs it at debug level, and
its dispatcher ignores it), so a client that sent one waits for ever for an answer.
JSON-RPC 2.0 answers such a line: -32700 (Parse error) for one that is not JSON,
-32600 (Invalid Request) for JSON that is no request, notification or response, with
the message's ``id`` when it can be read and ``null`` otherwise. Tether hands the SDK
its own stdin: the lines it cannot read are answered here, through the transport's
write stream (so each answer is one whole line among the others, in order), logged on
stderr, and never reach the SDK; the lines after them are served as usual.

Each request passed on is noted until answered (``StdioRequests``), so a shutdown
answers every request it received, the client's close of stdin included.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import IO, Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import (
    CONNECTION_CLOSED,
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCResponse,
    RequestId,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError

from tether._clock import wait_event
from tether._codec import json_kind
from tether.mcp_tasks import unknown_task

log = logging.getLogger("tether.mcp")

#: How much of a bad line the warning on stderr shows.
SHOWN_CHARS = 200


async def run_stdio(server: MCPServer, requests: StdioRequests | None = None) -> None:
    """``server.run_stdio_async()``, with Tether's stdin, until ``requests`` is released
    (``StdioRequests``: by its owner, once each request received was answered; without
    one, when the client closes stdin)."""
    lowlevel = server._lowlevel_server
    requests = requests or StdioRequests(release_at_eof=True)
    with _claimed_stdin() as wire:
        lines = _CheckedLines(_StdinLines(wire), requests)
        # stdin given, stdout not: the SDK still points fd 1 at stderr while serving
        # (what the app prints must not reach the protocol's channel).
        async with stdio_server(stdin=lines) as (read_stream, write_stream):  # type: ignore[arg-type]
            answers = _Answers(write_stream, requests)
            lines.answer_to(answers)
            await lowlevel.run(read_stream, answers,
                               lowlevel.create_initialization_options())


class StdioRequests:
    """The requests received on stdin and not answered yet, for a shutdown that answers
    each one. The SDK's loop ends when its stdin ends and cancels the requests still
    being served, each answered -32000 "Connection closed" at once: a tool call whose
    run had started, or would have ended within the worker's drain, was told nothing
    of it. Here stdin's end sets ``eof``, and the lines end only at ``release()``: the
    owner drains, lets the handlers answer, ``cut()``s what is left with an error
    saying why, then releases."""

    def __init__(self, *, release_at_eof: bool = False) -> None:
        #: Set when the client closes stdin (MCP's stdio shutdown).
        self.eof = asyncio.Event()
        self._release_at_eof = release_at_eof
        self._released = asyncio.Event()
        self._pending: dict[RequestId, str] = {}  # request id -> method
        self._cut: set[RequestId] = set()  # answered by cut(): the SDK's answer is dropped
        self._sending: set[RequestId] = set()  # answers handed to the writer now
        self._idle = asyncio.Event()
        self._idle.set()
        self._replies: Any = None
        #: What stopped the server (``stop()``), once it stops serving new requests.
        self.stopping: str | None = None

    def received(self, request_id: RequestId, method: str) -> None:
        self._pending[request_id] = method
        self._idle.clear()

    def cancelled(self, request_id: Any) -> None:
        """The client cancelled the request (``notifications/cancelled``): the SDK does
        not answer it, and nothing waits for its answer."""
        if isinstance(request_id, str | int) and not isinstance(request_id, bool):
            self._forget(request_id)

    def answering(self, request_id: RequestId) -> bool:
        """The answer to ``request_id`` is being sent; False if ``cut()`` answered it
        already (this one must not be sent: one answer per request)."""
        if request_id in self._cut:
            return False
        self._sending.add(request_id)
        return True

    def answered(self, request_id: RequestId) -> None:
        """The answer to ``request_id`` was handed to the transport's writer."""
        self._sending.discard(request_id)
        self._forget(request_id)

    def _forget(self, request_id: RequestId) -> None:
        self._pending.pop(request_id, None)
        if not self._pending:
            self._idle.set()

    def ended(self) -> None:
        """The client closed stdin."""
        self.eof.set()
        if self._release_at_eof:
            self._released.set()

    async def settled(self, timeout: float) -> bool:
        """Wait until every request received was answered (True), for up to
        ``timeout`` seconds (False: some were not)."""
        return await wait_event(self._idle, timeout)

    def stop(self, why: str) -> None:
        """Serve no request read from now on: each is answered at once that the server
        is shutting down (``why``: what stopped it), as ``cut()`` answers."""
        self.stopping = why

    def refusal(self, request_id: RequestId, method: str) -> JSONRPCError:
        """The answer to a request the shutdown does not serve: -32000 (the code the SDK
        answers a request its shutdown cancels), with ``data: {"shuttingDown": true}``."""
        return JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(
            code=CONNECTION_CLOSED, message=f"{method}: tether mcp is shutting down "
            f"({self.stopping or 'stopped'}){_AGAIN.get(method, _AGAIN[''])}",
            data={"shuttingDown": True}))

    async def cut(self) -> None:
        """Answer each request still unanswered (``refusal()``), but one whose answer is
        being sent; the handler's own answer, if it comes, is not sent."""
        for request_id, method in list(self._pending.items()):
            if request_id in self._sending:
                continue
            self._cut.add(request_id)
            log.warning("tether mcp: answered %s (request %r) that it is shutting down: "
                        "it had not finished", method, request_id)
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                await self._replies.send(SessionMessage(self.refusal(request_id, method)))
            self._forget(request_id)

    def release(self) -> None:
        """End the lines read: the SDK's loop ends, its answers written."""
        self._released.set()

    async def wait_released(self) -> None:
        await self._released.wait()


#: What a request the shutdown does not answer may do (by method; "" any other).
_AGAIN = {
    "": ": send it again to a server on the same store",
    "tools/call": ": a run this call may have started goes on (`tether runs "
                  "--workflow NAME` lists it); call again with the same idempotency key "
                  "(_meta) to a server on the same store for its task or result, "
                  "without one a call starts another run",
}


class _Answers:
    """The transport's write stream, noting each answer to a request (``StdioRequests``)
    and dropping one that ``cut()`` answered already."""

    def __init__(self, inner: Any, requests: StdioRequests) -> None:
        self._inner = inner
        self._requests = requests
        requests._replies = inner

    async def send(self, item: SessionMessage) -> None:
        message = item.message
        request_id = (message.id if isinstance(message, JSONRPCResponse | JSONRPCError)
                      else None)
        if request_id is None:
            await self._inner.send(item)
            return
        if not self._requests.answering(request_id):
            return
        try:
            await self._inner.send(item)
        finally:
            # (Noted once the transport's writer took it: one still on its way when
            # the SDK's loop ends is cancelled with the handler that sends it.)
            self._requests.answered(request_id)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _Answers:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self._inner.__aexit__(*exc)  # type: ignore[no-any-return]


class _StdinLines:
    """The lines of the wire, read by a daemon thread: a read cannot be interrupted, and
    after a stop signal the thread may wait for ever for the client's next line, which
    neither the end of serving nor the process's exit waits for. ``None`` at EOF."""

    def __init__(self, wire: IO[bytes]) -> None:
        self._wire = wire
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._started = False

    async def next(self) -> str | None:
        if not self._started:
            self._started = True
            threading.Thread(target=self._read, args=(asyncio.get_running_loop(),),
                             daemon=True, name="tether-mcp-stdin").start()
        return await self._lines.get()

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        def put(line: str | None) -> None:
            with contextlib.suppress(RuntimeError):  # (the loop closed: nobody reads)
                loop.call_soon_threadsafe(self._lines.put_nowait, line)

        try:
            for raw in iter(self._wire.readline, b""):
                put(raw.decode("utf-8", errors="replace"))
        except (OSError, ValueError):  # (the wire broke, or was closed: its end)
            pass
        put(None)


@contextlib.contextmanager
def _claimed_stdin() -> Iterator[IO[bytes]]:
    """The protocol's stdin, read from a private duplicate of fd 0 while fd 0 itself
    reads the null device, as the SDK's ``stdio_server`` does when it claims stdin
    (it skips that for a stdin it is given): a child process, or a step that reads
    stdin, must not take the client's messages. Fd 0 is given back on exit; the
    duplicate is never closed, since the thread reading it may still wait on it (it
    cannot be interrupted) and must not read a recycled descriptor."""
    try:
        backed = sys.stdin is not None and sys.stdin.buffer.fileno() == 0
    except (AttributeError, OSError, ValueError):
        backed = False
    if not backed:
        yield sys.stdin.buffer
        return
    try:
        private = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError:
        yield sys.stdin.buffer
        return
    try:
        diversion = os.open(os.devnull, os.O_RDONLY)
        try:
            os.dup2(diversion, 0)
        finally:
            os.close(diversion)
    except OSError:  # (fd 0 still reads the wire: serve it in place)
        yield sys.stdin.buffer
        return
    try:
        yield os.fdopen(private, "rb", closefd=False)
    finally:
        with contextlib.suppress(OSError):
            os.dup2(private, 0)


class _CheckedLines:
    """The lines of stdin that are JSON-RPC messages, for the SDK's reader; a line that
    is none is logged and answered with its JSON-RPC error (``answer_to`` names the
    transport's write stream), and the next line is read. Each request passed on is
    noted in ``requests``; at EOF the lines end when ``requests`` is released."""

    def __init__(self, lines: _StdinLines, requests: StdioRequests) -> None:
        self._lines = lines
        self._requests = requests
        self._replies: Any = None
        self._ready = anyio.Event()

    def answer_to(self, write_stream: Any) -> None:
        self._replies = write_stream
        self._ready.set()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._checked()

    async def _next(self) -> str | None:
        """The next line; None at EOF (once released) or when released."""
        released = asyncio.ensure_future(self._requests.wait_released())
        line = asyncio.ensure_future(self._lines.next())
        try:
            await asyncio.wait([released, line], return_when=asyncio.FIRST_COMPLETED)
        finally:
            released.cancel()
            if not line.done():
                line.cancel()
        if not line.done() or line.cancelled():
            return None
        if line.result() is None:
            self._requests.ended()
            await self._requests.wait_released()
        return line.result()

    async def _checked(self) -> AsyncIterator[str]:
        while (line := await self._next()) is not None:
            if not line.strip():
                continue  # (a blank line is no message: nothing waits for an answer)
            error = bad_line_error(line)
            if error is None:
                request = self._note(line)
                if request is None or self._requests.stopping is None:
                    yield line
                    continue
                # (read after a stop signal: not served, told why)
                error = self._requests.refusal(*request)
                log.warning("tether mcp: answered %s (request %r) that it is shutting "
                            "down: it came after the stop", request[1], request[0])
                await self._ready.wait()
                with contextlib.suppress(anyio.ClosedResourceError,
                                         anyio.BrokenResourceError):
                    await self._replies.send(SessionMessage(error))
                continue
            shown = line.rstrip("\r\n")
            if len(shown) > SHOWN_CHARS:
                shown = f"{shown[:SHOWN_CHARS]}... ({len(shown)} characters)"
            if _response_shaped(line):
                # (Nothing waits for an answer to a response, and answering one could
                # start two peers answering each other's errors for ever.)
                log.warning("tether mcp: ignored a line on stdin that is no JSON-RPC "
                            "response (%s): %r", error.error.data, shown)
                continue
            log.warning("tether mcp: answered %d (%s: %s) to a line on stdin that is no "
                        "JSON-RPC message: %r", error.error.code, error.error.message,
                        error.error.data, shown)
            await self._ready.wait()
            try:
                await self._replies.send(SessionMessage(error))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return  # (the server has ended: nobody reads its answers)

    def _note(self, line: str) -> tuple[RequestId, str] | None:
        """A request's id and method; a client's cancel of a request is noted (nothing
        waits for that request's answer then)."""
        with contextlib.suppress(ValueError, RecursionError):
            value = json.loads(line)
            if not isinstance(value, dict) or not isinstance(value.get("method"), str):
                return None
            if "id" in value:
                if self._requests.stopping is None:
                    self._requests.received(value["id"], value["method"])
                return value["id"], value["method"]
            if value["method"] == "notifications/cancelled":
                params = value.get("params")
                if isinstance(params, dict):
                    self._requests.cancelled(params.get("requestId"))
        return None


def bad_line_error(line: str | bytes, what: str = "line") -> JSONRPCError | None:
    """The JSON-RPC error that answers ``line`` (a line of stdin, or a POST's body:
    ``what`` says which), or None if it is a message the SDK reads (as its stdio
    transport validates one) and answers."""
    try:
        jsonrpc_message_adapter.validate_json(line, by_name=False)
        valid = True
    except ValidationError:
        valid = False
    try:
        value = json.loads(line)
    except (ValueError, RecursionError) as exc:
        # (RecursionError: JSON nested too deep to parse; ValueError also covers an
        # integer literal too long to convert.)
        if valid:
            return None
        return JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(
            code=PARSE_ERROR, message="Parse error", data=f"the {what} is not JSON: {exc}"))
    if valid and not _unreadable_id(value):
        return None
    if not valid and not _unreadable_id(value):
        surrogate = _lone_surrogate(value)
        if surrogate is not None:
            return _surrogate_error(value, *surrogate)
    # (A request whose "id" is null, or no string or integer, passes the SDK's
    # validation as a notification, which is never answered: JSON-RPC 2.0 says a
    # notification has no "id" member, and MCP that an id is never null.)
    request_id = None
    if isinstance(value, dict) and not _unreadable_id(value):
        request_id = value.get("id")
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(
        code=INVALID_REQUEST, message="Invalid Request", data=_why_invalid(value, what)))


def _lone_surrogate(value: Any) -> tuple[str, str] | None:
    """``(where, the string)`` of the first string of a JSON-RPC request ``value`` that
    holds a lone surrogate (``"\\ud800"``: valid JSON, no Unicode text), when the
    request is one otherwise; None if it holds none or is no request. The SDK's reader
    parses a line with pydantic's JSON parser, which refuses such a string, so the line
    reads as no JSON-RPC message at all."""
    try:
        jsonrpc_message_adapter.validate_python(value, by_name=False)
    except ValidationError:
        return None

    def find(node: Any, where: str) -> tuple[str, str] | None:
        if isinstance(node, str):
            if _surrogate_in(node):
                return where, node
            return None
        items = (node.items() if isinstance(node, dict)
                 else enumerate(node) if isinstance(node, list) else ())
        for key, item in items:
            found = (find(key, f"{where} (a key)") if isinstance(key, str) else None) or find(
                item, f"{where}.{key}" if isinstance(key, str) else f"{where}[{key}]")
            if found is not None:
                return found
        return None

    return find(value.get("params"), "params") if isinstance(value, dict) else None


def _surrogate_error(value: dict[str, Any], where: str, text: str) -> JSONRPCError:
    """The answer to a request one of whose strings holds a lone surrogate: a task id
    is a task no run can be (-32602 "Task not found", as over HTTP); anything else is
    -32602 naming where the string is."""
    method = value.get("method")
    request_id = value.get("id")
    shown_text = json.dumps(text[:SHOWN_CHARS])
    if method in _TASK_METHODS and where == "params.taskId":
        error = unknown_task(text)
        return JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(
            code=error.error.code, message=error.error.message))
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(
        code=INVALID_PARAMS, message=(
            f"Invalid request parameters: {method}: {where}: the string {shown_text} "
            "holds a lone surrogate, which is no Unicode text (nothing can keep it): "
            "send text"), data={"invalid": [{"field": where.removeprefix("params."),
                                             "problem": "a lone surrogate"}]}))


#: The Tasks extension's methods, whose ``taskId`` no run can hold when it is no text.
_TASK_METHODS = frozenset({"tasks/get", "tasks/update", "tasks/cancel"})


def _response_shaped(line: str) -> bool:
    """Whether ``line`` is a JSON object with a "result" or an "error" and no
    "method": meant as a response."""
    with contextlib.suppress(ValueError, RecursionError):
        value = json.loads(line)
        return isinstance(value, dict) and "method" not in value and (
            "result" in value or "error" in value)
    return False


def _unreadable_id(value: Any) -> bool:
    """Whether ``value`` is a request (it has a "method") whose "id" member is no
    request id (a string or an integer)."""
    if not isinstance(value, dict) or "id" not in value or "method" not in value:
        return False
    found = value["id"]
    return (not isinstance(found, str | int) or isinstance(found, bool)
            or (isinstance(found, str) and _surrogate_in(found)))


def _surrogate_in(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (valid as a JSON escape, ``"\\ud800"``,
    but no Unicode text: it cannot be written back as UTF-8)."""
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _why_invalid(value: Any, what: str) -> str:
    """What makes the JSON ``value`` no JSON-RPC 2.0 message, in a sentence."""
    if isinstance(value, list):
        return (f"a {what} is one JSON-RPC message, a JSON object: batches (arrays) are "
                "not supported")
    if not isinstance(value, dict):
        return f"a {what} is one JSON-RPC message, a JSON object, not {json_kind(value)}"
    if value.get("jsonrpc") != "2.0":
        return 'a JSON-RPC message has "jsonrpc": "2.0"'
    if "method" in value:
        if not isinstance(value["method"], str):
            return '"method" must be a string'
        if _unreadable_id(value):
            if isinstance(value["id"], str):  # (an answer could not carry it back)
                return ('"id" holds a lone surrogate, which is no Unicode text: an id is '
                        'text or an integer')
            return (f'"id" must be a string or an integer, not {json_kind(value["id"])} (a '
                    'notification has no "id")')
        if "params" in value and not isinstance(value["params"], dict):
            return f'"params" must be an object, not {json_kind(value["params"])}'
        return "the request's fields are not those of a JSON-RPC 2.0 request"
    if "result" in value or "error" in value:
        return "a response's id or error is not those of a JSON-RPC 2.0 response"
    return 'a JSON-RPC request has a "method" (a response a "result" or an "error")'
