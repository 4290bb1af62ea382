"""Multi-agent economics: a child run's LLM spend (an agent used as a tool, a workflow
tool that calls a model) is rolled into its parent's metrics and counts against the
parent's budget; ``tether show`` prints the tree's totals."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from tests import forked
from tether import App, RunFailed
from tether.ai import LLM, Agent, Budget, user_message, workflow_tool
from tether.testing.llm_server import Reply, ScriptedLLMServer


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as s:
        yield s


@pytest.fixture
async def llm(server: ScriptedLLMServer) -> AsyncIterator[LLM]:
    async with LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None) as client:
        yield client


def tether_cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    return forked.run([sys.executable, "-m", "tether", *args, "--db", db],
                      capture_output=True, text=True, timeout=60, env=env)


def script() -> list[Reply]:
    return [Reply(tool_calls=[{"name": "helper", "arguments": {"task": "dig"}}],
                  input_tokens=200, output_tokens=10),
            Reply("dug", input_tokens=1000, output_tokens=100),       # the child agent
            Reply(tool_calls=[{"name": "summarize", "arguments": {"text": "dug"}}],
                  input_tokens=300, output_tokens=10),
            Reply("short", input_tokens=400, output_tokens=40),       # the workflow's call
            Reply("All done.", input_tokens=500, output_tokens=20)]


async def test_child_spend_is_rolled_into_the_parent(store_url: str,
                                                     server: ScriptedLLMServer,
                                                     llm: LLM) -> None:
    server.set_script(script())
    app = App(store_url)
    helper = Agent("helper", model=llm)

    @app.workflow
    async def summarize(text: str) -> str:
        """Summarize a text."""
        return (await llm.chat([user_message(f"Summarize: {text}")])).text or ""

    app.add_agent(Agent("lead", model=llm, tools=[helper, workflow_tool(summarize)]))
    async with app, app.worker():
        assert await (await app.start("lead", "Go.", run_id="p1")).result(timeout=30) \
            == "All done."
        info = await app.get_run("p1")
    m = info.metrics
    assert m["llm.calls"] == 3 and m["tokens.input"] == 1000  # the lead's own calls
    assert m["children.runs"] == 2
    assert m["children.tokens"] == 1100 + 440
    price_in, price_out = 0.4 / 1e6, 1.6 / 1e6
    assert m["children.cost.usd"] == pytest.approx(1400 * price_in + 140 * price_out)
    names = [e["name"] for e in info.journal]
    assert names.count("lead.child_spend") == 2
    shown = await asyncio.to_thread(tether_cli, "show", "p1", db=store_url)
    assert "child runs:       2 runs, 1,540 tokens, $0.000784" in shown.stdout
    assert "tree total:       2,580 tokens" in shown.stdout


async def test_child_spend_counts_against_the_parent_budget(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """The lead's own first call spends 210 tokens, its child 1100: with a budget of
    1000 tokens the lead's next call is refused, never sent."""
    server.set_script(script())
    app = App(sqlite_url)
    app.add_agent(Agent("lead", model=llm, tools=[Agent("helper", model=llm)],
                        budget=Budget(tokens=1000, on_exceed="fail")))
    async with app, app.worker():
        with pytest.raises(RunFailed, match=r"BudgetExceeded.*1310 tokens spent"):
            await (await app.start("lead", "Go.", run_id="p2")).result(timeout=30)
    assert len(server.requests) == 2
