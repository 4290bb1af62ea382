"""Anthropic extended thinking: a reply's thinking blocks (text and signature) are kept
in the journal and sent back unchanged, first in their assistant turn, by a live run
and by a replayed one; streamed and not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pydantic
import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App
from tether.ai import LLM, Agent, function_tool, user_message
from tether.testing.llm_server import Reply
from tether.testing.responses_api import (
    ResponsesReply,
    ScriptedResponsesServer,
    thinking_signature,
)

THOUGHT = "The user wants Oslo's weather; call the tool."


class City(pydantic.BaseModel):
    name: str
    population: int


@pytest.fixture
async def server() -> AsyncIterator[ScriptedResponsesServer]:
    async with ScriptedResponsesServer() as s:
        yield s


def script() -> list[Reply]:
    return [ResponsesReply(tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"}}],
                           reasoning=THOUGHT, input_tokens=50, output_tokens=20),
            Reply("Cold.", input_tokens=80, output_tokens=2)]


def assistant_turn(body: dict[str, Any]) -> list[dict[str, Any]]:
    turn = next(m for m in body["messages"] if m["role"] == "assistant")
    content: list[dict[str, Any]] = turn["content"]
    return content


@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_goes_back_unchanged_and_survives_replay(
        sqlite_url: str, server: ScriptedResponsesServer, stream: bool) -> None:
    server.set_script(script())

    @function_tool
    def weather(city: str) -> str:
        """The weather."""
        return f"cold in {city}"

    llm = LLM("anthropic:claude-sonnet-4-5", base_url=server.anthropic_base_url,
              api_key="k", breaker=None)
    app = App(sqlite_url)
    # stream=False: the plain path (a tether.ai.LLM agent streams its turns by default).
    agent = Agent("thinker", model=llm, tools=[weather], stream=False,
                  model_params={"thinking": {"type": "enabled", "budget_tokens": 1024}})
    if stream:
        agent.model = _Streaming(llm)  # type: ignore[assignment]
    app.add_agent(agent)

    @app.workflow
    async def ask(q: str) -> str:
        answer = await tether.call("thinker", q)
        await tether.wait_for_signal("go")
        return str(answer)

    async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
        handle = await app.start(ask, "Weather in Oslo?", run_id="a1")
        await wait_for(lambda: status_is(app, "a1", "waiting"), timeout=20)
        await app.signal("a1", "go")
        assert await handle.result(timeout=20) == "Cold."
        child = next(r for r in await app.list_runs() if r.workflow == "thinker")
        info = await app.get_run(child.run_id)
    await llm.aclose()
    assert len(server.requests) == 2 and server.requests[0].stream is stream
    sent = assistant_turn(server.requests[1].body)
    assert sent[0] == {"type": "thinking", "thinking": THOUGHT,
                       "signature": thinking_signature(THOUGHT)}
    assert sent[1]["type"] == "tool_use"
    recorded = info.journal[0]["result"]["reply"]["reasoning"]
    assert recorded == [sent[0]]


class _Streaming:
    """The agent's model, streaming its calls (``LLM.stream`` instead of ``chat``)."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm

    async def chat(self, messages: Any, **kwargs: Any) -> Any:
        return await self.llm.stream(messages, **kwargs)


async def test_a_plain_call_keeps_thinking_in_the_reply(
        server: ScriptedResponsesServer) -> None:
    server.set_script([ResponsesReply("42", reasoning="six times seven")])
    async with LLM("anthropic:claude-sonnet-4-5", base_url=server.anthropic_base_url,
                   api_key="k", breaker=None) as llm:
        reply = await llm.chat([user_message("6*7?")])
    assert reply.text == "42"
    assert reply.reasoning == [{"type": "thinking", "thinking": "six times seven",
                                "signature": thinking_signature("six times seven")}]
    assert reply.to_message()["reasoning"] == reply.reasoning


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
async def test_structured_output_with_thinking_does_not_force_the_tool(
        server: ScriptedResponsesServer, streamed: bool) -> None:
    """Anthropic refuses a forced tool with thinking on ("Thinking may not be enabled
    when tool_choice forces tool use", a 400): ``output=`` with ``thinking=`` leaves the
    choice to the model, and its answer validates. Before, the ``final_output`` tool
    was forced whatever the parameters, and every such call failed at once."""
    server.set_script([ResponsesReply('{"name": "Oslo", "population": 709000}',
                                      reasoning="Norway's capital.")])
    async with LLM("anthropic:claude-sonnet-4-5", base_url=server.anthropic_base_url,
                   api_key="k", breaker=None) as llm:
        ask = llm.stream if streamed else llm.chat
        city = await ask([user_message("Capital of Norway?")], output=City,
                         max_tokens=4000, thinking={"type": "enabled", "budget_tokens": 2000})
    assert city == City(name="Oslo", population=709000)
    body = server.requests[0].body
    assert "tool_choice" not in body and body["tools"][0]["name"] == "final_output"
