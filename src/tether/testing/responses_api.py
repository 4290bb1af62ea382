"""The OpenAI **Responses API** (``POST /v1/responses``) in the scripted LLM server.

``ScriptedResponsesServer`` is ``ScriptedLLMServer`` (same script, steps, faults,
request log, Chat Completions and Anthropic endpoints) that also answers the Responses
API, streaming or not, in the shape the official SDKs parse: ``message`` items with
``output_text`` parts, ``function_call`` items, ``reasoning`` items (a ``Reply`` whose
``model`` is any, with ``reasoning=`` on ``ResponsesReply``), usage with
``input_tokens``/``output_tokens``, and the SSE events ``response.created``,
``response.output_item.added``, ``response.output_text.delta``,
``response.function_call_arguments.delta``, ``response.output_item.done``,
``response.completed``. A reply with ``finish_reason="length"`` is cut at
``max_output_tokens``: ``status: "incomplete"``, ``incomplete_details: {"reason":
"max_output_tokens"}``, its stream ending with ``response.incomplete``. Faults
(``Fault``, ``reset_after_chunks``, ``error_after_chunks``) behave as on the other
endpoints.

It also answers the token-counting endpoints, Anthropic's ``POST
/v1/messages/count_tokens`` and the Responses API's ``POST /v1/responses/input_tokens``
(``{"input_tokens": N}``, the same estimate the scripted replies use, without taking a
script step; a 401 without the server's ``api_key``), after the faults of
``count_faults=`` (one a request, in order: ``count_faults=[Fault.http(500)]`` fails the
first count only).

And the Responses API's compaction, ``POST /v1/responses/compact`` (``{"model", "input",
"instructions", "previous_response_id"}``): a script step answers it, a ``Reply`` as the
real endpoint's ``response.compaction`` object (its ``output`` the input's user
messages then one ``compaction`` item whose ``encrypted_content`` carries the reply's
text, and the reply's usage), a ``Fault`` as a fault. And background mode: a request
with ``"background": true`` (unstreamed) is answered at once, without a script step,
``status: "queued"``, ``background: true``; ``GET /v1/responses/{id}`` (the SDK's
``retrieve``) takes the script step that answers it (a ``Reply`` completes it, a
``Fault`` fails the retrieve); ``POST /v1/responses/{id}/cancel`` answers the response
``status: "cancelled"``, after the faults of ``cancel_faults=`` (as ``count_faults=``).
An id the server did not give: 404. Streamed (``"background": true, "stream": true``)
the create takes the script step and streams the job's events, each with its
``sequence_number``: ``response.created`` (``status: "queued"``), ``response.in_progress``,
then the reply's events and ``response.completed``, every response ``background: true``
(a ``Fault`` fails the create; ``reset_after_chunks`` cuts the stream, the job
completing all the same, as the real one runs on without its reader;
``ResponsesReply(created_reset=True)`` resets the create's connection before any
answer, the job queued all the same, ``created_reset_after_head=True`` after the
answer's head, before its first event: its request log's outcome
``fault:reset_before_created``). ``GET
/v1/responses/{id}?stream=true&starting_after=N`` (the SDK's ``retrieve(id,
stream=True, starting_after=N)``) streams the job's events after ``N`` again (paced by
the reply's ``chunk_delay``; ``ResponsesReply(resume_reset_after_chunks=)`` resets the
first resumed stream at a chunk), and a plain ``GET`` answers the completed response,
neither taking a script step (each ``GET`` recorded with its ``query``); a stream asked
of a job created unstreamed is a 400, as the real API's.

Built on the provider-split server (``tether.testing.llm_server``): its ``_dispatch``,
``_render`` and ``_events`` hooks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tether.testing.llm_server._http import Conn as _Conn
from tether.testing.llm_server._http import head
from tether.testing.llm_server._script import Fault, RecordedRequest, Reply, Step
from tether.testing.llm_server._script import chunks as _chunks
from tether.testing.llm_server._script import raw_args as _raw_args
from tether.testing.llm_server._script import split_json as _split_json
from tether.testing.llm_server._server import ScriptedLLMServer, _cut_index, _Exhausted

__all__ = ["ResponsesReply", "ScriptedResponsesServer", "thinking_signature"]


@dataclass(frozen=True)
class ResponsesReply(Reply):
    """A ``Reply`` that may also carry the model's reasoning: on the Responses API a
    ``reasoning`` output item (with this summary) before the message; on the Anthropic
    Messages API a ``thinking`` block (this text, and a signature the server derives
    from it) first in the content, streamed as ``thinking_delta``/``signature_delta``."""

    reasoning: str | None = None
    #: A background response created streamed: its first stream resumed
    #: (``retrieve(id, stream=True, starting_after=N)``) that carries the job's content
    #: chunk numbered this (from 0) is reset before it, as a reader's connection cut
    #: while it resumes (the job completes all the same). The job's ``chunk_delay``
    #: paces its resumed streams too.
    resume_reset_after_chunks: int | None = None
    #: A background response created streamed: the job is queued and runs (a retrieve
    #: reads it, as the real one runs on without its reader), but the create's
    #: connection is reset before any answer, no ``response.created`` sent: a create
    #: whose answer was lost after the provider took it.
    created_reset: bool = False
    #: As ``created_reset``, but the answer's head (HTTP 200, an event stream) is sent
    #: before the reset: the stream cut before its first event.
    created_reset_after_head: bool = False


def thinking_signature(text: str) -> str:
    """The signature the server gives a thinking block with this text (a test can check
    that a block came back unchanged)."""
    return "sig-" + hashlib.sha256(text.encode()).hexdigest()[:32]


#: The token-counting endpoints (Anthropic's, the Responses API's), with and without /v1.
_COUNT_PATHS = ("/v1/messages/count_tokens", "/messages/count_tokens",
                "/v1/responses/input_tokens", "/responses/input_tokens")


#: The Responses API's compaction endpoint, with and without /v1.
_COMPACT_PATHS = ("/v1/responses/compact", "/responses/compact")

#: A background response's retrieve (``GET``) and cancel (``POST .../cancel``) paths.
_RESPONSE_PATH = re.compile(r"(?:/v1)?/responses/(resp_[A-Za-z0-9]+)(/cancel)?")


class ScriptedResponsesServer(ScriptedLLMServer):
    """``ScriptedLLMServer`` with the OpenAI Responses API at ``/v1/responses``.

    Args:
        count_faults: what the token-counting endpoints answer first, one a request,
            in order (a fault's ``times`` counted), before they count.
        cancel_faults: what ``POST /v1/responses/{id}/cancel`` answers first, likewise,
            before it cancels.
        reset_creates: how many background creates asked unstreamed (the first ones)
            are queued, then have their connection reset before the answer: a create
            the provider took whose answer was lost (request log outcome
            ``fault:reset_before_queued``).
        (the others: ``ScriptedLLMServer``'s)
    """

    def __init__(self, script: Iterable[Step] = (), *, count_faults: Iterable[Fault] = (),
                 cancel_faults: Iterable[Fault] = (), reset_creates: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(script, **kwargs)
        #: How many more background creates asked unstreamed are queued and then have
        #: their connection reset before the answer (the job runs all the same).
        self.reset_creates = reset_creates
        #: The faults the token-counting endpoints have still to answer, in order.
        self.count_faults = [fault for fault in count_faults for _ in range(fault.times)]
        #: The faults the cancel endpoint has still to answer, in order.
        self.cancel_faults = [fault for fault in cancel_faults for _ in range(fault.times)]
        #: The background responses given (by id): the body of the request that made
        #: each, and its last status.
        self.background: dict[str, tuple[dict[str, Any], str]] = {}
        #: The replies of the background responses created streamed (by id), and
        #: whether their resumed streams' reset (``resume_reset_after_chunks``) is to come.
        self._stream_replies: dict[str, tuple[Reply, list[bool]]] = {}
        #: The events of the background responses created streamed (by id), in order,
        #: each ``(kind, SSE text, sequence_number)``, and the completed response: what
        #: a resumed stream (``starting_after``) and a retrieve answer.
        self.background_streams: dict[str, tuple[list[tuple[str, str, int]],
                                                 dict[str, Any]]] = {}

    async def _dispatch(self, conn: _Conn, method: str, path: str,
                        headers: dict[str, str], raw_body: bytes) -> None:
        if method == "POST" and path in _COUNT_PATHS:
            await self._count_tokens(conn, path, headers, raw_body)
            return
        if method == "POST" and path in _COMPACT_PATHS:
            await self._compact(conn, path, headers, raw_body)
            return
        found = _RESPONSE_PATH.fullmatch(path)
        if found is not None and (method, bool(found[2])) in (("GET", False),
                                                               ("POST", True)):
            await self._background_job(conn, method, path, headers, found[1],
                                       cancel=bool(found[2]))
            return
        if method != "POST" or path not in ("/v1/responses", "/responses"):
            await super()._dispatch(conn, method, path, headers, raw_body)
            return
        body: Any = None
        parse_error = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError as exc:
                parse_error = str(exc)
        rec = RecordedRequest(method, path, dict(headers), body, time.time(),
                              protocol="responses")
        self.requests.append(rec)
        await self._responses(conn, rec, parse_error)

    async def _count_tokens(self, conn: _Conn, path: str, headers: dict[str, str],
                            raw_body: bytes) -> None:
        """A token count (Anthropic's ``count_tokens``, the Responses API's
        ``input_tokens``): the estimate the scripted replies use (about 4 characters a
        token of the instructions, messages and tools); no script step is taken. The
        next of ``count_faults`` instead, if any."""
        try:
            body = json.loads(raw_body or b"null")
        except ValueError:
            body = None
        anthropic = "/messages/" in path
        rec = RecordedRequest("POST", path, dict(headers), body, time.time(),
                              protocol="anthropic" if anthropic else "responses")
        self.requests.append(rec)
        given = (headers.get("x-api-key") if anthropic
                 else headers.get("authorization", "").removeprefix("Bearer ").strip())
        if self.api_key is not None and given != self.api_key:
            await self._error(conn, rec, 401, "invalid x-api-key" if anthropic
                              else "Incorrect API key provided.", outcome="unauthorized")
            return
        if self.count_faults:
            await self._fault(conn, rec, self.count_faults.pop(0))
            return
        body = body if isinstance(body, dict) else {}
        messages = body.get("messages" if anthropic else "input")
        if not body.get("model") or messages is None or (
                anthropic and not isinstance(messages, list)):
            await self._error(conn, rec, 400, "count_tokens needs model and messages"
                              if anthropic else "input_tokens needs model and input",
                              outcome="invalid")
            return
        rec.status, rec.outcome = 200, "count_tokens"
        prompt = json.dumps([body.get("system" if anthropic else "instructions"), messages,
                             body.get("tools")])
        counted: dict[str, Any] = {"input_tokens": max(1, len(prompt) // 4)}
        if not anthropic:
            counted["object"] = "response.input_tokens"
        await conn.respond(200, counted)

    def _authorized(self, headers: dict[str, str]) -> bool:
        given = headers.get("authorization", "").removeprefix("Bearer ").strip()
        return self.api_key is None or given == self.api_key

    async def _compact(self, conn: _Conn, path: str, headers: dict[str, str],
                       raw_body: bytes) -> None:
        """``POST /v1/responses/compact``: the next script step, a ``Reply`` answered as
        the real endpoint's ``response.compaction`` (``CompactedResponse`` of the
        SDK): ``output`` is the input's user messages, then one ``compaction`` item
        (its ``encrypted_content`` the reply's text, as the server would encrypt a
        summary), ``usage`` the reply's (estimated when not given)."""
        try:
            body = json.loads(raw_body or b"null")
        except ValueError:
            body = None
        rec = RecordedRequest("POST", path, dict(headers), body, time.time(),
                              protocol="responses")
        self.requests.append(rec)
        if not self._authorized(headers):
            await self._error(conn, rec, 401, "Incorrect API key provided.",
                              outcome="unauthorized")
            return
        if not isinstance(body, dict) or not body.get("model"):
            await self._error(conn, rec, 400, "Missing required parameter: 'model'.",
                              outcome="invalid")
            return
        step = await self._scripted(conn, rec)
        if step is None:
            return
        given = body.get("input")
        given = [{"role": "user", "content": given}] if isinstance(given, str) else given
        users = [item for item in given or []
                 if isinstance(item, dict) and item.get("role") == "user"]
        output: list[dict[str, Any]] = [
            {"type": "message", "id": self._next_id("msg_"), "status": "completed",
             "role": "user", "content": item.get("content")
             if isinstance(item.get("content"), list)
             else [{"type": "input_text", "text": str(item.get("content") or "")}]}
            for item in users]
        output.append({"type": "compaction", "id": self._next_id("cmp_"),
                       "encrypted_content": "scripted:" + (step.text or "")})
        inp, out = self._responses_usage(rec, step)
        rec.status, rec.outcome = 200, "compaction"
        await conn.respond(200, {
            "id": self._next_id("resp_"), "object": "response.compaction",
            "created_at": int(time.time()), "output": output,
            "usage": {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out,
                      "input_tokens_details": {"cached_tokens": step.cache_read_tokens},
                      "output_tokens_details": {"reasoning_tokens": 0}}},
            headers={"x-request-id": self._next_id("req_")})

    async def _background_job(self, conn: _Conn, method: str, path: str,
                              headers: dict[str, str], response_id: str, *,
                              cancel: bool) -> None:
        """``GET /v1/responses/{id}`` (a background response retrieved: the next script
        step answers it) or ``POST /v1/responses/{id}/cancel`` (after ``cancel_faults``:
        the response, ``status: "cancelled"``)."""
        rec = RecordedRequest(method, path, dict(headers), None, time.time(),
                              protocol="responses", query=conn.query or "")
        self.requests.append(rec)
        if not self._authorized(headers):
            await self._error(conn, rec, 401, "Incorrect API key provided.",
                              outcome="unauthorized")
            return
        if cancel and self.cancel_faults:
            await self._fault(conn, rec, self.cancel_faults.pop(0))
            return
        job = self.background.get(response_id)
        if job is None:
            await self._error(conn, rec, 404, f"Response with id '{response_id}' not found.",
                              outcome="not_found")
            return
        made, status = job
        asked = RecordedRequest("POST", "/v1/responses", {}, made, rec.time,
                                protocol="responses")
        if not cancel and await self._retrieved_stream(conn, rec, response_id):
            return
        if cancel:
            if status in ("queued", "in_progress"):
                status = "cancelled"
                self.background[response_id] = (made, status)
            rec.status, rec.outcome = 200, "cancelled"
            await conn.respond(200, {**self._response(asked, Reply(""), items=[],
                                                      status=status),
                                     "id": response_id, "background": True, "usage": None})
            return
        step = await self._scripted(conn, rec)
        if step is None:
            return
        self.background[response_id] = (made, "completed")
        rec.status, rec.outcome = 200, "reply"
        await conn.respond(200, {**self._response(asked, step), "id": response_id,
                                 "background": True})

    async def _responses(self, conn: _Conn, rec: RecordedRequest,
                         parse_error: str | None) -> None:
        if parse_error is not None or not isinstance(rec.body, dict):
            await self._error(conn, rec, 400, "We could not parse the JSON body of your "
                              f"request: {parse_error or 'not a JSON object'}",
                              outcome="invalid")
            return
        if self.api_key is not None:
            given = rec.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if given != self.api_key:
                await self._error(conn, rec, 401, "Incorrect API key provided.",
                                  outcome="unauthorized")
                return
        if self.strict:
            problem = _check_responses(rec.body)
            if problem is not None:
                await self._error(conn, rec, 400, problem, outcome="invalid")
                return
        if rec.body.get("background"):
            if rec.stream:  # (the job's events, resumable by sequence_number)
                step = await self._scripted(conn, rec)
                if step is not None:
                    with self._answering():
                        await self._background_stream(conn, rec, step)
                return
            # Queued at once, as the real API answers; a retrieve takes the script step.
            queued = {**self._response(rec, Reply(""), items=[], status="queued"),
                      "background": True, "usage": None}
            self.background[queued["id"]] = (rec.body, "queued")
            if self.reset_creates > 0:  # (taken, and the answer lost on the way)
                self.reset_creates -= 1
                rec.outcome = "fault:reset_before_queued"
                conn.abort()
                return
            rec.status, rec.outcome = 200, "queued"
            await conn.respond(200, queued, headers={"x-request-id": self._next_id("req_")})
            return
        step = await self._scripted(conn, rec)
        if step is not None:
            await self._responses_reply(conn, rec, step)

    async def _scripted(self, conn: _Conn, rec: RecordedRequest) -> Reply | None:
        """The script's step for ``rec``: its ``Reply``, or None when the request was
        answered already (a ``Fault`` acted, the script exhausted, a step that raised:
        a 500 saying so)."""
        try:
            index, step = await self._take_step(rec)
        except _Exhausted:
            await self._error(conn, rec, 500, "script exhausted: the scripted LLM server got "
                              f"request #{len(self.requests)} and has no step left for it",
                              outcome="exhausted")
            return None
        except Exception as exc:
            await self._error(conn, rec, 500, f"a scripted step raised {type(exc).__name__}: "
                              f"{exc}", outcome="step_error")
            return None
        rec.step = index
        if isinstance(step, Fault):
            await self._fault(conn, rec, step)
            return None
        return step

    async def _responses_reply(self, conn: _Conn, rec: RecordedRequest, reply: Reply) -> None:
        with self._answering():
            if reply.delay > 0:
                await asyncio.sleep(reply.delay)
            rec.outcome = "reply"
            rec.status = 200
            if not rec.stream:
                body = self._response(rec, reply)
                if await self._cut_plain(conn, rec, reply, body):
                    return
                await conn.respond(200, body, headers={"x-request-id": self._next_id("req_")})
                return
            await self._send_events(conn, rec, reply, list(self._response_events(rec, reply)))

    async def _send_events(self, conn: _Conn, rec: RecordedRequest, reply: Reply,
                           events: list[tuple[str, str]]) -> None:
        """Stream ``events`` (SSE texts, each ``content`` or ``meta``), with ``reply``'s
        faults: a reset or an error event after its chunks, a delay between them."""
        await conn.send(head(200, {"content-type": "text/event-stream; charset=utf-8",
                                   "cache-control": "no-cache", "transfer-encoding": "chunked",
                                   "x-request-id": self._next_id("req_")}))
        reset_at = _cut_index(events, reply.reset_after_chunks)
        error_at = _cut_index(events, reply.error_after_chunks)
        sent = 0
        for index, (kind, payload) in enumerate(events):
            if index == reset_at:
                rec.outcome = "fault:reset_mid_stream"
                conn.abort()
                return
            if index == error_at:
                rec.outcome = "fault:error_mid_stream"
                await conn.send_chunk(_sse("error", {
                    "type": "error", "code": "server_error", "param": None,
                    "message": "The server had an error while processing your request.",
                    "sequence_number": index}))
                await conn.end_chunks()
                return
            if kind == "content":
                if sent and reply.chunk_delay > 0:
                    await asyncio.sleep(reply.chunk_delay)
                sent += 1
            await conn.send_chunk(payload)
        await conn.end_chunks()

    async def _background_stream(self, conn: _Conn, rec: RecordedRequest,
                                 reply: Reply) -> None:
        """A background response created streamed: the job's events (``_background_events``),
        kept for a resumed stream; the job completes whether or not its stream is read to
        the end (a reset cuts the reader only)."""
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        events, final = self._background_events(rec, reply)
        self.background[final["id"]] = (rec.body, "completed")
        self.background_streams[final["id"]] = (events, final)
        resets = getattr(reply, "resume_reset_after_chunks", None) is not None
        self._stream_replies[final["id"]] = (reply, [resets])
        if getattr(reply, "created_reset", False) \
                or getattr(reply, "created_reset_after_head", False):
            if getattr(reply, "created_reset_after_head", False):
                await conn.send(head(200, {"content-type": "text/event-stream; charset=utf-8",
                                           "cache-control": "no-cache",
                                           "transfer-encoding": "chunked",
                                           "x-request-id": self._next_id("req_")}))
            rec.outcome = "fault:reset_before_created"
            conn.abort()
            return
        rec.outcome, rec.status = "reply", 200
        await self._send_events(conn, rec, reply, [(kind, text) for kind, text, _ in events])

    def _background_events(self, rec: RecordedRequest, reply: Reply
                           ) -> tuple[list[tuple[str, str, int]], dict[str, Any]]:
        """The events of a background job streamed, numbered in order from 0: the
        foreground stream's (``_response_events``), with ``response.created`` saying
        ``queued``, a ``response.in_progress`` after it, and ``background: true`` on every
        response; and the completed response."""
        events: list[tuple[str, str, int]] = []
        final: dict[str, Any] = {}
        for kind, text in self._response_events(rec, reply):
            name, _, data = text.partition("\ndata: ")
            payload = json.loads(data)
            event = name.removeprefix("event: ")
            if "response" in payload:
                payload["response"] = {**payload["response"], "background": True}
            if event == "response.created":
                created = {**payload["response"], "status": "queued"}
                events.append(("meta", _sse(event, {"response": created,
                                                     "sequence_number": 0}), 0))
                payload = {"response": {**created, "status": "in_progress"}}
                event = "response.in_progress"
            elif event in ("response.completed", "response.incomplete"):
                final = payload["response"]
            payload.pop("type", None)
            payload["sequence_number"] = len(events)
            events.append((kind, _sse(event, payload), len(events)))
        return events, final

    async def _retrieved_stream(self, conn: _Conn, rec: RecordedRequest,
                                response_id: str) -> bool:
        """Answer a retrieve of a background response created streamed (its events after
        ``starting_after`` with ``stream=true``, else the completed response), or refuse a
        stream of one created unstreamed, as the real API does: True when answered."""
        query = urllib.parse.parse_qs(conn.query)
        streamed = query.get("stream", [""])[0].lower() == "true"
        kept = self.background_streams.get(response_id)
        if kept is None:
            if streamed:
                await self._error(conn, rec, 400, "Cannot stream a background response that "
                                  "was not created with stream=true.", outcome="invalid")
                return True
            return False
        events, final = kept
        if not streamed:
            rec.status, rec.outcome = 200, "retrieved"
            await conn.respond(200, final, headers={"x-request-id": self._next_id("req_")})
            return True
        try:
            after = int(query.get("starting_after", ["-1"])[0])
        except ValueError:
            await self._error(conn, rec, 400, "Invalid 'starting_after': an integer is "
                              "expected.", outcome="invalid")
            return True
        rec.status, rec.outcome = 200, "resumed"
        reply, pending = self._stream_replies.get(response_id, (Reply(""), [False]))
        paced = Reply("", chunk_delay=reply.chunk_delay)
        if pending[0]:  # (the first resumed stream that carries the job's chunk N)
            content = [number for kind, _, number in events if kind == "content"]
            cut = getattr(reply, "resume_reset_after_chunks", 0)
            if cut < len(content) and content[cut] > after:
                pending[0] = False
                paced = Reply("", chunk_delay=reply.chunk_delay, reset_after_chunks=len(
                    [n for n in content if after < n < content[cut]]))
        with self._answering():
            await self._send_events(conn, rec, paced, [(kind, text) for kind, text, number
                                                       in events if number > after])
        return True

    # -- Anthropic extended thinking --------------------------------------------------

    def _render(self, rec: RecordedRequest, reply: Reply) -> dict[str, Any]:
        rendered = super()._render(rec, reply)
        thinking = getattr(reply, "reasoning", None)
        if rec.protocol == "anthropic" and thinking:
            rendered["content"].insert(0, {"type": "thinking", "thinking": thinking,
                                           "signature": thinking_signature(thinking)})
        return rendered

    def _events(self, rec: RecordedRequest, reply: Reply) -> Iterable[tuple[str, str]]:
        if rec.protocol != "anthropic":
            yield from super()._events(rec, reply)
            return
        thinking = getattr(reply, "reasoning", None)
        events = iter(super()._events(rec, reply))
        if not thinking:
            yield from events
            return
        yield next(events)  # message_start

        def event(name: str, data: dict[str, Any]) -> str:
            return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"

        yield "meta", event("content_block_start", {"index": 0, "content_block": {
            "type": "thinking", "thinking": "", "signature": ""}})
        for piece in _chunks(Reply(thinking)):
            yield "content", event("content_block_delta", {
                "index": 0, "delta": {"type": "thinking_delta", "thinking": piece}})
        yield "meta", event("content_block_delta", {"index": 0, "delta": {
            "type": "signature_delta", "signature": thinking_signature(thinking)}})
        yield "meta", event("content_block_stop", {"index": 0})
        for kind, text in events:  # the other blocks move up one index
            name, _, data = text.partition("\ndata: ")
            payload = json.loads(data)
            if "index" in payload:
                payload["index"] += 1
            yield kind, f"{name}\ndata: {json.dumps(payload)}\n\n"

    # -- rendering ----------------------------------------------------------------------

    def _items(self, reply: Reply) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        reasoning = getattr(reply, "reasoning", None)
        if reasoning:
            items.append({"type": "reasoning", "id": self._next_id("rs_"),
                          "summary": [{"type": "summary_text", "text": reasoning}],
                          "encrypted_content": None, "status": None})
        if reply.text is not None:
            items.append({"type": "message", "id": self._next_id("msg_"),
                          "status": "completed", "role": "assistant",
                          "content": [{"type": "output_text", "text": reply.text,
                                       "annotations": [], "logprobs": []}]})
        elif reply.refusal is not None:  # (a refusal: a message of one refusal part)
            items.append({"type": "message", "id": self._next_id("msg_"),
                          "status": "completed", "role": "assistant",
                          "content": [{"type": "refusal", "refusal": reply.refusal}]})
        for call in reply.tool_calls:
            items.append({"type": "function_call", "id": self._next_id("fc_"),
                          "call_id": str(call.get("id") or self._next_id("call_")),
                          "name": str(call["name"]), "arguments": _raw_args(call),
                          "status": "completed"})
        return items

    def _response(self, rec: RecordedRequest, reply: Reply,
                  items: list[dict[str, Any]] | None = None,
                  status: str = "completed") -> dict[str, Any]:
        body = rec.body
        inp, out = self._responses_usage(rec, reply)
        incomplete = None
        if reply.finish_reason == "length" and status == "completed":
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        return {
            "id": self._next_id("resp_"), "object": "response",
            "created_at": int(time.time()), "status": status,
            "model": reply.model or body.get("model") or "unknown",
            "output": self._items(reply) if items is None else items,
            "usage": {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out,
                      "input_tokens_details": {"cached_tokens": reply.cache_read_tokens},
                      "output_tokens_details": {"reasoning_tokens": 0}},
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools", []),
            "instructions": body.get("instructions"), "metadata": {},
            "temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0),
            "text": {"format": {"type": "text"}}, "truncation": "disabled",
            "error": None, "incomplete_details": incomplete, "previous_response_id":
                body.get("previous_response_id"), "reasoning": {"effort": None,
                                                                "summary": None},
            "service_tier": "default", "store": bool(body.get("store", True)),
            "max_output_tokens": body.get("max_output_tokens"), "user": None}

    def _responses_usage(self, rec: RecordedRequest, reply: Reply) -> tuple[int, int]:
        inp = reply.input_tokens
        if inp is None:
            prompt = json.dumps([rec.body.get("instructions"), rec.body.get("input"),
                                 rec.body.get("tools")])
            inp = max(1, len(prompt) // 4)
        out = reply.output_tokens
        if out is None:
            size = len(reply.text or "") + sum(len(_raw_args(c)) for c in reply.tool_calls)
            out = max(1, size // 4)
        return inp, out

    def _response_events(self, rec: RecordedRequest,
                         reply: Reply) -> Iterable[tuple[str, str]]:
        seq = iter(range(1_000_000))
        final = self._response(rec, reply)
        items = final["output"]
        start = {**final, "status": "in_progress", "output": [], "usage": None}
        yield "meta", _sse("response.created", {"response": start,
                                                "sequence_number": next(seq)})
        for index, item in enumerate(items):
            if item["type"] == "message" and item["content"][0]["type"] == "refusal":
                yield "meta", _sse("response.output_item.added", {
                    "output_index": index, "item": {**item, "status": "in_progress",
                                                    "content": []},
                    "sequence_number": next(seq)})
                where = {"item_id": item["id"], "output_index": index, "content_index": 0}
                yield "meta", _sse("response.content_part.added", {
                    **where, "part": {"type": "refusal", "refusal": ""},
                    "sequence_number": next(seq)})
                for piece in _chunks(reply, refusal=True):
                    yield "content", _sse("response.refusal.delta", {
                        **where, "delta": piece, "sequence_number": next(seq)})
                yield "meta", _sse("response.refusal.done", {
                    **where, "refusal": item["content"][0]["refusal"],
                    "sequence_number": next(seq)})
                yield "meta", _sse("response.content_part.done", {
                    **where, "part": item["content"][0], "sequence_number": next(seq)})
            elif item["type"] == "message":
                empty = {**item, "status": "in_progress", "content": []}
                yield "meta", _sse("response.output_item.added", {
                    "output_index": index, "item": empty, "sequence_number": next(seq)})
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                yield "meta", _sse("response.content_part.added", {
                    "item_id": item["id"], "output_index": index, "content_index": 0,
                    "part": part, "sequence_number": next(seq)})
                for piece in _chunks(reply):
                    yield "content", _sse("response.output_text.delta", {
                        "item_id": item["id"], "output_index": index, "content_index": 0,
                        "delta": piece, "logprobs": [], "sequence_number": next(seq)})
                text = item["content"][0]["text"]
                yield "meta", _sse("response.output_text.done", {
                    "item_id": item["id"], "output_index": index, "content_index": 0,
                    "text": text, "logprobs": [], "sequence_number": next(seq)})
                yield "meta", _sse("response.content_part.done", {
                    "item_id": item["id"], "output_index": index, "content_index": 0,
                    "part": item["content"][0], "sequence_number": next(seq)})
            elif item["type"] == "function_call":
                yield "meta", _sse("response.output_item.added", {
                    "output_index": index, "item": {**item, "arguments": "",
                                                    "status": "in_progress"},
                    "sequence_number": next(seq)})
                for piece in _split_json(item["arguments"]):
                    yield "content", _sse("response.function_call_arguments.delta", {
                        "item_id": item["id"], "output_index": index, "delta": piece,
                        "sequence_number": next(seq)})
                yield "meta", _sse("response.function_call_arguments.done", {
                    "item_id": item["id"], "output_index": index, "name": item["name"],
                    "arguments": item["arguments"], "sequence_number": next(seq)})
            elif item["type"] == "reasoning":
                # As the real API streams it: the item empty, then its summary's parts.
                yield "meta", _sse("response.output_item.added", {
                    "output_index": index, "item": {**item, "summary": []},
                    "sequence_number": next(seq)})
                for n, summary in enumerate(item["summary"]):
                    where = {"item_id": item["id"], "output_index": index,
                             "summary_index": n}
                    yield "meta", _sse("response.reasoning_summary_part.added", {
                        **where, "part": {"type": "summary_text", "text": ""},
                        "sequence_number": next(seq)})
                    yield "meta", _sse("response.reasoning_summary_text.delta", {
                        **where, "delta": summary["text"], "sequence_number": next(seq)})
                    yield "meta", _sse("response.reasoning_summary_text.done", {
                        **where, "text": summary["text"], "sequence_number": next(seq)})
                    yield "meta", _sse("response.reasoning_summary_part.done", {
                        **where, "part": summary, "sequence_number": next(seq)})
            else:
                yield "meta", _sse("response.output_item.added", {
                    "output_index": index, "item": item, "sequence_number": next(seq)})
            yield "meta", _sse("response.output_item.done", {
                "output_index": index, "item": item, "sequence_number": next(seq)})
        end = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        yield "meta", _sse(end, {"response": final, "sequence_number": next(seq)})


def _sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"


def _check_responses(body: dict[str, Any]) -> str | None:
    """What the real API would refuse with a 400 (the common mistakes)."""
    if not body.get("model"):
        return "Missing required parameter: 'model'."
    if "messages" in body:
        return "Unsupported parameter: 'messages'. In the Responses API, use 'input'."
    if "input" not in body and not body.get("previous_response_id"):
        return "Missing required parameter: 'input'."
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("type") == "function" and "function" in tool:
            return ("Missing required parameter: 'tools[0].name' (Responses API tools are "
                    "flat: {type, name, parameters}).")
    return None
