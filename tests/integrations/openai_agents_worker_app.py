"""The app that ``tether worker tests.integrations.openai_agents_worker_app:app`` serves
in the OpenAI Agents SDK crash test: a triage agent with tools handing off to a
reporter with a structured output, its model the scripted server of the test process.

Environment (read at import): ``AGENT_LLM_URL``, ``AGENT_GATE`` (``slow_fetch`` waits
until this file exists), ``AGENT_TOOL_LOG`` (each tool execution appends a line).
"""

from __future__ import annotations

import json
import os
import time

from agents import Agent, OpenAIChatCompletionsModel, function_tool, set_tracing_disabled
from openai import AsyncOpenAI
from pydantic import BaseModel

import tether
from tether import App
from tether.integrations.openai_agents import TetherAgent

set_tracing_disabled(True)
app = App()


class Report(BaseModel):
    summary: str
    sources: int


def _log(tool: str) -> None:
    path = os.environ.get("AGENT_TOOL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"tool": tool, "pid": os.getpid(), "key": tether.step_key()})
                    + "\n")


@function_tool
def note(text: str) -> str:
    """Write a note down."""
    _log("note")
    return f"noted {text!r}"


@function_tool
def slow_fetch(url: str) -> str:
    """Fetch a page (waits for the test's gate file)."""
    _log("slow_fetch")
    gate = os.environ.get("AGENT_GATE", "")
    while gate and not os.path.exists(gate):
        time.sleep(0.02)
    return f"page {url}: 42 words"


client = AsyncOpenAI(base_url=os.environ.get("AGENT_LLM_URL", "http://127.0.0.1:9/v1"),
                     api_key="test-key", max_retries=0)
model = OpenAIChatCompletionsModel("gpt-4.1-mini", openai_client=client)
reporter = Agent(name="reporter", model=model, output_type=Report,
                 instructions="Write the report.")
researcher = Agent(name="researcher", model=model, tools=[note, slow_fetch],
                   handoffs=[reporter], instructions="Research, then hand off.")
TetherAgent(researcher, app=app)
