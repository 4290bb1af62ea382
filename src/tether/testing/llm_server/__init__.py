"""A scripted LLM server on 127.0.0.1 that speaks the OpenAI and Anthropic HTTP APIs.

Point a real client at it (``base_url``) and it answers each chat request with the next
step of a script: a reply (text, tool calls, token usage) or a fault (an HTTP error, a
hang, a reset connection, a slow or broken stream). It records every request. It is a
plain asyncio HTTP/1.1 server with keep-alive and chunked SSE streaming, with no
dependency beyond the standard library.

The package has one module per provider (``_openai``, ``_anthropic``: request checks,
response and stream rendering, error shapes), the script types (``_script``), the
HTTP plumbing (``_http``), the server (``_server``) and the command line (``_cli``).

Endpoints:

- ``POST /v1/chat/completions``: OpenAI Chat Completions, streaming or not.
- ``POST /v1/messages``: Anthropic Messages, streaming or not; a request for on-demand
  compaction (``compaction``) is answered with the reply's text in a ``compaction`` block.
- ``POST /v1/responses``: the OpenAI Responses API, from the command line (in Python,
  ``tether.testing.responses_api.ScriptedResponsesServer``).
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
    {"json": {"answer": 42}}              (text is the JSON dump, for output schemas;
                                           Reply(json={"answer": 42}) in Python)
    {"text": "...", "finish_reason": "length"}          (Anthropic: max_tokens)
    {"refusal": "I can't help with that."}   (OpenAI: "content": null and the text in
                                              "refusal" (stream: "refusal" deltas);
                                              Anthropic: a text block, stop_reason
                                              "refusal")
    {"text": "...", "input_tokens": 1000, "cache_read_tokens": 800,
     "cache_write_tokens": 100}   (of the 1,000 prompt tokens, 800 read from the prompt
                                   cache, 100 written to it: OpenAI's
                                   prompt_tokens_details.cached_tokens (reads only),
                                   Anthropic's cache_read/cache_creation_input_tokens,
                                   its input_tokens the other 100)
    {"text": "...", "input_tokens": 1000, "cache_write_tokens": 600,
     "cache_write_1h_tokens": 400}   (of the 600 written to the cache, 400 to the 1-hour
                                   cache: Anthropic's cache_creation
                                   {"ephemeral_5m_input_tokens": 200,
                                    "ephemeral_1h_input_tokens": 400})
    {"text": "...", "no_usage": true}   (OpenAI: no "usage" in the answer, nor a usage
                                         chunk in its stream, as some compatible
                                         servers answer)
    {"text": "...", "delay": 0.5}                       (wait before answering)
    {"text": "a b c d", "chunk_delay": 0.2}             (slow stream: wait per chunk)
    {"fault": "slow_stream", "text": "a b c", "chunk_delay": 0.2}   (the same)
    {"text": "a b c d", "reset_after_chunks": 2}        (stream 2 chunks, then drop)
    {"text": "a b c d", "error_after_chunks": 2}        (stream 2 chunks, then an
                                                         in-stream error event)

A reply with N chunks or fewer and ``reset_after_chunks``/``error_after_chunks`` N
streams them all, then fails before the stream's closing events: the fault always
happens. On a request that is not streamed, ``reset_after_chunks`` sends half the body,
then drops the connection, and ``error_after_chunks`` answers 500 (until 2026-12-06
both were ignored there, and the whole answer went out).

``arguments`` is a JSON object, or a string sent verbatim (to test malformed
arguments). Token counts default to an estimate (about 4 characters per token). Text
is streamed in chunks of ``chunk_words`` words (default 1). Without ``chunk_delay``,
a non-streaming answer to a slow-stream step waits the sum of the chunk delays.

A fault::

    {"status": 429, "retry_after": 2}         (Retry-After: 2; a float or an HTTP-date)
    {"status": 500}  {"status": 503}  {"status": 529}
    {"status": 400, "message": "max_tokens is too large"}
    {"status": 401, "message": "invalid x-api-key"}
    {"status": 429, "error_type": "insufficient_quota"}   (the error body's type, and
                                OpenAI's code, in place of the status's usual one)
    {"fault": "out_of_credit"} (the account is out of credit: OpenAI's 429
                                ``insufficient_quota`` "You exceeded your current
                                quota...", Anthropic's 402 ``billing_error``;
                                ``Fault.out_of_credit()``. Anthropic's older answer is
                                {"status": 400, "message": "Your credit balance is too
                                low to access the Anthropic API. ..."})
    {"fault": "error_body", "status": 400, "message": "context too long"}
                               (an HTTP 200 whose body is the provider's error for the
                                status, as OpenAI-compatible gateways answer a
                                provider's failure: OpenAI's shape with the status as
                                its "code", Anthropic's {"type": "error", ...}; a
                                streamed request gets it as the stream's one event;
                                ``Fault.error_body(400, ...)``)
    {"fault": "hang"}          (read the request, never answer; ends when the client
                                gives up and closes the connection: after its timeout,
                                in real time; ``server.hanging`` counts those held)
    {"fault": "reset"}         (close the connection abruptly, TCP RST, no response)
    {"fault": "truncate"}      (headers and half the body, then close)

A ``status`` (a fault's, ``Fault.http``'s, an outage's) is an HTTP error status,
400-599; any other is refused (``ValueError``; a script file: "bad script", exit 2), as
is an outage whose ``seconds`` is not a finite number >= 0. (Until 2026-12-06 a 200
was served as a success carrying an error body, and a 0 as a response no client could
read.) A reply's fields are checked as well: ``text``, ``model``, ``refusal`` and
``finish_reason`` strings, token counts numbers (amiss ones, negative or infinite, are
served as given), ``delay`` and ``chunk_delay``
finite seconds >= 0, ``tool_calls`` a list of objects with a string ``name`` (until
2026-12-06 a mistyped one was taken, and the request that met it got a dropped
connection).

Error bodies have each provider's real shape (``{"error": {"message", "type", ...}}``
for OpenAI, ``{"type": "error", "error": {"type", "message"}}`` for Anthropic).

Any step may carry ``"times": N`` to answer N requests. When the script runs out the
server answers 500 "script exhausted" (and a ``responder``, if given, answers instead),
so a test notices an extra call.

An outage window (server level, not a step) answers ``status`` (503) to every chat
request for ``seconds`` after the server started or after the first chat request,
without consuming steps::

    {"outage": {"seconds": 2.0, "since": "first_request", "status": 503, "retry_after": 1}}

In Python ``Reply`` and ``Fault`` share a base class, ``ScriptStep`` (what a type
checker infers for a list of both). A step may also be a callable: it receives the
``RecordedRequest`` and returns a step (``Reply``, ``Fault`` or dict), or an awaitable
of one. ``responder=`` is such a callable that answers every request after the script
runs out.

Each ``RecordedRequest`` has ``method``, ``path``, ``headers`` (lower-case names,
``idempotency-key`` among them), ``body`` (parsed JSON), ``time`` (epoch seconds),
``protocol`` (``openai`` / ``anthropic`` / ``models``), ``status`` (the status given,
``None`` for hang/reset), ``outcome`` (``reply``, ``fault:<kind>``, ``outage``,
``exhausted``, ``step_error`` (a callable step raised), ``invalid``, ``unauthorized``)
and ``step`` (the index of the step in the script as set, when one answered).

With ``strict=True`` (default) the server checks requests the way the real APIs do
(roles, tool results matching earlier tool calls, required fields, Anthropic's forced
tool with thinking on) and answers 400
when they are wrong, so a client's conversion bugs show up in tests. With ``api_key=``
it answers 401 to a request without that key.
"""

from tether.testing.llm_server._cli import main
from tether.testing.llm_server._script import (
    DEFAULT_MODELS,
    Fault,
    Outage,
    RecordedRequest,
    Reply,
    ScriptStep,
    Step,
    StepLike,
    load_script,
    parse_step,
    slow_stream,
)
from tether.testing.llm_server._server import ScriptedLLMServer

__all__ = [
    "DEFAULT_MODELS",
    "Fault",
    "Outage",
    "RecordedRequest",
    "Reply",
    "ScriptStep",
    "ScriptedLLMServer",
    "Step",
    "StepLike",
    "load_script",
    "main",
    "parse_step",
    "slow_stream",
]
