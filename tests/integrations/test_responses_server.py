"""The Responses API of the scripted server (``tether.testing.responses_api``), read by
the official OpenAI SDK: text, function calls, reasoning items, streaming, faults and
refused requests."""

from __future__ import annotations

import httpx
import pytest
from openai import APIConnectionError, APIStatusError, AsyncOpenAI

from tether.testing import Fault
from tether.testing.llm_server import Reply
from tether.testing.responses_api import ResponsesReply, ScriptedResponsesServer


async def test_text_calls_reasoning_and_usage() -> None:
    async with ScriptedResponsesServer(script=[
        ResponsesReply("It is 42.", reasoning="add them up", input_tokens=11,
                       output_tokens=4, model="gpt-4.1-2025-04-14"),
        Reply(tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"}, "id": "c9"}])],
    ) as server, AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
        first = await client.responses.create(model="gpt-4.1", input="6 times 7?")
        second = await client.responses.create(model="gpt-4.1", input="weather?", tools=[{
            "type": "function", "name": "weather", "parameters": {"type": "object"}}])
    assert first.output_text == "It is 42." and first.model == "gpt-4.1-2025-04-14"
    assert [item.type for item in first.output] == ["reasoning", "message"]
    assert first.usage is not None and first.usage.input_tokens == 11
    call = second.output[0]
    assert call.type == "function_call" and call.name == "weather"
    assert call.call_id == "c9" and call.arguments == '{"city": "Oslo"}'
    assert [r.protocol for r in server.requests] == ["responses", "responses"]


async def test_streaming_sends_deltas_then_the_completed_response() -> None:
    async with ScriptedResponsesServer(script=[Reply("one two three")]) as server, \
            AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
        stream = await client.responses.create(model="gpt-4.1", input="count", stream=True)
        events = [event async for event in stream]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["one ", "two ", "three"]
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert events[-1].response.output_text == "one two three"


async def test_faults_and_refusals_have_the_real_shape() -> None:
    async with ScriptedResponsesServer(script=[Fault.rate_limit(retry_after=3)]) as server, \
            AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
        with pytest.raises(APIStatusError) as limited:
            await client.responses.create(model="gpt-4.1", input="x")
        assert limited.value.status_code == 429
        assert limited.value.response.headers["retry-after"] == "3"
        async with httpx.AsyncClient() as http:
            wrong = await http.post(f"{server.base_url}/responses", json={
                "model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]})
            garbage = await http.post(f"{server.base_url}/responses", content=b"{not json")
    assert wrong.status_code == 400 and "use 'input'" in wrong.json()["error"]["message"]
    assert garbage.status_code == 400
    assert len(server.requests) == 3


async def test_a_stream_broken_midway() -> None:
    async with ScriptedResponsesServer(script=[Reply("a b c d", error_after_chunks=2)]) \
            as server, AsyncOpenAI(base_url=server.base_url, api_key="k",
                                   max_retries=0) as client:
        stream = await client.responses.create(model="gpt-4.1", input="x", stream=True)
        events = [event async for event in stream]
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == ["a ", "b "]
    assert events[-1].type == "error"
    assert server.requests[0].outcome == "fault:error_mid_stream"


async def test_anthropic_count_tokens_takes_no_script_step() -> None:
    async with ScriptedResponsesServer(script=[Reply("hi")]) as server, \
            httpx.AsyncClient(base_url=server.anthropic_base_url) as http:
        body = {"model": "claude-sonnet-4-5", "system": "Be brief.",
                "messages": [{"role": "user", "content": "x" * 400}]}
        counted = await http.post("/v1/messages/count_tokens", json=body)
        bad = await http.post("/v1/messages/count_tokens", json={"model": "m"})
    assert counted.status_code == 200 and 100 <= counted.json()["input_tokens"] <= 130
    assert bad.status_code == 400
    assert server.remaining == 1  # the reply is still there for a real call


async def test_token_counts_answer_their_faults_then_count() -> None:
    """The Responses API's ``input_tokens`` is counted as Anthropic's ``count_tokens``
    (read by the official SDK); ``count_faults`` answer the first counts, in order, and
    a count without the server's key is a 401, none of them taking a script step."""
    async with ScriptedResponsesServer(script=[Reply("hi")], api_key="k",
                                       count_faults=[Fault.http(503, times=2)]) as server, \
            AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client, \
            AsyncOpenAI(base_url=server.base_url, api_key="wrong", max_retries=0) as stranger:
        for _ in range(2):
            with pytest.raises(APIStatusError) as failed:
                await client.responses.input_tokens.count(model="gpt-4.1", input="x" * 400)
            assert failed.value.status_code == 503
        counted = await client.responses.input_tokens.count(model="gpt-4.1", input="x" * 400)
        with pytest.raises(APIStatusError) as refused:
            await stranger.responses.input_tokens.count(model="gpt-4.1", input="x")
    assert counted.object == "response.input_tokens" and 100 <= counted.input_tokens <= 130
    assert refused.value.status_code == 401
    assert [r.outcome for r in server.requests] == [
        "fault:503", "fault:503", "count_tokens", "unauthorized"]
    assert server.remaining == 1


async def test_compact_answers_a_compacted_response() -> None:
    """``POST /v1/responses/compact`` as the SDK's ``responses.compact`` reads it
    (``CompactedResponse``): the input's user messages, then one compaction item, and
    the script step's usage; a fault step fails it."""
    async with ScriptedResponsesServer(script=[
        Fault.http(503), Reply("the gist", input_tokens=120, output_tokens=8)]) as server, \
            AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
        with pytest.raises(APIStatusError) as failed:
            await client.responses.compact(model="gpt-5.2", input="x")
        compacted = await client.responses.compact(
            model="gpt-5.2", instructions="be brief",
            input=[{"role": "user", "content": "Where is Paris?"},
                   {"role": "assistant", "content": "In France."}])
    assert failed.value.status_code == 503
    assert compacted.object == "response.compaction" and compacted.id.startswith("resp_")
    assert [item.type for item in compacted.output] == ["message", "compaction"]
    assert compacted.output[0].role == "user"  # type: ignore[union-attr]
    item = compacted.output[-1]
    assert item.type == "compaction" and item.encrypted_content == "scripted:the gist"
    assert (compacted.usage.input_tokens, compacted.usage.output_tokens) == (120, 8)
    assert [(r.path, r.status, r.outcome) for r in server.requests] == [
        ("/v1/responses/compact", 503, "fault:503"), ("/v1/responses/compact", 200, "compaction")]
    assert server.requests[1].body["instructions"] == "be brief"


async def test_background_responses_are_queued_retrieved_and_cancelled() -> None:
    """Background mode: a create is queued at once (no script step), a retrieve takes
    the step that answers it, a cancel answers ``cancelled`` after ``cancel_faults``;
    an id the server never gave is a 404."""
    async with ScriptedResponsesServer(script=[Reply("done")],
                                       cancel_faults=[Fault.http(500)]) as server, \
            AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
        first = await client.responses.create(model="gpt-4.1", input="x", background=True)
        second = await client.responses.create(model="gpt-4.1", input="y", background=True)
        got = await client.responses.retrieve(first.id)
        with pytest.raises(APIStatusError) as faulted:
            await client.responses.cancel(second.id)
        cancelled = await client.responses.cancel(second.id)
        with pytest.raises(APIStatusError) as unknown:
            await client.responses.cancel("resp_nothing")
    assert (first.status, first.background, first.output) == ("queued", True, [])
    assert got.id == first.id and got.status == "completed" and got.output_text == "done"
    assert faulted.value.status_code == 500
    assert cancelled.id == second.id and cancelled.status == "cancelled"
    assert unknown.value.status_code == 404
    assert [status for _, status in server.background.values()] == ["completed", "cancelled"]


async def test_a_streamed_background_response_resumes_after_a_cut() -> None:
    """Background mode streamed (``background=True, stream=True``), read by the official
    SDK: the create takes the script step and streams the job's events, each numbered
    (``sequence_number`` from 0), ``response.created`` ``queued`` then
    ``response.in_progress``, every response ``background: true``. A reset cuts the
    stream; ``retrieve(id, stream=True, starting_after=N)`` streams the events after
    ``N``, to ``response.completed``, without a script step of its own (the script has
    one), and a plain retrieve answers the completed response. A stream asked of a job
    created unstreamed is a 400, as the real API's."""
    async with ScriptedResponsesServer(script=[
            Reply("one two three four", reset_after_chunks=2, input_tokens=7,
                  output_tokens=4),
            Reply("unstreamed")]) as server, \
            AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
        stream = await client.responses.create(model="gpt-4.1", input="x", background=True,
                                               stream=True)
        seen = []
        with pytest.raises(APIConnectionError):  # (the reset)
            async for event in stream:
                seen.append(event)
        job = seen[0].response.id
        resumed = await client.responses.retrieve(job, stream=True,
                                                  starting_after=seen[-1].sequence_number)
        rest = [event async for event in resumed]
        got = await client.responses.retrieve(job)
        plain = await client.responses.create(model="gpt-4.1", input="y", background=True)
        with pytest.raises(APIStatusError) as refused:
            await client.responses.retrieve(plain.id, stream=True, starting_after=0)
    events = seen + rest
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in seen[:2]] == ["response.created", "response.in_progress"]
    assert (seen[0].response.status, seen[0].response.background) == ("queued", True)
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") \
        == "one two three four"
    assert [e.delta for e in seen if e.type == "response.output_text.delta"] == [
        "one ", "two "]
    final = rest[-1]
    assert final.type == "response.completed" and final.response.id == job
    assert final.response.background and final.response.output_text == "one two three four"
    assert (final.response.usage.input_tokens, final.response.usage.output_tokens) == (7, 4)
    assert got.id == job and got.status == "completed"
    assert refused.value.status_code == 400
    assert [(r.method, r.outcome) for r in server.requests] == [
        ("POST", "fault:reset_mid_stream"), ("GET", "resumed"), ("GET", "retrieved"),
        ("POST", "queued"), ("GET", "invalid")]
    assert server.requests[1].path == f"/v1/responses/{job}"
