"""Agents whose answers stream into ``tether serve``'s run page (importable by worker
and serve subprocesses as ``tests.web.agent_stream_app:app``)."""

from __future__ import annotations

import os

import tether
from tether.ai import LLM, Agent, function_tool

BASE = os.environ.get("TETHER_TEST_LLM_URL") or "http://127.0.0.1:9/v1"

openai_llm = LLM("openai:gpt-4.1-mini", base_url=BASE, api_key="test-key", breaker=None)
anthropic_llm = LLM("anthropic:claude-sonnet-4-5", base_url=BASE.removesuffix("/v1"),
                    api_key="test-key", breaker=None)


@function_tool
def weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city's name.
    """
    return f"sunny in {city}"


app = tether.App()
app.add_agent(Agent("streamer", model=openai_llm, tools=[weather], max_turns=4))
app.add_agent(Agent("streamer_claude", model=anthropic_llm, tools=[weather], max_turns=4))
