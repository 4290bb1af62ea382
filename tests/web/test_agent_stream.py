"""An agent's answer streams into the run's live events and ``tether serve``'s SSE
stream while the journal stays what it was before streaming: the same operations,
arguments and results, so runs recorded by the old code replay, and a replayed turn
publishes nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tether
from tests import forked
from tests.web.helpers import ROOT, env, parse_sse, serving, start_worker
from tether import App
from tether.ai import LLM, Agent, approve, function_tool, pending_approval
from tether.testing import replay
from tether.testing.llm_server import Reply, ScriptedLLMServer

AGENT_APP = "tests.web.agent_stream_app:app"
WORDS = [f"w{i}" for i in range(30)]
GOLDEN = ROOT / "tests" / "golden" / "assistant.json"


@function_tool
def weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city's name.
    """
    return f"sunny in {city}"


@function_tool(requires_approval=True)
def book(city: str) -> str:
    """Book a trip (a human approves).

    Args:
        city: where to.
    """
    return f"booked {city}"


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as s:
        yield s


def make_llm(server: ScriptedLLMServer, protocol: str) -> LLM:
    if protocol == "openai":
        return LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None)
    return LLM("anthropic:claude-sonnet-4-5", base_url=server.anthropic_base_url,
               breaker=None)


async def observe(app: App, run_id: str, into: list[dict[str, Any]]) -> None:
    async for data in app.events(run_id):
        into.append(json.loads(data))


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_agent_turns_stream_and_a_replayed_turn_publishes_nothing(
        sqlite_url: str, server: ScriptedLLMServer, protocol: str) -> None:
    """Both turns' text reaches App.events as llm.chunk events, in order; after the
    approval wait the first turn is replayed from the journal and publishes nothing."""
    server.set_script([Reply(text="Let me book it.",
                         tool_calls=[{"name": "book", "arguments": {"city": "Oslo"}}]),
                   Reply(text=" ".join(WORDS))])
    llm = make_llm(server, protocol)
    app = App(sqlite_url)
    app.add_agent(Agent("travel", model=llm, tools=[book], max_turns=3))
    events: list[dict[str, Any]] = []
    async with app.worker(poll_interval=0.05):
        handle = await app.start("travel", "Book Oslo", run_id="t1")
        watcher = asyncio.create_task(observe(app, "t1", events))
        async with asyncio.timeout(20):
            while await pending_approval(app, "t1") is None:
                await asyncio.sleep(0.05)
        await approve(app, "t1")
        assert await handle.result(timeout=20) == " ".join(WORDS)
        async with asyncio.timeout(10):
            while sum(e["type"] == "llm.end" for e in events) < 2:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # anything published late would arrive now
        watcher.cancel()
    info = await app.get_run("t1")
    positions = [e["position"] for e in info.journal if e["name"].startswith("llm:")]
    chunks = [e for e in events if e["type"] == "llm.chunk"]
    first = "".join(e["text"] for e in chunks if e["position"] == positions[0])
    second = "".join(e["text"] for e in chunks if e["position"] == positions[1])
    assert first == "Let me book it."
    assert second.split() == WORDS
    assert [e["type"] for e in events].count("llm.end") == 2  # the replay sent nothing
    assert len([r for r in server.requests if r.protocol == protocol]) == 2
    await llm.aclose()
    await app.close()


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_the_journal_is_the_same_with_and_without_streaming(
        tmp_path: Path, server: ScriptedLLMServer, protocol: str) -> None:
    """A streamed agent run journals the same operations, arguments and replies as the
    agent without streaming (the code before the change): kind, name, args and the
    reply's text, tool calls, usage and finish reason."""
    journals = []
    for stream in (False, True):
        server.set_script([Reply(text=None, tool_calls=[
                           {"name": "weather", "arguments": {"city": "Oslo"}, "id": "c1"}],
                           input_tokens=20, output_tokens=5),
                       Reply(text="It is sunny in Oslo.", input_tokens=30, output_tokens=6)])
        llm = make_llm(server, protocol)
        app = App(f"sqlite:///{tmp_path}/s{stream}.db")
        app.add_agent(Agent("forecast", model=llm, tools=[weather], stream=stream))
        async with app.worker(poll_interval=0.05):
            handle = await app.start("forecast", "Oslo?", run_id="j")
            assert await handle.result(timeout=20) == "It is sunny in Oslo."
        info = await app.get_run("j")
        journal = []
        for e in info.journal:
            result = e["result"]
            if isinstance(result, dict) and "reply" in result:
                result = {**result, "reply": {k: v for k, v in result["reply"].items()
                                              if k != "raw_id"}}
            journal.append((e["kind"], e["name"], e["args"], result))
        journals.append(journal)
        await llm.aclose()
        await app.close()
    plain, streamed = journals
    assert streamed == plain
    assert [r.stream for r in server.requests if r.protocol == protocol] == [
        False, False, True, True]


async def test_an_agent_history_recorded_before_streaming_still_replays() -> None:
    """tests/golden/assistant.json was recorded by the agent before it streamed; the
    streaming agent (the default now) replays it to the end with no non-determinism."""
    from tests.golden.workflows import app, assistant

    assert assistant.stream
    [result] = await replay(app, GOLDEN)
    assert result.compatible, result.message
    assert result.replayed == 3


@pytest.mark.slow
def test_agent_answer_streams_into_the_sse_stream(tmp_path: Path) -> None:
    """Over a real ``tether serve`` and worker: the run's SSE stream carries the
    answer's chunks, in order, before the event that says the run completed."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps([
        {"tool_calls": [{"name": "weather", "arguments": {"city": "Oslo"}}]},
        {"text": " ".join(WORDS), "chunk_delay": 0.02}]))
    llm = forked.Popen([sys.executable, "-m", "tether.testing.llm_server", "--script",
                            str(script)], cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                           text=True)
    assert llm.stdout is not None
    base_url = llm.stdout.readline().strip()
    db = f"sqlite:///{tmp_path}/tether.db"
    worker = None
    events = []
    try:
        with serving(db, tmp_path, app=AGENT_APP) as served:
            r = httpx.post(served.url + "/api/v1/runs", json={
                "workflow": "streamer", "input": ["Weather in Oslo?"], "run_id": "a-1"})
            assert r.status_code == 201, r.text
            worker = start_worker(db, tmp_path, app=AGENT_APP,
                                  extra_env={"TETHER_TEST_LLM_URL": base_url})
            with httpx.stream("GET", served.url + "/api/v1/runs/a-1/events",
                              timeout=60) as resp:
                for ev in parse_sse(resp.iter_lines()):
                    events.append(ev)
                    if ev.event == "end":
                        break
            done = httpx.get(served.url + "/api/v1/runs/a-1").json()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(10)
        llm.terminate()
        llm.wait(10)
        llm.stdout.close()
    assert done["status"] == "completed"
    chunks = [i for i, e in enumerate(events) if e.event == "chunk"
              and isinstance(e.data, dict) and e.data.get("type") == "llm.chunk"]
    assert "".join(events[i].data["text"] for i in chunks).split() == WORDS  # type: ignore[index]
    completed = [i for i, e in enumerate(events) if e.event == "status"
                 and isinstance(e.data, dict) and e.data.get("status") == "completed"]
    assert completed and max(chunks) < completed[0]
    assert done["result"].split() == WORDS


_ = tether  # the public API the app module uses


async def test_pydantic_ai_model_requests_stream_to_the_run_events(
        sqlite_url: str, server: ScriptedLLMServer) -> None:
    """A pydantic-ai agent run through Tether publishes its model requests' text as
    llm.chunk events; the journal keeps plain ``model.request`` entries (as before), and
    after a release the replayed requests publish nothing."""
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent as PydanticAgent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    from tether.integrations.pydantic_ai import TetherAgent

    server.set_script([Reply(text="Checking.", tool_calls=[
                           {"name": "weather", "arguments": {"city": "Oslo"}}]),
                       Reply(text=" ".join(WORDS))])
    provider = OpenAIProvider(base_url=server.base_url, api_key="test-key")
    agent = PydanticAgent(OpenAIChatModel("gpt-4.1-mini", provider=provider), name="pyd")

    @agent.tool_plain
    def weather_tool(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    tagent = TetherAgent(agent)
    app = App(sqlite_url)

    @app.workflow
    async def ask(q: str) -> str:
        output = (await tagent.run(q)).output
        await tether.wait_for_signal("go")  # released: the answer is replayed after it
        return str(output)

    events: list[dict[str, Any]] = []
    async with app, app.worker(poll_interval=0.05, sticky_wait=0.0):
        handle = await app.start(ask, "Oslo?", run_id="p1")
        watcher = asyncio.create_task(observe(app, "p1", events))
        async with asyncio.timeout(20):
            while (await app.get_run("p1")).status != "waiting":
                await asyncio.sleep(0.05)
        await app.signal("p1", "go")
        assert (await handle.result(timeout=20)).split() == WORDS
        await asyncio.sleep(0.3)  # anything published late would arrive now
        watcher.cancel()
        info = await app.get_run("p1")
    await provider.client.close()
    names = [e["name"] for e in info.journal if "model" in e["name"]]
    assert names == ["pydantic_ai:pyd__model.request"] * 2
    chunks = [e for e in events if e["type"] == "llm.chunk"]
    first, second = sorted({e["position"] for e in chunks})
    assert "".join(e["text"] for e in chunks if e["position"] == first) == "Checking."
    assert "".join(e["text"] for e in chunks if e["position"] == second).split() == WORDS
    assert [e["type"] for e in events].count("llm.end") == 2  # the replay sent nothing
    assert len(server.requests) == 2 and all(r.stream for r in server.requests)


async def test_pydantic_ai_model_that_cannot_stream_is_asked_plainly(sqlite_url: str) -> None:
    """Live text must not break a model without streaming (a FunctionModel without
    ``stream_function``): its request is made plainly and journaled as usual."""
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent as PydanticAgent
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from tether.integrations.pydantic_ai import TetherAgent

    calls: list[int] = []

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append(1)
        return ModelResponse(parts=[TextPart("plain answer")])

    app = App(sqlite_url)
    app.add_agent(TetherAgent(PydanticAgent(FunctionModel(answer), name="plain")))
    async with app, app.worker():
        handle = await app.start("plain", "hi", run_id="f1")
        assert await handle.result(timeout=20) == "plain answer"
        info = await app.get_run("f1")
    assert calls == [1]
    assert [e["name"] for e in info.journal if "model" in e["name"]] == [
        "pydantic_ai:plain__model.request"]


async def test_an_endpoint_that_refuses_streaming_is_asked_plainly(
        sqlite_url: str, server: ScriptedLLMServer) -> None:
    """An OpenAI-compatible endpoint that refuses streamed requests (a 400) gets the
    same request plainly; the turn is journaled as usual, and the process's later calls
    to that endpoint are plain from the start."""
    from tether.testing.llm_server import Fault

    server.set_script([Fault.http(400, "Unrecognized request argument: stream_options"),
                       Reply("first"), Reply("second")])
    llm = make_llm(server, "openai")
    app = App(sqlite_url)
    app.add_agent(Agent("plainly", model=llm))
    async with app.worker(poll_interval=0.05):
        assert await (await app.start("plainly", "one", run_id="p1")).result(timeout=20) \
            == "first"
        assert await (await app.start("plainly", "two", run_id="p2")).result(timeout=20) \
            == "second"
        info = await app.get_run("p1")
    await llm.aclose()
    await app.close()
    assert [r.stream for r in server.requests] == [True, False, False]
    assert [e["status"] for e in info.journal] == ["ok"]
