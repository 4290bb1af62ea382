"""Steering: a message sent to a running agent (``tether signal RUN message --data``,
or ``agent.steer``) is taken into account at its next turn, and a replay takes the same
messages at the same points."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator

import pytest

from tests import forked
from tests.engine.helpers import wait_for
from tether import App
from tether.ai import LLM, Agent, function_tool
from tether.errors import ConfigError
from tether.testing.llm_server import RecordedRequest, Reply, ScriptedLLMServer


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as s:
        yield s


@pytest.fixture
async def llm(server: ScriptedLLMServer) -> AsyncIterator[LLM]:
    async with LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None) as client:
        yield client


def user_texts(request: RecordedRequest) -> list[str]:
    return [m["content"] for m in request.body["messages"] if m["role"] == "user"]


def tether_cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    return forked.run([sys.executable, "-m", "tether", *args, "--db", db],
                      capture_output=True, text=True, timeout=60, env=env)


async def test_a_message_sent_during_a_tool_call_reaches_the_next_turn(
        store_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """Sent from the CLI while the agent's tool runs, the message is in the next model
    request, after the tool's result, and the journal has it as one signal."""
    server.set_script([Reply(tool_calls=[{"name": "research", "arguments": {"q": "x"}}]),
                       Reply("Done, pricing included.")])
    started, release = threading.Event(), threading.Event()

    @function_tool
    def research(q: str) -> str:
        """Research."""
        started.set()
        release.wait(20)
        return "found"

    app = App(store_url)
    agent = app.add_agent(Agent("analyst", model=llm, tools=[research], steerable=True))
    async with app, app.worker():
        handle = await app.start("analyst", "Compare the engines.", run_id="s1")
        await asyncio.to_thread(started.wait, 20)
        sent = await asyncio.to_thread(tether_cli, "signal", "s1", "message", "--data",
                                       '"also check pricing"', db=store_url)
        assert sent.returncode == 0, sent.stderr
        release.set()
        assert await handle.result(timeout=20) == "Done, pricing included."
        info = await app.get_run("s1")
    assert agent.steerable
    assert user_texts(server.requests[0]) == ["Compare the engines."]
    second = server.requests[1].body["messages"]
    assert [m["role"] for m in second[-2:]] == ["tool", "user"]
    assert second[-1]["content"] == "also check pricing"
    kinds = [(e["kind"], e["status"]) for e in info.journal]
    assert kinds.count(("signal", "ok")) == 1


async def test_a_message_that_comes_with_the_answer_gets_another_turn(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """A message sent while the model writes its final answer is not lost: the agent
    asks again with it (``steer``), and the replay after a release agrees."""
    gate = asyncio.Event()

    async def slow_answer(request: RecordedRequest) -> Reply:
        if len(server.requests) == 1:
            await gate.wait()
            return Reply("First answer.")
        return Reply("Second answer, in French." if "in French" in user_texts(request)[-1]
                     else "?")

    server.set_script([slow_answer, slow_answer])
    app = App(sqlite_url)
    agent = app.add_agent(Agent("writer", model=llm, steerable=True))
    async with app, app.worker():
        handle = await app.start("writer", "Write it.", run_id="s2")
        await wait_for(lambda: _count(server, 1), timeout=20)
        await agent.steer(app, "s2", "in French please")
        gate.set()
        assert await handle.result(timeout=20) == "Second answer, in French."
    assert len(server.requests) == 2
    assert server.requests[1].body["messages"][-2:] == [
        {"role": "assistant", "content": "First answer."},
        {"role": "user", "content": "in French please"}]


async def _count(server: ScriptedLLMServer, n: int) -> bool:
    return len(server.requests) >= n


async def test_steering_a_plain_agent_is_refused(llm: LLM) -> None:
    app = App()
    agent = app.add_agent(Agent("plain", model=llm))
    with pytest.raises(ConfigError, match="not steerable"):
        await agent.steer(app, "x", "hi")
    await app.close()



async def test_a_message_without_text_adds_nothing(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """``tether signal RUN message`` without ``--data`` (payload null) or with an empty
    text is taken (journaled) but adds no user message (the model read "null")."""
    server.set_script([Reply(tool_calls=[{"name": "research", "arguments": {"q": "x"}}]),
                       Reply("Done.")])
    started, release = threading.Event(), threading.Event()

    @function_tool
    def research(q: str) -> str:
        """Research."""
        started.set()
        release.wait(20)
        return "found"

    app = App(sqlite_url)
    agent = app.add_agent(Agent("analyst", model=llm, tools=[research], steerable=True))
    async with app, app.worker():
        handle = await app.start("analyst", "Compare the engines.", run_id="s9")
        await asyncio.to_thread(started.wait, 20)
        await app.signal("s9", "message", None)
        await app.signal("s9", "message", "")
        await agent.steer(app, "s9", "also check pricing")
        release.set()
        assert await handle.result(timeout=20) == "Done."
        info = await app.get_run("s9")
    assert user_texts(server.requests[1]) == ["Compare the engines.", "also check pricing"]
    assert [(e["kind"], e["status"]) for e in info.journal].count(("signal", "ok")) == 3
