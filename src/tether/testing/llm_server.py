"""A scripted LLM server on 127.0.0.1 that speaks the OpenAI and Anthropic HTTP APIs.

Point a real client at it (``base_url``) and it answers each chat request with the next
step of a script: a reply (text, tool calls, token usage) or a fault (an HTTP error, a
hang, a reset connection, a slow or broken stream). It records every request. It is a
plain asyncio HTTP/1.1 server with keep-alive and chunked SSE streaming, with no
dependency beyond the standard library.

Endpoints:

- ``POST /v1/chat/completions``: OpenAI Chat Completions, streaming or not.
- ``POST /v1/messages``: Anthropic Messages, streaming or not.
- ``GET /v1/models``: the model list (Anthropic's shape if ``anthropic-version`` is sent).
- ``GET /_tether/requests``: the request log as JSON; ``DELETE`` clears it.
- ``POST /_tether/script``: a new script: a JSON list of steps (replaces the rest of
  the script), or ``{"steps": [...], "mode": "replace" | "append", "outage": {...}}``.

In Python::

    async with ScriptedLLMServer(script=[
        Reply("Hello!", input_tokens=12, output_tokens=3),
        Reply(tool_calls=[{"name": "weather", "arguments": {"city": "Paris"}}]),
        Fault.rate_limit(retry_after=2),
    ]) as server:
        client = OpenAIChat("gpt-4.1-mini", base_url=server.base_url)
        ...
        assert server.requests[0].headers["idempotency-key"] == "k1"

From another process (workers started as subprocesses)::

    python -m tether.testing.llm_server --script script.json [--port 0] [--host 127.0.0.1]

prints its base URL (``http://127.0.0.1:PORT/v1``) as the first line of stdout, then
serves until killed (SIGTERM or SIGINT end it cleanly).

Script format
-------------

A script is a list of steps, taken in order, one per chat request (either protocol; a
step is rendered in the protocol of the request that takes it). The JSON file holds
either that list or ``{"steps": [...], "outage": {...}}``. A step is a JSON object;
the Python classes ``Reply`` and ``Fault`` take the same keys.

A reply::

    {"text": "Hello!"}
    {"text": "...", "input_tokens": 12, "output_tokens": 3, "model": "gpt-4.1-2025-04-14"}
    {"tool_calls": [{"name": "weather", "arguments": {"city": "Paris"}}]}
    {"tool_calls": [{"name": "weather", "arguments": "{not json", "id": "call_7"}]}
    {"json": {"answer": 42}}              (text is the JSON dump, for output schemas)
    {"text": "...", "finish_reason": "length"}          (Anthropic: max_tokens)
    {"text": "...", "delay": 0.5}                       (wait before answering)
    {"text": "a b c d", "chunk_delay": 0.2}             (slow stream: wait per chunk)
    {"fault": "slow_stream", "text": "a b c", "chunk_delay": 0.2}   (the same)
    {"text": "a b c d", "reset_after_chunks": 2}        (stream 2 chunks, then drop)
    {"text": "a b c d", "error_after_chunks": 2}        (stream 2 chunks, then an
                                                         in-stream error event)

``arguments`` is a JSON object, or a string sent verbatim (to test malformed
arguments). Token counts default to an estimate (about 4 characters per token). Text
is streamed in chunks of ``chunk_words`` words (default 1). Without ``chunk_delay``,
a non-streaming answer to a slow-stream step waits the sum of the chunk delays.

A fault::

    {"status": 429, "retry_after": 2}         (Retry-After: 2; a float or an HTTP-date)
    {"status": 500}  {"status": 503}  {"status": 529}
    {"status": 400, "message": "max_tokens is too large"}
    {"status": 401, "message": "invalid x-api-key"}
    {"fault": "hang"}          (read the request, never answer; ends when the client
                                gives up and closes the connection)
    {"fault": "reset"}         (close the connection abruptly, TCP RST, no response)
    {"fault": "truncate"}      (headers and half the body, then close)

Error bodies have each provider's real shape (``{"error": {"message", "type", ...}}``
for OpenAI, ``{"type": "error", "error": {"type", "message"}}`` for Anthropic).

Any step may carry ``"times": N`` to answer N requests. When the script runs out the
server answers 500 "script exhausted" (and a ``responder``, if given, answers instead),
so a test notices an extra call.

An outage window (server level, not a step) answers ``status`` (503) to every chat
request for ``seconds`` after the server started or after the first chat request,
without consuming steps::

    {"outage": {"seconds": 2.0, "since": "first_request", "status": 503, "retry_after": 1}}

In Python a step may also be a callable: it receives the ``RecordedRequest`` and returns
a step (``Reply``, ``Fault`` or dict), or an awaitable of one. ``responder=`` is such a
callable that answers every request after the script runs out.

Each ``RecordedRequest`` has ``method``, ``path``, ``headers`` (lower-case names,
``idempotency-key`` among them), ``body`` (parsed JSON), ``time`` (epoch seconds),
``protocol`` (``openai`` / ``anthropic`` / ``models``), ``status`` (the status given,
``None`` for hang/reset), ``outcome`` (``reply``, ``fault:<kind>``, ``outage``,
``exhausted``, ``step_error`` (a callable step raised), ``invalid``, ``unauthorized``)
and ``step`` (the index of the step in the script as set, when one answered).

With ``strict=True`` (default) the server checks requests the way the real APIs do
(roles, tool results matching earlier tool calls, required fields) and answers 400
when they are wrong, so a client's conversion bugs show up in tests. With ``api_key=``
it answers 401 to a request without that key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import inspect
import json
import math
import re
import signal
import socket
import struct
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "Fault",
    "Outage",
    "RecordedRequest",
    "Reply",
    "ScriptedLLMServer",
    "Step",
    "main",
    "slow_stream",
]

DEFAULT_MODELS = ("gpt-4.1-mini", "gpt-4.1", "claude-sonnet-4-5", "claude-haiku-4-5")


@dataclass(frozen=True)
class Reply:
    """A scripted answer. See the module docstring for the meaning of each field."""

    text: str | None = None
    tool_calls: Sequence[Mapping[str, Any]] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str | None = None
    finish_reason: str | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    chunk_words: int = 1
    reset_after_chunks: int | None = None
    error_after_chunks: int | None = None
    times: int = 1


FaultKind = Literal["status", "hang", "reset", "truncate"]


@dataclass(frozen=True)
class Fault:
    """A scripted failure: an HTTP error (``kind="status"``), or ``hang``, ``reset``,
    ``truncate``. Build one with the class methods."""

    kind: FaultKind = "status"
    status: int = 500
    message: str | None = None
    retry_after: float | str | None = None
    delay: float = 0.0
    times: int = 1

    @classmethod
    def http(cls, status: int, message: str | None = None, *,
             retry_after: float | str | None = None, times: int = 1) -> Fault:
        return cls("status", status, message, retry_after, times=times)

    @classmethod
    def rate_limit(cls, retry_after: float | str | None = 1.0, message: str | None = None,
                   *, times: int = 1) -> Fault:
        return cls("status", 429, message, retry_after, times=times)

    @classmethod
    def hang(cls, *, times: int = 1) -> Fault:
        return cls("hang", times=times)

    @classmethod
    def reset(cls, *, times: int = 1) -> Fault:
        return cls("reset", times=times)

    @classmethod
    def truncate(cls, *, times: int = 1) -> Fault:
        return cls("truncate", times=times)


def slow_stream(text: str, chunk_delay: float = 0.1, **kwargs: Any) -> Reply:
    """A reply streamed one word every ``chunk_delay`` seconds."""
    return Reply(text, chunk_delay=chunk_delay, **kwargs)


@dataclass(frozen=True)
class Outage:
    """Answer ``status`` to every chat request for ``seconds`` after the server started
    (``since="start"``) or after the first chat request (``since="first_request"``)."""

    seconds: float
    since: Literal["start", "first_request"] = "first_request"
    status: int = 503
    retry_after: float | str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Outage:
        since = d.get("since", "first_request")
        if since not in ("start", "first_request"):
            raise ValueError(f"outage.since must be 'start' or 'first_request', not {since!r}")
        return cls(float(d["seconds"]), since, int(d.get("status", 503)), d.get("retry_after"))


@dataclass
class RecordedRequest:
    """One request the server received, and what it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float
    protocol: str = ""
    status: int | None = None
    outcome: str = ""
    step: int | None = None

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))

    def last_user_text(self) -> str:
        """The text of the last user message (either protocol), or ``""``."""
        messages = self.body.get("messages") if isinstance(self.body, dict) else None
        for msg in reversed(messages or []):
            if isinstance(msg, dict) and msg.get("role") == "user":
                return _text_of(msg.get("content"))
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "headers": self.headers,
                "body": self.body, "time": self.time, "protocol": self.protocol,
                "status": self.status, "outcome": self.outcome, "step": self.step}


StepLike = Reply | Fault | Mapping[str, Any]
Step = StepLike | Callable[[RecordedRequest], StepLike | Awaitable[StepLike]]


def parse_step(d: Mapping[str, Any]) -> Reply | Fault:
    """A step from its JSON form (see the module docstring).

    Raises:
        ValueError: unknown keys or an unknown fault.
    """
    d = dict(d)
    times = int(d.pop("times", 1))
    fault = d.pop("fault", None)
    if fault == "slow_stream":
        d.setdefault("chunk_delay", 0.1)
        fault = None
    if fault is not None:
        if fault not in ("hang", "reset", "truncate"):
            raise ValueError(f"unknown fault {fault!r} (hang, reset, truncate, slow_stream)")
        _no_extra(d, {"delay"}, f"fault {fault!r}")
        return Fault(fault, delay=float(d.get("delay", 0.0)), times=times)
    if "status" in d:
        _no_extra(d, {"status", "message", "retry_after", "delay"}, "an HTTP fault")
        return Fault("status", int(d["status"]), d.get("message"), d.get("retry_after"),
                     float(d.get("delay", 0.0)), times)
    if "json" in d:
        d["text"] = json.dumps(d.pop("json"))
    known = {f for f in Reply.__dataclass_fields__ if f != "times"}
    _no_extra(d, known, "a reply")
    if "tool_calls" in d:
        d["tool_calls"] = tuple(d["tool_calls"])
    return Reply(**d, times=times)


def _no_extra(d: Mapping[str, Any], allowed: set[str], what: str) -> None:
    extra = set(d) - allowed
    if extra:
        raise ValueError(f"unknown keys for {what}: {', '.join(sorted(extra))} "
                         f"(allowed: {', '.join(sorted(allowed))})")


def load_script(data: Any) -> tuple[list[Reply | Fault], Outage | None]:
    """Steps and outage from the JSON form (a list, or ``{"steps", "outage"}``)."""
    outage = None
    if isinstance(data, Mapping):
        if data.get("outage") is not None:
            outage = Outage.from_dict(data["outage"])
        data = data.get("steps", [])
    if not isinstance(data, list):
        raise ValueError("a script is a JSON list of steps, or {\"steps\": [...]}")
    return [parse_step(s) for s in data], outage


class _Exhausted(Exception):
    pass


class _Conn:
    """One client connection: the stream pair and whether it was cut."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.aborted = False

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def abort(self) -> None:
        """Cut the connection with a TCP RST (SO_LINGER 0), no FIN, no response."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        self.aborted = True


class ScriptedLLMServer:
    """The server. ``await start()`` (or ``async with``), then point clients at
    ``base_url`` (OpenAI convention, ends in ``/v1``) or ``anthropic_base_url``
    (Anthropic convention, the root; Tether's client accepts either).

    Args:
        script: the steps (see the module docstring).
        responder: answers every request once the script is exhausted.
        outage: an outage window (``Outage`` or its dict form).
        host, port: where to listen (port 0: a free port).
        models: what ``GET /v1/models`` lists.
        api_key: if set, requests without this key get 401.
        strict: check requests as the real APIs do (400 when wrong).
    """

    def __init__(self, script: Iterable[Step] = (), *,
                 responder: Callable[[RecordedRequest], StepLike | Awaitable[StepLike]]
                 | None = None,
                 outage: Outage | Mapping[str, Any] | None = None, host: str = "127.0.0.1",
                 port: int = 0, models: Sequence[str] = DEFAULT_MODELS,
                 api_key: str | None = None, strict: bool = True) -> None:
        self.host = host
        self.port = port
        self.models = list(models)
        self.api_key = api_key
        self.strict = strict
        self.responder = responder
        self.requests: list[RecordedRequest] = []
        self._script: list[tuple[int, Step, int]] = []   # (index, step, times left)
        self._script_len = 0
        self.set_script(script)
        self.outage = Outage.from_dict(outage) if isinstance(outage, Mapping) else outage
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._started_at = 0.0
        self._first_chat_at: float | None = None
        self._seq = 0

    # -- script ----------------------------------------------------------------------

    def set_script(self, steps: Iterable[Step], *, append: bool = False) -> None:
        """Replace the steps not yet taken (or, with ``append``, add after them)."""
        if not append:
            self._script = []
        for step in steps:
            if isinstance(step, Mapping):
                step = parse_step(step)
            times = step.times if isinstance(step, (Reply, Fault)) else 1
            if times < 1:
                raise ValueError(f"times must be >= 1, got {times}")
            self._script.append((self._script_len, step, times))
            self._script_len += 1

    @property
    def remaining(self) -> int:
        """Requests the script can still answer."""
        return sum(times for _, _, times in self._script)

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The root URL, ``http://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("the server is not started: await server.start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the OpenAI-style base URL."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The root URL, as Anthropic clients expect it."""
        return self.url

    async def start(self) -> ScriptedLLMServer:
        if self._server is not None:
            return self
        self._server = await asyncio.start_server(self._on_connect, self.host, self.port,
                                                  limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        self._started_at = time.monotonic()
        return self

    async def stop(self) -> None:
        """Stop listening and cut every open connection (hung ones included)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> ScriptedLLMServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    # -- HTTP ---------------------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        conn = _Conn(reader, writer)
        try:
            while not conn.aborted:
                request = await self._read_request(conn)
                if request is None:
                    break
                method, path, headers, raw_body, keep_alive = request
                await self._dispatch(conn, method, path, headers, raw_body)
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            conn.abort()
        finally:
            self._conns.discard(task)
            if not conn.aborted:
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()

    async def _read_request(
        self, conn: _Conn,
    ) -> tuple[str, str, dict[str, str], bytes, bool] | None:
        try:
            head = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError:
            await conn.send(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                            b"content-length: 0\r\nconnection: close\r\n\r\n")
            return None
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            await conn.send(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"
                            b"connection: close\r\n\r\n")
            return None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await conn.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await conn.reader.readuntil(b"\r\n")
                    break
                parts.append(await conn.reader.readexactly(size))
                await conn.reader.readexactly(2)
            body = b"".join(parts)
        else:
            body = await conn.reader.readexactly(int(headers.get("content-length", "0")))
        keep_alive = (version.strip() == "HTTP/1.1"
                      and headers.get("connection", "").lower() != "close")
        return method.upper(), target.split("?", 1)[0], headers, body, keep_alive

    async def _respond(self, conn: _Conn, status: int, body: Any, *,
                       headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        await conn.send(self._head(status, {"content-type": "application/json",
                                            "content-length": str(len(data)),
                                            **(headers or {})}) + data)

    def _head(self, status: int, headers: Mapping[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
                 f"date: {email.utils.formatdate(usegmt=True)}", "server: tether-llm-server"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _dispatch(self, conn: _Conn, method: str, path: str,
                        headers: dict[str, str], raw_body: bytes) -> None:
        if path.startswith("/_tether/"):
            await self._control(conn, method, path, raw_body)
            return
        body: Any = None
        parse_error = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError as exc:
                parse_error = str(exc)
        rec = RecordedRequest(method, path, dict(headers), body, time.time())
        self.requests.append(rec)
        if path in ("/v1/models", "/models") and method == "GET":
            rec.protocol = "models"
            await self._models(conn, rec)
            return
        if method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
            rec.protocol = "openai"
        elif method == "POST" and path in ("/v1/messages", "/messages"):
            rec.protocol = "anthropic"
        else:
            rec.protocol = "anthropic" if "anthropic-version" in headers else "openai"
            await self._error(conn, rec, 404, f"unknown endpoint {method} {path}",
                              outcome="not_found")
            return
        await self._chat(conn, rec, parse_error)

    async def _control(self, conn: _Conn, method: str, path: str, raw_body: bytes) -> None:
        if path == "/_tether/requests" and method == "GET":
            await self._respond(conn, 200, [r.to_dict() for r in self.requests])
        elif path == "/_tether/requests" and method == "DELETE":
            self.requests.clear()
            await self._respond(conn, 200, {"ok": True})
        elif path == "/_tether/script" and method == "POST":
            try:
                data = json.loads(raw_body or b"[]")
                mode = data.get("mode", "replace") if isinstance(data, dict) else "replace"
                steps, outage = load_script(data)
                if mode not in ("replace", "append"):
                    raise ValueError(f"mode must be 'replace' or 'append', not {mode!r}")
            except (ValueError, TypeError, KeyError) as exc:
                await self._respond(conn, 400, {"error": str(exc)})
                return
            self.set_script(steps, append=mode == "append")
            if outage is not None:
                self.outage = outage
                self._first_chat_at = None
                self._started_at = time.monotonic()
            await self._respond(conn, 200, {"ok": True, "remaining": self.remaining})
        else:
            await self._respond(conn, 404, {"error": f"unknown control endpoint {path}"})

    async def _models(self, conn: _Conn, rec: RecordedRequest) -> None:
        created = int(time.time())
        if "anthropic-version" in rec.headers:
            data: Any = {"data": [{"type": "model", "id": m, "display_name": m,
                                   "created_at": "2025-01-01T00:00:00Z"} for m in self.models],
                         "has_more": False,
                         "first_id": self.models[0] if self.models else None,
                         "last_id": self.models[-1] if self.models else None}
        else:
            data = {"object": "list", "data": [{"id": m, "object": "model", "created": created,
                                                "owned_by": "tether"} for m in self.models]}
        rec.status, rec.outcome = 200, "models"
        await self._respond(conn, 200, data)

    # -- chat -------------------------------------------------------------------------

    async def _chat(self, conn: _Conn, rec: RecordedRequest, parse_error: str | None) -> None:
        if parse_error is not None or not isinstance(rec.body, dict):
            await self._error(conn, rec, 400, "We could not parse the JSON body of your "
                              f"request: {parse_error or 'not a JSON object'}",
                              outcome="invalid")
            return
        if self.api_key is not None:
            given = (rec.headers.get("x-api-key") if rec.protocol == "anthropic"
                     else rec.headers.get("authorization", "").removeprefix("Bearer ").strip())
            if given != self.api_key:
                msg = ("invalid x-api-key" if rec.protocol == "anthropic"
                       else "Incorrect API key provided.")
                await self._error(conn, rec, 401, msg, outcome="unauthorized")
                return
        if self.strict:
            problem = (_check_openai(rec.body) if rec.protocol == "openai"
                       else _check_anthropic(rec.body))
            if problem is not None:
                await self._error(conn, rec, 400, problem, outcome="invalid")
                return
        now = time.monotonic()
        if self._first_chat_at is None:
            self._first_chat_at = now
        if self.outage is not None:
            origin = self._started_at if self.outage.since == "start" else self._first_chat_at
            if now - origin < self.outage.seconds:
                await self._error(conn, rec, self.outage.status,
                                  "The service is temporarily unavailable (scripted outage).",
                                  retry_after=self.outage.retry_after, outcome="outage")
                return
        try:
            index, step = await self._take_step(rec)
        except _Exhausted:
            await self._error(conn, rec, 500, "script exhausted: the scripted LLM server got "
                              f"request #{len(self.requests)} and has no step left for it "
                              f"(the script had {self._script_len} steps)",
                              outcome="exhausted")
            return
        except Exception as exc:  # a test's callable step is broken: say so, loudly
            await self._error(conn, rec, 500, f"a scripted step raised {type(exc).__name__}: "
                              f"{exc}", outcome="step_error")
            return
        rec.step = index
        if isinstance(step, Fault):
            await self._fault(conn, rec, step)
        else:
            await self._reply(conn, rec, step)

    async def _take_step(self, rec: RecordedRequest) -> tuple[int | None, Reply | Fault]:
        index: int | None
        if self._script:
            index, step, times = self._script[0]
            if times > 1:
                self._script[0] = (index, step, times - 1)
            else:
                self._script.pop(0)
        elif self.responder is not None:
            index, step = None, self.responder
        else:
            raise _Exhausted
        while callable(step):
            result = step(rec)
            step = await result if inspect.isawaitable(result) else result
        if isinstance(step, Mapping):
            step = parse_step(step)
        if not isinstance(step, (Reply, Fault)):
            raise TypeError(f"a script step must be a Reply, a Fault or a dict, not {step!r}")
        return index, step

    async def _error(self, conn: _Conn, rec: RecordedRequest, status: int, message: str, *,
                     retry_after: float | str | None = None, outcome: str) -> None:
        headers = {}
        if retry_after is not None:
            headers["retry-after"] = (f"{retry_after:g}" if isinstance(retry_after, (int, float))
                                      else str(retry_after))
        rec.status, rec.outcome = status, outcome
        headers[_request_id_header(rec)] = f"req_{uuid.uuid4().hex[:24]}"
        await self._respond(conn, status, _error_body(rec.protocol, status, message),
                            headers=headers)

    async def _fault(self, conn: _Conn, rec: RecordedRequest, fault: Fault) -> None:
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.kind == "status":
            message = fault.message or _DEFAULT_MESSAGES.get(fault.status, "error")
            await self._error(conn, rec, fault.status, message, retry_after=fault.retry_after,
                              outcome=f"fault:{fault.status}")
        elif fault.kind == "hang":
            rec.outcome = "fault:hang"
            while await conn.reader.read(65536):  # until the client gives up and closes
                pass
            conn.abort()
        elif fault.kind == "reset":
            rec.outcome = "fault:reset"
            conn.abort()
        elif fault.kind == "truncate":
            rec.outcome = "fault:truncate"
            rec.status = 200
            data = json.dumps(self._render(rec, Reply("This answer will be cut off."))).encode()
            await conn.send(self._head(200, {"content-type": "application/json",
                                             "content-length": str(len(data))})
                            + data[: len(data) // 2])
            conn.abort()
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")

    async def _reply(self, conn: _Conn, rec: RecordedRequest, reply: Reply) -> None:
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        rec.outcome = "reply"
        if not rec.stream:
            if reply.chunk_delay > 0:
                await asyncio.sleep(reply.chunk_delay * len(_chunks(reply)))
            rec.status = 200
            await self._respond(conn, 200, self._render(rec, reply),
                                headers={_request_id_header(rec): self._next_id("req_")})
            return
        rec.status = 200
        await conn.send(self._head(200, {"content-type": "text/event-stream; charset=utf-8",
                                         "cache-control": "no-cache",
                                         "transfer-encoding": "chunked",
                                         _request_id_header(rec): self._next_id("req_")}))
        events = (self._openai_events(rec, reply) if rec.protocol == "openai"
                  else self._anthropic_events(rec, reply))
        sent_content = 0
        reset_at = reply.reset_after_chunks
        error_at = reply.error_after_chunks
        for kind, payload in events:
            if kind == "content":
                if reset_at is not None and sent_content >= reset_at:
                    rec.outcome = "fault:reset_mid_stream"
                    conn.abort()
                    return
                if error_at is not None and sent_content >= error_at:
                    rec.outcome = "fault:error_mid_stream"
                    await self._send_chunk(conn, _stream_error(rec.protocol))
                    await conn.send(b"0\r\n\r\n")
                    return
                if sent_content and reply.chunk_delay > 0:
                    await asyncio.sleep(reply.chunk_delay)
                sent_content += 1
            await self._send_chunk(conn, payload)
        await conn.send(b"0\r\n\r\n")

    async def _send_chunk(self, conn: _Conn, text: str) -> None:
        data = text.encode()
        await conn.send(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{self._seq:04d}{uuid.uuid4().hex[:20]}"

    # -- rendering --------------------------------------------------------------------

    def _usage(self, rec: RecordedRequest, reply: Reply) -> tuple[int, int]:
        body = rec.body
        inp = reply.input_tokens
        if inp is None:
            prompt = json.dumps([body.get("system"), body.get("messages"), body.get("tools")])
            inp = max(1, len(prompt) // 4)
        out = reply.output_tokens
        if out is None:
            size = len(reply.text or "") + sum(len(_raw_args(c)) + len(str(c.get("name", "")))
                                               for c in reply.tool_calls)
            out = max(1, size // 4)
        return inp, out

    def _calls(self, reply: Reply, prefix: str) -> list[tuple[str, str, Any]]:
        return [(str(c.get("id") or self._next_id(prefix)), str(c["name"]),
                 c.get("arguments", {})) for c in reply.tool_calls]

    def _finish(self, reply: Reply, protocol: str) -> str:
        reason = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        if protocol == "anthropic":
            return {"stop": "end_turn", "tool_calls": "tool_use",
                    "length": "max_tokens"}.get(reason, reason)
        return reason

    def _render(self, rec: RecordedRequest, reply: Reply) -> dict[str, Any]:
        model = reply.model or rec.model or "unknown"
        inp, out = self._usage(rec, reply)
        if rec.protocol == "anthropic":
            content: list[dict[str, Any]] = []
            if reply.text:
                content.append({"type": "text", "text": reply.text})
            for call_id, name, args in self._calls(reply, "toolu_"):
                content.append({"type": "tool_use", "id": call_id, "name": name,
                                "input": _json_input(args)})
            return {"id": self._next_id("msg_"), "type": "message", "role": "assistant",
                    "model": model, "content": content,
                    "stop_reason": self._finish(reply, "anthropic"), "stop_sequence": None,
                    "usage": {"input_tokens": inp, "output_tokens": out,
                              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
        message: dict[str, Any] = {"role": "assistant", "content": reply.text,
                                   "refusal": None, "annotations": []}
        calls = self._calls(reply, "call_")
        if calls:
            message["tool_calls"] = [
                {"id": call_id, "type": "function",
                 "function": {"name": name, "arguments": _raw_args({"arguments": args})}}
                for call_id, name, args in calls]
        return {"id": self._next_id("chatcmpl-"), "object": "chat.completion",
                "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": self._finish(reply, "openai")}],
                "usage": {"prompt_tokens": inp, "completion_tokens": out,
                          "total_tokens": inp + out,
                          "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                          "completion_tokens_details": {"reasoning_tokens": 0,
                                                        "audio_tokens": 0}},
                "service_tier": "default", "system_fingerprint": "fp_tether"}

    def _openai_events(self, rec: RecordedRequest,
                       reply: Reply) -> Iterable[tuple[str, str]]:
        """``(kind, SSE text)`` pairs; kind ``content`` marks the chunks that faults and
        delays count."""
        model = reply.model or rec.model or "unknown"
        include_usage = bool((rec.body.get("stream_options") or {}).get("include_usage"))
        base = {"id": self._next_id("chatcmpl-"), "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model,
                "system_fingerprint": "fp_tether"}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            data = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": finish}]}
            if include_usage:
                data["usage"] = None
            return f"data: {json.dumps(data)}\n\n"

        yield "meta", chunk({"role": "assistant", "content": "", "refusal": None})
        for piece in _chunks(reply):
            yield "content", chunk({"content": piece})
        for index, (call_id, name, args) in enumerate(self._calls(reply, "call_")):
            yield "content", chunk({"tool_calls": [{
                "index": index, "id": call_id, "type": "function",
                "function": {"name": name, "arguments": ""}}]})
            for piece in _split_json(_raw_args({"arguments": args})):
                yield "content", chunk({"tool_calls": [{
                    "index": index, "function": {"arguments": piece}}]})
        yield "meta", chunk({}, self._finish(reply, "openai"))
        if include_usage:
            inp, out = self._usage(rec, reply)
            usage_chunk = {**base, "choices": [], "usage": {
                "prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}}
            yield "meta", f"data: {json.dumps(usage_chunk)}\n\n"
        yield "meta", "data: [DONE]\n\n"

    def _anthropic_events(self, rec: RecordedRequest,
                          reply: Reply) -> Iterable[tuple[str, str]]:
        model = reply.model or rec.model or "unknown"
        inp, out = self._usage(rec, reply)

        def event(name: str, data: dict[str, Any]) -> str:
            return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"

        yield "meta", event("message_start", {"message": {
            "id": self._next_id("msg_"), "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": inp, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}})
        index = 0
        if reply.text:
            yield "meta", event("content_block_start", {
                "index": index, "content_block": {"type": "text", "text": ""}})
            yield "meta", event("ping", {})
            for piece in _chunks(reply):
                yield "content", event("content_block_delta", {
                    "index": index, "delta": {"type": "text_delta", "text": piece}})
            yield "meta", event("content_block_stop", {"index": index})
            index += 1
        for call_id, name, args in self._calls(reply, "toolu_"):
            yield "content", event("content_block_start", {"index": index, "content_block": {
                "type": "tool_use", "id": call_id, "name": name, "input": {}}})
            raw = args if isinstance(args, str) else json.dumps(args)
            for piece in _split_json(raw):
                yield "content", event("content_block_delta", {
                    "index": index, "delta": {"type": "input_json_delta",
                                              "partial_json": piece}})
            yield "meta", event("content_block_stop", {"index": index})
            index += 1
        yield "meta", event("message_delta", {
            "delta": {"stop_reason": self._finish(reply, "anthropic"), "stop_sequence": None},
            "usage": {"output_tokens": out}})
        yield "meta", event("message_stop", {})


# -- helpers ----------------------------------------------------------------------------

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 408: "Request Timeout", 409: "Conflict",
            413: "Payload Too Large", 422: "Unprocessable Entity", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout", 529: "Overloaded"}

_DEFAULT_MESSAGES = {
    400: "Invalid request.", 401: "Incorrect API key provided.",
    403: "You are not allowed to use this model.", 404: "The model does not exist.",
    408: "Request timed out.", 409: "Conflict.", 422: "Unprocessable request.",
    429: "Rate limit reached for requests. Please try again later.",
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.", 503: "The engine is currently overloaded, please try again later.",
    504: "Gateway timeout.", 529: "Overloaded",
}

_OPENAI_TYPES = {400: ("invalid_request_error", None),
                 401: ("invalid_request_error", "invalid_api_key"),
                 403: ("invalid_request_error", "model_not_available"),
                 404: ("invalid_request_error", "model_not_found"),
                 429: ("requests", "rate_limit_exceeded")}

_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 500: "api_error", 529: "overloaded_error",
                    503: "overloaded_error"}


def _request_id_header(rec: RecordedRequest) -> str:
    return "request-id" if rec.protocol == "anthropic" else "x-request-id"


def _error_body(protocol: str, status: int, message: str) -> dict[str, Any]:
    if protocol == "anthropic":
        kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500
                                    else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message},
                "request_id": f"req_{uuid.uuid4().hex[:24]}"}
    kind, code = _OPENAI_TYPES.get(status, ("server_error" if status >= 500
                                            else "invalid_request_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _stream_error(protocol: str) -> str:
    if protocol == "anthropic":
        data = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return f"event: error\ndata: {json.dumps(data)}\n\n"
    data = {"error": {"message": "The server had an error while processing your request.",
                      "type": "server_error", "param": None, "code": None}}
    return f"data: {json.dumps(data)}\n\n"


def _chunks(reply: Reply) -> list[str]:
    if not reply.text:
        return []
    words = re.findall(r"\S+\s*|\s+", reply.text)
    size = max(1, reply.chunk_words)
    return ["".join(words[i:i + size]) for i in range(0, len(words), size)]


def _split_json(raw: str) -> list[str]:
    """Argument text in small pieces, as providers stream it."""
    if not raw:
        return []
    step = max(4, math.ceil(len(raw) / 4))
    return [raw[i:i + step] for i in range(0, len(raw), step)]


def _raw_args(call: Mapping[str, Any]) -> str:
    args = call.get("arguments", {})
    return args if isinstance(args, str) else json.dumps(args)


def _json_input(args: Any) -> Any:
    if isinstance(args, str):
        try:
            return json.loads(args)
        except ValueError:
            return args  # not what Anthropic would send; lets a client's guard be tested
    return args


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content
                       if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _check_openai(body: dict[str, Any]) -> str | None:
    """What the real API would reject in a chat completions request, or ``None``."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    if body.get("stream_options") is not None and not body.get("stream"):
        return "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    pending: list[str] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            return f"messages[{i}] must be an object"
        role = msg.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            return (f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
                    f"'user', 'tool', 'function', and 'developer'. (messages[{i}].role)")
        if role != "tool" and pending:
            return ("An assistant message with 'tool_calls' must be followed by tool messages "
                    "responding to each 'tool_call_id'. The following tool_call_ids did not "
                    f"have response messages: {', '.join(pending)}")
        if role == "assistant":
            calls = msg.get("tool_calls")
            if calls is not None:
                if not isinstance(calls, list) or not calls:
                    return f"messages[{i}].tool_calls must be a non-empty array"
                for call in calls:
                    fn = call.get("function") if isinstance(call, dict) else None
                    if (not isinstance(fn, dict) or not isinstance(call.get("id"), str)
                            or call.get("type") != "function"
                            or not isinstance(fn.get("name"), str)
                            or not isinstance(fn.get("arguments"), str)):
                        return (f"messages[{i}].tool_calls: each call needs id, "
                                "type 'function' and function.name / function.arguments "
                                "(a string)")
                    pending.append(call["id"])
            elif msg.get("content") is None:
                return f"messages[{i}]: an assistant message needs content or tool_calls"
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            if call_id not in pending:
                return (f"Invalid parameter: messages with role 'tool' must be a response to a "
                        f"preceeding message with 'tool_calls' (messages[{i}].tool_call_id "
                        f"{call_id!r})")
            pending.remove(call_id)
        elif msg.get("content") is None:
            return f"messages[{i}].content is required for role '{role}'"
    if pending:
        return ("An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(pending)}")
    for i, tool in enumerate(body.get("tools") or []):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if (not isinstance(tool, dict) or tool.get("type") != "function"
                or not isinstance(fn, dict) or not isinstance(fn.get("name"), str)):
            return f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}"
    return None


def _check_anthropic(body: dict[str, Any]) -> str | None:
    """What the real API would reject in a messages request, or ``None``."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        return "system: Input should be a valid string or a list of text blocks"
    previous_tool_uses: set[str] = set()
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            return f"messages.{i}: Input should be an object"
        role = msg.get("role")
        if role not in ("user", "assistant"):
            return (f"messages.{i}.role: Unexpected role \"{role}\". The Messages API accepts "
                    "a top-level `system` parameter, not \"system\" as an input message role.")
        content = msg.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            return f"messages.{i}.content: Input should be a valid string or list"
        results = set()
        uses = set()
        for j, block in enumerate(blocks):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                if not isinstance(block.get("text"), str) or not block["text"]:
                    return f"messages.{i}.content.{j}: text content blocks must be non-empty"
            elif kind == "tool_use":
                if role != "assistant":
                    return f"messages.{i}.content.{j}: tool_use blocks belong to the assistant"
                if not isinstance(block.get("input"), dict):
                    return f"messages.{i}.content.{j}.input: Input should be a valid dictionary"
                uses.add(str(block.get("id")))
            elif kind == "tool_result":
                if role != "user":
                    return f"messages.{i}.content.{j}: tool_result blocks belong to the user"
                results.add(str(block.get("tool_use_id")))
            elif kind not in ("image", "document", "thinking", "redacted_thinking"):
                return f"messages.{i}.content.{j}.type: unknown content block type {kind!r}"
        unexpected = results - previous_tool_uses
        if unexpected:
            return (f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` "
                    f"blocks: {', '.join(sorted(unexpected))}. Each `tool_result` block must "
                    "have a corresponding `tool_use` block in the previous message.")
        missing = previous_tool_uses - results
        if missing:
            return (f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(sorted(missing))}. Each `tool_use` block "
                    "must have a corresponding `tool_result` block in the next message.")
        previous_tool_uses = uses
    for i, tool in enumerate(body.get("tools") or []):
        if (not isinstance(tool, dict) or not isinstance(tool.get("name"), str)
                or not isinstance(tool.get("input_schema"), dict)
                or tool["input_schema"].get("type") != "object"):
            return f"tools.{i}: a tool needs a name and an input_schema of type 'object'"
    return None


# -- command line -----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tether.testing.llm_server --script script.json [--port N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m tether.testing.llm_server",
        description="Serve a scripted OpenAI/Anthropic-compatible LLM API; print its base "
                    "URL as the first line of stdout.")
    parser.add_argument("--script", help="JSON script file ('-' for stdin); none: empty")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="answer 401 without this key")
    args = parser.parse_args(argv)
    steps: list[Reply | Fault] = []
    outage = None
    if args.script:
        if args.script == "-":
            text = sys.stdin.read()
        else:
            with open(args.script, encoding="utf-8") as f:
                text = f.read()
        try:
            steps, outage = load_script(json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:
            print(f"bad script {args.script}: {exc}", file=sys.stderr)
            return 2
    server = ScriptedLLMServer(steps, outage=outage, host=args.host, port=args.port,
                               api_key=args.api_key)
    asyncio.run(_serve(server))
    return 0


async def _serve(server: ScriptedLLMServer) -> None:
    await server.start()
    print(server.base_url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


if __name__ == "__main__":
    sys.exit(main())
