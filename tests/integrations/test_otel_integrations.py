"""OpenTelemetry spans of the framework integrations' work: a model request made through
``tether.integrations.pydantic_ai`` or ``tether.integrations.openai_agents`` is a
``chat {model}`` span with the GenAI attributes (tokens from the metered record), and a
tool call an ``execute_tool {tool}`` span, as for ``tether.ai.Agent``
(``docs/telemetry.md``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")
pytest.importorskip("agents")
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"  # nothing leaves 127.0.0.1

from openai import AsyncOpenAI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tether.otel
from tether import App
from tether.testing.llm_server import Reply, ScriptedLLMServer


def pydantic_ai_agent(app: App, client: AsyncOpenAI) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    from tether.integrations.pydantic_ai import TetherAgent

    agent = Agent(OpenAIChatModel("gpt-4.1-mini", provider=OpenAIProvider(openai_client=client)),
                  name="talker")

    @agent.tool_plain
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    TetherAgent(agent, app=app)


def openai_agents_agent(app: App, client: AsyncOpenAI) -> None:
    from agents import Agent, OpenAIChatCompletionsModel, function_tool

    from tether.integrations.openai_agents import TetherAgent

    @function_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    TetherAgent(Agent(name="talker", instructions="Be brief.", tools=[weather],
                      model=OpenAIChatCompletionsModel("gpt-4.1-mini", openai_client=client)),
                app=app)


@pytest.mark.parametrize("build", [pydantic_ai_agent, openai_agents_agent],
                         ids=["pydantic_ai", "openai_agents"])
async def test_model_requests_are_chat_spans_and_tool_calls_execute_tool_spans(
        sqlite_url: str, build: Callable[[App, AsyncOpenAI], None]) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    script = [Reply(tool_calls=[{"name": "weather", "arguments": {"city": "Paris"}}],
                    input_tokens=50, output_tokens=5, model="gpt-4.1-mini-2025"),
              Reply("Sunny.", input_tokens=60, output_tokens=3, model="gpt-4.1-mini-2025")]
    app = App(sqlite_url)
    async with ScriptedLLMServer(script) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        build(app, client)
        observer = tether.otel.instrument(provider)
        try:
            async with app, app.worker():
                handle = await app.start("talker", "Weather in Paris?")
                assert await handle.result(timeout=30) == "Sunny."
        finally:
            tether.otel.uninstrument(observer)
            await client.close()
    spans = exporter.get_finished_spans()
    chats = [s for s in spans if s.name == "chat gpt-4.1-mini" or
             s.name == "chat gpt-4.1-mini-2025"]
    assert len(chats) == 2, [s.name for s in spans]
    attrs: list[dict[str, Any]] = [dict(s.attributes or {}) for s in chats]
    assert all(a["gen_ai.operation.name"] == "chat" for a in attrs)
    # (the Agents SDK's ModelResponse does not say the answering model: the one asked for)
    assert all(a["gen_ai.response.model"] in ("gpt-4.1-mini", "gpt-4.1-mini-2025")
               for a in attrs)
    assert sorted((a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"])
                  for a in attrs) == [(50, 5), (60, 3)]
    assert all(a["tether.cost_usd"] > 0 for a in attrs)
    tools = [s for s in spans if s.name == "execute_tool weather"]
    assert len(tools) == 1
    assert dict(tools[0].attributes or {})["gen_ai.tool.name"] == "weather"
