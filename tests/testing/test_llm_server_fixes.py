"""Two test-kit bugs (issue 13): ``Reply(json=...)`` is documented and must work, and
``error_after_chunks=N`` must send its error when the reply has exactly N chunks (or
fewer); the package split keeps every documented import path; and `stop()` outlives none
of its connections."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tether.testing import Fault, Outage, Reply, ScriptedLLMServer
from tether.testing.llm_server import parse_step
from tether.testing.responses_api import ScriptedResponsesServer

from ..ai.test_llm_server import ANTHROPIC_BODY, ANTHROPIC_HEADERS, OPENAI_BODY, sse


def test_reply_json_sets_the_text_to_the_json_dump() -> None:
    reply = Reply(json={"answer": 42, "ok": True})
    assert json.loads(reply.text or "") == {"answer": 42, "ok": True}
    assert reply == parse_step({"json": {"answer": 42, "ok": True}})


def test_reply_with_text_and_json_is_refused() -> None:
    with pytest.raises(ValueError, match="text or json, not both"):
        Reply("hi", json={"a": 1})
    with pytest.raises(ValueError, match="text or json, not both"):
        parse_step({"text": "hi", "json": {"a": 1}})


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_negative_or_non_integer_chunk_counts_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="error_after_chunks must be an integer >= 0"):
        Reply("a b", error_after_chunks=bad)


async def test_reply_json_is_served_as_the_message_text() -> None:
    async with ScriptedLLMServer([Reply(json={"answer": 42})]) as server, \
            httpx.AsyncClient() as http:
        data = (await http.post(server.base_url + "/chat/completions", json=OPENAI_BODY)).json()
    assert json.loads(data["choices"][0]["message"]["content"]) == {"answer": 42}


def _openai_text(events: list[tuple[str | None, Any]]) -> tuple[str, bool]:
    """The streamed text, and whether an error event came."""
    text = ""
    errored = False
    for _, data in events:
        if data == "[DONE]":
            continue
        if "error" in data:
            errored = True
            continue
        for choice in data["choices"]:
            text += choice["delta"].get("content") or ""
    return text, errored


@pytest.mark.parametrize(("after", "sent"), [(0, ""), (2, "a b "), (3, "a b c"), (5, "a b c")])
async def test_openai_error_after_chunks_always_errors(after: int, sent: str) -> None:
    """"a b c" streams 3 chunks: an error after 3 (or more) comes after the last chunk,
    and the stream never finishes normally."""
    async with ScriptedLLMServer([Reply("a b c", error_after_chunks=after)]) as server, \
            httpx.AsyncClient() as http:
        resp = await http.post(server.base_url + "/chat/completions",
                               json={**OPENAI_BODY, "stream": True})
        outcome = server.requests[0].outcome
    events = sse(resp.text)
    text, errored = _openai_text(events)
    assert (text, errored) == (sent, True)
    assert events[-1][1] != "[DONE]"
    assert all(d == "[DONE]" or "error" in d or d["choices"][0]["finish_reason"] is None
               for _, d in events)
    assert outcome == "fault:error_mid_stream"


@pytest.mark.parametrize("after", [1, 4])
async def test_anthropic_error_after_exactly_all_chunks(after: int) -> None:
    async with ScriptedLLMServer([Reply("one", error_after_chunks=after)]) as server, \
            httpx.AsyncClient() as http:
        resp = await http.post(server.url + "/v1/messages", json={**ANTHROPIC_BODY,
                                                                  "stream": True},
                               headers=ANTHROPIC_HEADERS)
    names = [name for name, _ in sse(resp.text)]
    assert names[-1] == "error"
    assert names.count("content_block_delta") == 1
    assert "message_stop" not in names


async def test_reset_after_all_chunks_cuts_the_stream() -> None:
    """The same rule for ``reset_after_chunks``: the connection drops before the end."""
    async with ScriptedLLMServer([Reply("a b", reset_after_chunks=2)]) as server, \
            httpx.AsyncClient() as http:
        with pytest.raises(httpx.HTTPError):
            resp = await http.post(server.base_url + "/chat/completions",
                                   json={**OPENAI_BODY, "stream": True})
            resp.raise_for_status()
        assert server.requests[0].outcome == "fault:reset_mid_stream"


def test_public_names_are_unchanged_by_the_split() -> None:
    import tether.testing as testing
    from tether.testing import llm_server

    for name in ("Fault", "Outage", "RecordedRequest", "Reply", "ScriptedLLMServer", "Step",
                 "main", "slow_stream", "parse_step", "load_script"):
        assert hasattr(llm_server, name), name
    assert testing.Reply is llm_server.Reply


async def test_stop_waits_for_the_connections_its_clients_closed() -> None:
    """``stop()`` returns only once every connection task has ended. A connection whose
    client had just closed it left the server's set before its last ``wait_closed`` and
    outlived ``stop()``; after the ``llm_server`` fixture the loop's end cancelled it,
    and Python 3.11 logged an ERROR ("Exception in callback StreamReaderProtocol...")
    in the teardown of every test that used the fixture with a client it closed."""

    def connections() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks()
                if getattr(t.get_coro(), "__qualname__", "").endswith("._on_connect")]

    for turns in range(8):  # the client's close is seen some loop turns later
        server = await ScriptedLLMServer([Reply("hi")]).start()
        async with httpx.AsyncClient() as http:
            answer = await http.post(server.base_url + "/chat/completions", json=OPENAI_BODY)
            assert answer.status_code == 200
        for _ in range(turns):
            await asyncio.sleep(0)
        await server.stop()
        assert connections() == [], f"a connection outlived stop() ({turns} turns)"


@pytest.mark.parametrize(("path", "body", "headers"), [
    ("/v1/chat/completions", OPENAI_BODY, {}),
    ("/v1/messages", ANTHROPIC_BODY, ANTHROPIC_HEADERS),
    ("/v1/responses", {"model": "gpt-4.1-mini", "input": "Hi"}, {}),
], ids=["openai", "anthropic", "responses"])
async def test_mid_stream_faults_happen_on_a_request_that_is_not_streamed(
        path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
    """A reply with ``reset_after_chunks`` or ``error_after_chunks`` fails a plain
    (not streamed) request too, as such an answer fails: the body cut and the connection
    dropped, or a 500. Both were ignored there: the whole answer went out, so a client
    that does not stream (the OpenAI Agents SDK's ``Runner.run``, an ``Agent(stream=
    False)``) never met the fault its test scripted."""
    script = [Reply("a b c d", reset_after_chunks=2), Reply("a b c d", error_after_chunks=2),
              Reply("a b c d")]
    async with ScriptedResponsesServer(script) as server, httpx.AsyncClient() as http:
        with pytest.raises(httpx.TransportError):
            await http.post(server.url + path, json=body, headers=headers)
        failed = await http.post(server.url + path, json=body, headers=headers)
        assert failed.status_code == 500
        whole = await http.post(server.url + path, json=body, headers=headers)
        assert whole.status_code == 200 and "a b c d" in whole.text
    assert [(r.outcome, r.status) for r in server.requests] == [
        ("fault:reset_mid_stream", 200), ("fault:error_mid_stream", 500), ("reply", 200)]


@pytest.mark.parametrize("after", [0, 1, 3])
async def test_a_responses_stream_numbers_its_error_event_after_the_others(after: int) -> None:
    """The Responses API numbers every event of a stream (``sequence_number``: 0, 1,
    2, ...); the scripted error event mid-stream came as 0 whatever came before it, so
    a client ordering events by number put the error first."""
    async with ScriptedResponsesServer([Reply("a b c", error_after_chunks=after)]) as server, \
            httpx.AsyncClient() as http:
        resp = await http.post(server.url + "/v1/responses",
                               json={"model": "gpt-4.1-mini", "input": "Hi", "stream": True})
    events = [data for _, data in sse(resp.text)]
    assert events[-1]["type"] == "error"
    numbers = [e["sequence_number"] for e in events]
    assert numbers == list(range(len(events))), numbers


@pytest.mark.parametrize("status", [200, 0, -1, 302, 600, True])
def test_a_fault_or_outage_status_that_is_no_http_error_is_refused(status: Any) -> None:
    """Until 2026-12-06 ``Fault.http(200)`` answered an error body with 200 (a success to
    every client) and ``Fault.http(0)`` a response no client could read
    (RemoteProtocolError, retried as a transport error); a script file's
    ``{"status": 200}`` and ``Outage(status=...)`` likewise."""
    with pytest.raises(ValueError, match=r"HTTP error status \(400-599\)"):
        Fault.http(status)
    with pytest.raises(ValueError, match=r"HTTP error status \(400-599\)"):
        parse_step({"status": status})
    with pytest.raises(ValueError, match=r"HTTP error status \(400-599\)"):
        Outage(seconds=1.0, status=status)


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), -1.0, "10"])
def test_an_outage_of_no_finite_length_is_refused(seconds: Any) -> None:
    with pytest.raises(ValueError, match="seconds must be a finite number"):
        Outage(seconds=seconds)


async def test_the_error_statuses_are_served() -> None:
    server = ScriptedLLMServer([Fault.http(400, "bad"), Fault.http(599),
                                Reply("fine")])
    await server.start()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            got = [(await client.post(f"{server.base_url}/chat/completions",
                                      json=OPENAI_BODY)).status_code for _ in range(3)]
    finally:
        await server.stop()
    assert got == [400, 599, 200]


@pytest.mark.parametrize("step", [
    {"text": 5}, {"input_tokens": "x"}, {"output_tokens": True}, {"delay": "x"},
    {"delay": -3}, {"chunk_delay": float("nan")}, {"tool_calls": [{"name": 5}]},
    {"tool_calls": ["weather"]}, {"tool_calls": {"name": "weather"}}, {"model": 4},
])
async def test_a_mistyped_reply_is_refused_when_the_script_is_set(step: dict[str, Any]) -> None:
    """Until 2026-12-06 these were taken, and the request that met one got a dropped
    connection (httpx.RemoteProtocolError) and the server a traceback; a script file
    with one served too (`python -m tether.testing.llm_server` now says "bad script")."""
    with pytest.raises(ValueError, match="Reply: "):
        parse_step(step)
    server = ScriptedLLMServer()
    with pytest.raises(ValueError, match="Reply: "):
        server.set_script([step])
    server.set_script([{"text": "fine", "tool_calls": [{"name": "f", "arguments": "{}"}],
                        "delay": 0, "input_tokens": 3}])
    await server.start()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(f"{server.base_url}/chat/completions",
                                       json=OPENAI_BODY)
    finally:
        await server.stop()
    assert answer.status_code == 200
