"""``Agent(output_type=Model)``: a validated structured final answer, given by the model
through the ``final_result`` tool in the same call that ends the loop (no second model
call), with invalid answers sent back as the call's error."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel, Field

from tether import App
from tether.ai import LLM, Agent, function_tool
from tether.errors import ConfigError
from tether.testing.llm_server import Reply, ScriptedLLMServer


class Verdict(BaseModel):
    engine: str
    score: int = Field(ge=0, le=10)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as s:
        yield s


@pytest.fixture
async def llm(server: ScriptedLLMServer) -> AsyncIterator[LLM]:
    async with LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None) as client:
        yield client


def final(**arguments: object) -> Reply:
    return Reply(tool_calls=[{"name": "final_result", "arguments": arguments}])


async def test_the_answer_is_the_validated_model_in_one_call(
        store_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    server.set_script([final(engine="tether", score=9)])
    app = App(store_url)
    agent = app.add_agent(Agent("judge", model=llm, output_type=Verdict))
    async with app, app.worker():
        assert agent.workflow is not None
        handle = await app.start(agent.workflow, "Judge it.", run_id="j1")
        assert await handle.result(timeout=20) == Verdict(engine="tether", score=9)
        by_name = await app.start("judge", "Again.", run_id="j2")
        server.set_script([final(engine="x", score=1)])
        assert await by_name.result(timeout=20) == Verdict(engine="x", score=1)
        info = await app.get_run("j1")
    assert [e["name"] for e in info.journal] == ["llm:openai:gpt-4.1-mini"]
    tools = server.requests[0].body["tools"]
    schema = next(t["function"] for t in tools if t["function"]["name"] == "final_result")
    assert schema["parameters"]["properties"]["score"]["maximum"] == 10


async def test_an_invalid_answer_goes_back_to_the_model(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """score=42 breaks the schema: the call is journaled as invalid, its error is the
    tool result the model reads, and the corrected answer ends the run."""
    server.set_script([final(engine="tether", score=42), final(engine="tether", score=8)])

    @function_tool
    def lookup(name: str) -> str:
        """Look an engine up."""
        return name

    app = App(sqlite_url)
    app.add_agent(Agent("judge", model=llm, output_type=Verdict, tools=[lookup]))
    async with app, app.worker():
        handle = await app.start("judge", "Judge.", run_id="j3")
        assert await handle.result(timeout=20) == Verdict(engine="tether", score=8)
        info = await app.get_run("j3")
    assert [(e["name"], e["status"]) for e in info.journal] == [
        ("llm:openai:gpt-4.1-mini", "ok"), ("judge.invalid_tool_call", "error"),
        ("llm:openai:gpt-4.1-mini", "ok")]
    error = next(m for m in server.requests[1].body["messages"] if m["role"] == "tool")
    assert "score" in error["content"] and "less than or equal to 10" in error["content"]


async def test_json_text_is_accepted_and_other_text_is_asked_again(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    server.set_script([Reply("I think tether wins."),
                       Reply('{"engine": "tether", "score": 7}')])
    app = App(sqlite_url)
    app.add_agent(Agent("judge", model=llm, output_type=Verdict))
    async with app, app.worker():
        result = await (await app.start("judge", "Judge.", run_id="j4")).result(timeout=20)
    assert result == Verdict(engine="tether", score=7)
    nudge = server.requests[1].body["messages"][-1]
    assert nudge["role"] == "user" and "final_result" in nudge["content"]


def test_bad_output_types_are_clear_errors(llm: LLM) -> None:
    with pytest.raises(ConfigError, match="output_type must be a pydantic model"):
        Agent("a", model=llm, output_type=dict)  # type: ignore[arg-type]

    @function_tool
    def final_result(x: int) -> int:
        """Clash."""
        return x

    with pytest.raises(ConfigError, match="two tools are named 'final_result'"):
        App().add_agent(Agent("b", model=llm, output_type=Verdict, tools=[final_result]))


async def test_a_valid_answer_after_an_invalid_one_in_the_same_reply_ends_the_run(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """Two final_result calls in one reply, the first invalid: the valid one is the
    answer (it was answered with "KeyError: 'final_result'" and cost another turn)."""
    server.set_script([
        Reply(tool_calls=[{"name": "final_result", "arguments": {"engine": "x", "score": 42}},
                          {"name": "final_result", "arguments": {"engine": "x", "score": 4}}]),
        final(engine="y", score=1)])
    app = App(sqlite_url)
    app.add_agent(Agent("judge", model=llm, output_type=Verdict))
    async with app, app.worker():
        result = await (await app.start("judge", "Judge.", run_id="j6")).result(timeout=20)
        info = await app.get_run("j6")
    assert result == Verdict(engine="x", score=4)
    assert [e["name"] for e in info.journal] == ["llm:openai:gpt-4.1-mini"]
    assert len(server.requests) == 1


async def test_the_other_tool_calls_of_the_answering_reply_are_not_run(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """A reply that answers (a valid final_result) and also calls a tool, one that needs
    approval and one that does not: the run ends with the answer; neither tool runs,
    nobody is asked (docs/agents.md, "Structured answers")."""
    ran: list[str] = []

    @function_tool
    def note(text: str) -> str:
        """Note something."""
        ran.append(text)
        return "noted"

    @function_tool(requires_approval=True)
    def buy(item: str) -> str:
        """Buy something."""
        ran.append(item)
        return "bought"

    server.set_script([Reply(tool_calls=[
        {"name": "note", "arguments": {"text": "t"}},
        {"name": "buy", "arguments": {"item": "i"}},
        {"name": "final_result", "arguments": {"engine": "x", "score": 4}}])])
    app = App(sqlite_url)
    app.add_agent(Agent("judge", model=llm, tools=[note, buy], output_type=Verdict))
    async with app, app.worker():
        result = await (await app.start("judge", "Judge.", run_id="j7")).result(timeout=20)
        info = await app.get_run("j7")
    assert result == Verdict(engine="x", score=4)
    assert [e["name"] for e in info.journal] == ["llm:openai:gpt-4.1-mini"]
    assert ran == []


async def test_an_mcp_tool_named_final_result_is_a_configuration_error(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """An MCP tool named final_result clashes with the output tool: the run fails with
    the reason (the MCP tool was silently dropped from the model's tools)."""
    import sys

    from tether import RunFailed
    from tether.ai.mcp import MCPServer, MCPToolset

    def publish(note: str) -> str:
        """Publish a result."""
        return note

    server.set_script([final(engine="x", score=1)])
    app = App(sqlite_url)
    toolset = MCPToolset(app, MCPServer.stdio(sys.executable, ["-c", "pass"], id="pub"))

    async def listed() -> list[object]:
        return [function_tool(publish, name="final_result")]

    toolset.tools = listed  # type: ignore[method-assign]
    app.add_agent(Agent("judge", model=llm, output_type=Verdict, tools=[toolset]))
    async with app, app.worker():
        handle = await app.start("judge", "Judge.", run_id="j7")
        with pytest.raises(RunFailed) as failed:
            await handle.result(timeout=20)
    assert "MCP server 'pub' has a tool named 'final_result'" in str(failed.value)
    assert server.requests == []
