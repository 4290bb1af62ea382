"""The app that ``tether worker tests.integrations.pydantic_ai_worker_app:app`` serves in
the pydantic-ai crash tests: a pydantic-ai agent ``researcher`` registered with
``TetherAgent``, ``boss``, whose tool runs the agent ``helper`` (agent delegation), and
the workflow ``summarized``, whose agent ``summarizer`` (OpenAI's Responses API)
compacts an earlier conversation first (``/v1/responses/compact``), and ``backgrounder``
(OpenAI's Responses API in background mode: each request queued, then polled), and
``bgstreamer`` (the same, streamed: created once, then the job's stream read); their
model the scripted server of the test process.

Environment (read at import): ``AGENT_LLM_URL`` (the scripted server), ``AGENT_GATE``
(``slow_fetch`` waits until this file exists), ``AGENT_TOOL_LOG`` (each tool execution
appends ``{"tool", "pid", "key"}``).
"""

from __future__ import annotations

import json
import os
import time

from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.capabilities import NativeCompaction
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.tools import RunContext

import tether
from tether import App
from tether.integrations.pydantic_ai import TetherAgent, TetherDurability

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


provider = OpenAIProvider(base_url=os.environ.get("AGENT_LLM_URL", "http://127.0.0.1:9/v1"),
                          api_key="test-key")
model = OpenAIChatModel("gpt-4.1-mini", provider=provider)
agent = Agent(model, name="researcher", output_type=Report,
              instructions="Research, then report.")


@agent.tool_plain
def note(text: str) -> str:
    """Write a note down."""
    _log("note")
    return f"noted {text!r}"


@agent.tool_plain
def slow_fetch(url: str) -> str:
    """Fetch a page (waits for the test's gate file)."""
    _log("slow_fetch")
    gate = os.environ.get("AGENT_GATE", "")
    while gate and not os.path.exists(gate):
        time.sleep(0.02)
    return f"page {url}: 42 words"


researcher = TetherAgent(agent, app=app)


# Agent delegation (the delegation crash test): ``boss``'s tool ``ask_helper`` runs
# ``helper`` in the workflow (durable=False), then ``boss`` calls ``slow_fetch``.
helper = Agent(model, name="helper", instructions="You are the helper.",
               capabilities=[TetherDurability()])
boss = Agent(model, name="boss", instructions="You are the boss.", tools=[slow_fetch])


@boss.tool(durable=False)
async def ask_helper(ctx: RunContext[None], question: str) -> str:
    """Ask the helper."""
    return (await helper.run(question, usage=ctx.usage)).output


delegating = TetherAgent(boss, app=app)


# Compaction (the compaction crash test): ``summarizer`` compacts an earlier
# conversation (a ``model.compact_messages`` step: ``POST /v1/responses/compact``), then
# asks, calls ``slow_fetch``, and answers.
summarizer = TetherAgent(
    Agent(OpenAIResponsesModel("gpt-5.2", provider=provider), name="summarizer",
          capabilities=[NativeCompaction()], tools=[slow_fetch]),
    durability=TetherDurability(prices={"gpt-5.2": (2.0, 16.0)}))


@app.workflow(name="summarized")
async def summarized(prompt: str) -> str:
    earlier = [ModelRequest.user_text_prompt("Where is Paris?"),
               ModelResponse(parts=[TextPart("In France.")])]
    return (await summarizer.run(prompt, message_history=earlier, compact=True)).output


# Background mode (the background crash test): each request of ``backgrounder`` is
# queued (``"background": true``), then polled (``GET /v1/responses/{id}``); it calls
# ``slow_fetch``, and answers.
backgrounder = TetherAgent(
    Agent(OpenAIResponsesModel("gpt-5.2", provider=provider,
                               settings={"openai_background": True}),
          name="backgrounder", tools=[slow_fetch]),
    app=app, durability=TetherDurability(prices={"gpt-5.2": (2.0, 16.0)}, live=False))


async def _drain(ctx: RunContext[None], events: object) -> None:
    async for _ in events:  # type: ignore[attr-defined]
        pass


# A streamed background request (the streamed background crash test): ``bgstreamer``
# streams (an event_stream_handler) in background mode: the create's step ends at the
# job's ``response.created``, then the job's stream is read in a step of its own.
bgstreamer = TetherAgent(
    Agent(OpenAIResponsesModel("gpt-5.2", provider=provider,
                               settings={"openai_background": True}),
          name="bgstreamer"),
    app=app, durability=TetherDurability(prices={"gpt-5.2": (2.0, 16.0)},
                                         event_stream_handler=_drain))
