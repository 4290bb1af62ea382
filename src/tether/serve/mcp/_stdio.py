"""MCP over stdin/stdout, where a line that is no JSON-RPC message is answered.

The SDK's ``stdio_server`` drops a line it cannot read (it logs it at debug level, and
its dispatcher ignores it), so a client that sent one waits for ever for an answer.
JSON-RPC 2.0 answers such a line: -32700 (Parse error) for one that is not JSON,
-32600 (Invalid Request) for JSON that is no request, notification or response, with
the message's ``id`` when it can be read and ``null`` otherwise. Tether hands the SDK
its own stdin: the lines it cannot read are answered here, through the transport's
write stream (so each answer is one whole line among the others, in order), logged on
stderr, and never reach the SDK; the lines after them are served as usual.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from io import TextIOWrapper
from typing import IO, Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import (
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError

from tether._codec import json_kind

log = logging.getLogger("tether.mcp")

#: How much of a bad line the warning on stderr shows.
SHOWN_CHARS = 200


async def run_stdio(server: MCPServer) -> None:
    """``server.run_stdio_async()``, with Tether's stdin: until the client closes it."""
    lowlevel = server._lowlevel_server
    with _claimed_stdin() as wire:
        lines = _CheckedLines(anyio.wrap_file(
            _UnownedText(wire, encoding="utf-8", errors="replace")))
        # stdin given, stdout not: the SDK still points fd 1 at stderr while serving
        # (what the app prints must not reach the protocol's channel).
        async with stdio_server(stdin=lines) as (read_stream, write_stream):  # type: ignore[arg-type]
            lines.answer_to(write_stream)
            await lowlevel.run(read_stream, write_stream,
                               lowlevel.create_initialization_options())


class _UnownedText(TextIOWrapper):
    """A text layer whose close leaves its buffer open (as the SDK's): the buffer may
    be ``sys.stdin``'s own, which closing at garbage collection would close for the
    rest of the process."""

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.detach()


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
    transport's write stream), and the next line is read."""

    def __init__(self, lines: AsyncIterable[str]) -> None:
        self._lines = lines
        self._replies: Any = None
        self._ready = anyio.Event()

    def answer_to(self, write_stream: Any) -> None:
        self._replies = write_stream
        self._ready.set()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._checked()

    async def _checked(self) -> AsyncIterator[str]:
        async for line in self._lines:
            if not line.strip():
                continue  # (a blank line is no message: nothing waits for an answer)
            error = bad_line_error(line)
            if error is None:
                yield line
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
    # (A request whose "id" is null, or no string or integer, passes the SDK's
    # validation as a notification, which is never answered: JSON-RPC 2.0 says a
    # notification has no "id" member, and MCP that an id is never null.)
    request_id = None
    if isinstance(value, dict) and not _unreadable_id(value):
        request_id = value.get("id")
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(
        code=INVALID_REQUEST, message="Invalid Request", data=_why_invalid(value, what)))


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
    return not isinstance(found, str | int) or isinstance(found, bool)


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
            return (f'"id" must be a string or an integer, not {json_kind(value["id"])} (a '
                    'notification has no "id")')
        if "params" in value and not isinstance(value["params"], dict):
            return f'"params" must be an object, not {json_kind(value["params"])}'
        return "the request's fields are not those of a JSON-RPC 2.0 request"
    if "result" in value or "error" in value:
        return "a response's id or error is not those of a JSON-RPC 2.0 response"
    return 'a JSON-RPC request has a "method" (a response a "result" or an "error")'
