"""The OpenAI and Anthropic clients against the scripted server over loopback HTTP:
replies, streams, tool calls both ways, and every failure classified for retry."""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tether import NonRetryable
from tether.ai import LLM
from tether.ai._accounting import CallRecord, failed_cost
from tether.ai._anthropic import OUTPUT_TOOL, AnthropicChat, to_anthropic_messages
from tether.ai._errors import (
    FatalProviderError,
    ProviderBillingError,
    ProviderError,
    RetryableProviderError,
    parse_retry_after,
)
from tether.ai._llm import _cost
from tether.ai._openai import OpenAIChat
from tether.ai._pricing import PRICES_AS_OF, PriceTable
from tether.ai._types import (
    ChatClient,
    ChatReply,
    ToolCall,
    ToolSpec,
    Usage,
    chat_client,
    parse_model_spec,
    tool_message,
    user_message,
)
from tether.errors import ConfigError
from tether.testing import Fault, Outage, Reply, ScriptedLLMServer
from tether.testing.llm_server import parse_step

PROTOCOLS = ["openai", "anthropic"]
WEATHER = ToolSpec("weather", "Current weather of a city.",
                   {"type": "object", "properties": {"city": {"type": "string"}},
                    "required": ["city"]})
HELLO = [user_message("Hello")]


def make_client(server: ScriptedLLMServer, protocol: str, **kwargs: Any) -> ChatClient:
    if protocol == "openai":
        return OpenAIChat("gpt-4.1-mini", base_url=server.base_url, **kwargs)
    return AnthropicChat("claude-haiku-4-5", base_url=server.anthropic_base_url, **kwargs)


@pytest.fixture(autouse=True)
def _fresh_usage_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The OpenAI client remembers, per process and base URL, which servers sent a
    stream's usage and which it warned of sending none. A loopback server of an earlier
    test may have had this test's port (ports are reused), and its memory then decided
    this test's stream (the flake of ``..._never_tells_its_usage_...``): each test
    starts with none."""
    from tether.ai import _openai

    monkeypatch.setattr(_openai, "_USAGE_SENT", set())
    monkeypatch.setattr(_openai, "_NO_USAGE_TOLD", set())
    monkeypatch.setattr(_openai, "_NO_USAGE_ANSWERED", set(), raising=False)


@pytest.fixture
async def served() -> AsyncIterator[ScriptedLLMServer]:
    """A started server with an empty script; tests set it with ``set_script``."""
    async with ScriptedLLMServer() as server:
        yield server


async def call(client: ChatClient, streamed: bool, **kwargs: Any) -> ChatReply:
    try:
        if streamed:
            return await client.stream(kwargs.pop("messages", HELLO), **kwargs)
        return await client.chat(kwargs.pop("messages", HELLO), **kwargs)
    finally:
        await client.aclose()


# -- replies -------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_text_reply(served: ScriptedLLMServer, protocol: str, streamed: bool) -> None:
    """A text answer comes back with usage, model, finish reason and provider."""
    served.set_script([Reply("Hello there, friend.", input_tokens=11, output_tokens=5,
                             model="dated-model-2025-01-01")])
    chunks: list[str] = []
    kwargs: dict[str, Any] = {"on_chunk": chunks.append} if streamed else {}
    reply = await call(make_client(served, protocol), streamed, **kwargs)
    assert reply.text == "Hello there, friend."
    assert reply.tool_calls == []
    assert reply.usage == Usage(11, 5)
    assert reply.model == "dated-model-2025-01-01"
    assert reply.finish_reason == "stop"
    assert reply.provider == protocol
    assert reply.raw_id
    if streamed:
        assert len(chunks) > 1 and "".join(chunks) == reply.text


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_refusal_is_the_replys_text_with_finish_reason_content_filter(
        served: ScriptedLLMServer, protocol: str, streamed: bool) -> None:
    """OpenAI sends a refusal in ``message.refusal`` (``content`` null; streamed, in
    ``refusal`` deltas), Anthropic as text with ``stop_reason: refusal``: both give the
    refusal as the text, ``content_filter``, and stream it to ``on_chunk``. The OpenAI
    client read ``content`` only: no text and ``stop``, the model's reason lost."""
    served.set_script([Reply(refusal="I can't help with that request.")])
    chunks: list[str] = []
    kwargs: dict[str, Any] = {"on_chunk": chunks.append} if streamed else {}
    reply = await call(make_client(served, protocol), streamed, **kwargs)
    assert reply.text == "I can't help with that request."
    assert reply.finish_reason == "content_filter"
    assert reply.tool_calls == []
    if streamed:
        assert "".join(chunks) == reply.text


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("reason", ["max_tokens", "model_context_window_exceeded"])
async def test_an_anthropic_reply_cut_off_is_finish_reason_length(
        served: ScriptedLLMServer, streamed: bool, reason: str) -> None:
    """Anthropic cuts a reply at ``max_tokens`` or when the context window fills up
    (``model_context_window_exceeded``): both are ``length``, so an agent fails on the
    cut reply instead of taking it for a whole answer. The second came back as its own
    name, which nothing reads as a cut."""
    served.set_script([Reply("The three reasons are: first, the", finish_reason=reason)])
    reply = await call(make_client(served, "anthropic"), streamed)
    assert reply.text == "The three reasons are: first, the"
    assert reply.finish_reason == "length"


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("figure", [-500, float("inf")], ids=["negative", "inf"])
async def test_usage_a_provider_reports_amiss_counts_no_tokens(
        served: ScriptedLLMServer, protocol: str, streamed: bool, figure: Any) -> None:
    """An endpoint (a proxy, a local server) that reports a negative input count or
    ``Infinity``: the reply comes back with 0 input tokens (a text of digits counts as
    its number, other text as 0, a count past 2**53 as 2**53). Read as they came,
    ``Infinity`` raised once the provider had answered (the durable call failed after
    it was paid, and was retried, and paid, without end) and -500 took 500 tokens off
    the run's spending, its budget with it."""
    served.set_script([Reply("Hi.", input_tokens=figure, output_tokens=5)])
    reply = await call(make_client(served, protocol), streamed)
    assert reply.usage == Usage(0, 5)
    assert Usage.reported(None, "x") == Usage.reported(True, float("nan")) == Usage()
    assert Usage.reported("42", 10**400) == Usage(42, 2**53)
    assert Usage.reported(12.7, " 7 ") == Usage(12, 7)


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tool_calls_both_ways(served: ScriptedLLMServer, protocol: str,
                                    streamed: bool) -> None:
    """The model's tool calls are parsed; the conversation with the calls and their results
    goes back in the provider's format (the strict server checks the pairing)."""
    served.set_script([
        Reply("Checking.", tool_calls=[{"name": "weather", "arguments": {"city": "Paris"}},
                                       {"name": "weather", "arguments": {"city": "Oslo"}}]),
        Reply("Paris 18 °C, Oslo 4 °C."),
    ])
    client = make_client(served, protocol)
    try:
        first = await (client.stream(HELLO, tools=[WEATHER]) if streamed
                       else client.chat(HELLO, tools=[WEATHER]))
        assert first.finish_reason == "tool_calls"
        assert [c.arguments for c in first.tool_calls] == [{"city": "Paris"}, {"city": "Oslo"}]
        assert all(c.name == "weather" and c.id and c.parse_error is None
                   for c in first.tool_calls)
        messages = [{"role": "system", "content": "Be brief."}, *HELLO, first.to_message(),
                    *[tool_message(c.id, f"result {i}") for i, c in enumerate(first.tool_calls)]]
        second = await (client.stream(messages, tools=[WEATHER]) if streamed
                        else client.chat(messages, tools=[WEATHER]))
    finally:
        await client.aclose()
    assert second.text == "Paris 18 °C, Oslo 4 °C."
    sent = served.requests[1].body
    if protocol == "openai":
        assert sent["tools"] == [WEATHER.to_openai()]
        assert sent["messages"][2]["tool_calls"][0]["function"]["name"] == "weather"
        assert sent["messages"][3] == {"role": "tool", "tool_call_id": first.tool_calls[0].id,
                                       "content": "result 0"}
    else:
        assert sent["system"] == "Be brief."
        assert sent["tools"] == [WEATHER.to_anthropic()]
        assistant, results = sent["messages"][1], sent["messages"][2]
        assert assistant["content"][0] == {"type": "text", "text": "Checking."}
        assert assistant["content"][1]["input"] == {"city": "Paris"}
        assert [b["tool_use_id"] for b in results["content"]] == [
            c.id for c in first.tool_calls]


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_malformed_tool_arguments_are_kept_raw(served: ScriptedLLMServer, protocol: str,
                                                     streamed: bool) -> None:
    """Arguments that are not a JSON object do not crash: raw text and parse_error kept."""
    served.set_script([Reply(tool_calls=[{"name": "weather", "arguments": '{"city": "Par'},
                                         {"name": "weather", "arguments": "[1, 2]"}])])
    reply = await call(make_client(served, protocol), streamed, tools=[WEATHER])
    broken, listed = reply.tool_calls
    assert broken.arguments is None and broken.raw_arguments == '{"city": "Par'
    assert broken.parse_error is not None and "not valid JSON" in broken.parse_error
    assert listed.arguments is None and "not a JSON object" in (listed.parse_error or "")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_chat_and_stream_give_the_same_reply(served: ScriptedLLMServer,
                                                   protocol: str) -> None:
    """One scripted answer, read whole or streamed, gives equal replies (ids aside)."""
    step = Reply("Two words.", tool_calls=[{"name": "weather", "id": "id_1",
                                            "arguments": {"city": "Rome"}}],
                 input_tokens=9, output_tokens=4)
    served.set_script([step, step])
    client = make_client(served, protocol)
    try:
        whole = await client.chat(HELLO, tools=[WEATHER])
        streamed = await client.stream(HELLO, tools=[WEATHER])
    finally:
        await client.aclose()
    assert {**whole.to_dict(), "raw_id": ""} == {**streamed.to_dict(), "raw_id": ""}


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_output_schema(served: ScriptedLLMServer, protocol: str, streamed: bool) -> None:
    """An output schema is sent the provider's way; the reply's text is the JSON answer."""
    schema = {"title": "Answer", "type": "object",
              "properties": {"value": {"type": "integer"}}, "required": ["value"]}
    if protocol == "openai":
        served.set_script([{"json": {"value": 42}}])
    else:
        served.set_script([Reply(tool_calls=[{"name": OUTPUT_TOOL, "arguments": {"value": 42}}])])
    reply = await call(make_client(served, protocol), streamed, output_schema=schema)
    assert json.loads(reply.text or "") == {"value": 42}
    assert reply.tool_calls == [] and reply.finish_reason == "stop"
    body = served.requests[0].body
    if protocol == "openai":
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["schema"] == schema
    else:
        assert body["tools"][-1]["name"] == OUTPUT_TOOL
        assert body["tool_choice"] == {"type": "tool", "name": OUTPUT_TOOL}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tool_choice_and_params_are_sent(served: ScriptedLLMServer, protocol: str) -> None:
    """tool_choice is translated per provider; extra params pass through."""
    served.set_script([Reply("x"), Reply("y")])
    client = make_client(served, protocol)
    try:
        await client.chat(HELLO, tools=[WEATHER], tool_choice="weather", temperature=0.2)
        await client.chat(HELLO, tools=[WEATHER], tool_choice="required", max_tokens=50)
        with pytest.raises(ConfigError, match="tool_choice"):
            await client.chat(HELLO, tools=[WEATHER], tool_choice="nope")
    finally:
        await client.aclose()
    first, second = (r.body for r in served.requests)
    assert client.request_body(HELLO, tools=[WEATHER], tool_choice="weather",
                               temperature=0.2) == first
    assert first["temperature"] == 0.2
    assert second["max_tokens"] == 50
    if protocol == "openai":
        assert first["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
        assert second["tool_choice"] == "required"
    else:
        assert first["tool_choice"] == {"type": "tool", "name": "weather"}
        assert second["tool_choice"] == {"type": "any"}
        assert first["max_tokens"] == 4096


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_headers_idempotency_key_and_auth(protocol: str) -> None:
    """The Idempotency-Key, the API key and the provider's version headers are sent."""
    async with ScriptedLLMServer([Reply("ok")], api_key="sk-test") as server:
        client = make_client(server, protocol, api_key="sk-test",
                             extra_headers={"X-Extra": "1"})
        await call(client, False, idempotency_key="run-7:step-3")
    headers = server.requests[0].headers
    assert headers["idempotency-key"] == "run-7:step-3"
    assert headers["x-extra"] == "1"
    if protocol == "openai":
        assert headers["authorization"] == "Bearer sk-test"
    else:
        assert headers["x-api-key"] == "sk-test"
        assert headers["anthropic-version"] == "2023-06-01"


# -- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_rate_limit_is_retryable_with_retry_after(served: ScriptedLLMServer,
                                                        protocol: str, streamed: bool) -> None:
    """429 with Retry-After: a RetryableProviderError whose retry_after is the header."""
    served.set_script([Fault.rate_limit(retry_after=2.5)])
    with pytest.raises(RetryableProviderError) as info:
        await call(make_client(served, protocol), streamed)
    err = info.value
    assert err.status == 429 and err.retry_after == 2.5 and err.provider == protocol
    assert err.code in ("rate_limit_exceeded", "rate_limit_error")
    assert err.request_id and err.request_id.startswith("req_")
    assert "retry after 2.5 s" in str(err) and "HTTP 429" in str(err)
    assert not isinstance(err, NonRetryable)


@pytest.mark.parametrize("status", [500, 503, 529, 408, 409])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_server_errors_are_retryable(served: ScriptedLLMServer, protocol: str,
                                           status: int) -> None:
    """5xx, 408 and 409 are retryable, with no retry_after when no header was sent."""
    served.set_script([Fault.http(status)])
    with pytest.raises(RetryableProviderError) as info:
        await call(make_client(served, protocol), False)
    assert info.value.status == status and info.value.retry_after is None


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_client_errors_are_fatal_with_the_providers_message(
        served: ScriptedLLMServer, protocol: str, status: int, streamed: bool) -> None:
    """4xx refusals are FatalProviderError (a NonRetryable) carrying the provider's message."""
    served.set_script([Fault.http(status, f"scripted refusal {status}")])
    with pytest.raises(FatalProviderError) as info:
        await call(make_client(served, protocol), streamed)
    err = info.value
    assert err.status == status and err.message == f"scripted refusal {status}"
    assert isinstance(err, NonRetryable) and isinstance(err, ProviderError)
    assert f"scripted refusal {status}" in str(err)
    # (a key refused says by which endpoint, in the text; the message is the provider's)
    url = served.base_url if protocol == "openai" else served.anthropic_base_url
    assert (err.refused_by == url.rstrip("/")) is (status in (401, 403))
    assert (f"(refused by {url.rstrip('/')})" in str(err)) is (status in (401, 403))


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_account_out_of_credit_is_fatal_not_a_rate_limit(
        served: ScriptedLLMServer, protocol: str, streamed: bool) -> None:
    """OpenAI answers an account out of credit with a 429 whose type and code are
    ``insufficient_quota``, Anthropic with a 402 ``billing_error``: a
    ``ProviderBillingError`` (fatal: a NonRetryable), whose text has the provider's
    message, its request id and what to do. The 429 was a retryable rate limit: a step
    with a days-long retry policy retried for days, and nobody was told. A rate limit
    stays one, whatever its message says (OpenAI's token limits say "quota" too)."""
    served.set_script([Fault.out_of_credit(),
                       Fault.rate_limit(1, "Rate limit reached: TPM quota of your org")])
    with pytest.raises(ProviderBillingError) as info:
        await call(make_client(served, protocol), streamed)
    with pytest.raises(RetryableProviderError) as limited:
        await call(make_client(served, protocol), streamed)
    assert limited.value.retry_after == 1
    assert not isinstance(limited.value, FatalProviderError)
    err = info.value
    assert isinstance(err, FatalProviderError) and isinstance(err, NonRetryable)
    if protocol == "openai":
        assert err.status == 429 and err.code == "insufficient_quota"
        assert err.message.startswith("You exceeded your current quota")
        assert "platform.openai.com/settings/organization/billing" in str(err)
    else:
        assert err.status == 402 and err.code == "billing_error"
        assert err.message.startswith("Your credit balance is too low")
        assert "console.anthropic.com/settings/billing" in str(err)
    assert err.request_id and f"[request {err.request_id}]" in str(err)
    assert err.message in str(err)
    assert "out of credit or over its spending limit: add credit or check the plan" in str(err)
    assert served.requests[0].outcome == "fault:out_of_credit"


@pytest.mark.parametrize(("protocol", "step"), [
    ("openai", {"status": 429, "error_type": "credit_balance_exhausted"}),
    ("openai", {"status": 429, "error_type": "insufficient_quota",
                "message": "You exceeded your current quota"}),
    ("anthropic", {"status": 400, "message": "Your credit balance is too low to access the "
                                             "Anthropic API. Please go to Plans & Billing."}),
    ("anthropic", {"status": 402}),
])
async def test_every_form_of_out_of_credit_is_a_billing_error(
        served: ScriptedLLMServer, protocol: str, step: dict[str, Any]) -> None:
    """OpenAI's newer code (``credit_balance_exhausted``, type ``insufficient_quota``),
    Anthropic's 400 "credit balance is too low" (its answer before the documented 402)
    and a bare 402: all ``ProviderBillingError``; the script's JSON says each."""
    served.set_script([parse_step(step)])
    with pytest.raises(ProviderBillingError) as info:
        await call(make_client(served, protocol), False)
    assert info.value.status == step["status"]
    assert "add credit" in str(info.value)


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_hang_times_out_and_is_retryable(served: ScriptedLLMServer, protocol: str,
                                               streamed: bool) -> None:
    """A server that never answers: the client's timeout fires, as a retryable error."""
    served.set_script([Fault.hang()])
    with pytest.raises(RetryableProviderError, match="timed out") as info:
        await call(make_client(served, protocol, timeout=0.3), streamed)
    assert info.value.status is None


@pytest.mark.parametrize("fault", [Fault.reset(), Fault.truncate()], ids=["reset", "truncate"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_dropped_connections_are_retryable(served: ScriptedLLMServer, protocol: str,
                                                 fault: Fault) -> None:
    """A connection reset before any answer, or cut in the middle of the body, is
    retryable; the client is still usable afterwards."""
    served.set_script([fault, Reply("recovered")])
    client = make_client(served, protocol)
    try:
        with pytest.raises(RetryableProviderError, match="connection dropped"):
            await client.chat(HELLO)
        assert (await client.chat(HELLO)).text == "recovered"
    finally:
        await client.aclose()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stream_dropped_midway_is_retryable(served: ScriptedLLMServer,
                                                  protocol: str) -> None:
    """A stream cut after some chunks is retryable; the chunks seen were delivered."""
    served.set_script([Reply("one two three four", reset_after_chunks=2)])
    chunks: list[str] = []
    with pytest.raises(RetryableProviderError, match="connection dropped"):
        await call(make_client(served, protocol), True, on_chunk=chunks.append)
    assert "".join(chunks) == "one two "


async def _close_delimited_stream(*answers: list[str]) -> tuple[asyncio.Server, str]:
    """A server that answers its requests in turn with the OpenAI streams ``answers``
    (the last one again once they are used up; each event a ``data:`` payload), then
    closes the connection: no length, no chunked encoding, so the close is the only end
    the client sees (as behind some proxies)."""
    queue = list(answers)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        events = queue.pop(0) if len(queue) > 1 else queue[0]
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Connection: close\r\n\r\n"
                     + b"".join(f"data: {e}\n\n".encode() for e in events))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"


def _openai_chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    return json.dumps({"id": "c1", "model": "gpt-4.1-mini", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}]})


async def test_a_stream_closed_after_its_finish_reason_before_its_usage_is_dropped(
        ) -> None:
    """Asked for its usage, an OpenAI stream sends it in a chunk after the finish
    reason, then ``[DONE]``. From a server that has sent usage before, a connection
    closed between the two is dropped (retryable), not a reply of no tokens and no cost
    that budgets would never see."""
    usage = json.dumps({"id": "c1", "model": "gpt-4.1-mini", "choices": [],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 1}})
    whole = [_openai_chunk({"role": "assistant", "content": "Hello"}),
             _openai_chunk({}, "stop"), usage, "[DONE]"]
    server, url = await _close_delimited_stream(whole, whole[:2])
    try:
        reply = await call(OpenAIChat("gpt-4.1-mini", base_url=url), True)
        assert reply.usage == Usage(5, 1)
        with pytest.raises(RetryableProviderError, match="connection dropped"):
            await call(OpenAIChat("gpt-4.1-mini", base_url=url), True)
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("done", [True, False], ids=["done", "no-done"])
async def test_a_stream_that_never_tells_its_usage_is_taken_with_a_warning(
        caplog: pytest.LogCaptureFixture, done: bool) -> None:
    """A compatible server that never sends usage, ending its streams with ``[DONE]``
    or without: the reply is taken (no tokens counted) and a warning says so, once per
    server (taken as dropped, each of its streamed calls would fail for ever)."""
    import logging

    server, url = await _close_delimited_stream([
        _openai_chunk({"role": "assistant", "content": "Hello"}),
        _openai_chunk({}, "stop"), *(["[DONE]"] if done else [])])
    caplog.set_level(logging.WARNING, logger="tether.ai")
    try:
        for _ in range(2):
            reply = await call(OpenAIChat("gpt-4.1-mini", base_url=url), True)
            assert reply.text == "Hello" and reply.usage == Usage()
    finally:
        server.close()
        await server.wait_closed()
    told = [r.getMessage() for r in caplog.records if "without the usage" in r.getMessage()]
    assert len(told) == 1 and url in told[0], told


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_error_event_in_stream_is_classified(served: ScriptedLLMServer,
                                                   protocol: str) -> None:
    """An in-stream error event (Anthropic overloaded_error, OpenAI server_error) is
    retryable."""
    served.set_script([Reply("one two three", error_after_chunks=1)])
    with pytest.raises(RetryableProviderError) as info:
        await call(make_client(served, protocol), True)
    assert info.value.code in ("overloaded_error", "server_error")


def _connections(client: ChatClient) -> list[int]:
    """How many connections each of the client's pools holds."""
    pools = client._pools  # type: ignore[attr-defined]
    return [len(pool._transport._pool.connections) for pool in pools]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_requests_in_flight_share_pools_of_eight(served: ScriptedLLMServer,
                                                       protocol: str) -> None:
    """A pool is walked connection by connection on every request and release, so 20
    calls at once go out through 3 pools of at most 8 connections, not one of 20; calls
    made one after another afterwards reuse an open connection of the first pool."""
    served.set_script([Reply("slow", delay=0.3, times=20), Reply("next", times=3)])
    client = make_client(served, protocol)
    try:
        replies = await asyncio.gather(*(client.chat(HELLO) for _ in range(20)))
        assert [r.text for r in replies] == ["slow"] * 20
        assert _connections(client) == [8, 8, 4]
        for _ in range(3):
            assert (await client.chat(HELLO)).text == "next"
        assert _connections(client) == [8, 8, 4]
        assert client._in_flight == [0, 0, 0]  # type: ignore[attr-defined]
    finally:
        await client.aclose()


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_request_leaves_its_pool_however_it_ends(served: ScriptedLLMServer,
                                                         protocol: str,
                                                         streamed: bool) -> None:
    """A request counts as in flight on its pool until its answer has been read or has
    failed (refused, dropped, cut mid-stream): otherwise the next calls would go to a
    new pool each time and never reuse a connection."""
    cut = Reply("one two three", reset_after_chunks=1) if streamed else Fault.truncate()
    served.set_script([cut, Fault.http(500), Fault.reset(), Fault.http(400), Reply("done")])
    client = make_client(served, protocol)
    try:
        for _ in range(4):
            with pytest.raises(ProviderError):
                if streamed:
                    await client.stream(HELLO)
                else:
                    await client.chat(HELLO)
            assert client._in_flight == [0]  # type: ignore[attr-defined]
        reply = await (client.stream(HELLO) if streamed else client.chat(HELLO))
        assert reply.text == "done" and client._in_flight == [0]  # type: ignore[attr-defined]
    finally:
        await client.aclose()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_connection_refused_is_retryable(protocol: str) -> None:
    """Nobody listening: a retryable error naming the URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}" + ("/v1" if protocol == "openai" else "")
    client: ChatClient = (OpenAIChat("m", base_url=url) if protocol == "openai"
                          else AnthropicChat("m", base_url=url))
    with pytest.raises(RetryableProviderError, match="cannot connect"):
        await call(client, False)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_outage_then_recovery(protocol: str) -> None:
    """During an outage window calls fail retryably; after it they succeed, and the
    script step was not spent on the failures."""
    async with ScriptedLLMServer([Reply("back")], outage=Outage(0.3, retry_after=0.1)) as server:
        client = make_client(server, protocol)
        try:
            errors = 0
            while True:
                try:
                    reply = await client.chat(HELLO)
                    break
                except RetryableProviderError as err:
                    assert err.status == 503 and err.retry_after == 0.1
                    errors += 1
                    assert errors < 500, "the outage never ended"
                    await asyncio.sleep(err.retry_after)
        finally:
            await client.aclose()
    assert reply.text == "back"
    assert errors >= 1
    assert server.requests[-1].outcome == "reply"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_exhausted_script_is_a_retryable_500(protocol: str) -> None:
    """An unscripted extra call surfaces as a 500 naming the exhausted script."""
    async with ScriptedLLMServer() as server:
        with pytest.raises(RetryableProviderError, match="script exhausted"):
            await call(make_client(server, protocol), False)


def test_retry_after_forms() -> None:
    """Retry-After as seconds, as an HTTP-date, and OpenAI's retry-after-ms."""
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after({"retry-after": email.utils.formatdate(now - 60, usegmt=True)},
                             now=now) == 0.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


async def test_retry_after_http_date_from_the_server(served: ScriptedLLMServer) -> None:
    """A 429 whose Retry-After is an HTTP-date gives retry_after in seconds."""
    served.set_script([Fault.rate_limit(retry_after=email.utils.formatdate(
        time.time() + 20, usegmt=True))])
    with pytest.raises(RetryableProviderError) as info:
        await call(make_client(served, "anthropic"), False)
    assert info.value.retry_after == pytest.approx(20, abs=2)


# -- configuration -------------------------------------------------------------------------


def test_missing_api_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key for a remote endpoint: ConfigError naming the environment variable; a
    loopback base_url needs none."""
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY",
                "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIChat("gpt-4.1")
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        AnthropicChat("claude-sonnet-4-5")
    with pytest.raises(ConfigError, match="not an http"):
        OpenAIChat("m", base_url="ftp://x", api_key="k")
    assert OpenAIChat("m", base_url="http://localhost:1234/v1").base_url.endswith("/v1")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/")
    assert AnthropicChat("m").base_url == "http://127.0.0.1:9"


async def test_env_variables_configure_the_clients(served: ScriptedLLMServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """OPENAI_BASE_URL / OPENAI_API_KEY are read when no argument is given."""
    monkeypatch.setenv("OPENAI_BASE_URL", served.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    served.set_script([Reply("env")])
    assert (await call(OpenAIChat("gpt-4.1"), False)).text == "env"
    assert served.requests[0].headers["authorization"] == "Bearer sk-env"


def test_parse_model_spec() -> None:
    """provider:model splits at the first colon; unknown or missing providers are named."""
    assert parse_model_spec("openai:gpt-4.1-mini") == ("openai", "gpt-4.1-mini")
    assert parse_model_spec("anthropic:claude-sonnet-4-5") == ("anthropic", "claude-sonnet-4-5")
    assert parse_model_spec("openai-compatible:llama3.1:8b") == ("openai-compatible",
                                                                 "llama3.1:8b")
    with pytest.raises(ConfigError, match="known providers: openai, anthropic"):
        parse_model_spec("gemini:pro")
    with pytest.raises(ConfigError, match="names no provider"):
        parse_model_spec("gpt-4.1")
    with pytest.raises(ConfigError, match="names no model"):
        parse_model_spec("openai:")


async def test_chat_client_factory(served: ScriptedLLMServer) -> None:
    """chat_client builds the right client; openai-compatible needs a base_url, no key."""
    served.set_script([Reply("compat"), Reply("claude")])
    compat = chat_client("openai-compatible:llama3.1:8b", base_url=served.base_url)
    assert isinstance(compat, OpenAIChat) and compat.model == "llama3.1:8b"
    reply = await call(compat, False)
    assert (reply.text, reply.provider) == ("compat", "openai-compatible")
    claude = chat_client("anthropic:claude-haiku-4-5", base_url=served.anthropic_base_url)
    assert isinstance(claude, AnthropicChat)
    assert (await call(claude, True)).text == "claude"
    with pytest.raises(ConfigError, match="base_url"):
        chat_client("openai-compatible:x")


def test_anthropic_message_conversion() -> None:
    """System messages join into system; tool results become a user turn's tool_result
    blocks (first), consecutive roles merge, images convert."""
    system, messages = to_anthropic_messages([
        {"role": "system", "content": "A"},
        {"role": "developer", "content": "B"},
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}},
            {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "r1"},
        {"role": "tool", "tool_call_id": "c2", "content": "boom", "is_error": True},
        {"role": "user", "content": "thanks"},
    ])
    assert system == "A\n\nB"
    assert messages[0]["content"][1]["source"] == {"type": "base64", "media_type": "image/png",
                                                   "data": "AAAA"}
    assert messages[1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "c1", "name": "f", "input": {}},
        {"type": "tool_use", "id": "c2", "name": "f", "input": {"_raw_arguments": "[1]"}}]}
    assert messages[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "c1", "content": "r1"},
        {"type": "tool_result", "tool_use_id": "c2", "content": "boom", "is_error": True},
        {"type": "text", "text": "thanks"}]}
    with pytest.raises(ConfigError, match="role 'narrator'"):
        to_anthropic_messages([{"role": "narrator", "content": "x"}])


def test_tool_spec_from_any_shape() -> None:
    """ToolSpec.of accepts a spec dict, OpenAI and Anthropic tool dicts, and Tool objects."""
    class ToolLike:
        name = "weather"
        description = "Current weather of a city."
        parameters = WEATHER.parameters

    assert ToolSpec.of(WEATHER.to_openai()) == WEATHER
    assert ToolSpec.of(WEATHER.to_anthropic()) == WEATHER
    assert ToolSpec.of({"name": "weather", "description": WEATHER.description,
                        "parameters": WEATHER.parameters}) == WEATHER
    assert ToolSpec.of(ToolLike()) == WEATHER
    with pytest.raises(ConfigError):
        ToolSpec.of(42)


def test_reply_round_trips_through_json() -> None:
    """A reply survives to_dict -> JSON -> from_dict, malformed tool calls included."""
    reply = ChatReply(text=None, tool_calls=[ToolCall.parse("c1", "f", '{"a": 1}'),
                                             ToolCall.parse("c2", "f", "{oops")],
                      usage=Usage(3, 4), model="m", finish_reason="tool_calls",
                      provider="openai", raw_id="r")
    assert ChatReply.from_dict(json.loads(json.dumps(reply.to_dict()))) == reply
    assert reply.to_message()["tool_calls"][1]["function"]["arguments"] == "{oops"
    assert Usage(1, 2) + Usage(3, 4) == Usage(4, 6)


def test_price_table() -> None:
    """Known models are priced per million tokens, dated names match their base, overrides
    win and extend, unknown models cost 0 and are flagged."""
    prices = PriceTable({"my-model": (1.0, 2.0), "gpt-4.1": (1.0, 1.0)})
    usage = Usage(1_000_000, 500_000)
    assert PriceTable().cost("gpt-4.1-mini-2025-04-14", usage) == pytest.approx(0.40 + 0.80)
    assert PriceTable().cost("claude-sonnet-4-5-20250929", usage) == pytest.approx(3 + 7.5)
    assert PriceTable().cost("gpt-4o-mini", Usage(1000, 1000)) == pytest.approx(0.00075)
    assert prices.cost("gpt-4.1", usage) == pytest.approx(1.5)
    assert prices.cost("my-model", usage) == pytest.approx(2.0)
    assert prices.cost("claude-haiku-4-5", usage) == pytest.approx(1 + 2.5)
    unknown = prices.price("llama3.1:8b")
    assert unknown.known is False and prices.cost("llama3.1:8b", usage) == 0
    assert "claude-opus-4-1" in prices and "gpt-4.1-nano-x" not in prices
    assert PRICES_AS_OF.count("-") == 2
    with pytest.raises(ValueError):
        PriceTable({"bad": (-1, 0)})


def test_a_price_table_remembers_each_names_price() -> None:
    """A name asked again is answered with the price found the first time (a durable
    call asks two or three times), and what is remembered is what a lookup finds, for
    every form of a name; past the most it keeps, it starts over and stays right."""
    names = ["gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", "openai:gpt-4.1-mini",
             " anthropic/claude-sonnet-4-5 ", "claude-haiku-4-5-latest", "my-model",
             "llama3.1:8b", ""]
    prices = PriceTable({"my-model": (1.0, 2.0, 0.5, 1.5)})
    first = [prices.price(n) for n in names]
    assert all(prices.price(n) is p for n, p in zip(names, first, strict=True))
    assert first == [PriceTable({"my-model": (1.0, 2.0, 0.5, 1.5)}).price(n) for n in names]
    assert first[0] == first[1] == first[2] and first[0].known
    assert first[6].known is False and first[7].known is False
    for i in range(3_000):  # (names a provider answered with, all unknown)
        assert prices.price(f"model-{i}").known is False
    assert [prices.price(n) for n in names] == first
    assert len(prices._prices) <= 1_024


@pytest.mark.parametrize("record", [
    CallRecord(ChatReply(text="a", usage=Usage(120, 12)), 0.25, True).to_dict(),
    CallRecord(ChatReply(text="a", usage=Usage(100, 7, 40, 30, 10)), 1e-06, True).to_dict(),
    {**CallRecord(ChatReply(text=None), 0.0, False).to_dict(),
     "failed": {"tokens": 50, "usd": 0.5, "estimated": 3}},
    {"reply": {"text": "older record"}, "failed": {"tokens": -1, "usd": "x"}},
], ids=["reply", "cache", "failed", "older"])
def test_a_calls_cost_is_read_from_its_record_as_the_record_reads_it(
        record: dict[str, Any]) -> None:
    """``_cost`` (tokens and USD a durable call tallies, twice per call) reads the record
    without building its reply: the same figures as the record it would build."""
    built = CallRecord.from_dict(record)
    tokens, usd = failed_cost(record)
    assert _cost(record) == (built.reply.usage.total_tokens + tokens, built.cost_usd + usd)


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_prompt_cache_tokens_are_read_and_priced_apart(
        served: ScriptedLLMServer, protocol: str, streamed: bool) -> None:
    """A prompt of 10,000 tokens, 6,000 read from the provider's cache and 3,000
    written to it (Anthropic: ``cache_read_input_tokens``/``cache_creation_input_tokens``;
    OpenAI tells reads only, ``prompt_tokens_details.cached_tokens``): the reply's usage
    says so, and the default table prices reads at the cached price and Anthropic's
    writes at 1.25 times the input price. Before, every cached token cost the input
    price: Anthropic's writes were counted below what they cost."""
    served.set_script([Reply("ok", input_tokens=10_000, output_tokens=100,
                             cache_read_tokens=6_000, cache_write_tokens=3_000)])
    client = make_client(served, protocol)
    reply = await call(client, streamed)
    if protocol == "anthropic":  # claude-haiku-4-5: $1 in, $5 out; read $0.10, write $1.25
        assert reply.usage == Usage(10_000, 100, 6_000, 3_000)
        expected = (1_000 * 1.0 + 6_000 * 0.10 + 3_000 * 1.25 + 100 * 5.0) / 1e6
    else:  # gpt-4.1-mini: $0.40 in, $1.60 out, cached $0.10
        assert reply.usage == Usage(10_000, 100, 6_000, 0)
        expected = (4_000 * 0.40 + 6_000 * 0.10 + 100 * 1.60) / 1e6
    assert PriceTable().cost(reply.model, reply.usage) == pytest.approx(expected)
    assert Usage.from_dict(json.loads(json.dumps(reply.usage.to_dict()))) == reply.usage


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
async def test_anthropic_1_hour_cache_writes_are_priced_at_their_own_rate(
        served: ScriptedLLMServer, streamed: bool) -> None:
    """Anthropic tells how many of the tokens written to the cache went to the 1-hour
    cache (``cache_creation.ephemeral_1h_input_tokens``, beside the total
    ``cache_creation_input_tokens``): they cost twice the input price, the 5-minute
    ones 1.25 times. Before, all were priced at the 5-minute rate: a call writing 4,000
    tokens to the 1-hour cache was counted $0.003 short on claude-haiku-4-5."""
    served.set_script([Reply("ok", input_tokens=10_000, output_tokens=100,
                             cache_read_tokens=1_000, cache_write_tokens=5_000,
                             cache_write_1h_tokens=4_000)])
    reply = await call(make_client(served, "anthropic"), streamed)
    # claude-haiku-4-5: $1 in, $5 out; read $0.10, 5-minute write $1.25, 1-hour $2.00
    expected = (4_000 * 1.0 + 1_000 * 0.10 + 1_000 * 1.25 + 4_000 * 2.0 + 100 * 5.0) / 1e6
    assert PriceTable().cost(reply.model, reply.usage) == pytest.approx(expected)
    assert reply.usage.cache_write_tokens == 5_000  # (the total, as it was)
    assert reply.usage == Usage(10_000, 100, 1_000, 5_000, 4_000)
    assert reply.usage.to_dict()["cache_write_1h_tokens"] == 4_000
    assert Usage.from_dict(json.loads(json.dumps(reply.usage.to_dict()))) == reply.usage
    assert reply.usage + reply.usage == Usage(20_000, 200, 2_000, 10_000, 8_000)
    # A misreport cannot make more 1-hour writes than writes.
    assert Usage(100, 0).cached(0, 50, 80) == Usage(100, 0, 0, 50, 50)


def test_1_hour_cache_write_prices_in_the_table_and_in_overrides() -> None:
    """Five figures give a model its 1-hour cache write price; with two or four, a
    ``claude-`` model's 1-hour writes cost twice its input price (Anthropic's rule),
    another model's its write price."""
    usage = Usage(1_000_000, 0, 0, 500_000, 200_000)
    prices = PriceTable({"mine": (1.0, 2.0, 0.5, 3.0, 7.0), "claude-x": (2.0, 4.0),
                         "claude-y": (2.0, 4.0, 0.2, 2.5), "other": (1.0, 1.0, 0.5, 3.0)})
    assert prices.cost("mine", usage) == pytest.approx(0.5 + 0.9 + 1.4)
    assert prices.cost("claude-x", usage) == pytest.approx(1.0 + 0.75 + 0.8)
    assert prices.cost("claude-y", usage) == pytest.approx(1.0 + 0.75 + 0.8)
    assert prices.cost("other", usage) == pytest.approx(0.5 + 0.9 + 0.6)
    assert prices.cost("claude-sonnet-4-5", usage) == pytest.approx(1.5 + 1.125 + 1.2)
    assert prices.price("claude-opus-4-5").cache_write_1h_per_million == pytest.approx(10.0)


def test_cache_prices_in_the_table_and_in_overrides() -> None:
    """Four figures price a model's cache reads and writes; a pair prices a ``claude-``
    model's as Anthropic does (a tenth, 1.25 times) and others' as input; a usage with
    no cache figures costs what it did, and journals as it did."""
    usage = Usage(1_000_000, 0, 500_000, 200_000)
    prices = PriceTable({"mine": (1.0, 2.0, 0.5, 3.0), "claude-custom": (2.0, 4.0),
                         "local": (1.0, 1.0)})
    assert prices.cost("mine", usage) == pytest.approx(0.3 + 0.25 + 0.6)
    assert prices.cost("claude-custom", usage) == pytest.approx(0.6 + 0.1 + 0.5)
    assert prices.cost("local", usage) == pytest.approx(1.0)
    assert prices.cost("claude-sonnet-4-5", usage) == pytest.approx(0.9 + 0.15 + 0.75)
    assert prices.cost("gpt-4o", Usage(1_000_000, 0)) == pytest.approx(2.5)
    assert Usage(5, 6).to_dict() == {"input_tokens": 5, "output_tokens": 6}
    # A misreport cannot make more cached tokens than the prompt had.
    assert Usage(100, 0).cached(500, 500) == Usage(100, 0, 100, 0)
    with pytest.raises(ConfigError, match="or four"):
        PriceTable({"bad": (1.0, 2.0, 3.0)})
    with pytest.raises(ConfigError, match="or five"):
        PriceTable({"bad": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)})


@pytest.mark.parametrize("pair", [(float("nan"), 1.6), (0.4, float("inf")), (1e308, 1.0),
                                  ("0.4", 1.6), (True, 1.0), (0.4,), None])
def test_a_price_that_is_no_finite_number_is_refused_at_once(pair: Any) -> None:
    """Taken, a NaN or infinite price (or one so large that a cost overflows) made each
    call's cost a number the run's metrics refuse once the provider had answered: the
    call failed after it was paid, and was retried, and paid, without end (measured:
    4 paid requests in 8 s, then one a minute). Now LLM() and PriceTable() refuse it."""
    with pytest.raises(ConfigError, match=r"price of 'gpt-4.1-mini' must be \(usd_in, usd_out\)"):
        LLM("openai:gpt-4.1-mini", prices={"gpt-4.1-mini": pair})
    assert PriceTable({"free": (0, 0), "dear": (1e6, 1e6)}).price("dear").known


def test_chat_clients_share_one_tls_context_per_trusted_ca_setting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a TLS context loads the whole CA bundle (~110 ms of CPU here): clients
    share one, and a new SSL_CERT_FILE (read by httpx itself otherwise) gets its own."""
    import certifi

    from tether.ai._openai import _tls_context

    def context(chat: OpenAIChat | AnthropicChat) -> object:
        return chat._pools[0]._transport._pool._ssl_context  # type: ignore[attr-defined]

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    first = OpenAIChat("m", base_url="https://example.org/v1", api_key="k")
    second = AnthropicChat("m", base_url="https://example.org", api_key="k")
    assert context(first) is context(second) is _tls_context()
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
    own = OpenAIChat("m", base_url="https://example.org/v1", api_key="k")
    assert context(own) is not context(first)
    assert context(own) is context(OpenAIChat("m", base_url="https://example.org/v1",
                                              api_key="k"))


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_error_in_a_200_answer_is_the_providers_error(
        served: ScriptedLLMServer, protocol: str, streamed: bool) -> None:
    """An HTTP 200 whose body is an error (as OpenAI-compatible gateways answer a
    provider's failure; Anthropic's shape too) is that error: classified by the status
    the body names, or by its type, with the provider's message. It was "unexpected
    answer: no choices in the chat completion" (or, streamed, "the stream ended before
    its end"): the message lost, and a bad request or an account out of credit retried
    for as long as the retry policy allowed."""
    served.set_script([Fault.error_body(400, "prompt is too long: 250000 tokens"),
                       Fault.error_body(503),
                       Fault.error_body(402, "Insufficient credits", error_type=(
                           "insufficient_quota" if protocol == "openai" else "billing_error"))])
    client = make_client(served, protocol)
    try:
        ask = client.stream if streamed else client.chat
        with pytest.raises(FatalProviderError) as fatal:
            await ask(HELLO)
        assert isinstance(fatal.value, NonRetryable)
        assert "prompt is too long: 250000 tokens" in str(fatal.value)
        if not streamed:  # (streamed: an error event, as any in a stream)
            assert fatal.value.status == 400 and "HTTP 200 answer" in str(fatal.value)
        with pytest.raises(RetryableProviderError) as retryable:
            await ask(HELLO)
        if not streamed:  # (no answer began: not billed)
            assert retryable.value.delivered is None
        with pytest.raises(ProviderBillingError, match="Insufficient credits"):
            await ask(HELLO)
    finally:
        await client.aclose()
    assert [r.outcome for r in served.requests] == ["fault:error_body"] * 3
    assert [r.status for r in served.requests] == [200] * 3


async def test_an_error_in_a_200_stream_event_names_its_status() -> None:
    """An OpenAI-compatible gateway's error event whose ``code`` is an HTTP status (a
    400: the request is wrong) fails at once; one without (``server_error``) stays
    retryable."""
    server, url = await _close_delimited_stream(
        [json.dumps({"error": {"message": "context too long", "code": 400}})],
        [json.dumps({"error": {"message": "upstream failed", "type": "server_error"}})])
    try:
        with pytest.raises(FatalProviderError, match="context too long") as fatal:
            await call(OpenAIChat("gpt-4.1-mini", base_url=url), True)
        assert fatal.value.status == 400
        with pytest.raises(RetryableProviderError, match="upstream failed"):
            await call(OpenAIChat("gpt-4.1-mini", base_url=url), True)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_json_error_where_a_stream_was_asked_for_is_the_providers_error() -> None:
    """A server that answers a streamed request with a JSON body and a 200 (an error
    from a proxy that does not stream its errors): the error it carries, not "the
    stream ended before its end" with the message lost."""
    body = json.dumps({"error": {"message": "model not found: gpt-9", "code": 404}})

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (len(body), body.encode()))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    try:
        for client in (OpenAIChat("gpt-4.1-mini", base_url=url),
                       AnthropicChat("claude-haiku-4-5", base_url=url)):
            with pytest.raises(FatalProviderError, match="model not found: gpt-9") as fatal:
                await call(client, True)
            assert fatal.value.status == 404 and fatal.value.delivered is None
    finally:
        server.close()
        await server.wait_closed()


async def test_a_plain_answer_without_usage_is_taken_with_a_warning(
        served: ScriptedLLMServer, caplog: pytest.LogCaptureFixture) -> None:
    """A compatible server whose plain answers carry no ``usage``: the reply is taken
    (no tokens counted: there are none to count) and a warning says so, once per
    server, as for its streams. Until 2026-12-06 nothing said so: the calls counted 0
    tokens and $0, and budgets never saw them."""
    import logging

    caplog.set_level(logging.WARNING, logger="tether.ai")
    served.set_script([Reply("Hello", no_usage=True, times=2), Reply("Hi")])
    client = make_client(served, "openai")
    try:
        for _ in range(2):
            reply = await client.chat(HELLO)
            assert reply.text == "Hello" and reply.usage == Usage()
        assert (await client.chat(HELLO)).usage.total_tokens > 0
    finally:
        await client.aclose()
    told = [r.getMessage() for r in caplog.records if "without the usage" in r.getMessage()]
    assert len(told) == 1 and served.base_url in told[0], told
