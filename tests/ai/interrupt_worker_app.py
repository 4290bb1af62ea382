"""The app ``tether worker tests.ai.interrupt_worker_app:app`` serves in the interrupt
crash test (the test process builds it too, to start runs and send the interrupt).

Environment, read at import: ``AGENT_LLM_URL`` (the scripted LLM server),
``AGENT_TOOL_LOG`` (each tool start appends a JSON line), ``AGENT_HOLD`` (a file the
``hold`` tool waits for).
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import tether
from tether import App
from tether.ai import LLM, Agent, function_tool

app = App()


def _log(tool: str, **fields: object) -> None:
    path = os.environ.get("AGENT_TOOL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"tool": tool, "pid": os.getpid(), "key": tether.step_key(),
                                "at": time.time(), **fields}) + "\n")


@function_tool
async def slow_fetch(url: str) -> str:
    """Fetch a page (very slow: only an interrupt ends it).

    Args:
        url: the page.
    """
    _log("slow_fetch", url=url)
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        _log("slow_fetch.cancelled", url=url)
        raise
    return "never"


@function_tool
async def hold(what: str) -> str:
    """Hold on (waits for the test's file).

    Args:
        what: what to hold.
    """
    _log("hold", what=what)
    gate = os.environ.get("AGENT_HOLD", "")
    while gate and not os.path.exists(gate):
        await asyncio.sleep(0.02)
    return f"held {what}"


llm = LLM("openai:gpt-4.1-mini", base_url=os.environ.get("AGENT_LLM_URL", "http://127.0.0.1:9/v1"),
          breaker=None)
agent = app.add_agent(Agent("fetcher", model=llm, tools=[slow_fetch, hold], interruptible=True))
