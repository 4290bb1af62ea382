"""The MCP face's Streamable HTTP endpoint, where a request the transport refuses is
told why in a JSON-RPC error.

The SDK's transport answers some bad requests with a bare status or a line of text,
which its own client reports as "Server returned an error response" (it reads a
JSON-RPC error from a non-2xx body, nothing else): a POST whose ``Content-Type`` is not
``application/json`` (400 "Invalid Content-Type header"), one whose ``Accept`` lacks
``application/json`` or ``text/event-stream`` (406 with no body, on the 2026-07-28
protocol), a body over the limit (413 "Request body too large"). On the handshake
protocols (no ``MCP-Protocol-Version`` header, or a 2025 one) it answered JSON that is
no JSON-RPC request with -32602 and pydantic's text, and a request whose id is null
with 202, as a notification, never answered. Each is answered here with its status and
a JSON-RPC error saying what to send instead; every other request goes to the SDK.

A request let in with a token (``tether serve --token-file``) is answered only while
that token counts: one removed from the token file ends the answers still being sent
(a synchronous ``tools/call`` waiting for its run, its progress notifications, a
``subscriptions/listen`` stream of task notifications), as it ends the run event
streams (``tether.serve._api``'s same check), with a JSON-RPC error saying why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
from mcp.server.streamable_http import check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import INVALID_REQUEST, ErrorData, JSONRPCError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from tether._tokens import RELOAD_EVERY
from tether.errors import shown_json
from tether.serve._api import _still_allowed
from tether.serve.mcp._stdio import bad_line_error

log = logging.getLogger("tether.mcp")

#: What a request whose token was removed while it was answered gets instead of the
#: rest of its answer.
TOKEN_REMOVED = ("unauthorized: the token this request was made with was removed from "
                 "the server's token file, and nothing more is sent for it: send a valid "
                 "token (Authorization: Bearer TOKEN)")


class CheckedHttp:
    """ASGI app: the SDK's Streamable HTTP endpoint (``inner``) behind the checks above.
    ``max_body`` is the largest body read (the session manager's limit)."""

    def __init__(self, inner: StreamableHTTPASGIApp, max_body: int) -> None:
        self.inner = inner
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # (Tokens are ``tether serve``'s, in its Starlette app's state: an ASGI server
        # or an app of the user's that mounts this has none, and no "app" in its scope.)
        allowed = (_still_allowed(Request(scope))
                   if scope["type"] == "http" and "app" in scope else None)
        if allowed is None:  # (open mode, or not behind tether serve: no token to remove)
            await self._checked(scope, receive, send)
        else:
            await _while_allowed(self._checked, allowed, scope, receive, send)

    async def _checked(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.inner(scope, receive, send)
            return
        request = Request(scope)
        content_type = request.headers.get("content-type")
        if not (content_type or "").lower().startswith("application/json"):
            await _refuse(415, "Unsupported Media Type: an MCP request's Content-Type is "
                          f"application/json (this one's is {_shown(content_type)})",
                          scope, receive, send)
            return
        has_json, has_sse = check_accept_headers(request)
        if not (has_json and has_sse):
            await _refuse(406, "Not Acceptable: an MCP request's Accept header lists both "
                          "application/json and text/event-stream (this one's is "
                          f"{_shown(request.headers.get('accept'))})", scope, receive, send)
            return
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            await _refuse(413, self._too_large(), scope, receive, send)
            return
        body = bytearray()
        messages: list[Message] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                messages.append(message)
                break
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await _refuse(413, self._too_large(), scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        version = request.headers.get(MCP_PROTOCOL_VERSION_HEADER.lower())
        if version is None or version in HANDSHAKE_PROTOCOL_VERSIONS:
            # (The 2026-07-28 entry answers these itself, with -32700 or -32600.)
            error = bad_line_error(bytes(body), "body")
            if error is not None:
                await _answer(error, 400, scope, receive, send)
                return
        replay = [{"type": "http.request", "body": bytes(body), "more_body": False},
                  *messages]

        async def replayed() -> Message:
            return replay.pop(0) if replay else await receive()

        await self.inner(scope, replayed, send)

    def _too_large(self) -> str:
        return f"Payload Too Large: the request body is over {self.max_body} bytes"


async def _while_allowed(answer: Callable[[Scope, Receive, Send], Awaitable[None]],
                         allowed: Callable[[], bool], scope: Scope, receive: Receive,
                         send: Send) -> None:
    """``answer`` the request while ``allowed`` (its token still counts), asked before
    each part of the answer is sent and every ``RELOAD_EVERY`` seconds meanwhile (the
    token file is looked at no more often). Once it answers False the answer is
    cancelled (a synchronous call's wait, a task notification stream) and ends with a
    JSON-RPC error (``TOKEN_REMOVED``): an event of its stream if one was begun, else a
    401. Until 2026-12-08 such an answer went on: a listen stream sent the task's
    notifications (its result included) for as long as the task went on, a
    synchronous call its progress and its result."""
    body = bytearray()
    started: dict[str, Any] = {}
    revoked = False
    sent = False  # (the answer's last part)
    failure: list[Exception] = []

    async def received() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            body.extend(message.get("body", b""))
        return message

    async with anyio.create_task_group() as group:

        def end() -> None:
            nonlocal revoked
            revoked = True
            group.cancel_scope.cancel()

        async def gated(message: Message) -> None:
            if message["type"] == "http.response.body" and not allowed():
                end()
                await anyio.lowlevel.checkpoint()  # (cancelled here)
                return  # (nothing sent, whichever task sends)
            if message["type"] == "http.response.start":
                started.update(message)
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                nonlocal sent
                sent = True

        async def answering() -> None:
            try:
                await answer(scope, received, gated)
            except Exception as exc:  # raised below, as it would be without the gate
                failure.append(exc)
            finally:
                group.cancel_scope.cancel()

        async def watching() -> None:
            while True:
                await anyio.sleep(RELOAD_EVERY)
                if not allowed():
                    end()
                    return

        group.start_soon(answering)
        group.start_soon(watching)
    if failure and not revoked:  # (once revoked, a part torn down may raise: no matter)
        raise failure[0]
    if not revoked or sent:
        return
    log.info("MCP request ended: the token it was made with no longer counts")
    try:
        request = json.loads(bytes(body))
    except (ValueError, RecursionError):
        request = None
    error: dict[str, Any] = {"jsonrpc": "2.0", "id": None, "error": {
        "code": INVALID_REQUEST, "message": TOKEN_REMOVED,
        "data": {"httpStatus": 401, "error": "unauthorized"}}}
    rid = request.get("id") if isinstance(request, dict) else None
    if isinstance(rid, (str, int)) and not isinstance(rid, bool):
        error["id"] = rid
    text = json.dumps(error, separators=(",", ":"))
    if not started:
        await Response(text, status_code=401, media_type="application/json",
                       headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
        return
    sse = any(k.lower() == b"content-type" and v.startswith(b"text/event-stream")
              for k, v in started.get("headers") or [])
    last = f"event: message\r\ndata: {text}\r\n\r\n".encode() if sse else b""
    await send({"type": "http.response.body", "body": last, "more_body": False})


def _shown(header: str | None) -> str:
    """A header's value as the refusal names it (``shown_json``: ``"text/plain"``)."""
    return "missing" if header is None else shown_json(header)


async def _refuse(status: int, message: str, scope: Scope, receive: Receive,
                  send: Send) -> None:
    await _answer(JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(
        code=INVALID_REQUEST, message=message)), status, scope, receive, send)


async def _answer(error: JSONRPCError, status: int, scope: Scope, receive: Receive,
                  send: Send) -> None:
    """``error`` as the body of a ``status`` answer (``id`` kept when null, as JSON-RPC
    requires; the SDK's client reads it as the request's error)."""
    body: dict[str, Any] = error.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["id"] = error.id
    await Response(json.dumps(body, separators=(",", ":")), status_code=status,
                   media_type="application/json")(scope, receive, send)
