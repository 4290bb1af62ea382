"""The app that ``tether worker tests.integrations.pydantic_ai_cut_worker_app:app``
serves in the pydantic-ai crash test of paid failed model requests
(``test_pydantic_ai_crash.py``): a workflow whose agent's streamed model request is cut
and retried, then a second request under the same budget.

Environment (read at import): ``AGENT_LLM_URL``, the scripted server's OpenAI base URL.

The retry interval (1.8 s, no backoff) is shorter than ``tether worker``'s sticky wait
(2 s): the worker keeps the run between attempts, so a worker killed then dies holding
it (a crash, not a release).
"""

from __future__ import annotations

import os
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.tools import RunContext

import tether
from tether import App
from tether.ai import Budget, set_budget
from tether.integrations.pydantic_ai import TetherAgent, TetherDurability

app = App()


async def _drain(ctx: RunContext[None], events: Any) -> None:
    """An event stream handler: the model requests are streamed."""
    async for _ in events:
        pass


model = OpenAIChatModel("gpt-4.1-mini", provider=OpenAIProvider(
    base_url=os.environ.get("AGENT_LLM_URL", "http://127.0.0.1:9/v1"), api_key="test-key"))
writer = TetherAgent(Agent(model, name="writer"), durability=TetherDurability(
    model_retry=tether.RetryPolicy(initial_interval=1.8, backoff=1.0, max_attempts=None),
    event_stream_handler=_drain))


@app.workflow
async def write(question: str, limit: int) -> str:
    """An answer (its first requests are cut), then a request its budget may refuse."""
    set_budget(Budget(tokens=limit, on_exceed="fail"))
    first = str((await writer.run(question)).output)
    await writer.run("Again.")
    return first
