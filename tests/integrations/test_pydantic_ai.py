"""pydantic-ai agents run durably by Tether (``tether.integrations.pydantic_ai``), against
the scripted OpenAI server on 127.0.0.1 and real stores: journaled model requests, tool
and MCP calls, typed output after replay, streaming, the cost ledger and budgets."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")

from openai import AsyncOpenAI
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.tools import RunContext
from pydantic_ai.usage import RequestUsage, UsageLimits

import tether
from tests import forked
from tests.ai.test_mcp import calls, free_port, start_http_server, stop_process
from tests.engine.helpers import status_is, wait_for
from tether import App, RunFailed
from tether.ai import Budget, Usage, set_budget
from tether.errors import ConfigError
from tether.ext import shared_state
from tether.integrations.pydantic_ai import TetherAgent, TetherDurability
from tether.testing.llm_server import Fault, Reply, ScriptedLLMServer
from tether.testing.responses_api import ResponsesReply, ScriptedResponsesServer


class City(BaseModel):
    city: str
    country: str
    population_millions: float


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as s:
        yield s


@pytest.fixture
async def model(server: ScriptedLLMServer) -> AsyncIterator[OpenAIChatModel]:
    """pydantic-ai's OpenAI model on the scripted server (its HTTP client closed after)."""
    provider = OpenAIProvider(base_url=server.base_url, api_key="test-key")
    yield OpenAIChatModel("gpt-4.1-mini", provider=provider)
    await provider.client.close()


def geo_agent(model: OpenAIChatModel, weather_calls: list[str]) -> Agent[None, City]:
    agent = Agent(model, name="geo", output_type=City,
                  instructions="Answer with the city.")

    @agent.tool_plain
    def weather(city: str) -> str:
        """The weather in a city."""
        weather_calls.append(city)
        return f"sunny in {city}"

    return agent


PARIS = {"city": "Paris", "country": "France", "population_millions": 2.1}


def geo_script() -> list[Reply]:
    return [Reply(tool_calls=[{"name": "weather", "arguments": {"city": "Paris"}}],
                  input_tokens=1000, output_tokens=10),
            Reply(tool_calls=[{"name": "final_result", "arguments": PARIS}],
                  input_tokens=1200, output_tokens=20)]


def tether_cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    return forked.run([sys.executable, "-m", "tether", *args, "--db", db],
                      capture_output=True, text=True, timeout=60, env=env)


async def test_cached_prompt_tokens_are_priced_at_the_cached_price(
        store_url: str, server: ScriptedLLMServer, model: OpenAIChatModel) -> None:
    """pydantic-ai's usage tells the cached input (``cache_read_tokens``): of 10,000
    prompt tokens on gpt-4.1-mini, 8,000 read from the cache cost $0.10 per million, not
    $0.40 (before: all at the input price)."""
    server.set_script([Reply(tool_calls=[{"name": "final_result", "arguments": PARIS}],
                             input_tokens=10_000, output_tokens=5, cache_read_tokens=8_000)])
    app = App(store_url)
    tagent = TetherAgent(geo_agent(model, []), app=app)
    async with app, app.worker():
        handle = await tagent.start("Where is the Eiffel tower?")
        assert await handle.result(timeout=30) == City(**PARIS)
        info = await app.get_run(handle.run_id)
    assert info.metrics["tokens.input"] == 10_000
    assert info.metrics["cost.usd"] == pytest.approx(
        (2_000 * 0.40 + 8_000 * 0.10 + 5 * 1.60) / 1e6)


async def test_one_hour_cache_writes_are_priced_at_their_own_rate(store_url: str) -> None:
    """pydantic-ai's usage tells which cache writes went to Anthropic's 1-hour cache
    (``cache_write_1h_tokens``): on claude-sonnet-4-5 ($3 input), of 10,000 prompt
    tokens 1,000 written to the 5-minute cache cost $3.75 per million and 3,000 written
    to the 1-hour cache $6 (before: all 4,000 at $3.75, $0.03315 for the call)."""
    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("done")], model_name="claude-sonnet-4-5",
                             usage=RequestUsage(input_tokens=10_000, output_tokens=10,
                                                cache_write_tokens=4_000,
                                                cache_write_1h_tokens=3_000))

    app = App(store_url)
    tagent = TetherAgent(Agent(FunctionModel(answer, model_name="claude-sonnet-4-5"),
                               name="cached"), app=app)
    async with app, app.worker():
        handle = await tagent.start("hi")
        assert await handle.result(timeout=30) == "done"
        info = await app.get_run(handle.run_id)
    assert info.metrics["tokens.input"] == 10_000
    assert info.metrics["cost.usd"] == pytest.approx(
        (6_000 * 3.0 + 1_000 * 3.75 + 3_000 * 6.0 + 10 * 15.0) / 1e6)


async def test_model_requests_and_tool_calls_are_journaled_with_typed_output(
        store_url: str, server: ScriptedLLMServer, model: OpenAIChatModel) -> None:
    """The agent started by name from the CLI: each model request and the tool call is one journal
    entry; the result comes back as the output_type; the ledger counts both calls and
    ``tether show`` reports them as for tether.ai agents."""
    server.set_script(geo_script())
    weather: list[str] = []
    app = App(store_url)
    tagent = TetherAgent(geo_agent(model, weather), app=app)
    async with app, app.worker():
        # Started by name from the CLI, as an operator would.
        started = await asyncio.to_thread(
            tether_cli, "start", "geo", "--input", '["Where is the Eiffel tower?"]',
            "--id", "geo-1", db=store_url)
        assert started.returncode == 0, started.stderr
        assert await app.handle("geo-1").result(timeout=30) == City(**PARIS)
        info = await app.get_run("geo-1")
    assert tagent.workflow is not None
    assert [(e["name"], e["status"]) for e in info.journal] == [
        ("pydantic_ai:geo__model.request", "ok"),
        ("pydantic_ai:geo__function_toolset__<agent>.call_tool:weather", "ok"),
        ("pydantic_ai:geo__model.request", "ok")]
    assert weather == ["Paris"]
    assert len(server.requests) == 2
    assert server.requests[1].body["messages"][-1]["content"] == "sunny in Paris"
    assert info.metrics["llm.calls"] == 2
    assert info.metrics["tokens.input"] == 2200 and info.metrics["tokens.output"] == 30
    assert info.metrics["cost.usd"] == pytest.approx((2200 * 0.4 + 30 * 1.6) / 1e6)
    shown = await asyncio.to_thread(tether_cli, "show", "geo-1", db=store_url)
    assert shown.returncode == 0, shown.stderr
    assert "LLM spent:        2 calls, 2,200 input + 30 output tokens" in shown.stdout
    # Each model request reads as a tether.ai LLM call's row, not the record's JSON.
    rows = [line for line in shown.stdout.splitlines() if "geo__model.request" in line]
    assert [row.split(" ok ")[1].split("ms  ")[1] for row in rows] == [
        "gpt-4.1-mini · 1,000 in / 10 out · $0.0004 → weather",
        "gpt-4.1-mini · 1,200 in / 20 out · $0.0005 → final_result"]


async def test_replay_returns_the_typed_output_without_requests(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatModel) -> None:
    """A workflow runs the agent, then waits (released) for a signal; when it comes the
    run replays: the agent's output is the same City instance, rebuilt from the journal,
    no request is sent again and replay is counted as saved."""
    server.set_script(geo_script())
    weather: list[str] = []
    app = App(sqlite_url)
    tagent = TetherAgent(geo_agent(model, weather))
    seen: list[City] = []

    @app.workflow
    async def plan(prompt: str) -> str:
        result = await tagent.run(prompt)
        seen.append(result.output)
        note = await tether.wait_for_signal("go")
        return f"{result.output.city} ({result.output.country}) {note}"

    async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
        handle = await app.start(plan, "Eiffel tower?", run_id="p1")
        await wait_for(lambda: status_is(app, "p1", "waiting"), timeout=20)
        await app.signal("p1", "go", "ok")
        assert await handle.result(timeout=20) == "Paris (France) ok"
        info = await app.get_run("p1")
    assert len(seen) == 2 and all(isinstance(c, City) for c in seen)
    assert seen[0] == seen[1] == City(**PARIS)
    assert len(server.requests) == 2 and weather == ["Paris"]
    assert info.metrics["llm.calls"] == 2
    assert info.metrics["saved.calls"] == 2
    assert info.metrics["saved.tokens.input"] == 2200


async def test_typed_result_from_a_run_handle(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatModel) -> None:
    """``TetherAgent.start`` returns a handle whose result is the output_type."""
    server.set_script(geo_script())
    app = App(sqlite_url)
    tagent = TetherAgent(geo_agent(model, []), app=app)
    async with app, app.worker():
        result = await (await tagent.start("Where?")).result(timeout=30)
    assert isinstance(result, City) and result.city == "Paris"


async def test_budget_fail_stops_before_the_request(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatModel) -> None:
    """A token budget with policy fail: the first request spends 1010 tokens, so the
    second would pass 1000, so it is refused in its step (no request sent) and the run
    fails with BudgetExceeded."""
    server.set_script(geo_script())
    app = App(sqlite_url)
    TetherAgent(geo_agent(model, []), app=app, budget=Budget(tokens=1000, on_exceed="fail"))
    async with app, app.worker():
        handle = await app.start("geo", "Where?", run_id="b1")
        with pytest.raises(RunFailed,
                           match=r"BudgetExceeded.*1010 tokens spent.*budget 1000 tokens"):
            await handle.result(timeout=30)
        info = await app.get_run("b1")
    assert len(server.requests) == 1
    assert [e["status"] for e in info.journal] == ["ok", "ok", "error"]
    assert info.journal[2]["error"]["type"] == "tether.ai.BudgetExceeded"
    assert info.metrics["llm.calls"] == 1


async def test_budget_wait_resumes_when_raised(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatModel) -> None:
    """Policy wait: the run waits (released) with a status saying so; ``tether budget``
    raises the limit and the agent finishes with the typed answer."""
    server.set_script(geo_script())
    app = App(sqlite_url)
    TetherAgent(geo_agent(model, []), app=app, budget=Budget(tokens=1000))
    async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
        handle = await app.start("geo", "Where?", run_id="b2")
        await wait_for(lambda: status_is(app, "b2", "waiting"), timeout=20)
        info = await app.get_run("b2")
        assert info.status_info["waiting_for"] == "budget"
        assert info.status_info["spent_tokens"] == 1010
        assert len(server.requests) == 1
        proc = await asyncio.to_thread(tether_cli, "budget", "b2", "--tokens", "10000",
                                       db=sqlite_url)
        assert proc.returncode == 0, proc.stderr
        assert await handle.result(timeout=20) == City(**PARIS)
    assert len(server.requests) == 2


@pytest.mark.parametrize("approved", [True, False])
async def test_a_tool_that_requires_approval_waits_for_a_human_in_a_run_by_name(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatModel,
        approved: bool) -> None:
    """A tool with pydantic-ai's ``requires_approval``, in an agent started by name: the
    run waits (released) on a Tether approval naming the call (``tether approvals``),
    then goes on with the decision: approved, the tool runs once; rejected, it does not,
    and the model is told the human's note. (Before, the run failed with pydantic-ai's
    ``UserError``: no ``DeferredToolRequests`` among the output types; nobody asked.)"""
    server.set_script([Reply(tool_calls=[{"name": "refund", "arguments": {"order_id": "A1"},
                                          "id": "call_r1"}]),
                       Reply("Done.")])
    refunds: list[str] = []
    agent = Agent(model, name="refunder", instructions="Refund.")

    @agent.tool_plain(requires_approval=True)
    def refund(order_id: str) -> str:
        """Refund an order."""
        refunds.append(order_id)
        return f"refunded {order_id}"

    app = App(sqlite_url)
    TetherAgent(agent, app=app)
    async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
        handle = await app.start("refunder", "Refund A1", run_id="a1")
        await wait_for(lambda: status_is(app, "a1", "waiting"), timeout=20)
        [pending] = await tether.ai.pending_approvals(app)
        assert (pending.run_id, pending.agent, pending.tool, pending.arguments,
                pending.reason, pending.approval_id) == (
            "a1", "refunder", "refund", {"order_id": "A1"}, "Refund an order.", "call_r1")
        await tether.ai.approve(app, "a1", approved=approved, note="not this one")
        assert await handle.result(timeout=20) == "Done."
        # (the answered approval is not left as the ended run's live status)
        assert (await app.get_run("a1")).status_info is None
    assert refunds == (["A1"] if approved else [])
    assert len(server.requests) == 2
    told = [m["content"] for m in server.requests[1].body["messages"] if m["role"] == "tool"]
    assert told == (["refunded A1"] if approved else ["rejected by a human: not this one"])


async def test_streaming_events_reach_the_handler_inside_a_run(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatModel) -> None:
    """With an event_stream_handler the request is streamed inside its step: the handler
    sees the text deltas live; the journal keeps one model.request_stream entry."""
    server.set_script([Reply("durable agents resume", input_tokens=10, output_tokens=3)])
    deltas: list[str] = []

    async def handler(ctx: RunContext[None], events: Any) -> None:
        async for event in events:
            if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                deltas.append(event.part.content)
            if isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                deltas.append(event.delta.content_delta)

    agent = Agent(model, name="talker")
    app = App(sqlite_url)
    TetherAgent(agent, app=app, durability=TetherDurability(event_stream_handler=handler))
    async with app, app.worker():
        answer = await (await app.start("talker", "Say it", run_id="s1")).result(timeout=30)
        info = await app.get_run("s1")
    assert answer == "durable agents resume"
    assert "".join(deltas).strip() == "durable agents resume" and len(deltas) >= 2
    assert server.requests[0].stream
    assert info.journal[0]["name"] == "pydantic_ai:talker__model.request_stream"
    assert info.metrics["llm.calls"] == 1 and info.metrics["tokens.output"] == 3


@pytest.fixture
def notes_http(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    log = tmp_path / "mcp-http.jsonl"
    port = free_port()
    proc = start_http_server(port, log)
    try:
        yield f"http://127.0.0.1:{port}/mcp", log
    finally:
        stop_process(proc)


async def test_mcp_tool_calls_are_journaled_and_not_repeated_by_replay(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatModel,
        notes_http: tuple[str, Path]) -> None:
    """An MCP toolset's discovery and call are journaled steps; after a release and
    replay the MCP server has received the call once."""
    url, log = notes_http
    server.set_script([
        Reply(tool_calls=[{"name": "record", "arguments": {"note": "durable"}}],
              input_tokens=50, output_tokens=5),
        Reply("recorded", input_tokens=60, output_tokens=2)])
    agent = Agent(model, name="scribe", toolsets=[MCPToolset(url, id="notes")])
    tagent = TetherAgent(agent)
    app = App(sqlite_url)

    @app.workflow
    async def scribe_then_wait(prompt: str) -> str:
        result = await tagent.run(prompt)
        await tether.wait_for_signal("go")
        return result.output

    async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
        handle = await app.start(scribe_then_wait, "Record it", run_id="m1")
        await wait_for(lambda: status_is(app, "m1", "waiting"), timeout=30)
        await app.signal("m1", "go")
        assert await handle.result(timeout=30) == "recorded"
        info = await app.get_run("m1")
    names = [e["name"] for e in info.journal]
    assert "pydantic_ai:scribe__mcp_server__notes.get_tools" in names
    assert "pydantic_ai:scribe__mcp_server__notes.call_tool" in names
    assert len(calls(log, note="durable")) == 1
    assert len(server.requests) == 2
    tool_results = [m for m in server.requests[1].body["messages"] if m["role"] == "tool"]
    assert "durable" in str(tool_results[0]["content"])


async def test_a_refused_request_fails_the_run_once(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatModel) -> None:
    """A 400 from the provider is a FatalProviderError: not retried, the run fails
    with the provider's message."""
    server.set_script([{"status": 400, "message": "max_tokens is too large"}])
    app = App(sqlite_url)
    TetherAgent(Agent(model, name="bad"), app=app)
    async with app, app.worker():
        with pytest.raises(RunFailed, match="max_tokens is too large"):
            await (await app.start("bad", "x", run_id="f1")).result(timeout=30)
    assert len(server.requests) == 1


async def test_a_provider_error_says_the_providers_words(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatModel) -> None:
    """A retried 429 is journaled in the provider's words, with its code and request id,
    as ``tether.ai.LLM`` and the Agents SDK integration say it: ``tether show`` prints
    its start in the attempts' column. (It was pydantic-ai's ``status_code: 429,
    model_name: gpt-4.1-mini, body: {'message': ...}``, shown as ``openai: HTTP 429:
    status_…``.)"""
    server.set_script([Fault.rate_limit(retry_after=2), Reply("fine")])
    app = App(sqlite_url)
    TetherAgent(Agent(model, name="limited"), app=app)
    async with app, app.worker():
        assert await (await app.start("limited", "x", run_id="l1")).result(
            timeout=30) == "fine"
        info = await app.get_run("l1")
    [failed] = [a["error"] for a in info.attempts if a["status"] == "error"]
    assert failed["type"] == "tether.ai.RetryableProviderError"
    said = ("openai: HTTP 429 (rate_limit_exceeded): Rate limit reached for requests. "
            "Please try again later. [request ")
    assert failed["message"].startswith(said), failed["message"]
    assert failed["message"].endswith("] (retry after 2 s)"), failed["message"]
    assert failed["message"][len(said):].startswith("req_")  # (the answer's x-request-id)


async def test_a_tools_error_is_said_at_the_tools_own_line(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatModel) -> None:
    """A tool that raises fails the run (``tool_retry`` spent), and the run says where:
    at the tool's line (``RunFailed``'s note, as ``tether show`` and the worker's log
    say it). The journaled traceback keeps the end of each traceback of its chain; it
    kept the end of the whole, the workflow's side of pydantic-ai's deep stack, so the
    run said ``at .../pydantic_ai/durable_exec/_operation_backend.py, line ..., in
    dispatch``."""
    server.set_script([Reply(tool_calls=[{"name": "flaky", "arguments": {"x": "y"}}])])
    agent = Agent(model, name="boom")

    @agent.tool_plain
    def flaky(x: str) -> str:
        """Always fails."""
        raise RuntimeError(f"database down for {x}")

    app = App(sqlite_url)
    TetherAgent(agent, app=app, durability=TetherDurability(
        tool_retry=tether.RetryPolicy(max_attempts=1)))
    async with app, app.worker():
        with pytest.raises(RunFailed, match="database down for y") as failed:
            await (await app.start("boom", "go", run_id="e1")).result(timeout=30)
    line = flaky.__code__.co_firstlineno + 3  # (the decorator's line; the raise)
    assert failed.value.__notes__ == [
        f"at {__file__}, line {line}, in flaky: "
        'raise RuntimeError(f"database down for {x}")']


async def test_an_account_out_of_credit_fails_the_run_at_once(
        sqlite_url: str, server: ScriptedLLMServer) -> None:
    """OpenAI's 429 ``insufficient_quota`` is a ProviderBillingError: the run fails at
    the first attempt saying to add credit, where it was retried as a rate limit (here
    until the next step of the script answered)."""
    server.set_script([{"fault": "out_of_credit"}, Reply("never asked for")])
    client = AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
    unretried = OpenAIChatModel("gpt-4.1-mini", provider=OpenAIProvider(openai_client=client))
    app = App(sqlite_url)
    TetherAgent(Agent(unretried, name="broke"), app=app)
    async with app, app.worker():
        with pytest.raises(RunFailed, match=r"ProviderBillingError.*add credit"):
            await (await app.start("broke", "x", run_id="q1")).result(timeout=30)
    await client.close()
    assert len(server.requests) == 1


@pytest.mark.parametrize("live", [False, True], ids=["plain", "live"])
async def test_an_error_in_a_200_answer_fails_the_run_at_once(
        sqlite_url: str, server: ScriptedLLMServer, live: bool) -> None:
    """A gateway's HTTP 200 carrying the provider's 400 (``{"error": {"code": 400,
    ...}}``) is that 400: the run fails at the first attempt with the provider's
    message. Plain (``live=False``), pydantic-ai calls the answer invalid ("4
    validation errors for ChatCompletion"); it was retried as a dropped answer (here
    until the next step of the script answered, in production for ever). Streamed, the
    SDK reads the error event (a ``ModelHTTPError`` 400): right before too."""
    server.set_script([Fault.error_body(400, "This model's maximum context length is "
                                             "128000 tokens"), Reply("never asked for")])
    client = AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
    unretried = OpenAIChatModel("gpt-4.1-mini", provider=OpenAIProvider(openai_client=client))
    app = App(sqlite_url)
    TetherAgent(Agent(unretried, name="gw"), app=app, durability=TetherDurability(live=live))
    async with app, app.worker():
        with pytest.raises(RunFailed, match=r"FatalProviderError.*HTTP 400.*maximum context "
                                            r"length is 128000 tokens"):
            await (await app.start("gw", "x", run_id="g1")).result(timeout=30)
        (entry,) = (await app.get_run("g1")).journal
    await client.close()
    assert entry["attempts"] == 1
    assert len(server.requests) == 1


async def test_an_answer_without_usage_is_counted_with_a_warning(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatModel,
        caplog: pytest.LogCaptureFixture) -> None:
    """An OpenAI-compatible server that tells no usage: the call counts no tokens and
    $0, and a warning says so (once per endpoint) rather than nothing, as
    ``tether.ai.LLM``'s clients say it."""
    from tether.ai import _metered

    _metered._NO_USAGE.discard(f"openai:{server.base_url}".rstrip("/"))
    server.set_script([Reply("fine", no_usage=True)])
    app = App(sqlite_url)
    TetherAgent(Agent(model, name="mute"), app=app)
    with caplog.at_level("WARNING", logger="tether.ai"):
        async with app, app.worker():
            assert await (await app.start("mute", "x", run_id="m1")).result(
                timeout=30) == "fine"
            info = await app.get_run("m1")
    assert info.metrics["llm.calls"] == 1 and info.metrics.get("tokens.input", 0) == 0
    said = [r.getMessage() for r in caplog.records
            if "without the usage" in r.getMessage()]
    assert len(said) == 1 and server.base_url.rstrip("/") in said[0], said


async def test_bad_configuration_is_a_clear_error(model: OpenAIChatModel) -> None:
    with pytest.raises(ConfigError, match="TetherAgent needs a name"):
        TetherAgent(Agent(model))
    with pytest.raises(ConfigError, match=r"rpm"):
        TetherDurability(rpm=-1)
    attached = Agent(model, name="a", capabilities=[TetherDurability()])
    with pytest.raises(ConfigError, match="has a TetherDurability already"):
        TetherAgent(attached, durability=TetherDurability())


async def test_start_before_registering_is_a_clear_error(model: OpenAIChatModel) -> None:
    with pytest.raises(ConfigError, match="not registered"):
        await TetherAgent(Agent(model, name="x")).start("hi")


async def test_outside_a_workflow_the_agent_runs_plainly(
        server: ScriptedLLMServer, model: OpenAIChatModel) -> None:
    """Outside a workflow nothing is journaled: a plain pydantic-ai run."""
    server.set_script([Reply("plain")])
    tagent = TetherAgent(Agent(model, name="plain"))
    assert (await tagent.run("hi")).output == "plain"
    assert len(server.requests) == 1


async def test_responses_api_model_with_reasoning(sqlite_url: str) -> None:
    """pydantic-ai's ``openai:`` models use the Responses API: a reasoning item and a
    tool call come back from the journal on replay, and the ledger counts the calls."""
    async with ScriptedResponsesServer(script=[
        ResponsesReply(tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"}}],
                       reasoning="look it up", input_tokens=30, output_tokens=6),
        Reply("Cold in Oslo", input_tokens=40, output_tokens=4)]) as server:
        provider = OpenAIProvider(base_url=server.base_url, api_key="test-key")
        agent = Agent(OpenAIResponsesModel("gpt-4.1-mini", provider=provider),
                      name="forecast")
        cities: list[str] = []

        @agent.tool_plain
        def weather(city: str) -> str:
            """The weather."""
            cities.append(city)
            return "cold"

        tagent = TetherAgent(agent)
        app = App(sqlite_url)
        outputs: list[str] = []

        @app.workflow
        async def forecast(q: str) -> str:
            outputs.append((await tagent.run(q)).output)
            await tether.wait_for_signal("go")
            return outputs[-1]

        async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
            handle = await app.start(forecast, "Oslo?", run_id="o1")
            await wait_for(lambda: status_is(app, "o1", "waiting"), timeout=20)
            await app.signal("o1", "go")
            assert await handle.result(timeout=20) == "Cold in Oslo"
            info = await app.get_run("o1")
        await provider.client.close()
    assert outputs == ["Cold in Oslo"] * 2 and len(server.requests) == 2
    assert cities == ["Oslo"]
    # pydantic-ai sends the reasoning summary back as a thinking text, then the call.
    sent = server.requests[1].body["input"]
    assert "look it up" in sent[1]["content"] and sent[2]["type"] == "function_call"
    assert info.metrics["llm.calls"] == 2 and info.metrics["saved.calls"] == 2


@pytest.mark.parametrize("value", [
    (1, 2), {"b": 1, "a": (2,), 3: "x"}, {1, 2}, dt.datetime(2026, 1, 2, 3, 4, 5),
    [City(**PARIS)]])
async def test_a_tool_result_reaches_the_model_as_the_same_text_live_and_after_a_replay(
        store_url: str, server: ScriptedLLMServer, value: Any) -> None:
    """The request after the tool fails once (503, the client retries nothing), so the
    run is released for the retry and its next execution answers the tool from the
    journal: the model is given the same tool-result text both times."""
    client = AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
    agent: Agent[None, str] = Agent(
        OpenAIChatModel("gpt-4.1-mini", provider=OpenAIProvider(openai_client=client)),
        name="pairs")
    calls: list[int] = []

    @agent.tool_plain
    def pair() -> Any:
        """A pair."""
        calls.append(1)
        return value

    tagent = TetherAgent(agent)
    server.set_script([Reply(tool_calls=[{"name": "pair", "arguments": {}}]),
                       Fault.http(503, retry_after=0.2), Reply("done")])
    app = App(store_url)
    executions: list[int] = []

    @app.workflow
    async def pairs(question: str) -> str:
        executions.append(1)
        return str((await tagent.run(question)).output)

    try:
        async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
            handle = await app.start(pairs, "a pair", run_id="p1")
            assert await handle.result(timeout=30) == "done"
    finally:
        await client.close()
    assert calls == [1] and len(executions) == 2  # (the tool answered by the replay)
    texts = [[m["content"] for m in r.body["messages"] if m["role"] == "tool"]
             for r in server.requests[1:]]
    assert len(texts) == 2 and texts[0] == texts[1] and len(texts[0]) == 1, texts


def cut_script(cut: str) -> list[Any]:
    """A reset connection and a 503 (no answer: they count nothing), a stream cut after
    two chunks of 400 characters (800: 200 tokens; a reset or an error event) though its
    usage would have said 1,050 tokens, then the answer (1,050 tokens, told)."""
    words = " ".join(w * 399 for w in "abcd")
    return [Fault.reset(), Fault.http(503),
            Reply(words, input_tokens=1000, output_tokens=50,
                  **({"reset_after_chunks": 2} if cut == "reset" else {"error_after_chunks": 2})),
            Reply("Done.", input_tokens=1000, output_tokens=50)]


async def drain(ctx: RunContext[None], events: Any) -> None:
    async for _ in events:
        pass


def writer(client: AsyncOpenAI, *, live: bool = True, handler: Any = drain
           ) -> TetherAgent[None, str]:
    """An agent on ``client`` whose model requests are streamed (an event stream
    handler), retried at once."""
    agent: Agent[None, str] = Agent(
        OpenAIChatModel("gpt-4.1-mini", provider=OpenAIProvider(openai_client=client)),
        name="writer")
    return TetherAgent(agent, durability=TetherDurability(
        model_retry=tether.RetryPolicy(initial_interval=0.01, max_attempts=5), live=live,
        event_stream_handler=handler))


async def written(url: str, script: list[Reply], run_id: str, **writer_kwargs: Any
                  ) -> tuple[ScriptedLLMServer, tether.RunInfo]:
    """A run of a workflow whose ``writer(client, **writer_kwargs)`` answers a
    4,000-character question, against ``script`` (which ends in "Done."): the server
    (its requests) and the ended run."""
    async with ScriptedLLMServer(script=script) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
        tagent = writer(client, **writer_kwargs)
        app = App(url)

        @app.workflow
        async def write(question: str) -> str:
            return str((await tagent.run(question)).output)

        try:
            async with app, app.worker():
                handle = await app.start(write, "q" * 4000, run_id=run_id)
                assert await handle.result(timeout=30) == "Done."
                info = await app.get_run(run_id)
        finally:
            await client.close()
    return server, info


@pytest.mark.parametrize("cut", ["reset", "error"])
async def test_a_streamed_request_cut_midway_counts_an_estimate(store_url: str,
                                                                cut: str) -> None:
    """A streamed model request (``model.request_stream``) cut after two chunks: the
    provider billed its prompt and those chunks but told no usage (pydantic-ai raises
    ModelConnectionError for the reset, ModelServerError for the error event), so the
    metered request counts an estimate (``tokens.estimated``) in the metrics and in the
    record (``failed``, which the budget's tally reads), then the retried answer's told
    usage. The refused request and the 503 before it count nothing. It used to count
    the answer alone (1,050 tokens)."""
    server, info = await written(store_url, cut_script(cut), f"cut-{cut}")
    assert len(server.requests) == 4 and all(r.stream for r in server.requests)
    assert info.journal[0]["name"] == "pydantic_ai:writer__model.request_stream"
    record = info.journal[0]["result"]
    estimated = record["failed"]["estimated"]
    # The prompt's estimate (4,000 characters and the messages' JSON, 4 a token) and
    # the 200 tokens delivered.
    assert 1000 + 200 < estimated < 1100 + 200
    assert record["failed"]["tokens"] == estimated
    assert record["failed"]["usd"] == pytest.approx(
        ((estimated - 200) * 0.4 + 200 * 1.6) / 1e6)
    assert info.metrics["tokens.estimated"] == estimated
    assert info.metrics["tokens.output"] == 50 + 200
    assert info.metrics["tokens.input"] + info.metrics["tokens.output"] == 1050 + estimated
    assert info.metrics["llm.calls"] == 1


async def test_cut_requests_paid_before_a_release_still_count(store_url: str) -> None:
    """Three streamed model requests cut after two chunks (each paid its prompt's
    estimate and 200 tokens), each retried after a wait longer than the worker's
    ``sticky_wait``: the run is released between attempts, so each attempt runs in a
    new execution. The metered request's record counts all three cuts (carried on each
    failure's journaled error), as the metrics do once each, and the budget they
    exhausted refuses the agent's next request: 3 cuts + 1,050 >= 2,000. It used to
    count the last execution's cut only (the next request was sent)."""
    words = " ".join(w * 399 for w in "abcd")
    cut = Reply(words, input_tokens=1000, output_tokens=50, reset_after_chunks=2)
    script = [cut, cut, cut, Reply("Done.", input_tokens=1000, output_tokens=50),
              Reply("never", input_tokens=10, output_tokens=1)]
    async with ScriptedLLMServer(script=script) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
        agent: Agent[None, str] = Agent(
            OpenAIChatModel("gpt-4.1-mini", provider=OpenAIProvider(openai_client=client)),
            name="writer")
        tagent = TetherAgent(agent, durability=TetherDurability(
            model_retry=tether.RetryPolicy(initial_interval=0.2, backoff=1.0,
                                           max_attempts=None),
            event_stream_handler=drain))
        app = App(store_url)

        @app.workflow
        async def write(question: str) -> str:
            set_budget(Budget(tokens=2_000, on_exceed="fail"))
            first = str((await tagent.run(question)).output)
            await tagent.run("Again.")
            return first

        try:
            async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
                handle = await app.start(write, "q" * 400, run_id="released")
                with pytest.raises(RunFailed, match="BudgetExceeded"):
                    await handle.result(timeout=60)
                info = await app.get_run("released")
        finally:
            await client.close()
    assert len(server.requests) == 4
    failed = info.journal[0]["result"]["failed"]
    each = failed["estimated"] // 3  # (the prompt's estimate and the 200 delivered)
    assert 100 + 200 < each < 200 + 200
    assert failed["tokens"] == failed["estimated"] == 3 * each
    assert info.metrics["tokens.estimated"] == 3 * each
    assert info.metrics["tokens.input"] + info.metrics["tokens.output"] == 1050 + 3 * each
    assert info.metrics["llm.calls"] == 1


@pytest.mark.parametrize("cut", ["reset", "error"])
@pytest.mark.parametrize("live", [False, True])
async def test_a_cut_stream_counts_on_every_streamed_path(sqlite_url: str, cut: str,
                                                          live: bool) -> None:
    """The other streamed paths count a cut the same way: pydantic-ai's own streamed
    request with ``live=False`` (no publishing), and with ``live=True`` a plain request
    (``model.request``) that is streamed only for the run's observers."""
    server, info = await written(sqlite_url, cut_script(cut), "c1", live=live,
                                 handler=None if live else drain)
    assert len(server.requests) == 4 and all(r.stream for r in server.requests)
    assert info.journal[0]["name"] == ("pydantic_ai:writer__model.request" if live
                                       else "pydantic_ai:writer__model.request_stream")
    assert info.metrics["tokens.output"] == 50 + 200
    assert info.journal[0]["result"]["failed"]["estimated"] == info.metrics["tokens.estimated"]


@pytest.mark.parametrize("kind", ["tool call", "thinking"])
async def test_tool_call_arguments_and_thinking_count_as_delivered(sqlite_url: str,
                                                                   kind: str) -> None:
    """A stream cut while it delivered a tool call (its name, then its arguments in
    pieces: Chat Completions) or the model's thinking (a reasoning summary before any
    text: the Responses API) counts those characters as delivered output."""
    args = {"city": "x" * 800}  # (streamed in 4 pieces of 203 characters)
    server: Any
    if kind == "tool call":
        server = ScriptedLLMServer(script=[
            Reply(tool_calls=[{"name": "weather", "arguments": args}], input_tokens=1000,
                  output_tokens=50, reset_after_chunks=3),  # (the name, 2 pieces)
            Reply("Done.", input_tokens=1000, output_tokens=50)])
        delivered = len("weather") + 2 * 203
    else:
        server = ScriptedResponsesServer(script=[
            ResponsesReply("Done.", reasoning="r" * 800, input_tokens=1000,
                           output_tokens=50, reset_after_chunks=0),  # (before the text)
            Reply("Done.", input_tokens=1000, output_tokens=50)])
        delivered = 800
    async with server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
        provider = OpenAIProvider(openai_client=client)
        model = (OpenAIChatModel("gpt-4.1-mini", provider=provider) if kind == "tool call"
                 else OpenAIResponsesModel("gpt-4.1-mini", provider=provider))
        agent: Agent[None, str] = Agent(model, name="forecast")

        @agent.tool_plain
        def weather(city: str) -> str:
            """The weather."""
            return "cold"

        tagent = TetherAgent(agent, durability=TetherDurability(
            model_retry=tether.RetryPolicy(initial_interval=0.01, max_attempts=5),
            event_stream_handler=drain))
        app = App(sqlite_url)

        @app.workflow
        async def forecast(question: str) -> str:
            return str((await tagent.run(question)).output)

        try:
            async with app, app.worker():
                handle = await app.start(forecast, "Oslo?", run_id="t1")
                assert await handle.result(timeout=30) == "Done."
                info = await app.get_run("t1")
        finally:
            await client.close()
    assert len(server.requests) == 2
    assert info.metrics["tokens.output"] == 50 + -(-delivered // 4)
    assert info.journal[0]["result"]["failed"]["estimated"] == info.metrics["tokens.estimated"]


@pytest.mark.parametrize("replay", [False, True])
async def test_a_budget_the_estimate_exhausts_refuses_the_next_request(
        store_url: str, replay: bool) -> None:
    """Budget 3,000 tokens, policy fail: the first agent run's request was cut after
    two chunks (its estimate, about 1,270 tokens) then answered (1,050), so the second
    run's request (its prompt about 1,000) is refused before it is sent, as it is after
    a replay (the workflow waited for a signal, released: the record's ``failed``
    is tallied again). Without the estimate it was sent (2,050 < 3,000)."""
    async with ScriptedLLMServer(script=[*cut_script("reset")[2:],
                                         Reply("Again.", input_tokens=1000)]) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
        tagent = writer(client)
        app = App(store_url)

        @app.workflow
        async def write(question: str) -> str:
            set_budget(Budget(tokens=3000, on_exceed="fail"))
            first = (await tagent.run(question)).output
            if replay:
                await tether.wait_for_signal("go")
            return f"{first} {(await tagent.run(question)).output}"

        try:
            async with app, app.worker(sticky_wait=1.0, poll_interval=0.05):
                handle = await app.start(write, "q" * 4000, run_id="b1")
                if replay:
                    await wait_for(lambda: status_is(app, "b1", "waiting"), timeout=20)
                    await app.signal("b1", "go")
                with pytest.raises(RunFailed, match=r"BudgetExceeded.*budget 3000 tokens"):
                    await handle.result(timeout=30)
                info = await app.get_run("b1")
        finally:
            await client.close()
    assert len(server.requests) == 2
    spent = info.journal[0]["result"]["failed"]["tokens"] + 1050
    assert 2250 < spent < 2350
    assert info.journal[-1]["error"]["type"] == "tether.ai.BudgetExceeded"
    if replay:
        assert info.metrics["saved.calls"] == 1


async def test_a_handler_that_stops_early_still_counts_every_chunk(sqlite_url: str) -> None:
    """The run's event stream handler reads one event and returns: the rest of the
    stream is drained through Tether's count, so the cut counts both chunks (200
    tokens), not only what the handler read."""
    firsts: list[Any] = []

    async def first_only(ctx: RunContext[None], events: Any) -> None:
        async for event in events:
            firsts.append(event)
            break

    _, info = await written(sqlite_url, cut_script("reset")[2:], "e1", handler=first_only)
    assert len(firsts) == 2  # (one per attempt)
    assert info.metrics["tokens.output"] == 50 + 200


# -- agent delegation: an agent called inside another agent's tool ----------------------


def delegation(model: OpenAIChatModel, *, durable: bool | None,
               helper_calls: list[str]) -> tuple[Agent[None, str], Agent[None, str]]:
    """pydantic-ai's agent delegation: ``boss``'s tool runs ``helper`` (with the run's
    usage). The helper carries ``TetherDurability``; the tool is async, so
    ``durable=False`` can run it in the workflow instead of in a step."""
    helper: Agent[None, str] = Agent(model, name="helper",
                                     capabilities=[TetherDurability()])
    boss: Agent[None, str] = Agent(model, name="boss")
    options: dict[str, Any] = {} if durable is None else {"durable": durable}

    @boss.tool(**options)
    async def ask_helper(ctx: RunContext[None], question: str) -> str:
        """Ask the helper."""
        helper_calls.append(question)
        return (await helper.run(question, usage=ctx.usage)).output

    return boss, helper


def delegation_script() -> list[Any]:
    return [Reply(tool_calls=[{"name": "ask_helper", "arguments": {"question": "2+2?"}}],
                  input_tokens=100, output_tokens=10),
            Reply("four", input_tokens=1000, output_tokens=20),
            Reply("the helper says four", input_tokens=200, output_tokens=30)]


async def test_a_delegated_agent_in_a_durable_false_tool_is_journaled_and_counted(
        store_url: str, server: ScriptedLLMServer, model: OpenAIChatModel) -> None:
    """The tool is ``durable=False``: it runs in the workflow, so the helper's request is
    a step of the run (``pydantic_ai:helper__model.request``) between the boss's two;
    after a release the replay sends nothing again, the ledger counts the three
    requests and the run's usage (``ctx.usage``) is the same live and replayed."""
    server.set_script(delegation_script())
    asked: list[str] = []
    boss, _ = delegation(model, durable=False, helper_calls=asked)
    tagent = TetherAgent(boss)
    app = App(store_url)
    usages: list[int] = []

    @app.workflow
    async def delegate(prompt: str) -> str:
        result = await tagent.run(prompt)
        usages.append(result.usage.input_tokens)
        note = await tether.wait_for_signal("go")
        return f"{result.output} {note}"

    async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
        handle = await app.start(delegate, "ask", run_id="d1")
        await wait_for(lambda: status_is(app, "d1", "waiting"), timeout=20)
        await app.signal("d1", "go", "ok")
        assert await handle.result(timeout=30) == "the helper says four ok"
        info = await app.get_run("d1")
    assert len(server.requests) == 3
    assert [e["name"] for e in info.journal] == [
        "pydantic_ai:boss__model.request", "pydantic_ai:helper__model.request",
        "pydantic_ai:boss__model.request", "go"]
    assert asked == ["2+2?", "2+2?"]  # (the tool's own code runs in each execution)
    assert usages == [1300, 1300]
    assert info.metrics["llm.calls"] == 3
    assert info.metrics["tokens.input"] == 1300 and info.metrics["tokens.output"] == 60
    assert info.metrics["saved.calls"] == 3


async def test_a_delegated_agents_request_is_under_the_runs_budget(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatModel) -> None:
    """The boss's first request spends 1100 tokens of a 1000-token budget: the helper's
    request is refused in its step before it is sent (policy fail)."""
    server.set_script([Reply(tool_calls=[{"name": "ask_helper",
                                          "arguments": {"question": "2+2?"}}],
                             input_tokens=1000, output_tokens=100),
                       *delegation_script()[1:]])
    boss, _ = delegation(model, durable=False, helper_calls=[])
    app = App(sqlite_url)
    TetherAgent(boss, app=app, budget=Budget(tokens=1000, on_exceed="fail"))
    async with app, app.worker():
        handle = await app.start("boss", "ask", run_id="d2")
        with pytest.raises(RunFailed, match=r"BudgetExceeded.*1100 tokens spent"):
            await handle.result(timeout=30)
        info = await app.get_run("d2")
    assert len(server.requests) == 1
    assert info.journal[-1]["name"] == "pydantic_ai:helper__model.request"
    assert info.journal[-1]["error"]["type"] == "tether.ai.BudgetExceeded"


async def test_a_delegated_agent_inside_a_tool_step_is_counted_and_said(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatModel,
        caplog: pytest.LogCaptureFixture) -> None:
    """pydantic-ai's default: the delegating tool is a step, the helper runs plainly
    inside it. Its request is no step of its own, but it was paid: the ledger counts it
    (3 calls, 1300 input tokens; it counted 2 and 300), and the worker's log says what
    is not durable, naming durable=False."""
    server.set_script(delegation_script())
    asked: list[str] = []
    boss, _ = delegation(model, durable=None, helper_calls=asked)
    app = App(sqlite_url)
    TetherAgent(boss, app=app)
    with caplog.at_level("WARNING", logger="tether.integrations.pydantic_ai"):
        async with app, app.worker():
            handle = await app.start("boss", "ask", run_id="d3")
            assert await handle.result(timeout=30) == "the helper says four"
            info = await app.get_run("d3")
    assert len(server.requests) == 3 and asked == ["2+2?"]
    assert [e["name"] for e in info.journal] == [
        "pydantic_ai:boss__model.request",
        "pydantic_ai:boss__function_toolset__<agent>.call_tool:ask_helper",
        "pydantic_ai:boss__model.request"]
    assert info.metrics["llm.calls"] == 3
    assert info.metrics["tokens.input"] == 1300 and info.metrics["tokens.output"] == 60
    assert info.metrics["cost.usd"] == pytest.approx((1300 * 0.4 + 60 * 1.6) / 1e6)
    said = [r.getMessage() for r in caplog.records if "runs inside step" in r.getMessage()]
    assert len(said) == 1 and "'helper'" in said[0] and "durable=False" in said[0], said


async def test_a_durable_false_delegating_tool_outside_a_workflow_is_plain(
        server: ScriptedLLMServer, model: OpenAIChatModel) -> None:
    """Outside a workflow both agents are plain pydantic-ai: three requests, the usage
    of both in the result."""
    server.set_script(delegation_script())
    boss, _ = delegation(model, durable=False, helper_calls=[])
    result = await TetherAgent(boss).run("ask")
    assert result.output == "the helper says four"
    assert len(server.requests) == 3 and result.usage.input_tokens == 1300


async def test_a_retried_delegating_tool_step_sends_and_counts_the_helper_again(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatModel) -> None:
    """Without durable=False the helper's request is inside the tool's step: the tool
    fails once after the helper answered, so the step is retried and the helper asked
    again. Both requests were paid and the ledger counts both (4 calls)."""
    server.set_script([*delegation_script()[:2], Reply("four again", input_tokens=1000,
                                                       output_tokens=20),
                       delegation_script()[2]])
    helper: Agent[None, str] = Agent(model, name="helper",
                                     capabilities=[TetherDurability()])
    boss: Agent[None, str] = Agent(model, name="boss")
    tries: list[str] = []

    @boss.tool
    async def ask_helper(ctx: RunContext[None], question: str) -> str:
        """Ask the helper."""
        answer = (await helper.run(question, usage=ctx.usage)).output
        tries.append(answer)
        if len(tries) == 1:
            raise RuntimeError("flaky after the helper answered")
        return answer

    app = App(sqlite_url)
    TetherAgent(boss, app=app, durability=TetherDurability(
        tool_retry=tether.RetryPolicy(initial_interval=0.05, max_attempts=2)))
    async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
        handle = await app.start("boss", "ask", run_id="d4")
        assert await handle.result(timeout=30) == "the helper says four"
        info = await app.get_run("d4")
    assert tries == ["four", "four again"] and len(server.requests) == 4
    assert info.journal[1]["attempts"] == 2
    assert info.metrics["llm.calls"] == 4 and info.metrics["tokens.input"] == 2300


async def test_model_requests_carry_the_step_idempotency_key(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatModel) -> None:
    """Each model request of a run carries ``Idempotency-Key: <run id>:<position>``, as
    ``tether.ai``'s own requests do: the same on each attempt of its step (a retry
    after a 500 here; after a crash, the next worker's), so a provider that honours
    the header answers a repeat without a second charge. Plain and streamed requests
    alike; none outside a run; a key the agent's settings give is kept. pydantic-ai's
    OpenAI model sent none."""
    server.set_script([Fault.http(500), *geo_script(),
                       Reply("durable agents resume", input_tokens=10, output_tokens=3),
                       Reply("plain", input_tokens=1, output_tokens=1),
                       Reply("own key", input_tokens=1, output_tokens=1)])
    app = App(sqlite_url)
    TetherAgent(geo_agent(model, []), app=app)
    TetherAgent(Agent(model, name="own", model_settings={
        "extra_headers": {"Idempotency-Key": "mine"}}), app=app)
    talker = Agent(model, name="talker")

    async def handler(ctx: RunContext[None], events: Any) -> None:
        async for _ in events:
            pass

    TetherAgent(talker, app=app, durability=TetherDurability(event_stream_handler=handler))
    async with app, app.worker():
        assert await (await app.start("geo", "Where?", run_id="g1")).result(
            timeout=30) == City(**PARIS)
        assert await (await app.start("talker", "Say it", run_id="s1")).result(
            timeout=30) == "durable agents resume"
        assert await Agent(model).run("outside") is not None
        assert await (await app.start("own", "Mine?", run_id="m1")).result(
            timeout=30) == "own key"
    keys = [r.headers.get("idempotency-key") for r in server.requests]
    # (the 500 and its retry, after the tool step, the streamed one, outside, its own)
    assert keys == ["g1:0", "g1:0", "g1:2", "s1:0", None, "mine"], keys
    assert server.requests[3].stream


def sdk_model(api: str, server: ScriptedResponsesServer) -> tuple[Any, Any]:
    """A pydantic-ai model on ``server`` built as a user would, with the SDK client it
    builds by default (2 retries of its own), and that client."""
    if api == "anthropic":
        pytest.importorskip("anthropic")
        from pydantic_ai.models.anthropic import AnthropicModel
        from pydantic_ai.providers.anthropic import AnthropicProvider
        aprovider = AnthropicProvider(base_url=server.anthropic_base_url, api_key="test-key")
        return AnthropicModel("claude-sonnet-5-5", provider=aprovider), aprovider.client
    provider = OpenAIProvider(base_url=server.base_url, api_key="test-key")
    kind = OpenAIResponsesModel if api == "responses" else OpenAIChatModel
    return kind("gpt-4.1-mini", provider=provider), provider.client


@pytest.mark.parametrize("live", [False, True], ids=["plain", "live"])
@pytest.mark.parametrize("api", ["chat", "responses", "anthropic"])
async def test_each_attempt_of_a_model_request_step_is_one_http_request(
        sqlite_url: str, api: str, live: bool) -> None:
    """The SDK client under pydantic-ai's model retries nothing inside a step: a 500,
    then the answer, are two journaled attempts of the step, one HTTP request each, so
    every try is classified, counted by the breaker and spaced by Tether's policy
    (``Retry-After`` included). Until 2026-12-06 the client's own 2 retries hid the 500
    inside the step's first attempt. The user's client is not changed: outside a
    workflow the same agent's client still retries by itself, and a ``max_retries`` the
    agent's settings give is kept in a step."""
    async with ScriptedResponsesServer(script=[
            Fault.http(500), Reply("once each"),
            Fault.http(500), Reply("the client's own retry"),
            Fault.http(500), Reply("as told")]) as server:
        model, client = sdk_model(api, server)
        agent = Agent(model, name="once")
        told = Agent(model, name="told", model_settings={"max_retries": 1})
        app = App(sqlite_url)
        TetherAgent(agent, app=app, durability=TetherDurability(live=live))
        TetherAgent(told, app=app, durability=TetherDurability(live=live))
        async with app, app.worker():
            assert await (await app.start("once", "x", run_id="a1")).result(
                timeout=30) == "once each"
            info = await app.get_run("a1")
            assert len(server.requests) == 2, [r.path for r in server.requests]
            assert (await agent.run("outside")).output == "the client's own retry"
            assert len(server.requests) == 4
            assert await (await app.start("told", "x", run_id="t1")).result(
                timeout=30) == "as told"
            told_info = await app.get_run("t1")
        await client.close()
    assert [e["attempts"] for e in info.journal] == [2]
    assert [e["attempts"] for e in told_info.journal] == [1]
    assert len(server.requests) == 6
    assert client.max_retries == 2


def counting(tagent: TetherAgent[None, str], app: App) -> None:
    """A workflow ``counted`` that runs the agent counting each request's tokens first
    (``count_tokens_before_request``: a ``model.count_tokens`` step, then the request),
    then waits (released) for the signal ``go``, so that the run replays."""
    limits = UsageLimits(input_tokens_limit=100_000, count_tokens_before_request=True)

    @app.workflow(name="counted")
    async def counted(prompt: str) -> str:
        output = (await tagent.run(prompt, usage_limits=limits)).output
        await tether.wait_for_signal("go")
        return output


@pytest.mark.parametrize("api", ["responses", "anthropic"])
async def test_a_refused_token_count_fails_the_run_at_once(sqlite_url: str, api: str) -> None:
    """A token count is a provider request like a model request: a 401 on it (a wrong
    API key) fails its step, and the run, at once with the provider's
    ``FatalProviderError``, after one HTTP request. Until 2026-12-06 its errors were
    not classified: the count was retried under ``model_retry``, for ever by default
    (here until the bounded wait gave up)."""
    async with ScriptedResponsesServer(script=[Reply("never asked for")],
                                       api_key="another-key") as server:
        model, client = sdk_model(api, server)
        app = App(sqlite_url)
        counting(TetherAgent(Agent(model, name="counter")), app)
        async with app, app.worker():
            with pytest.raises(RunFailed, match=r"FatalProviderError.*401"):
                await (await app.start("counted", "x", run_id="r1")).result(timeout=30)
            info = await app.get_run("r1")
        await client.close()
    assert [r.status for r in server.requests] == [401]
    assert server.requests[0].outcome == "unauthorized"
    assert [(e["name"], e["attempts"]) for e in info.journal] == [
        ("pydantic_ai:counter__model.count_tokens", 1)]


@pytest.mark.parametrize("api", ["responses", "anthropic"])
async def test_each_attempt_of_a_token_count_is_one_http_request(sqlite_url: str,
                                                                 api: str) -> None:
    """A token count's step sends it once a try, as a request's does (``max_retries=0``),
    with the step's ``Idempotency-Key``: a 500, then the count, are two journaled
    attempts of the count's step, one HTTP request each, then the request; replay
    sends neither again. The count is not metered (one ``llm.calls``, the request's).
    Until 2026-12-06 the SDK client's own retries hid the 500 inside one attempt, and
    the count carried no key."""
    async with ScriptedResponsesServer(script=[Reply("counted")],
                                       count_faults=[Fault.http(500)]) as server:
        model, client = sdk_model(api, server)
        app = App(sqlite_url)
        counting(TetherAgent(Agent(model, name="counter")), app)
        async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
            handle = await app.start("counted", "x", run_id="c1")
            # (waiting for the signal, not for the count's retry)
            await wait_for(lambda: len(server.requests) == 3, timeout=20)
            await wait_for(lambda: status_is(app, "c1", "waiting"), timeout=20)
            await app.signal("c1", "go", None)
            assert await handle.result(timeout=30) == "counted"
            info = await app.get_run("c1")
        await client.close()
    assert [(r.status, r.outcome) for r in server.requests] == [
        (500, "fault:500"), (200, "count_tokens"), (200, "reply")], server.requests
    assert [(e["name"], e["attempts"]) for e in info.journal[:2]] == [
        ("pydantic_ai:counter__model.count_tokens", 2),
        ("pydantic_ai:counter__model.request", 1)]
    assert info.metrics["llm.calls"] == 1 and info.metrics["saved.calls"] == 1
    keys = [r.headers.get("idempotency-key") for r in server.requests]
    assert keys == ["c1:0", "c1:0", "c1:1"], keys


COMPACTION = "pydantic_ai:compactor__model.compact_messages"

#: A run recorded by the code of 9c9f8b4 (before compactions were metered:
#: ``tests/integrations/record_compaction.py``), waiting for its signal: its compaction's
#: record is pydantic-ai's ``ModelResponse`` itself, its request's a metered record.
UNMETERED_COMPACTION = Path(__file__).parent / "data" / "pydantic_ai_unmetered_compaction.json"


def compacting(app: App, server: ScriptedResponsesServer, *, budget: Budget | None = None,
               wait: bool = False) -> Any:
    """A workflow ``compacted`` that runs the agent ``compactor`` (Anthropic's
    claude-opus-4-6 on ``server``, priced $5 in and $25 out per 1M tokens) on an earlier
    conversation it compacts first (``compact=True`` with ``NativeCompaction``: a
    ``model.compact_messages`` step, on Anthropic a Messages request asking for a
    summary), then answers; with ``wait`` it then waits for the signal ``go``, so that
    the run replays. Returns the Anthropic provider (its client to close)."""
    from pydantic_ai.capabilities import NativeCompaction
    from pydantic_ai.messages import ModelRequest
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    provider = AnthropicProvider(base_url=server.anthropic_base_url, api_key="test-key")
    tagent = TetherAgent(Agent(AnthropicModel("claude-opus-4-6", provider=provider),
                               name="compactor", capabilities=[NativeCompaction()]),
                         budget=budget,
                         durability=TetherDurability(prices={"claude-opus-4-6": (5.0, 25.0)}))

    @app.workflow(name="compacted")
    async def compacted(prompt: str) -> str:
        earlier = [ModelRequest.user_text_prompt("Where is Paris?"),
                   ModelResponse(parts=[TextPart("In France.")])]
        output = (await tagent.run(prompt, message_history=earlier, compact=True)).output
        if wait:
            await tether.wait_for_signal("go")
        return output

    return provider


async def test_a_compaction_is_classified_and_sent_once_a_try(sqlite_url: str) -> None:
    """Message compaction (``compact=True`` with pydantic-ai's ``NativeCompaction``; on
    Anthropic a Messages request asking for a summary) is a provider request like a
    model request: a 500 then a 400 are two attempts of its step, one HTTP request
    each, and the 400 fails the run at once with the provider's ``FatalProviderError``.
    The endpoint's breaker counted both (the 400 answered: closed). Until 2026-12-06 the
    SDK client retried the 500 inside the first attempt, and the 400 was retried under
    ``model_retry``, for ever by default (here until the bounded wait gave up); until
    the compaction was metered the breaker never saw it."""
    pytest.importorskip("anthropic")
    async with ScriptedResponsesServer(script=[
            Fault.http(500), Fault.http(400, "compaction is not available"),
            Reply("never asked for")]) as server:
        app = App(sqlite_url)
        provider = compacting(app, server)
        async with app, app.worker():
            with pytest.raises(RunFailed, match=r"FatalProviderError.*HTTP 400.*compaction "
                                                r"is not available"):
                await (await app.start("compacted", "And Rome?", run_id="k1")).result(
                    timeout=30)
            info = await app.get_run("k1")
            endpoint = str(provider.client.base_url).rstrip("/")
            breaker = await (await shared_state(app)).kv_get(
                key=f"llm.breaker:anthropic:{endpoint}")
        await provider.client.close()
    assert [r.status for r in server.requests] == [500, 400]
    assert all(r.body["compaction"] == {"type": "summarize"} for r in server.requests)
    assert [(e["name"], e["attempts"]) for e in info.journal] == [(COMPACTION, 2)]
    keys = [r.headers.get("idempotency-key") for r in server.requests]
    assert keys == ["k1:0", "k1:0"], keys
    assert breaker is not None and json.loads(breaker[0])["state"] == "closed"


def compaction_script() -> list[Reply]:
    """The compaction's summary (3,000 tokens in, 200 out: $0.02 at $5/$25 per 1M),
    then the answer (400 in, 10 out)."""
    return [Reply("They asked where Paris is: in France.", input_tokens=3_000,
                  output_tokens=200),
            Reply("Rome is in Italy.", input_tokens=400, output_tokens=10)]


async def test_a_compaction_is_metered_like_a_model_request(sqlite_url: str) -> None:
    """A compaction is a billed provider request (Anthropic's is a Messages request):
    its step is metered as a model request's, so the run's ledger counts its call,
    tokens and cost with the request's, and its journal record is the metered one
    (usage, cost). Until 2026-12-06 it was not metered: one ``llm.calls`` (the
    request's), 410 tokens and $0.00225."""
    pytest.importorskip("anthropic")
    async with ScriptedResponsesServer(script=compaction_script()) as server:
        app = App(sqlite_url)
        provider = compacting(app, server)
        async with app, app.worker():
            assert await (await app.start("compacted", "And Rome?", run_id="m1")).result(
                timeout=30) == "Rome is in Italy."
            info = await app.get_run("m1")
        await provider.client.close()
    assert ["compaction" in r.body for r in server.requests] == [True, False]
    assert [e["name"] for e in info.journal] == [
        COMPACTION, "pydantic_ai:compactor__model.request"]
    record = info.journal[0]["result"]
    assert record["usage"]["input_tokens"] == 3_000 and record["usage"]["output_tokens"] == 200
    assert record["cost_usd"] == pytest.approx(0.02)
    assert record["result"]["parts"][0]["part_kind"] == "compaction"
    assert info.metrics["llm.calls"] == 2
    assert info.metrics["tokens.input"] == 3_400 and info.metrics["tokens.output"] == 210
    assert info.metrics["cost.usd"] == pytest.approx((3_400 * 5.0 + 210 * 25.0) / 1e6)


async def test_a_budget_smaller_than_a_compaction_stops_the_run(sqlite_url: str) -> None:
    """A budget of $0.01 with policy ``fail``: the compaction ($0.02) spends it, so the
    request after it is refused, as the request after an over-budget request would be:
    the run fails with ``BudgetExceeded`` and the model is not asked. Until 2026-12-06
    the compaction was not counted: the request was sent and the run completed."""
    pytest.importorskip("anthropic")
    async with ScriptedResponsesServer(script=compaction_script()) as server:
        app = App(sqlite_url)
        provider = compacting(app, server, budget=Budget(usd=0.01, on_exceed="fail"))
        async with app, app.worker():
            with pytest.raises(RunFailed, match=r"BudgetExceeded"):
                await (await app.start("compacted", "And Rome?", run_id="b1")).result(
                    timeout=30)
            info = await app.get_run("b1")
        await provider.client.close()
    assert len(server.requests) == 1
    assert [(e["name"], e["status"]) for e in info.journal] == [
        (COMPACTION, "ok"), ("pydantic_ai:compactor__model.request", "error")]
    assert info.journal[1]["error"]["type"] == "tether.ai.BudgetExceeded"
    assert info.metrics["llm.calls"] == 1
    assert info.metrics["cost.usd"] == pytest.approx(0.02)


async def test_a_run_recorded_with_an_unmetered_compaction_replays(sqlite_url: str) -> None:
    """A run recorded before compactions were metered (``UNMETERED_COMPACTION``: its
    compaction's record the ``ModelResponse`` itself) replays at HEAD: the replayer
    finds it compatible, and put in a store as it was (its journal copied, as ``tether
    fork`` does) it is continued by a worker that answers the compaction and the request
    from the journal, asks the model nothing, and counts nothing for the compaction (the
    request's ``saved.calls`` only), then finishes on its signal."""
    pytest.importorskip("anthropic")
    from tether._app import worker_host
    from tether._codec import SLOT_INPUT
    from tether._types import RunRecord, RunStatus
    from tether.testing import load_history, replay

    history = load_history(UNMETERED_COMPACTION)
    assert [e["name"] for e in history.journal][:2] == [
        COMPACTION, "pydantic_ai:compactor__model.request"]
    assert history.journal[0]["result"]["parts"][0]["part_kind"] == "compaction"
    async with ScriptedResponsesServer(script=[Reply("never asked for")]) as server:
        app = App(sqlite_url)
        provider = compacting(app, server, wait=True)

        @app.workflow(name="source")
        async def source() -> None:
            return None

        [checked] = await replay(app, history)
        assert checked.compatible, checked.message
        [compared] = await replay(app, history, compare_args=True)  # (the opt-in check)
        assert [c.position for c in compared.changed_args] == [0], compared.message
        async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
            await (await app.start(source, run_id="source")).result(timeout=30)
            store = await worker_host(app).open()
            codec = app.codec.for_run("old")
            now = time.time()
            entries = history.entries(codec)
            await store.run_fork(
                source_run_id="source", at=entries[-1].position + 1, entries=entries,
                run=RunRecord(run_id="old", workflow=history.workflow, queue=history.queue,
                              status=RunStatus.QUEUED,
                              input=codec.encode(history.input, "input", SLOT_INPUT),
                              created_at=now, updated_at=now, available_at=now))
            await wait_for(lambda: status_is(app, "old", "waiting"), timeout=20)
            await app.signal("old", "go", None)
            assert await app.handle("old").result(timeout=30) == "Rome is in Italy."
            info = await app.get_run("old")
        await provider.client.close()
    assert server.requests == []
    assert info.metrics.get("llm.calls", 0) == 0
    assert info.metrics["saved.calls"] == 1
    assert info.metrics["saved.tokens.input"] == 400


@pytest.mark.parametrize("api", ["responses", "anthropic"])
async def test_a_token_count_is_free_and_outside_the_budget(sqlite_url: str, api: str) -> None:
    """A token count is free (OpenAI and Anthropic bill no tokens for it), so it is not
    metered: a budget of $0 (policy ``fail``) refuses the model request, before it is
    sent, but not the count before it, which is sent and journaled; the ledger counts
    neither (no ``llm.calls``, no tokens, no cost)."""
    async with ScriptedResponsesServer(script=[Reply("never asked for")]) as server:
        model, client = sdk_model(api, server)
        app = App(sqlite_url)
        counting(TetherAgent(Agent(model, name="counter"),
                             budget=Budget(usd=0.0, on_exceed="fail"),
                             durability=TetherDurability(prices={
                                 "gpt-4.1-mini": (0.4, 1.6), "claude-sonnet-5-5": (3.0, 15.0)})),
                 app)
        async with app, app.worker():
            with pytest.raises(RunFailed, match=r"BudgetExceeded"):
                await (await app.start("counted", "x", run_id="f1")).result(timeout=30)
            info = await app.get_run("f1")
        await client.close()
    assert [(r.status, r.outcome) for r in server.requests] == [(200, "count_tokens")]
    assert [(e["name"], e["status"]) for e in info.journal] == [
        ("pydantic_ai:counter__model.count_tokens", "ok"),
        ("pydantic_ai:counter__model.request", "error")]
    assert info.journal[1]["error"]["type"] == "tether.ai.BudgetExceeded"
    assert not any(info.metrics.get(k) for k in (
        "llm.calls", "tokens.input", "tokens.output", "cost.usd")), info.metrics


def backgrounded(app: App, server: ScriptedResponsesServer, *, wrapped: bool) -> Any:
    """The agent ``bg`` (OpenAI's Responses API in background mode on ``server``, plain
    requests; with ``wrapped``, a capability wraps its model in a ``WrapperModel``)
    registered on ``app``; returns its provider (its client to close)."""
    from pydantic_ai.capabilities import AbstractCapability
    from pydantic_ai.models.wrapper import WrapperModel

    class Wrapping(AbstractCapability[None]):
        def get_wrapper_model(self, model: Any) -> Any:
            return WrapperModel(model)

    provider = OpenAIProvider(base_url=server.base_url, api_key="test-key")
    model = OpenAIResponsesModel("gpt-4.1-mini", provider=provider,
                                 settings={"openai_background": True})
    TetherAgent(Agent(model, name="bg", capabilities=[Wrapping()] if wrapped else None),
                app=app, durability=TetherDurability(live=False))
    return provider


@pytest.mark.parametrize("wrapped", [False, True], ids=["model", "wrapped"])
async def test_each_attempt_of_a_cancellation_is_one_http_request(sqlite_url: str,
                                                                  wrapped: bool) -> None:
    """A background response (OpenAI's background mode: queued, then polled) whose poll
    is refused (a 400) fails the run, and pydantic-ai cancels the job it leaves: a
    ``model.cancel_suspended_response`` step. Its cancel is sent once a try, as a
    request is, with the step's ``Idempotency-Key``: a 500, then the cancellation, are
    two journaled attempts of the step, one HTTP request each. It is free and not
    metered: the ledger counts the request that queued the job only. Until 2026-12-07
    pydantic-ai's cancel call (it takes no settings) went through the SDK client's own
    retries: the 500 and the cancellation were one attempt, and no key was sent. The
    same when a capability wraps the model (``get_wrapper_model``)."""
    async with ScriptedResponsesServer(script=[Fault.http(400, "the job cannot be read")],
                                       cancel_faults=[Fault.http(500)]) as server:
        app = App(sqlite_url)
        provider = backgrounded(app, server, wrapped=wrapped)
        async with app, app.worker():
            with pytest.raises(RunFailed, match=r"FatalProviderError.*job cannot be read"):
                await (await app.start("bg", "think long", run_id="c1")).result(timeout=60)
            info = await app.get_run("c1")
        await provider.client.close()
    job = server.requests[0]
    assert (job.body["background"], job.outcome) == (True, "queued")
    cancel = f"/v1/responses/{next(iter(server.background))}/cancel"
    assert [(r.method, r.path.replace(cancel, "CANCEL"), r.status)
            for r in server.requests[1:]] == [
        ("GET", server.requests[1].path, 400), ("POST", "CANCEL", 500),
        ("POST", "CANCEL", 200)]
    assert [status for _, status in server.background.values()] == ["cancelled"]
    assert [(e["name"], e["status"], e["attempts"]) for e in info.journal] == [
        ("pydantic_ai:bg__model.request", "ok", 1),
        ("pydantic_ai:bg__model.request", "error", 1),
        ("pydantic_ai:bg__model.cancel_suspended_response", "ok", 2)]
    keys = [r.headers.get("idempotency-key") for r in server.requests]
    assert keys == ["c1:0", "c1:1", "c1:2", "c1:2"], keys
    assert info.metrics.get("llm.calls") == 1 and not info.metrics.get("cost.usd")


async def test_a_background_request_is_one_call_in_the_ledger(
        sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """One request in OpenAI's background mode: its create answers at once ``queued``
    (no usage yet), pydantic-ai polls it (``GET /v1/responses/{id}``, a second
    ``model.request`` step) and the poll answers it completed, with the job's usage.
    The ledger counts one call, its tokens and cost once (the completed answer's), and
    no "answered without usage" warning is logged for the queued answer; the poll's
    record says ``poll``. Until 2026-12-07 the create was a call of 0 tokens (and a
    warning) and the poll that completed it another: two calls for one request."""
    async with ScriptedResponsesServer(script=[
            Reply("Otters, in space.", input_tokens=3_000, output_tokens=400)]) as server:
        app = App(sqlite_url)
        provider = backgrounded(app, server, wrapped=False)
        with caplog.at_level("WARNING", logger="tether"):
            async with app, app.worker():
                handle = await app.start("bg", "Write a novel about otters", run_id="b1")
                assert await handle.result(timeout=60) == "Otters, in space."
                info = await app.get_run("b1")
        await provider.client.close()
    job = next(iter(server.background))
    assert [(r.method, r.path, r.outcome) for r in server.requests] == [
        ("POST", "/v1/responses", "queued"), ("GET", f"/v1/responses/{job}", "reply")]
    assert info.metrics["llm.calls"] == 1
    assert (info.metrics["tokens.input"], info.metrics["tokens.output"]) == (3_000, 400)
    assert info.metrics["cost.usd"] == pytest.approx((3_000 * 0.40 + 400 * 1.60) / 1e6)
    assert not [r for r in caplog.records if "without the usage" in r.getMessage()]
    assert [e["name"] for e in info.journal] == ["pydantic_ai:bg__model.request"] * 2
    queued, polled = (e["result"] for e in info.journal)
    assert queued["result"]["state"] == "suspended" and "poll" not in queued
    assert polled["poll"] is True and polled["usage"]["input_tokens"] == 3_000
    out = tether_cli("show", "b1", db=sqlite_url).stdout
    assert "LLM spent:        1 call, 3,000 input + 400 output tokens" in out, out
    # The queued request's row tells no usage of its own (the poll's tells the job's),
    # not "usage not reported"; the poll's reads as an LLM call's.
    rows = [line for line in out.splitlines() if "bg__model.request" in line]
    assert " · 0 in / 0 out · $0" in rows[0] and "usage not reported" not in rows[0], out
    assert " · 3,000 in / 400 out · $0.0018 · Otters, in space." in rows[1], out


async def test_a_live_background_request_is_asked_plainly_then_polled(
        sqlite_url: str) -> None:
    """With live text on (``live=True``, the default), a request in OpenAI's background
    mode is asked plainly, not streamed: its create answers ``queued`` at once and is
    journaled, then pydantic-ai polls the job (a ``model.request`` step of its own), so
    a connection reset while it is read polls the same job again rather than sending
    the request anew: one create, one call in the ledger, its usage once. Streamed
    (``"background": true, "stream": true``), a stream cut mid-way was sent again by
    the step's next attempt: a second job, billed."""
    async with ScriptedResponsesServer(script=[
            Fault.reset(),
            Reply("Otters, in space.", input_tokens=3_000, output_tokens=400)]) as server:
        provider = OpenAIProvider(base_url=server.base_url, api_key="test-key")
        model = OpenAIResponsesModel("gpt-4.1-mini", provider=provider,
                                     settings={"openai_background": True})
        app = App(sqlite_url)
        TetherAgent(Agent(model, name="bg"), app=app, durability=TetherDurability())
        async with app, app.worker():
            handle = await app.start("bg", "Write a novel about otters", run_id="lb1")
            assert await handle.result(timeout=60) == "Otters, in space."
            info = await app.get_run("lb1")
        await provider.client.close()
    job = next(iter(server.background))
    assert [(r.method, r.path, r.stream, r.outcome) for r in server.requests] == [
        ("POST", "/v1/responses", False, "queued"),
        ("GET", f"/v1/responses/{job}", False, "fault:reset"),
        ("GET", f"/v1/responses/{job}", False, "reply")]
    assert [(e["name"], e["attempts"]) for e in info.journal] == [
        ("pydantic_ai:bg__model.request", 1), ("pydantic_ai:bg__model.request", 2)]
    assert info.metrics["llm.calls"] == 1
    assert (info.metrics["tokens.input"], info.metrics["tokens.output"]) == (3_000, 400)


async def streamed_background(sqlite_url: str, server: ScriptedResponsesServer, run_id: str
                              ) -> tuple[str, Any, list[str], list[dict[str, Any]]]:
    """Run the agent ``bgs`` (OpenAI's Responses API in background mode on ``server``,
    streamed by pydantic-ai: an ``event_stream_handler``, live text on): (its output,
    the run, the text its handler received, the ``llm.chunk`` events stored for
    observers)."""
    heard: list[str] = []

    async def handler(ctx: RunContext[None], events: Any) -> None:
        async for event in events:
            if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                heard.append(event.part.content)
            elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                heard.append(event.delta.content_delta)

    provider = OpenAIProvider(base_url=server.base_url, api_key="test-key")
    model = OpenAIResponsesModel("gpt-4.1-mini", provider=provider,
                                 settings={"openai_background": True})
    app = App(sqlite_url)
    TetherAgent(Agent(model, name="bgs"), app=app,
                durability=TetherDurability(event_stream_handler=handler))
    observed: list[dict[str, Any]] = []
    async with app, app.worker():
        handle = await app.start("bgs", "Write a novel about otters", run_id=run_id)
        answer = await handle.result(timeout=60)
        info = await app.get_run(run_id)
        observed = [json.loads(e.data or "{}") for e in
                    await app.store.run_events_latest(run_id=run_id, kind="chunk")]
    await provider.client.close()
    return answer, info, heard, observed


async def test_a_streamed_background_request_is_created_once_then_streamed(
        sqlite_url: str) -> None:
    """A request pydantic-ai streams (an ``event_stream_handler``) in OpenAI's
    background mode (``"background": true, "stream": true``): its step ends at the
    stream's ``response.created``, the job queued, journaled at once; pydantic-ai then
    streams the job (``GET /v1/responses/{id}?stream=true&starting_after=0``) in the
    next ``model.request_stream`` step, a poll. One create, one call in the ledger,
    its usage once, the text heard once."""
    async with ScriptedResponsesServer(script=[
            Reply("Otters float on their backs.", input_tokens=3_000,
                  output_tokens=400)]) as server:
        answer, info, heard, observed = await streamed_background(sqlite_url, server, "sb1")
    assert answer == "Otters float on their backs."
    job = next(iter(server.background))
    assert [(r.method, r.path, r.outcome) for r in server.requests] == [
        ("POST", "/v1/responses", "reply"), ("GET", f"/v1/responses/{job}", "resumed")]
    assert server.requests[0].body["background"] is True and server.requests[0].stream
    assert server.requests[1].query == "starting_after=0&stream=true"
    assert "".join(heard) == answer
    assert "".join(e["text"] for e in observed if e["type"] == "llm.chunk") == answer
    stream = "pydantic_ai:bgs__model.request_stream"
    assert [(e["name"], e["attempts"]) for e in info.journal] == [(stream, 1), (stream, 1)]
    queued, polled = (e["result"] for e in info.journal)
    assert queued["result"]["state"] == "suspended" and "poll" not in queued
    assert queued["result"]["provider_response_id"] == job
    assert polled["poll"] is True
    assert info.metrics["llm.calls"] == 1
    assert (info.metrics["tokens.input"], info.metrics["tokens.output"]) == (3_000, 400)


async def test_a_cut_streamed_background_request_resumes_after_its_last_event(
        sqlite_url: str) -> None:
    """The job's stream is cut mid-way (the server resets it before its fifth chunk):
    the step resumes the same job in the same attempt, ``starting_after`` the last
    event it read, so one create (no second job billed), its usage once, and neither
    the event handler nor the observers get a piece of text twice. Before, such a
    request was refused (a cut made the step's retry send it again, a second job)."""
    async with ScriptedResponsesServer(script=[
            ResponsesReply("one two three four five six", resume_reset_after_chunks=4,
                           input_tokens=700, output_tokens=60)]) as server:
        answer, info, heard, observed = await streamed_background(sqlite_url, server, "sb2")
    assert answer == "one two three four five six"
    job = next(iter(server.background))
    assert [(r.method, r.path, r.outcome) for r in server.requests] == [
        ("POST", "/v1/responses", "reply"),
        ("GET", f"/v1/responses/{job}", "fault:reset_mid_stream"),
        ("GET", f"/v1/responses/{job}", "resumed")]
    events, _ = server.background_streams[job]
    fifth = [number for kind, _, number in events if kind == "content"][4]
    assert [r.query for r in server.requests[1:]] == [
        "starting_after=0&stream=true", f"starting_after={fifth - 1}&stream=true"]
    assert "".join(heard) == answer
    assert "".join(e["text"] for e in observed if e["type"] == "llm.chunk") == answer
    stream = "pydantic_ai:bgs__model.request_stream"
    assert [(e["name"], e["attempts"]) for e in info.journal] == [(stream, 1), (stream, 1)]
    assert info.journal[1]["result"]["result"]["state"] == "complete"
    assert info.metrics["llm.calls"] == 1
    assert (info.metrics["tokens.input"], info.metrics["tokens.output"]) == (700, 60)


@pytest.mark.parametrize("cut", ["before_head", "after_head"])
async def test_a_streamed_background_create_cut_before_created_is_not_sent_again(
        sqlite_url: str, cut: str) -> None:
    """The create of a request streamed in OpenAI's background mode is taken by the
    provider (the job queued, billed as it runs) and its connection reset before
    ``response.created``: its id never arrives, and the Responses API finds a response
    by its id only (no list, no search by metadata; OpenAI documents no
    ``Idempotency-Key``, and its SDK sends none). The step's next attempt sent the
    request again: a second job, billed, the first running on unread. The step now
    fails at once (the run with it), saying what may run at the provider and what to
    do; the server got one create. Cut before the answer's head, or after it (an HTTP
    200 event stream) before its first event."""
    how = {"created_reset": True} if cut == "before_head" else {
        "created_reset_after_head": True}
    async with ScriptedResponsesServer(script=[
            ResponsesReply("the first job", input_tokens=3_000, output_tokens=400, **how),
            Reply("a second job", input_tokens=3_000, output_tokens=400)]) as server:
        with pytest.raises(RunFailed) as failed:
            await streamed_background(sqlite_url, server, "sb3")
    creates = [r for r in server.requests if r.method == "POST"]
    assert [(r.path, r.outcome) for r in creates] == [
        ("/v1/responses", "fault:reset_before_created")]
    assert len(server.background) == 1
    message = str(failed.value)
    assert "FatalProviderError" in message, message
    assert ("the request in OpenAI's background mode was sent, and its stream cut "
            "before response.created") in message, message
    assert "not sent again" in message and "start the run again" in message, message


async def test_a_background_create_whose_answer_is_lost_is_not_sent_again(
        sqlite_url: str) -> None:
    """The same for a request asked plainly in OpenAI's background mode (live text on,
    the default): the provider queues the job and the connection is reset before its
    ``queued`` answer. The step's next attempt sent the request again, a second job;
    it now fails at once, one create sent."""
    async with ScriptedResponsesServer(script=[Reply("never polled")],
                                       reset_creates=1) as server:
        provider = OpenAIProvider(base_url=server.base_url, api_key="test-key")
        model = OpenAIResponsesModel("gpt-4.1-mini", provider=provider,
                                     settings={"openai_background": True})
        app = App(sqlite_url)
        TetherAgent(Agent(model, name="bg"), app=app, durability=TetherDurability())
        async with app, app.worker():
            handle = await app.start("bg", "Write a novel about otters", run_id="lb2")
            with pytest.raises(RunFailed) as failed:
                await handle.result(timeout=60)
            info = await app.get_run("lb2")
        await provider.client.close()
    assert [(r.method, r.outcome) for r in server.requests] == [
        ("POST", "fault:reset_before_queued")]
    assert len(server.background) == 1
    message = str(failed.value)
    assert ("FatalProviderError: openai: no response: the request in OpenAI's background "
            "mode was sent, and its answer lost before the job's id came") in message, message
    assert [(e["status"], e["attempts"]) for e in info.journal] == [("error", 1)]


def test_a_create_that_never_connected_is_retried() -> None:
    """Only a connection that failed once the request may have reached the provider
    (reset, dropped, a read timed out) makes a background create fatal: one that
    never connected (refused, no such host, a connect or pool timeout) sent nothing,
    and its step retries it as any request."""
    import httpx
    from openai import APIConnectionError, APITimeoutError

    from tether.integrations.pydantic_ai import _sent_unanswered

    request = httpx.Request("POST", "https://api.openai.com/v1/responses")

    def sdk(cause: BaseException, kind: type[APIConnectionError] = APIConnectionError
            ) -> BaseException:
        error = kind(request=request)
        error.__cause__ = cause
        return error

    for unsent in (httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"),
                   httpx.PoolTimeout("busy")):
        assert not _sent_unanswered(sdk(unsent, APITimeoutError if isinstance(
            unsent, httpx.TimeoutException) else APIConnectionError)), unsent
    for sent in (httpx.RemoteProtocolError("reset"), httpx.ReadError("dropped"),
                 httpx.ReadTimeout("silent")):
        assert _sent_unanswered(sdk(sent)), sent
        assert _sent_unanswered(sent), sent
    assert not _sent_unanswered(ValueError("not a connection"))


async def test_run_stream_in_background_mode_creates_the_job_once(sqlite_url: str) -> None:
    """``agent.run_stream`` in a workflow, in OpenAI's background mode, its job's stream
    cut mid-way: the streamed text is whole and heard once, the request created once."""
    async with ScriptedResponsesServer(script=[
            ResponsesReply("one two three four five", resume_reset_after_chunks=2,
                           input_tokens=50, output_tokens=5)]) as server:
        provider = OpenAIProvider(base_url=server.base_url, api_key="test-key")
        model = OpenAIResponsesModel("gpt-4.1-mini", provider=provider,
                                     settings={"openai_background": True})
        agent = Agent(model, name="rs", capabilities=[TetherDurability()])
        app = App(sqlite_url)

        @app.workflow(name="streamed")
        async def streamed(prompt: str) -> list[str]:
            async with agent.run_stream(prompt) as result:
                return [piece async for piece in result.stream_text(delta=True)]

        async with app, app.worker():
            pieces = await (await app.start("streamed", "Count", run_id="rs1")).result(
                timeout=60)
            info = await app.get_run("rs1")
        await provider.client.close()
    assert "".join(pieces) == "one two three four five"
    assert [(r.method, r.outcome) for r in server.requests] == [
        ("POST", "reply"), ("GET", "fault:reset_mid_stream"), ("GET", "resumed")]
    assert info.metrics["llm.calls"] == 1 and info.metrics["tokens.input"] == 50


def test_a_polls_usage_is_what_the_job_used_beyond_the_polled_response() -> None:
    """A background job's answer tells its usage so far (pydantic-ai replaces the
    suspended response with it): a poll counts what is beyond the response it polled,
    which an earlier poll counted, never less than 0."""
    from tether.integrations.pydantic_ai import _usage_beyond

    polled = ModelResponse(parts=[], state="suspended", usage=RequestUsage(
        input_tokens=3_000, output_tokens=100, cache_read_tokens=1_000))
    done = {"state": "complete", "model_name": "gpt-5.2", "usage": {
        "input_tokens": 3_000, "output_tokens": 400, "cache_read_tokens": 1_000}}
    assert _usage_beyond(polled)(done) == (Usage(0, 300), "gpt-5.2")
    assert _usage_beyond(polled)({**done, "usage": {}}) == (Usage(0, 0), "gpt-5.2")


async def test_a_background_request_is_budgeted_as_one_request(sqlite_url: str) -> None:
    """The budget of a run whose requests go in background mode: the first request is
    admitted before it is sent, the completed job's cost (its poll's usage) spends the
    budget, and the agent's next request is refused before it is sent
    (``BudgetExceeded``): the server saw the first job's create and poll only. And a
    budget spent already refuses the create itself: nothing is sent."""
    call = {"name": "population", "arguments": {"city": "Paris"}}
    async with ScriptedResponsesServer(script=[
            Reply(tool_calls=[call], input_tokens=30_000, output_tokens=1_000),
            Reply("never sent")]) as server:
        provider = OpenAIProvider(base_url=server.base_url, api_key="test-key")
        model = OpenAIResponsesModel("gpt-4.1-mini", provider=provider,
                                     settings={"openai_background": True})
        agent = Agent(model, name="bgb")

        @agent.tool_plain
        def population(city: str) -> float:
            """The population of a city, in millions."""
            return 2.1

        app = App(sqlite_url)
        TetherAgent(agent, app=app, budget=Budget(usd=0.01, on_exceed="fail"),
                    durability=TetherDurability(live=False))
        spent = TetherAgent(Agent(model, name="spent"), app=app,
                            budget=Budget(usd=0.0, on_exceed="fail"),
                            durability=TetherDurability(live=False))
        async with app, app.worker():
            with pytest.raises(RunFailed, match=r"BudgetExceeded"):
                await (await app.start("bgb", "How many in Paris?",
                                       run_id="bb1")).result(timeout=60)
            info = await app.get_run("bb1")
            sent = len(server.requests)
            with pytest.raises(RunFailed, match=r"BudgetExceeded"):
                await (await spent.start("Anything", run_id="bb2")).result(timeout=60)
            refused = await app.get_run("bb2")
        await provider.client.close()
    assert [(r.method, r.outcome) for r in server.requests] == [
        ("POST", "queued"), ("GET", "reply")]
    assert sent == 2
    assert [(e["name"], e["status"]) for e in info.journal] == [
        ("pydantic_ai:bgb__model.request", "ok"), ("pydantic_ai:bgb__model.request", "ok"),
        ("pydantic_ai:bgb__function_toolset__<agent>.call_tool:population", "ok"),
        ("pydantic_ai:bgb__model.request", "error")]
    assert info.journal[3]["error"]["type"] == "tether.ai.BudgetExceeded"
    assert info.metrics["llm.calls"] == 1
    assert info.metrics["tokens.input"] == 30_000
    assert info.metrics["cost.usd"] == pytest.approx((30_000 * 0.40 + 1_000 * 1.60) / 1e6)
    assert [(e["name"], e["status"]) for e in refused.journal] == [
        ("pydantic_ai:spent__model.request", "error")]
    assert not refused.metrics.get("llm.calls")


OPENAI_COMPACTION = "pydantic_ai:summarizer__model.compact_messages"


async def test_an_openai_compaction_is_journaled_metered_and_replayed(
        sqlite_url: str) -> None:
    """The Responses API's compaction (``compact=True`` with ``NativeCompaction`` on
    ``OpenAIResponsesModel``: ``POST /v1/responses/compact``) end to end: a 500, then
    the compacted conversation, are two attempts of its step, one HTTP request each,
    with the step's ``Idempotency-Key``; its record is metered (its usage and cost in
    the ledger); the request after it sends the compaction item back; and when the run
    is released and replayed (it waits for a signal), the compaction and the request
    are answered from the journal: no second request (``saved.*``). Until 2026-12-07
    pydantic-ai's compact call dropped the settings' ``extra_headers``: no key went."""
    from pydantic_ai.capabilities import NativeCompaction
    from pydantic_ai.messages import ModelRequest

    async with ScriptedResponsesServer(script=[
            Fault.http(500),
            Reply("They asked where Paris is: in France.", input_tokens=3_000,
                  output_tokens=200),
            Reply("Rome is in Italy.", input_tokens=400, output_tokens=10)]) as server:
        provider = OpenAIProvider(base_url=server.base_url, api_key="test-key")
        tagent = TetherAgent(
            Agent(OpenAIResponsesModel("gpt-5.2", provider=provider), name="summarizer",
                  capabilities=[NativeCompaction()]),
            durability=TetherDurability(prices={"gpt-5.2": (2.0, 16.0)}))
        app = App(sqlite_url)

        @app.workflow(name="summarized")
        async def summarized(prompt: str) -> str:
            earlier = [ModelRequest.user_text_prompt("Where is Paris?"),
                       ModelResponse(parts=[TextPart("In France.")])]
            output = (await tagent.run(prompt, message_history=earlier, compact=True)).output
            await tether.wait_for_signal("go")
            return output

        async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
            handle = await app.start("summarized", "And Rome?", run_id="o1")
            # (waiting for the signal, not for the compaction's retry)
            await wait_for(lambda: len(server.requests) == 3, timeout=30)
            await wait_for(lambda: status_is(app, "o1", "waiting"), timeout=30)
            sent = len(server.requests)
            await app.signal("o1", "go", None)
            assert await handle.result(timeout=30) == "Rome is in Italy."
            info = await app.get_run("o1")
        await provider.client.close()
    assert sent == 3 and len(server.requests) == 3
    assert [(r.path, r.status) for r in server.requests] == [
        ("/v1/responses/compact", 500), ("/v1/responses/compact", 200), ("/v1/responses", 200)]
    compact = server.requests[1].body
    assert compact["model"] == "gpt-5.2" and compact["input"][0] == {
        "role": "user", "content": "Where is Paris?"}
    assert server.requests[2].body["input"][0] == {
        "type": "compaction", "id": server.requests[2].body["input"][0]["id"],
        "encrypted_content": "scripted:They asked where Paris is: in France."}
    keys = [r.headers.get("idempotency-key") for r in server.requests]
    assert keys == ["o1:0", "o1:0", "o1:1"], keys
    assert [(e["name"], e["attempts"]) for e in info.journal[:2]] == [
        (OPENAI_COMPACTION, 2), ("pydantic_ai:summarizer__model.request", 1)]
    record = info.journal[0]["result"]
    assert record["usage"]["input_tokens"] == 3_000 and record["usage"]["output_tokens"] == 200
    assert record["cost_usd"] == pytest.approx((3_000 * 2.0 + 200 * 16.0) / 1e6)
    assert record["result"]["parts"][0]["part_kind"] == "compaction"
    assert info.metrics["llm.calls"] == 2
    assert info.metrics["tokens.input"] == 3_400 and info.metrics["tokens.output"] == 210
    assert info.metrics["saved.calls"] == 2 and info.metrics["saved.tokens.input"] == 3_400
