"""``LLM(..., api="responses")``: the OpenAI Responses API behind the same durable
``chat``/``stream``, agents and accounting, against the scripted server's Responses
endpoint: reasoning items kept in the journal and sent back, tool calls, structured
output, streaming, replay."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App
from tether.ai import LLM, Agent, function_tool, user_message
from tether.errors import ConfigError
from tether.testing.llm_server import Fault, Reply
from tether.testing.responses_api import ResponsesReply, ScriptedResponsesServer


@pytest.fixture
async def server() -> AsyncIterator[ScriptedResponsesServer]:
    async with ScriptedResponsesServer() as s:
        yield s


@pytest.fixture
async def llm(server: ScriptedResponsesServer) -> AsyncIterator[LLM]:
    async with LLM("openai:gpt-4.1-mini", base_url=server.base_url, api="responses",
                   breaker=None) as client:
        yield client


async def test_an_agent_on_the_responses_api_sends_reasoning_back(
        store_url: str, server: ScriptedResponsesServer, llm: LLM) -> None:
    """The reasoning item of the first answer goes back, in place, before the function
    call and its output; the replay after a release sends nothing again."""
    server.set_script([
        ResponsesReply(tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"}}],
                       reasoning="need the weather", input_tokens=100, output_tokens=10),
        Reply("Cold in Oslo.", input_tokens=150, output_tokens=5)])

    @function_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"cold in {city}"

    app = App(store_url)
    app.add_agent(Agent("forecaster", model=llm, instructions="Be brief.", tools=[weather]))

    @app.workflow
    async def twice(q: str) -> str:
        answer = await tether.call("forecaster", q)
        await tether.wait_for_signal("go")
        return str(answer)

    async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
        handle = await app.start(twice, "Weather in Oslo?", run_id="r1")
        await wait_for(lambda: status_is(app, "r1", "waiting"), timeout=20)
        await app.signal("r1", "go")
        assert await handle.result(timeout=20) == "Cold in Oslo."
        runs = [r for r in await app.list_runs() if r.workflow == "forecaster"]
        info = await app.get_run(runs[0].run_id)
    assert len(server.requests) == 2
    first, second = (r.body for r in server.requests)
    assert first["instructions"] == "Be brief." and first["store"] is False
    assert first["tools"][0] == {"type": "function", "name": "weather",
                                 "description": "The weather in a city.",
                                 "parameters": first["tools"][0]["parameters"]}
    assert [i.get("type", i.get("role")) for i in second["input"]] == [
        "user", "reasoning", "function_call", "function_call_output"]
    assert second["input"][1]["summary"][0]["text"] == "need the weather"
    assert second["input"][3]["output"] == "cold in Oslo"
    assert info.metrics["llm.calls"] == 2 and info.metrics["tokens.input"] == 250
    assert info.journal[0]["result"]["reply"]["reasoning"][0]["type"] == "reasoning"


async def test_structured_output_and_streaming(sqlite_url: str,
                                               server: ScriptedResponsesServer,
                                               llm: LLM) -> None:
    class City(BaseModel):
        city: str

    server.set_script([Reply('{"city": "Oslo"}'), Reply("one two three")])
    app = App(sqlite_url)
    chunks: list[str] = []

    @app.workflow
    async def wf() -> list[str]:
        city = await llm.chat([user_message("Where?")], output=City)
        streamed = await llm.stream([user_message("Count")], on_chunk=chunks.append,
                                    max_tokens=50)
        return [city.city, streamed.text or ""]

    async with app, app.worker():
        assert await (await app.start(wf)).result(timeout=20) == ["Oslo", "one two three"]
    fmt = server.requests[0].body["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["name"] == "City"
    assert server.requests[1].body["stream"] is True
    assert server.requests[1].body["max_output_tokens"] == 50
    assert chunks == ["one ", "two ", "three"]


async def test_provider_errors_are_classified(server: ScriptedResponsesServer,
                                              llm: LLM) -> None:
    from tether.ai import FatalProviderError, RetryableProviderError

    server.set_script([{"status": 400, "message": "bad input"}, {"status": 503},
                       Reply("a b c", error_after_chunks=1)])
    with pytest.raises(FatalProviderError, match="bad input"):
        await llm.chat([user_message("x")])
    with pytest.raises(RetryableProviderError, match="HTTP 503"):
        await llm.chat([user_message("x")])
    with pytest.raises(RetryableProviderError, match="error"):
        await llm.stream([user_message("x")])


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
async def test_an_error_in_a_200_answer_is_the_providers_error(
        server: ScriptedResponsesServer, llm: LLM, streamed: bool) -> None:
    """A gateway's HTTP 200 carrying the provider's 400 (``{"error": {"code": 400,
    ...}}``, streamed: an ``error`` event whose ``code`` is 400) fails at once with the
    provider's message; it was "no output in the response" (streamed: retryable, "the
    stream ended before response.completed"), retried for as long as the policy
    allowed."""
    from tether.ai import FatalProviderError

    server.set_script([Fault.error_body(400, "context too long")])
    ask = llm.stream if streamed else llm.chat
    with pytest.raises(FatalProviderError, match="context too long") as fatal:
        await ask([user_message("x")])
    assert fatal.value.status == 400


async def test_a_refusal_part_is_the_replys_text_with_content_filter(
        server: ScriptedResponsesServer, llm: LLM) -> None:
    """A Responses message whose content is a ``refusal`` part (streamed as
    ``response.refusal.delta``) is the reply's text, ``content_filter``, as in Chat
    Completions and Anthropic. It was read for ``output_text`` parts only: no text,
    ``stop``, the model's reason lost."""
    server.set_script([Reply(refusal="I can't assist with that."),
                       Reply(refusal="I can't assist with that.")])
    plain = await llm.chat([user_message("x")])
    chunks: list[str] = []
    streamed = await llm.stream([user_message("x")], on_chunk=chunks.append)
    for reply in (plain, streamed):
        assert (reply.text, reply.finish_reason) == ("I can't assist with that.",
                                                     "content_filter")
    assert "".join(chunks) == "I can't assist with that."


async def test_a_response_cut_at_max_output_tokens_is_length_streamed_or_not(
        server: ScriptedResponsesServer, llm: LLM) -> None:
    """A response cut at ``max_output_tokens`` (``status: "incomplete"``) is
    ``finish_reason`` ``length``, with tool calls too (the last may hold half its
    arguments: it said ``tool_calls``, and an agent ran it); streamed, it ends with
    ``response.incomplete``, which was read as a stream dropped before
    ``response.completed``: retried, and paid, again and again."""
    cut_call = {"name": "weather", "arguments": '{"city": "Par'}
    server.set_script([Reply("The three reasons", finish_reason="length"),
                       Reply("The three reasons", finish_reason="length"),
                       Reply(tool_calls=[cut_call], finish_reason="length"),
                       Reply(tool_calls=[cut_call], finish_reason="length")])
    for reply in (await llm.chat([user_message("x")]),
                  await llm.stream([user_message("x")])):
        assert (reply.text, reply.finish_reason) == ("The three reasons", "length")
    for reply in (await llm.chat([user_message("x")]),
                  await llm.stream([user_message("x")])):
        assert reply.finish_reason == "length"
        assert reply.tool_calls[0].parse_error is not None
    assert len(server.requests) == 4


async def test_the_chat_completions_client_leaves_reasoning_out(
        server: ScriptedResponsesServer) -> None:
    """A conversation carried over from a Responses model (assistant messages with
    ``reasoning``) is accepted by a Chat Completions model: the key is not sent."""
    server.set_script([Reply("fine")])
    async with LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None) as chat:
        reply = await chat.chat([user_message("hi"), {
            "role": "assistant", "content": "hello",
            "reasoning": [{"type": "reasoning", "id": "rs_1", "summary": []}]},
            user_message("again")])
    assert reply.text == "fine"
    assert all("reasoning" not in m for m in server.requests[0].body["messages"])


async def test_bad_api_options_are_clear_errors() -> None:
    """A bad ``api=`` is refused when the model is made, with a one-line error."""
    with pytest.raises(ConfigError, match="api= must be 'chat'"):
        LLM("openai:gpt-4.1", api="completions", base_url="http://127.0.0.1:9/v1").client()
    with pytest.raises(ConfigError, match="Anthropic models take no api= option"):
        LLM("anthropic:claude-sonnet-4-5", api="responses", api_key="k").client()


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
async def test_a_background_request_is_refused_before_it_is_sent(
        sqlite_url: str, server: ScriptedResponsesServer, llm: LLM, streamed: bool) -> None:
    """``background=True`` (OpenAI's background mode) is refused, streamed or not,
    before anything is sent: answered ``queued`` (no output, no usage) it read as an
    empty reply, while the job ran on at the provider, billed, and nothing polled it.
    In a workflow the step fails at once (one attempt), naming the alternatives."""
    from tether import RunFailed
    from tether.ai import ProviderConfigError

    server.set_script([Reply("never sent")])
    ask = llm.stream if streamed else llm.chat
    with pytest.raises(ProviderConfigError, match=(
            r"background=True is not supported by tether\.ai\.LLM.*in the foreground.*"
            r"TetherAgent, openai_background=True")):
        await ask([user_message("Write a novel")], background=True)
    app = App(sqlite_url)

    @app.workflow
    async def novel() -> str:
        reply = await ask([user_message("Write a novel")], background=True)
        return reply.text or ""

    async with app, app.worker():
        handle = await app.start(novel)
        with pytest.raises(RunFailed, match=r"ProviderConfigError.*background=True"):
            await handle.result(timeout=20)
        [entry] = (await app.get_run(handle.run_id)).journal
    assert entry["attempts"] == 1
    assert server.requests == []
