"""The demo's research agent, served by ``tether worker tether.demo.research:app``.

Six reasoning steps, then the answer: the model asks the glossary (an MCP tool over
stdio), searches the web (a Python function tool, slow: about 1.5 s), and asks to buy a
market report, which spends budget and so needs a human's approval.

Configured by environment variables, read at import (the demo sets them for its
worker processes):

- ``TETHER_DEMO_MODEL``: ``provider:model`` (default ``openai:gpt-4.1-mini``);
- ``TETHER_DEMO_BASE_URL``: the model server (the local scripted one, or unset for the
  provider's own);
- ``TETHER_DEMO_LOG``: each tool execution appends ``<pid> <tool> ...`` here.
"""

from __future__ import annotations

import os
import sys
import time

import tether
from tether.ai import LLM, Agent, function_tool
from tether.ai.mcp import MCPServer, MCPToolset

app = tether.App()

#: The web, as far as this demo knows it (no network is used).
SEARCH_RESULTS = [
    "Temporal, Restate and DBOS journal each step so workflows survive restarts.",
    "Agent frameworks lose the whole conversation when a node restarts mid-run.",
    "Replaying an agent from a journal repays no LLM tokens for the completed turns.",
]

INSTRUCTIONS = """You are a research agent. Work in this order, one tool call per turn:
1. define "durable execution" with the define tool;
2. search the web with search_web;
3. buy the market report "Durable agents 2025" for 49 USD with buy_report (a human
   approves the spend);
4. answer with a recommendation in at most four sentences."""


def _log(line: str) -> None:
    path = os.environ.get("TETHER_DEMO_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {line}\n")


@function_tool
def search_web(query: str) -> list[str]:
    """Search the web and return the top results.

    Args:
        query: what to look for.
    """
    _log(f"search_web {query!r} key={tether.step_key()}")
    time.sleep(1.5)  # the network is slow today
    return SEARCH_RESULTS


@function_tool(requires_approval=True)
def buy_report(title: str, price_usd: float) -> str:
    """Buy a market report (spends budget: a human approves each purchase).

    Args:
        title: the report's title.
        price_usd: its price in US dollars.
    """
    order = tether.step_key()  # the shop de-duplicates a repeated order by this key
    _log(f"buy_report {title!r} ${price_usd:.2f} key={order}")
    return f"bought {title!r} for ${price_usd:.2f} (order {order}): adoption doubled in 2025"


glossary = MCPServer.stdio(sys.executable, ["-m", "tether.demo.glossary_server"],
                           env={"TETHER_DEMO_LOG": os.environ.get("TETHER_DEMO_LOG", "")},
                           id="glossary", timeout=30)

model = LLM(os.environ.get("TETHER_DEMO_MODEL", "openai:gpt-4.1-mini"),
            base_url=os.environ.get("TETHER_DEMO_BASE_URL") or None)

researcher = app.add_agent(Agent(
    "researcher", model=model, instructions=INSTRUCTIONS, max_turns=8,
    tools=[MCPToolset(app, glossary), search_web, buy_report]))
