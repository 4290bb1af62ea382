"""The OpenAI Agents SDK run durably by Tether (``tether.integrations.openai_agents``),
against the scripted OpenAI server on 127.0.0.1: journaled model requests and tool
calls, handoffs, guardrails, typed output, sessions, child-workflow tools, the cost
ledger and budgets."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"  # nothing leaves 127.0.0.1

from agents import (
    Agent,
    GuardrailFunctionOutput,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    SQLiteSession,
    function_tool,
    input_guardrail,
    set_tracing_disabled,
)
from openai import AsyncOpenAI
from pydantic import BaseModel

import tether
from tests import forked
from tests.engine.helpers import status_is, wait_for
from tether import App, RunFailed
from tether.ai import Budget
from tether.errors import ConfigError
from tether.integrations.openai_agents import (
    TetherAgent,
    TetherModel,
    durable,
    run_config,
    workflow_tool,
)
from tether.testing.llm_server import Fault, RecordedRequest, Reply, ScriptedLLMServer
from tether.testing.responses_api import ResponsesReply, ScriptedResponsesServer

set_tracing_disabled(True)


class City(BaseModel):
    city: str
    country: str


PARIS = {"city": "Paris", "country": "France"}


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as s:
        yield s


@pytest.fixture
async def model(server: ScriptedLLMServer) -> AsyncIterator[OpenAIChatCompletionsModel]:
    """The SDK's Chat Completions model on the scripted server (client closed after)."""
    client = AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
    yield OpenAIChatCompletionsModel("gpt-4.1-mini", openai_client=client)
    await client.close()


def triage_agents(model: OpenAIChatCompletionsModel,
                  weather_calls: list[str]) -> tuple[Agent[Any], Agent[Any]]:
    @function_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        weather_calls.append(city)
        return f"sunny in {city}"

    geo = Agent(name="geo", model=model, output_type=City, instructions="Name the city.")
    triage = Agent(name="triage", model=model, tools=[weather], handoffs=[geo],
                   instructions="Check the weather, then hand off to geo.")
    return triage, geo


def triage_script() -> list[Reply]:
    return [Reply(tool_calls=[{"name": "weather", "arguments": {"city": "Paris"}}],
                  input_tokens=1000, output_tokens=10),
            Reply(tool_calls=[{"name": "transfer_to_geo", "arguments": {}}],
                  input_tokens=1100, output_tokens=5),
            Reply(json.dumps(PARIS), input_tokens=1200, output_tokens=12)]


def tether_cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    return forked.run([sys.executable, "-m", "tether", *args, "--db", db],
                      capture_output=True, text=True, timeout=60, env=env)


MODEL = "openai_agents:model:gpt-4.1-mini"


async def test_model_tools_and_handoff_are_journaled_with_typed_output(
        store_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    """Started by name from the CLI; tool call, handoff and the structured answer: three
    model steps and a tool step; the result is the handed-off agent's City; the ledger
    counts the three requests."""
    server.set_script(triage_script())
    weather: list[str] = []
    triage, _ = triage_agents(model, weather)
    app = App(store_url)
    TetherAgent(triage, app=app)
    async with app, app.worker():
        started = await asyncio.to_thread(
            tether_cli, "start", "triage", "--input", '["Where is the Eiffel tower?"]',
            "--id", "t1", db=store_url)
        assert started.returncode == 0, started.stderr
        assert await app.handle("t1").result(timeout=30) == PARIS
        info = await app.get_run("t1")
    assert [(e["name"], e["status"]) for e in info.journal] == [
        (MODEL, "ok"), ("openai_agents:tool:weather", "ok"), (MODEL, "ok"), (MODEL, "ok")]
    assert weather == ["Paris"]
    assert len(server.requests) == 3
    # The handed-off agent's request carries its own instructions.
    assert server.requests[2].body["messages"][0]["content"] == "Name the city."
    assert info.metrics["llm.calls"] == 3 and info.metrics["tokens.input"] == 3300
    shown = await asyncio.to_thread(tether_cli, "show", "t1", db=store_url)
    assert "LLM spent:        3 calls, 3,300 input + 27 output tokens" in shown.stdout
    # Each model request reads as a tether.ai LLM call's row (then its answer's text),
    # not the record's JSON.
    rows = [line.split("ms  ", 1)[1] for line in shown.stdout.splitlines()
            if f"{MODEL} ok" in line]
    assert rows[:2] == ["gpt-4.1-mini · 1,000 in / 10 out · $0.0004 → weather",
                        "gpt-4.1-mini · 1,100 in / 5 out · $0.0004 → transfer_to_geo"]
    assert rows[2].startswith('gpt-4.1-mini · 1,200 in / 12 out · $0.0005 · {"city": "Paris"')


async def test_typed_output_of_the_starting_agent(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    server.set_script([Reply(json.dumps(PARIS), input_tokens=10, output_tokens=5)])
    app = App(sqlite_url)
    tagent: TetherAgent[City] = TetherAgent(Agent(name="geo", model=model, output_type=City),
                                            app=app)
    async with app, app.worker():
        result = await (await tagent.start("Eiffel tower?")).result(timeout=30)
    assert result == City(**PARIS)


async def test_cached_prompt_tokens_are_priced_at_the_cached_price(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    """The SDK's usage tells the cached input (``input_tokens_details.cached_tokens``):
    of 10,000 prompt tokens on gpt-4.1-mini, 8,000 read from the cache cost $0.10 per
    million, not $0.40 (before: all at the input price)."""
    server.set_script([Reply(json.dumps(PARIS), input_tokens=10_000, output_tokens=5,
                             cache_read_tokens=8_000)])
    app = App(sqlite_url)
    tagent: TetherAgent[City] = TetherAgent(Agent(name="geo", model=model, output_type=City),
                                            app=app)
    async with app, app.worker():
        handle = await tagent.start("Eiffel tower?")
        assert await handle.result(timeout=30) == City(**PARIS)
        info = await app.get_run(handle.run_id)
    assert info.metrics["tokens.input"] == 10_000
    assert info.metrics["cost.usd"] == pytest.approx(
        (2_000 * 0.40 + 8_000 * 0.10 + 5 * 1.60) / 1e6)


async def test_replay_sends_no_request_and_runs_no_tool_again(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    """A workflow runs the agents, then waits (released) for a signal; the replay after
    it returns the recorded responses, takes the same handoff, runs no tool again and
    counts the requests as saved."""
    server.set_script(triage_script())
    weather: list[str] = []
    triage, _ = triage_agents(model, weather)
    tagent = TetherAgent(triage)
    app = App(sqlite_url)
    outputs: list[Any] = []

    @app.workflow
    async def ask(question: str) -> str:
        result = await tagent.run(question)
        outputs.append((result.final_output, result.last_agent.name))
        await tether.wait_for_signal("go")
        return str(result.final_output.city)

    async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
        handle = await app.start(ask, "Eiffel tower?", run_id="r1")
        await wait_for(lambda: status_is(app, "r1", "waiting"), timeout=20)
        await app.signal("r1", "go")
        assert await handle.result(timeout=20) == "Paris"
        info = await app.get_run("r1")
    assert outputs == [(City(**PARIS), "geo")] * 2
    assert weather == ["Paris"] and len(server.requests) == 3
    assert info.metrics["saved.calls"] == 3


async def test_budget_fail_refuses_the_request(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    """1010 tokens spent against a 1000-token budget with policy fail: the second
    request is refused in its step, never sent, and the run fails."""
    server.set_script(triage_script())
    triage, _ = triage_agents(model, [])
    app = App(sqlite_url)
    TetherAgent(triage, app=app, budget=Budget(tokens=1000, on_exceed="fail"))
    async with app, app.worker():
        with pytest.raises(RunFailed, match=r"BudgetExceeded.*1010 tokens spent"):
            await (await app.start("triage", "x", run_id="b1")).result(timeout=30)
        info = await app.get_run("b1")
    assert len(server.requests) == 1
    assert info.journal[-1]["error"]["type"] == "tether.ai.BudgetExceeded"


async def test_an_account_out_of_credit_fails_the_run_at_once(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    """The SDK's 429 ``insufficient_quota`` is a ProviderBillingError: the run fails at
    the first attempt saying to add credit, where it was retried as a rate limit (here
    until the next step of the script answered)."""
    server.set_script([Fault.out_of_credit(), Reply("never asked for")])
    app = App(sqlite_url)
    TetherAgent(Agent(name="broke", model=model), app=app)
    async with app, app.worker():
        with pytest.raises(RunFailed, match=r"ProviderBillingError.*add credit"):
            await (await app.start("broke", "x", run_id="q1")).result(timeout=30)
    assert len(server.requests) == 1


async def test_an_error_in_a_200_answer_fails_the_run_at_once(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    """A gateway's HTTP 200 carrying the provider's 400 (``{"error": {"code": 400,
    ...}}``) is that 400: the run fails at the first attempt with the provider's
    message, plain or streamed. The SDK raises ``ModelBehaviorError`` ("ChatCompletion
    response has no choices (possible provider error payload)"; streamed, an
    ``APIError``), which was retried for as long as the retry policy allowed (here
    until the next step of the script answered)."""
    server.set_script([Fault.error_body(400, "This model's maximum context length is "
                                             "128000 tokens", times=2),
                       Reply("never asked for")])
    agent = durable(Agent(name="gw", model=model))
    app = App(sqlite_url)
    TetherAgent(agent, app=app)

    @app.workflow
    async def streamed_gw(question: str) -> str:
        streamed = Runner.run_streamed(agent, question, run_config=run_config())
        async for _ in streamed.stream_events():
            pass
        return str(streamed.final_output)

    async with app, app.worker():
        for name, run_id in (("gw", "g1"), ("streamed_gw", "g2")):
            with pytest.raises(RunFailed, match=r"FatalProviderError.*HTTP 400.*maximum "
                                                r"context length is 128000 tokens"):
                await (await app.start(name, "x", run_id=run_id)).result(timeout=30)
            (entry,) = (await app.get_run(run_id)).journal
            assert entry["attempts"] == 1
    assert [r.stream for r in server.requests] == [False, True]


async def test_budget_wait_resumes_when_raised(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    server.set_script(triage_script())
    triage, _ = triage_agents(model, [])
    app = App(sqlite_url)
    TetherAgent(triage, app=app, budget=Budget(tokens=1000))
    async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
        handle = await app.start("triage", "x", run_id="b2")
        await wait_for(lambda: status_is(app, "b2", "waiting"), timeout=20)
        assert (await app.get_run("b2")).status_info["waiting_for"] == "budget"
        proc = await asyncio.to_thread(tether_cli, "budget", "b2", "--tokens", "100000",
                                       db=sqlite_url)
        assert proc.returncode == 0, proc.stderr
        assert await handle.result(timeout=20) == PARIS
    assert len(server.requests) == 3


def refund_agent(model: OpenAIChatCompletionsModel, refunds: list[str]) -> Agent[Any]:
    @function_tool(needs_approval=True)
    def refund(order_id: str) -> str:
        """Refund an order."""
        refunds.append(order_id)
        return f"refunded {order_id}"

    return Agent(name="refunder", model=model, tools=[refund], instructions="Refund.")


REFUND_SCRIPT = [Reply(tool_calls=[{"name": "refund", "arguments": {"order_id": "A1"},
                                    "id": "call_r1"}], input_tokens=100, output_tokens=10),
                 Reply("Done.", input_tokens=120, output_tokens=5)]


@pytest.mark.parametrize("approved", [True, False])
async def test_a_tool_that_needs_approval_waits_for_a_human_in_a_run_by_name(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel,
        approved: bool) -> None:
    """A function tool with the SDK's ``needs_approval``, in an agent started by name: the
    run waits (released) on a Tether approval naming the call (``tether approvals``),
    then goes on with the decision: approved, the tool runs once; rejected, it does not,
    and the model is told the human's note. (Before, the run ended ``completed`` with
    ``null``: the SDK's interruption was its final output, the tool never ran and nobody
    was asked.)"""
    server.set_script(list(REFUND_SCRIPT))
    refunds: list[str] = []
    app = App(sqlite_url)
    TetherAgent(refund_agent(model, refunds), app=app)
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
    told = [item["content"] for item in server.requests[1].body["messages"]
            if item["role"] == "tool"]
    assert told == (["refunded A1"] if approved else ["rejected by a human: not this one"])


async def test_an_input_guardrail_with_its_own_agent_is_durable(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    """The guardrail runs a checking agent (its request a metered step) before the main
    agent; its tripwire fails the run and the main agent sends nothing."""
    server.set_script([Reply(json.dumps({"is_homework": True}), input_tokens=20,
                             output_tokens=5)])

    class Check(BaseModel):
        is_homework: bool

    checker = durable(Agent(name="checker", model=model, output_type=Check))

    @input_guardrail(run_in_parallel=False)
    async def no_homework(ctx: Any, agent: Any, text: Any) -> GuardrailFunctionOutput:
        result = await Runner.run(checker, text, run_config=run_config())
        return GuardrailFunctionOutput(output_info=result.final_output,
                                       tripwire_triggered=result.final_output.is_homework)

    app = App(sqlite_url)
    TetherAgent(Agent(name="tutor", model=model, input_guardrails=[no_homework]), app=app)
    async with app, app.worker():
        with pytest.raises(RunFailed, match="InputGuardrailTripwireTriggered"):
            await (await app.start("tutor", "solve 2x=4", run_id="g1")).result(timeout=30)
        info = await app.get_run("g1")
    assert [e["name"] for e in info.journal] == [MODEL]
    assert len(server.requests) == 1 and info.metrics["llm.calls"] == 1


async def test_session_history_is_read_and_written_once(
        sqlite_url: str, tmp_path: Path, server: ScriptedLLMServer,
        model: OpenAIChatCompletionsModel) -> None:
    """A session's reads and writes are steps: the second run sees the first run's
    conversation; a replay (after a signal) adds nothing to the session."""
    server.set_script([Reply("Hello Ada", input_tokens=10, output_tokens=2),
                       Reply("You are Ada", input_tokens=20, output_tokens=3)])
    path = tmp_path / "sessions.db"
    tagent = TetherAgent(Agent(name="chat", model=model))
    app = App(sqlite_url)

    @app.workflow
    async def chat(text: str) -> str:
        result = await tagent.run(text, session=SQLiteSession("user-1", path))
        await tether.wait_for_signal("go")
        return str(result.final_output)

    async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
        for run_id, text in (("c1", "I am Ada"), ("c2", "Who am I?")):
            handle = await app.start(chat, text, run_id=run_id)
            await wait_for(lambda rid=run_id: status_is(app, rid, "waiting"), timeout=20)
            await app.signal(run_id, "go")
            await handle.result(timeout=20)
        info = await app.get_run("c2")
    second: RecordedRequest = server.requests[1]
    contents = [m.get("content") for m in second.body["messages"]]
    assert contents[-3:] == ["I am Ada", "Hello Ada", "Who am I?"]
    items = await SQLiteSession("user-1", path).get_items()
    assert len(items) == 4  # two user inputs and two answers: nothing added twice
    assert [e["name"] for e in info.journal][:1] == ["openai_agents:session.get_items"]
    assert "openai_agents:session.add_items" in [e["name"] for e in info.journal]


async def test_a_tool_can_be_a_child_workflow_on_its_own_queue(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    server.set_script([
        Reply(tool_calls=[{"name": "lookup_price", "arguments": {"sku": "A-1"}}],
              input_tokens=10, output_tokens=5),
        Reply("It costs 42", input_tokens=20, output_tokens=3)])
    app = App(sqlite_url)

    @app.workflow(queue="tools")
    async def lookup_price(sku: str) -> int:
        """The price of a product."""
        return 42 if sku == "A-1" else 0

    TetherAgent(Agent(name="shop", model=model, tools=[workflow_tool(lookup_price)]), app=app)
    async with app, app.worker(queues=["default", "tools"]):
        answer = await (await app.start("shop", "price of A-1?", run_id="w1")).result(
            timeout=30)
        info = await app.get_run("w1")
        children = [r for r in await app.list_runs() if r.workflow == "lookup_price"]
    assert answer == "It costs 42"
    # (the patch marker: workflow tools' children are bounded by the run's budget, and
    # their spend rolled up, the step after the child's result)
    assert [e["kind"] for e in info.journal] == ["step", "patch", "child_start",
                                                 "child_result", "step", "step"]
    assert info.journal[4]["name"] == "openai_agents.child_spend"
    assert info.metrics["children.runs"] == 1
    assert len(children) == 1 and children[0].queue == "tools"
    tool_msgs = [m for m in server.requests[1].body["messages"] if m["role"] == "tool"]
    assert tool_msgs[0]["content"] == "42"


async def test_bad_input_is_a_clear_error(model: OpenAIChatCompletionsModel) -> None:
    with pytest.raises(ConfigError, match="TetherAgent needs a name"):
        TetherAgent(Agent(name="", model=model))
    with pytest.raises(ConfigError, match="not a workflow"):
        workflow_tool(lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match="wrap the SDK model once"):
        TetherModel(TetherModel(model))
    with pytest.raises(ConfigError, match="not registered"):
        await TetherAgent(Agent(name="x", model=model)).start("hi")
    with pytest.raises(ConfigError, match="rpm"):
        TetherModel(model, rpm=-1)
    # max_turns as tether.ai.Agent takes it: 0 was taken, and every run failed with the
    # SDK's "Max turns (0) exceeded"; run(max_turns=0) fell back to the agent's value.
    for turns in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="max_turns must be an int >= 1"):
            TetherAgent(Agent(name="x", model=model), max_turns=turns)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_turns must be an int >= 1, got 0"):
        await TetherAgent(Agent(name="x", model=model)).run("hi", max_turns=0)


async def test_an_input_that_is_not_text_fails_the_run_saying_so(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    """Started by name from the CLI with a number or null for the agent's input, the run
    fails with a ConfigError naming the agent and the input (it failed deep in the SDK,
    "AttributeError: 'int' object has no attribute 'copy'"), and sends no request."""
    server.set_script([Reply("never sent")])
    app = App(sqlite_url)
    TetherAgent(Agent(name="helper", model=model), app=app)
    async with app, app.worker():
        for run_id, given in (("i1", "[123]"), ("i2", "[null]"), ("i3", '[{"x": 1}]')):
            started = await asyncio.to_thread(tether_cli, "start", "helper", "--input", given,
                                              "--id", run_id, db=sqlite_url)
            assert started.returncode == 0, started.stderr
            with pytest.raises(RunFailed, match=r"ConfigError: agent 'helper' takes its "
                                                r"input as a string \(or a list of input"):
                await app.handle(run_id).result(timeout=30)
    assert server.requests == []


async def test_outside_a_workflow_it_is_the_plain_sdk(
        server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    server.set_script([Reply("plain")])
    result = await TetherAgent(Agent(name="p", model=model)).run("hi")
    assert result.final_output == "plain" and len(server.requests) == 1


async def test_a_streamed_chat_completions_request_counts_its_usage(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    """``Runner.run_streamed`` on a Chat Completions model of an endpoint that is not
    api.openai.com: the request asks for its usage (``stream_options.include_usage``,
    which the SDK sends to OpenAI's own endpoint only), so the ledger counts its tokens
    and cost. Before, the stream ended without usage: 0 tokens, $0, and a budget that
    never saw the request."""
    server.set_script([Reply("Cold in Oslo", input_tokens=1000, output_tokens=20)])
    agent = durable(Agent(name="streamer", model=model))
    app = App(sqlite_url)

    @app.workflow
    async def ask(question: str) -> str:
        streamed = Runner.run_streamed(agent, question, run_config=run_config())
        async for _ in streamed.stream_events():
            pass
        return str(streamed.final_output)

    async with app, app.worker():
        assert await (await app.start(ask, "Weather?", run_id="u1")).result(
            timeout=20) == "Cold in Oslo"
        info = await app.get_run("u1")
    assert server.requests[0].stream
    assert server.requests[0].body["stream_options"] == {"include_usage": True}
    assert (info.metrics["tokens.input"], info.metrics["tokens.output"]) == (1000, 20)
    assert info.metrics["cost.usd"] == pytest.approx((1000 * 0.40 + 20 * 1.60) / 1e6)


async def test_responses_api_model_streamed_in_a_workflow_and_replayed(
        sqlite_url: str) -> None:
    """An ``OpenAIResponsesModel`` (reasoning item, function call, streamed answer) under
    ``Runner.run_streamed`` in a workflow: the stream is read in the step, its text
    published to the run's observers; the replay after a signal sends nothing again and
    gives the same output; the reasoning item went back to the model."""
    script = [ResponsesReply(tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"}}],
                             reasoning="check the weather first", input_tokens=30,
                             output_tokens=7),
              Reply("Cold and clear in Oslo", input_tokens=40, output_tokens=5, delay=0.5)]
    async with ScriptedResponsesServer(script=script) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)

        @function_tool
        def weather(city: str) -> str:
            """The weather in a city."""
            return f"cold in {city}"

        agent = durable(Agent(name="forecaster", tools=[weather],
                              model=OpenAIResponsesModel("gpt-4.1-mini",
                                                         openai_client=client)))
        app = App(sqlite_url)
        finals: list[str] = []

        @app.workflow
        async def forecast(question: str) -> str:
            streamed = Runner.run_streamed(agent, question, run_config=run_config())
            async for _ in streamed.stream_events():
                pass
            finals.append(str(streamed.final_output))
            await tether.wait_for_signal("go")
            return str(streamed.final_output)

        chunks: list[str] = []

        async def watch() -> None:
            async for data in app.events("o1"):
                event = json.loads(data)
                if event.get("type") == "llm.chunk":
                    chunks.append(event["text"])

        async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
            handle = await app.start(forecast, "Weather in Oslo?", run_id="o1")
            watcher = asyncio.create_task(watch())  # the answer is delayed 0.5 s
            await wait_for(lambda: status_is(app, "o1", "waiting"), timeout=20)
            await app.signal("o1", "go")
            assert await handle.result(timeout=20) == "Cold and clear in Oslo"
            info = await app.get_run("o1")
            watcher.cancel()
        await client.close()
    assert finals == ["Cold and clear in Oslo"] * 2
    assert [r.path for r in server.requests] == ["/v1/responses"] * 2
    assert all(r.stream for r in server.requests)
    assert [i.get("type") for i in server.requests[1].body["input"]][1:] == [
        "reasoning", "function_call", "function_call_output"]
    assert [e["name"] for e in info.journal] == [MODEL, "openai_agents:tool:weather", MODEL,
                                                 "go"]
    assert info.metrics["llm.calls"] == 2 and info.metrics["saved.calls"] == 2
    assert info.metrics["tokens.input"] == 70
    assert "".join(chunks) == "Cold and clear in Oslo"


def _note_agent_app(url: str, model: OpenAIChatCompletionsModel, tool_name: str,
                    noted: list[str]) -> App:
    """An agent whose first tool call is its tool ``tool_name`` and whose second is a
    workflow on queue ``gate`` that waits for a signal (its run is released there)."""
    app = App(url)

    @app.workflow(queue="gate")
    async def gate() -> str:
        """Wait for the go."""
        await tether.wait_for_signal("go")
        return "open"

    def note(text: str) -> str:
        """Write a note down."""
        noted.append(text)
        return f"noted {text}"

    TetherAgent(Agent(name="noter", model=model, tools=[
        function_tool(note, name_override=tool_name), workflow_tool(gate)]), app=app)
    return app


async def test_a_recorded_response_calling_a_tool_the_code_no_longer_has_blocks(
        store_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    """A deploy renames a tool while a run waits: replay gets the recorded response,
    which calls the old name, and the SDK would raise ModelBehaviorError ("Tool note not
    found"), failing the run (its parent and MCP task with it). The run stops as
    ``blocked`` instead, as for a renamed model or a pydantic-ai tool, naming the tool;
    with the old name back, ``resume`` finishes it without sending anything again."""
    server.set_script([Reply(tool_calls=[{"name": "note", "arguments": {"text": "a"}}]),
                       Reply(tool_calls=[{"name": "gate", "arguments": {}}]),
                       Reply("done")])
    noted: list[str] = []
    old = _note_agent_app(store_url, model, "note", noted)
    async with old, old.worker(queues=["default"]):
        await old.start("noter", "go", run_id="n1")
        await wait_for(lambda: status_is(old, "n1", "waiting"))
    renamed = _note_agent_app(store_url, model, "jot", noted)
    async with renamed, renamed.worker(queues=["default", "gate"]):
        await renamed.signal("n1.4", "go")
        with contextlib.suppress(RunFailed):
            await renamed.handle("n1").result(timeout=20)
        info = await renamed.get_run("n1")
    assert info.status.value == "blocked", info.error
    assert info.error is not None
    assert info.error["type"] == "tether.errors.NonDeterminismError"
    assert "note" in info.error["message"] and "no longer has" in info.error["message"]
    restored = _note_agent_app(store_url, model, "note", noted)
    async with restored, restored.worker(queues=["default", "gate"]):
        await restored.resume("n1")
        assert await restored.handle("n1").result(timeout=20) == "done"
    assert noted == ["a"]
    assert len(server.requests) == 3


async def test_a_live_response_calling_an_unknown_tool_still_fails_the_run(
        store_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    """The model's own error (a tool it made up, in a response asked of it now) is not a
    code change: the run fails with the SDK's ModelBehaviorError, as it would without
    Tether."""
    server.set_script([Reply(tool_calls=[{"name": "nosuch", "arguments": {}}])])
    app = _note_agent_app(store_url, model, "note", [])
    async with app, app.worker(queues=["default"]):
        await app.start("noter", "go", run_id="n2")
        with pytest.raises(RunFailed):
            await app.handle("n2").result(timeout=20)
        info = await app.get_run("n2")
    assert info.status.value == "failed"
    assert info.error is not None
    assert info.error["type"] == "agents.exceptions.ModelBehaviorError"


async def test_a_tool_result_with_a_non_finite_float_is_journaled_as_text(
        store_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    """A tool's result that is not JSON is journaled as its ``str()`` (the docs'
    promise); one holding NaN or infinity passed the check (``json.dumps`` writes them)
    and the journal refused it: the run failed after the tool had run."""
    measured: list[int] = []

    @function_tool
    def measure(x: int) -> dict[str, float]:
        """Measure x."""
        measured.append(x)
        return {"ratio": float("nan")}

    app = App(store_url)
    TetherAgent(Agent(name="meter", model=model, tools=[measure]), app=app)
    server.set_script([Reply(tool_calls=[{"name": "measure", "arguments": {"x": 1}}]),
                       Reply("measured")])
    async with app, app.worker():
        handle = await app.start("meter", "measure 1", run_id="m1")
        assert await handle.result(timeout=20) == "measured"
    assert measured == [1]
    assert [m["content"] for m in server.requests[1].body["messages"]
            if m["role"] == "tool"] == ["{'ratio': nan}"]


@dataclasses.dataclass
class Span:
    start: int
    end: tuple[int, int]


def tool_texts(request: RecordedRequest) -> list[str]:
    return [m["content"] for m in request.body["messages"] if m["role"] == "tool"]


@pytest.mark.parametrize(("value", "text"), [
    ((1, 2), "[1, 2]"),
    ({"ids": (1, 2), 3: "x"}, "{'ids': [1, 2], '3': 'x'}"),
    ([City(**PARIS)], "[{'city': 'Paris', 'country': 'France'}]"),
    ({"b": 1, "a": (2,)}, "{'b': 1, 'a': [2]}"),
    ({1, 2}, "{1, 2}"),
    (dt.datetime(2026, 1, 2, 3, 4, 5), "2026-01-02 03:04:05"),
    (Span(1, (2, 3)), "{'start': 1, 'end': [2, 3]}"),
])
async def test_a_tool_result_reaches_the_model_as_the_same_text_live_and_after_a_replay(
        store_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel,
        value: Any, text: str) -> None:
    """The request after the tool fails once (503), so the run is released for the
    retry and its next execution answers the tool from the journal: the model is given
    the same text both times, the text of the value as the journal gives it back (a
    tuple was "(1, 2)" live but "[1, 2]" after the replay)."""
    calls: list[int] = []

    @function_tool
    def pair() -> Any:
        """A pair."""
        calls.append(1)
        return value

    server.set_script([Reply(tool_calls=[{"name": "pair", "arguments": {}}]),
                       Fault.http(503, retry_after=0.2), Reply("done")])
    tagent = TetherAgent(Agent(name="pairs", model=model, tools=[pair]))
    app = App(store_url)
    executions: list[int] = []

    @app.workflow
    async def pairs(question: str) -> str:
        executions.append(1)
        return str((await tagent.run(question)).final_output)

    async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
        handle = await app.start(pairs, "a pair", run_id="p1")
        assert await handle.result(timeout=30) == "done"
    assert calls == [1] and len(executions) == 2  # (the tool answered by the replay)
    assert [tool_texts(r) for r in server.requests[1:]] == [[text], [text]]


async def test_a_workflow_tools_child_is_bound_by_the_agents_budget(
        store_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    """The agent (Budget 1,000 tokens, fail) spends 210 tokens, then calls a workflow
    tool whose child would make five calls of 320 tokens. The child gets the 790 left
    with its input, as a tether.ai.Agent's tool child does: its third call goes (a lone
    call's overshoot: 960), its fourth is refused and it fails; its spend is rolled up
    into the agent's, whose next request is refused (1,170 tokens). Before, the child
    made all five calls (1,600 tokens) outside the budget and the agent answered."""
    from tether.ai import LLM, set_budget, user_message

    server.set_script([
        Reply(tool_calls=[{"name": "drafts", "arguments": {"n": 5}}],
              input_tokens=200, output_tokens=10),
        *[Reply("draft", input_tokens=300, output_tokens=20)] * 5,
        Reply("All done.", input_tokens=500, output_tokens=20)])
    app = App(store_url)
    async with LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None,
                   api_key="test") as llm:

        @app.workflow(queue="tools")
        async def drafts(n: int) -> str:
            """Write n drafts."""
            set_budget(usd=1.0)
            for i in range(n):
                await llm.chat([user_message(f"Draft {i}.")])
            return "drafted"

        TetherAgent(Agent(name="writer", model=model, tools=[workflow_tool(drafts)]),
                    app=app, budget=Budget(tokens=1000, on_exceed="fail"))
        async with app, app.worker(queues=["default", "tools"]):
            with pytest.raises(RunFailed, match=r"BudgetExceeded.*1170 tokens spent"):
                await (await app.start("writer", "Go.", run_id="wb1")).result(timeout=30)
            [child] = [await app.get_run(r.run_id) for r in await app.list_runs()
                       if r.parent_run_id == "wb1"]
            info = await app.get_run("wb1")
    assert child.input["ext"] == {"tether.ai.budget": {"usd": None, "tokens": 790,
                                                       "on_exceed": "fail"}}
    assert child.status == "failed" and child.error is not None
    assert "960 tokens spent" in child.error["message"]
    assert info.metrics["children.runs"] == 1 and info.metrics["children.tokens"] == 960
    assert "openai_agents.child_spend" in [e["name"] for e in info.journal]
    assert len(server.requests) == 4


async def test_workflow_tools_called_together_split_what_is_left(
        store_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    """One response calls the workflow tool twice (the SDK runs both at once): each
    child gets half of the 790 tokens left, not the first all of it and the second
    nothing (which is refused). Both complete; the agent answers."""
    server.set_script([
        Reply(tool_calls=[{"name": "lookup", "arguments": {"sku": "A"}, "id": "call_a"},
                          {"name": "lookup", "arguments": {"sku": "B"}, "id": "call_b"}],
              input_tokens=200, output_tokens=10),
        Reply("Both are 42", input_tokens=100, output_tokens=5)])
    app = App(store_url)

    @app.workflow
    async def lookup(sku: str) -> int:
        """The price of a product."""
        return 42

    TetherAgent(Agent(name="shop", model=model, tools=[workflow_tool(lookup)]), app=app,
                budget=Budget(tokens=1000, on_exceed="fail"))
    async with app, app.worker():
        answer = await (await app.start("shop", "Prices?", run_id="wb2")).result(timeout=30)
        children = [await app.get_run(r.run_id) for r in await app.list_runs()
                    if r.parent_run_id == "wb2"]
    assert answer == "Both are 42"
    assert [c.input["ext"]["tether.ai.budget"]["tokens"] for c in children] == [395, 395]


@pytest.mark.parametrize("cut", ["reset", "error"])
async def test_a_streamed_request_cut_midway_counts_an_estimate(sqlite_url: str,
                                                                cut: str) -> None:
    """``Runner.run_streamed`` on a Responses model whose first stream is cut after two
    chunks (800 characters: 200 tokens; a reset, or an error event): the provider
    billed its prompt and those chunks but told no usage, so the metered request
    counts an estimate (``tokens.estimated``) in the metrics and in the record
    (``failed``, which the budget's tally reads), then the retried answer's told
    usage. A 503 before it counts nothing. It used to count the answer alone (1,050 tokens)."""
    words = " ".join(w * 399 for w in "abcd")
    script = [Fault.http(503),
              Reply(words, input_tokens=1000, output_tokens=50,
                    **({"reset_after_chunks": 2} if cut == "reset"
                       else {"error_after_chunks": 2})),
              Reply("Done.", input_tokens=1000, output_tokens=50)]
    async with ScriptedResponsesServer(script=script) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
        agent = durable(Agent(name="writer", model=OpenAIResponsesModel(
            "gpt-4.1-mini", openai_client=client)),
            retry=tether.RetryPolicy(initial_interval=0.01))
        app = App(sqlite_url)

        @app.workflow
        async def write(question: str) -> str:
            streamed = Runner.run_streamed(agent, question, run_config=run_config())
            async for _ in streamed.stream_events():
                pass
            return str(streamed.final_output)

        async with app, app.worker():
            handle = await app.start(write, "q" * 4000, run_id=f"cut-{cut}")
            assert await handle.result(timeout=30) == "Done."
            info = await app.get_run(f"cut-{cut}")
        await client.close()
    assert len(server.requests) == 3
    record = info.journal[0]["result"]
    estimated = record["failed"]["estimated"]
    # The prompt's estimate (4,000 characters and the request's JSON, 4 a token) and
    # the 200 tokens delivered.
    assert 1000 + 200 < estimated < 1100 + 200
    assert record["failed"]["tokens"] == estimated
    assert info.metrics["tokens.estimated"] == estimated
    assert info.metrics["tokens.input"] + info.metrics["tokens.output"] == 1050 + estimated
    assert info.metrics["llm.calls"] == 1


def helper_agents(model: OpenAIChatCompletionsModel,
                  noted: list[str]) -> tuple[Agent[Any], Agent[Any]]:
    """``boss`` asks ``helper`` through ``helper.as_tool(...)``; the helper (its model a
    ``Model`` object, as the docs advise for ``max_retries=0``) calls its own tool."""

    @function_tool
    def note(text: str) -> str:
        """Write a note down."""
        noted.append(text)
        return "noted"

    helper = Agent(name="helper", model=model, instructions="HELPER", tools=[note])
    boss = Agent(name="boss", model=model, instructions="BOSS",
                 tools=[helper.as_tool("ask_helper", "Ask the helper.")])
    return boss, helper


def helper_respond(request: RecordedRequest) -> Reply:
    """Each agent's next step from its own conversation (its system prompt, the tool
    results it has)."""
    messages = request.body["messages"]
    done = any(m["role"] == "tool" for m in messages)
    if messages[0]["content"] == "HELPER":
        return (Reply("the helper's answer", input_tokens=300, output_tokens=30) if done
                else Reply(tool_calls=[{"name": "note", "arguments": {"text": "t"}}],
                           input_tokens=200, output_tokens=20))
    return (Reply("the boss's answer", input_tokens=400, output_tokens=40) if done
            else Reply(tool_calls=[{"name": "ask_helper", "arguments": {"input": "help"}}],
                       input_tokens=100, output_tokens=10))


async def run_boss(server: ScriptedLLMServer, model: OpenAIChatCompletionsModel,
                   noted: list[str], *, recorded_before: pytest.MonkeyPatch | None = None
                   ) -> tuple[Any, Any]:
    """The boss's run, then an hour's sleep (released, then replayed). With
    ``recorded_before``: the run's first execution is made as the code before the
    agent-tool marker made it (plain helper requests), the replay by today's code."""
    from tether.integrations import openai_agents as integration
    from tether.testing import TestEnv

    server.responder = helper_respond
    boss, _ = helper_agents(model, noted)
    app = App()
    tagent = TetherAgent(boss, app=app)

    @app.workflow
    async def boss_then_sleep(task: str) -> str:
        result = await tagent.run(task)
        await tether.sleep(3600)
        return str(result.final_output)

    async with TestEnv(app, llm=server) as env:
        if recorded_before is not None:
            recorded_before.setattr(integration, "_agent_tools_durable", lambda: False)
        handle = await env.start(boss_then_sleep, "Go.")
        await env.settle()  # (asleep: released)
        if recorded_before is not None:
            recorded_before.undo()
        answer = await env.result(handle, timeout=30)
        return answer, await env.app.get_run(handle.run_id)


async def test_an_agent_used_as_a_tool_makes_durable_metered_requests(
        server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    """``helper.as_tool()``: the helper's model requests and tool call are journaled
    steps of the boss's run, counted in its ledger, and the replay after the release
    sends and runs none of them again. Before, ``durable`` left the agent tool as it was
    and the helper's model (a ``Model`` object) was never wrapped: its two requests
    were sent again at the replay (6 requests, not 4), its tool ran twice, and the
    ledger counted the boss's 2 calls only."""
    noted: list[str] = []
    answer, info = await run_boss(server, model, noted)
    assert answer == "the boss's answer"
    assert [(r.body["messages"][0]["content"], r.status) for r in server.requests] == [
        ("BOSS", 200), ("HELPER", 200), ("HELPER", 200), ("BOSS", 200)]
    assert noted == ["t"]
    assert [(e["kind"], e["name"]) for e in info.journal] == [
        ("step", MODEL), ("patch", "openai_agents.agent-tool-durable"), ("step", MODEL),
        ("step", "openai_agents:tool:note"), ("step", MODEL), ("step", MODEL),
        ("sleep", "sleep")]
    assert info.metrics["llm.calls"] == 4
    assert info.metrics["tokens.input"] == 100 + 200 + 300 + 400
    assert info.metrics["saved.calls"] == 4  # the replay after the sleep


async def test_a_run_recorded_before_agent_tools_were_durable_replays_as_it_ran(
        server: ScriptedLLMServer, model: OpenAIChatCompletionsModel,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose journal predates the marker: its helper made plain requests, and the
    journal's next positions are the boss's. Replayed, the helper stays plain (sending
    its requests again, as that code did) rather than taking the boss's recorded
    response as its own."""
    noted: list[str] = []
    answer, info = await run_boss(server, model, noted, recorded_before=monkeypatch)
    assert answer == "the boss's answer"
    assert [(e["kind"], e["name"]) for e in info.journal] == [
        ("step", MODEL), ("step", MODEL), ("sleep", "sleep")]
    assert [r.body["messages"][0]["content"] for r in server.requests] == [
        "BOSS", "HELPER", "HELPER", "BOSS", "HELPER", "HELPER"]
    assert noted == ["t", "t"]


async def run_with_mcp(server: ScriptedLLMServer, model: OpenAIChatCompletionsModel, *,
                       recorded_before: pytest.MonkeyPatch | None = None
                       ) -> tuple[Any, Any, list[Any]]:
    """An agent with an MCP server (the SDK's ``MCPServerStreamableHttp`` on a
    ``FakeMCPServer``) calls its tool, then the run sleeps an hour (released, then
    replayed) and asks the agent again. With ``recorded_before``: the first execution
    is made as the code before the MCP marker made it (plain MCP calls)."""
    from agents.mcp import MCPServerStreamableHttp

    from tether.integrations import openai_agents as integration
    from tether.testing import FakeMCPServer, TestEnv

    def record(note: str) -> str:
        """Record a note.

        Args:
            note: the text.
        """
        return f"recorded {note}"

    server.set_script([Reply(tool_calls=[{"name": "record", "arguments": {"note": "milk"}}]),
                       Reply("noted"), Reply("still noted")])
    async with FakeMCPServer([record], name="notes") as fake:
        mcp = MCPServerStreamableHttp({"url": fake.url}, name="notes")
        app = App()
        tagent = TetherAgent(Agent(name="clerk", model=model, mcp_servers=[mcp]), app=app)

        @app.workflow
        async def note_then_sleep(task: str) -> list[str]:
            async with mcp:
                first = await tagent.run(task)
            await tether.sleep(3600)
            async with mcp:
                second = await tagent.run(task + " Again.")
            return [str(first.final_output), str(second.final_output)]

        async with TestEnv(app, llm=server) as env:
            if recorded_before is not None:
                recorded_before.setattr(integration, "_mcp_tools_durable", lambda: False)
            handle = await env.start(note_then_sleep, "Note milk.")
            await env.settle()  # (asleep: released)
            if recorded_before is not None:
                recorded_before.undo()
            answer = await env.result(handle, timeout=30)
            return answer, await env.app.get_run(handle.run_id), list(fake.calls)


async def test_mcp_tool_calls_of_an_agent_are_steps_not_repeated_by_replay(
        server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    """``Agent(mcp_servers=[...])``: each MCP tool call is a step
    ``openai_agents:mcp:<server>:<tool>``; the replay after the release returns its
    result and does not call the server again. Before, ``durable`` made only
    ``agent.tools`` durable: the SDK's MCP tools, listed at each run, were called again
    by every replay (2 calls of ``record`` where 1 was made)."""
    answer, info, calls = await run_with_mcp(server, model)
    assert answer == ["noted", "still noted"]
    assert [(c.tool, c.arguments) for c in calls] == [("record", {"note": "milk"})]
    assert [(e["kind"], e["name"]) for e in info.journal] == [
        ("step", MODEL), ("patch", "openai_agents.mcp-tool-durable"),
        ("step", "openai_agents:mcp:notes:record"), ("step", MODEL), ("sleep", "sleep"),
        ("step", MODEL)]
    assert info.journal[2]["result"] == {"type": "text", "text": "recorded milk"}


async def test_a_run_recorded_before_mcp_calls_were_steps_replays_as_it_ran(
        server: ScriptedLLMServer, model: OpenAIChatCompletionsModel,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose journal predates the marker made its MCP call plain; replayed, the
    call stays plain (the server is called again, as that code did) instead of taking
    the position the journal gave the next model request."""
    answer, info, calls = await run_with_mcp(server, model, recorded_before=monkeypatch)
    assert answer == ["noted", "still noted"]
    assert [(e["kind"], e["name"]) for e in info.journal] == [
        ("step", MODEL), ("step", MODEL), ("sleep", "sleep"), ("step", MODEL)]
    assert [c.tool for c in calls] == ["record", "record"]


async def test_model_requests_carry_the_step_idempotency_key(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel) -> None:
    """Each model request of a run carries ``Idempotency-Key: <run id>:<position>``, as
    ``tether.ai``'s own requests do (through the SDK's ``ModelSettings.extra_headers``):
    the same on each attempt of its step (a retry after a 500 here; after a crash, the
    next worker's), so a provider that honours the header answers a repeat without a
    second charge. Chat Completions and streamed Responses requests alike; none
    outside a run; a key the agent's settings give is kept. The SDK sent none."""
    server.set_script([Fault.http(500), *triage_script(),
                       Reply("plain", input_tokens=1, output_tokens=1),
                       Reply("own key", input_tokens=1, output_tokens=1)])
    triage, _ = triage_agents(model, [])
    app = App(sqlite_url)
    TetherAgent(triage, app=app)
    own = Agent(name="own", model=model,
                model_settings=ModelSettings(extra_headers={"Idempotency-Key": "mine"}))
    TetherAgent(own, app=app)
    script = [Reply("Cold and clear in Oslo", input_tokens=40, output_tokens=5)]
    async with ScriptedResponsesServer(script=script) as responses:
        client = AsyncOpenAI(base_url=responses.base_url, api_key="test-key", max_retries=0)
        streaming = durable(Agent(name="forecaster", model=OpenAIResponsesModel(
            "gpt-4.1-mini", openai_client=client)))

        @app.workflow
        async def forecast(question: str) -> str:
            streamed = Runner.run_streamed(streaming, question, run_config=run_config())
            async for _ in streamed.stream_events():
                pass
            return str(streamed.final_output)

        async with app, app.worker():
            assert await (await app.start("triage", "Where?", run_id="t1")).result(
                timeout=30) == PARIS
            assert await (await app.start(forecast, "Oslo?", run_id="o1")).result(
                timeout=30) == "Cold and clear in Oslo"
            await Runner.run(triage, "outside a run")
            assert await (await app.start("own", "Mine?", run_id="m1")).result(
                timeout=30) == "own key"
        await client.close()
    keys = [r.headers.get("idempotency-key") for r in server.requests]
    # (the 500 and its retry, after the tool step, after the handoff, outside, its own)
    assert keys == ["t1:0", "t1:0", "t1:2", "t1:3", None, "mine"], keys
    assert [(r.stream, r.headers.get("idempotency-key")) for r in responses.requests] == [
        (True, "o1:0")]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_each_attempt_of_a_model_request_step_is_one_http_request(
        sqlite_url: str, api: str, stream: bool) -> None:
    """The OpenAI client under the SDK's model retries nothing inside a step: a 500,
    then the answer, are two journaled attempts of the step, one HTTP request each, so
    every try is classified, counted by the breaker and spaced by Tether's policy
    (``Retry-After`` included). Until 2026-12-06 the client's own 2 retries (the
    OpenAI SDK's default) hid the 500 inside the step's first attempt. The user's
    client is not changed: outside a workflow the same agent's client still retries by
    itself."""
    async with ScriptedResponsesServer(script=[
            Fault.http(500), Reply("once each"),
            Fault.http(500), Reply("the client's own retry")]) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="test-key")
        kind = OpenAIResponsesModel if api == "responses" else OpenAIChatCompletionsModel
        agent = Agent(name="once", model=kind("gpt-4.1-mini", openai_client=client))
        durable_agent = durable(agent, retry=tether.RetryPolicy(initial_interval=0.01))
        app = App(sqlite_url)

        @app.workflow
        async def once(question: str) -> str:
            if not stream:
                return str((await Runner.run(durable_agent, question,
                                             run_config=run_config())).final_output)
            streamed = Runner.run_streamed(durable_agent, question, run_config=run_config())
            async for _ in streamed.stream_events():
                pass
            return str(streamed.final_output)

        async with app, app.worker():
            assert await (await app.start(once, "x", run_id="a1")).result(
                timeout=30) == "once each"
            info = await app.get_run("a1")
            assert [r.status for r in server.requests] == [500, 200]
            assert (await Runner.run(agent, "outside")).final_output == \
                "the client's own retry"
        await client.close()
    assert [(e["name"], e["attempts"]) for e in info.journal] == [(MODEL, 2)]
    assert [r.status for r in server.requests] == [500, 200, 500, 200]
    assert all(r.stream == stream for r in server.requests[:2])
    assert client.max_retries == 2
