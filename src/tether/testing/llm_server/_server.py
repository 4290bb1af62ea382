"""The scripted server: takes a step of the script per chat request and answers it in
the request's protocol (``_openai``, ``_anthropic``); records every request."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

from tether.testing.llm_server import _anthropic, _openai
from tether.testing.llm_server._http import Conn, head, read_request
from tether.testing.llm_server._script import (
    DEFAULT_MODELS,
    Fault,
    Outage,
    RecordedRequest,
    Reply,
    Step,
    StepLike,
    chunks,
    load_script,
    parse_step,
)

_PROVIDERS: dict[str, ModuleType] = {"openai": _openai, "anthropic": _anthropic}


def _provider(protocol: str) -> ModuleType:
    """The provider module of a request's protocol; OpenAI's shapes for the others (the
    Responses API of ``tether.testing.responses_api`` answers errors as OpenAI does)."""
    return _PROVIDERS.get(protocol, _openai)

_DEFAULT_MESSAGES = {
    400: "Invalid request.", 401: "Incorrect API key provided.",
    403: "You are not allowed to use this model.", 404: "The model does not exist.",
    408: "Request timed out.", 409: "Conflict.", 422: "Unprocessable request.",
    429: "Rate limit reached for requests. Please try again later.",
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.", 503: "The engine is currently overloaded, please try again later.",
    504: "Gateway timeout.", 529: "Overloaded",
}


class _Exhausted(Exception):
    pass


#: The scripted servers of this process that listen (from ``start`` to ``stop``), which
#: ``answering_at`` asks.
_LISTENING: weakref.WeakSet[ScriptedLLMServer] = weakref.WeakSet()


def answering_at(base_url: str) -> bool:
    """Whether a scripted server of this process that listens at ``base_url`` (its
    ``base_url`` or ``anthropic_base_url``, or a path under its root) is answering a
    request now (``ScriptedLLMServer.answering``): a test environment does not take a
    model call to it for one to an endpoint that says nothing."""
    url = base_url.rstrip("/")
    for server in list(_LISTENING):
        if server._server is None or not server.answering:
            continue
        root = server.url
        if url == root or url.startswith(root + "/"):
            return True
    return False


class ScriptedLLMServer:
    """The server. ``await start()`` (or ``async with``), then point clients at
    ``base_url`` (OpenAI convention, ends in ``/v1``) or ``anthropic_base_url``
    (Anthropic convention, the root; Tether's client accepts either).

    Args:
        script: the steps (see the module docstring).
        responder: answers every request once the script is exhausted.
        outage: an outage window (``Outage`` or its dict form).
        host: the address to listen on.
        port: the port to listen on (0: a free port).
        models: what ``GET /v1/models`` lists.
        api_key: if set, requests without this key get 401.
        strict: check requests as the real APIs do (400 when wrong).
        clock: what time is for outages and ``RecordedRequest.time`` (epoch seconds;
            default the real clock); ``TestEnv`` passes its virtual clock, so a 20 s
            outage passes in virtual time.
    """

    def __init__(self, script: Iterable[Step] = (), *,
                 responder: Callable[[RecordedRequest], StepLike | Awaitable[StepLike]]
                 | None = None,
                 outage: Outage | Mapping[str, Any] | None = None, host: str = "127.0.0.1",
                 port: int = 0, models: Sequence[str] = DEFAULT_MODELS,
                 api_key: str | None = None, strict: bool = True,
                 clock: Callable[[], float] | None = None) -> None:
        self.host = host
        self.port = port
        self.models = list(models)
        self.api_key = api_key
        self.strict = strict
        self.responder = responder
        self.clock = clock
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
        #: Requests held unanswered by a ``hang`` fault right now (each ends when its
        #: client gives up and closes the connection).
        self.hanging = 0
        #: Requests being answered right now: a step of the script taken and its answer
        #: under way, bound to end by itself (a reply's or a fault's ``delay``, a slow
        #: stream); not one a ``hang`` holds (``hanging``), nor one waiting for a
        #: ``responder`` to give its step.
        self.answering = 0

    def _now(self) -> float:
        return time.monotonic() if self.clock is None else self.clock()

    def _set_clock(self, clock: Callable[[], float] | None) -> None:
        """Go on with another clock (``TestEnv`` lends its virtual one to a server it is
        given), keeping the time an outage has already lasted."""
        before = self._now()
        self.clock = clock
        after = self._now()
        self._started_at += after - before
        if self._first_chat_at is not None:
            self._first_chat_at += after - before

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
        self._started_at = self._now()
        _LISTENING.add(self)
        return self

    async def stop(self) -> None:
        """Stop listening and cut every open connection (hung ones included)."""
        server, self._server = self._server, None
        if server is None:
            return
        _LISTENING.discard(self)
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
        conn = Conn(reader, writer)
        try:
            while not conn.aborted:
                request = await read_request(conn)
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
            # Still in ``_conns`` while it closes, so ``stop()`` waits for it: it left
            # first, and a connection its client had just closed outlived ``stop()`` in
            # ``wait_closed``; the loop's end (pytest-asyncio's, after the
            # ``llm_server`` fixture) then cancelled it, which Python 3.11's streams log
            # as an ERROR "Exception in callback StreamReaderProtocol...". A cancel by
            # ``stop()`` there ends the task quietly too: it is closing anyway.
            try:
                if not conn.aborted:
                    writer.close()
                    with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                        await writer.wait_closed()
            finally:
                self._conns.discard(task)

    async def _dispatch(self, conn: Conn, method: str, path: str,
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
        rec = RecordedRequest(method, path, dict(headers), body,
                              time.time() if self.clock is None else self.clock())
        self.requests.append(rec)
        if path in ("/v1/models", "/models") and method == "GET":
            rec.protocol = "models"
            await self._models(conn, rec)
            return
        if method == "POST" and path in _openai.PATHS:
            rec.protocol = "openai"
        elif method == "POST" and path in _anthropic.PATHS:
            rec.protocol = "anthropic"
        else:
            rec.protocol = "anthropic" if "anthropic-version" in headers else "openai"
            await self._error(conn, rec, 404, f"unknown endpoint {method} {path}",
                              outcome="not_found")
            return
        await self._chat(conn, rec, parse_error)

    async def _control(self, conn: Conn, method: str, path: str, raw_body: bytes) -> None:
        if path == "/_tether/requests" and method == "GET":
            await conn.respond(200, [r.to_dict() for r in self.requests])
        elif path == "/_tether/requests" and method == "DELETE":
            self.requests.clear()
            await conn.respond(200, {"ok": True})
        elif path == "/_tether/script" and method == "POST":
            try:
                data = json.loads(raw_body or b"[]")
                mode = data.get("mode", "replace") if isinstance(data, dict) else "replace"
                steps, outage = load_script(data)
                if mode not in ("replace", "append"):
                    raise ValueError(f"mode must be 'replace' or 'append', not {mode!r}")
            except (ValueError, TypeError, KeyError) as exc:
                await conn.respond(400, {"error": str(exc)})
                return
            self.set_script(steps, append=mode == "append")
            if outage is not None:
                self.outage = outage
                self._first_chat_at = None
                self._started_at = self._now()
            await conn.respond(200, {"ok": True, "remaining": self.remaining})
        else:
            await conn.respond(404, {"error": f"unknown control endpoint {path}"})

    async def _models(self, conn: Conn, rec: RecordedRequest) -> None:
        provider = _anthropic if "anthropic-version" in rec.headers else _openai
        rec.status, rec.outcome = 200, "models"
        await conn.respond(200, provider.models(self.models))

    # -- chat -------------------------------------------------------------------------

    async def _chat(self, conn: Conn, rec: RecordedRequest, parse_error: str | None) -> None:
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
            problem = _provider(rec.protocol).check(rec.body)
            if problem is not None:
                await self._error(conn, rec, 400, problem, outcome="invalid")
                return
        now = self._now()
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

    async def _error(self, conn: Conn, rec: RecordedRequest, status: int, message: str, *,
                     retry_after: float | str | None = None, outcome: str,
                     error_type: str | None = None) -> None:
        headers = {}
        if retry_after is not None:
            headers["retry-after"] = (f"{retry_after:g}" if isinstance(retry_after, (int, float))
                                      else str(retry_after))
        rec.status, rec.outcome = status, outcome
        provider = _provider(rec.protocol)
        headers[provider.REQUEST_ID_HEADER] = f"req_{uuid.uuid4().hex[:24]}"
        await conn.respond(status, provider.error_body(status, message, error_type),
                           headers=headers)

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        """Count a request among those being answered (``answering``) meanwhile."""
        self.answering += 1
        try:
            yield
        finally:
            self.answering -= 1

    async def _fault(self, conn: Conn, rec: RecordedRequest, fault: Fault) -> None:
        """Answer ``rec`` with ``fault``; being answered meanwhile (``answering``)
        unless it is a ``hang``, which never answers."""
        if fault.kind == "hang":
            await self._faulted(conn, rec, fault)
            return
        with self._answering():
            await self._faulted(conn, rec, fault)

    async def _faulted(self, conn: Conn, rec: RecordedRequest, fault: Fault) -> None:
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.kind == "status":
            message = fault.message or _DEFAULT_MESSAGES.get(fault.status, "error")
            await self._error(conn, rec, fault.status, message, retry_after=fault.retry_after,
                              outcome=f"fault:{fault.status}", error_type=fault.error_type)
        elif fault.kind == "out_of_credit":
            status, kind, message = _provider(rec.protocol).OUT_OF_CREDIT
            await self._error(conn, rec, status, fault.message or message,
                              outcome="fault:out_of_credit", error_type=kind)
        elif fault.kind == "error_body":
            provider = _provider(rec.protocol)
            message = fault.message or _DEFAULT_MESSAGES.get(fault.status, "error")
            body = provider.error_body(fault.status, message, fault.error_type)
            if rec.protocol != "anthropic" and fault.error_type is None:
                body["error"]["code"] = fault.status  # (as gateways: the status they meant)
            rec.status, rec.outcome = 200, "fault:error_body"
            request_id = {provider.REQUEST_ID_HEADER: f"req_{uuid.uuid4().hex[:24]}"}
            if not rec.stream:
                await conn.respond(200, body, headers=request_id)
                return
            # Streamed: the error is the stream's one event (as gateways send it; the
            # Responses API's error event is {"type": "error", "code", "message"}).
            event = "event: error\n" if rec.protocol in ("anthropic", "responses") else ""
            if rec.protocol == "responses":
                body = {**body["error"], "type": "error"}
            await conn.send(head(200, {"content-type": "text/event-stream; charset=utf-8",
                                       "cache-control": "no-cache",
                                       "transfer-encoding": "chunked", **request_id}))
            await conn.send_chunk(f"{event}data: {json.dumps(body)}\n\n")
            await conn.end_chunks()
        elif fault.kind == "hang":
            rec.outcome = "fault:hang"
            self.hanging += 1
            try:
                while await conn.reader.read(65536):  # until the client gives up and closes
                    pass
            finally:
                self.hanging -= 1
            conn.abort()
        elif fault.kind == "reset":
            rec.outcome = "fault:reset"
            conn.abort()
        elif fault.kind == "truncate":
            rec.outcome = "fault:truncate"
            rec.status = 200
            data = json.dumps(self._render(rec, Reply("This answer will be cut off."))).encode()
            await conn.send(head(200, {"content-type": "application/json",
                                       "content-length": str(len(data))})
                            + data[: len(data) // 2])
            conn.abort()
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")

    async def _reply(self, conn: Conn, rec: RecordedRequest, reply: Reply) -> None:
        """Answer ``rec`` with ``reply``, being answered meanwhile (``answering``)."""
        with self._answering():
            await self._replied(conn, rec, reply)

    async def _replied(self, conn: Conn, rec: RecordedRequest, reply: Reply) -> None:
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        rec.outcome = "reply"
        provider = _provider(rec.protocol)
        if not rec.stream:
            if reply.chunk_delay > 0:
                await asyncio.sleep(reply.chunk_delay * len(chunks(reply)))
            rec.status = 200
            body = self._render(rec, reply)
            if await self._cut_plain(conn, rec, reply, body):
                return
            await conn.respond(200, body,
                               headers={provider.REQUEST_ID_HEADER: self._next_id("req_")})
            return
        rec.status = 200
        await conn.send(head(200, {"content-type": "text/event-stream; charset=utf-8",
                                   "cache-control": "no-cache", "transfer-encoding": "chunked",
                                   provider.REQUEST_ID_HEADER: self._next_id("req_")}))
        events = list(self._events(rec, reply))
        reset_at = _cut_index(events, reply.reset_after_chunks)
        error_at = _cut_index(events, reply.error_after_chunks)
        sent_content = 0
        for index, (kind, payload) in enumerate(events):
            if index == reset_at:
                rec.outcome = "fault:reset_mid_stream"
                conn.abort()
                return
            if index == error_at:
                rec.outcome = "fault:error_mid_stream"
                await conn.send_chunk(provider.stream_error())
                await conn.end_chunks()
                return
            if kind == "content":
                if sent_content and reply.chunk_delay > 0:
                    await asyncio.sleep(reply.chunk_delay)
                sent_content += 1
            await conn.send_chunk(payload)
        await conn.end_chunks()

    async def _cut_plain(self, conn: Conn, rec: RecordedRequest, reply: Reply,
                         body: Mapping[str, Any]) -> bool:
        """A mid-stream fault of ``reply`` on a request that is not streamed, as such an
        answer fails: ``reset_after_chunks`` sends the headers and half the body, then
        drops the connection; ``error_after_chunks`` answers 500 with the provider's
        error. True if it did. (Both were ignored there: the whole answer went out, so
        a client that does not stream, such as the OpenAI Agents SDK's ``Runner.run``,
        never met the fault its test scripted.)"""
        if reply.reset_after_chunks is not None:
            rec.outcome = "fault:reset_mid_stream"
            data = json.dumps(body).encode()
            await conn.send(head(200, {"content-type": "application/json",
                                       "content-length": str(len(data))})
                            + data[: len(data) // 2])
            conn.abort()
            return True
        if reply.error_after_chunks is not None:
            await self._error(conn, rec, 500, _DEFAULT_MESSAGES[500],
                              outcome="fault:error_mid_stream")
            return True
        return False

    def _render(self, rec: RecordedRequest, reply: Reply) -> dict[str, Any]:
        """A non-streaming answer in the request's protocol (a subclass may add to it)."""
        rendered: dict[str, Any] = _provider(rec.protocol).render(rec, reply, self._next_id)
        return rendered

    def _events(self, rec: RecordedRequest, reply: Reply) -> Iterable[tuple[str, str]]:
        """The ``(kind, SSE text)`` pairs of a streamed answer in the request's protocol
        (kind ``content`` marks the chunks that faults and delays count)."""
        events: Iterable[tuple[str, str]] = _provider(rec.protocol).events(
            rec, reply, self._next_id)
        return events

    def _next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{self._seq:04d}{uuid.uuid4().hex[:20]}"


def _cut_index(events: Sequence[tuple[str, str]], after_chunks: int | None) -> int | None:
    """Where a fault "after N content chunks" interrupts a stream: before the chunk
    numbered N (from 0), or right after the last chunk when the reply has N chunks or
    fewer (so the fault always happens, before the stream's closing events)."""
    if after_chunks is None:
        return None
    content = [i for i, (kind, _) in enumerate(events) if kind == "content"]
    if after_chunks < len(content):
        return content[after_chunks]
    return content[-1] + 1 if content else 1
