"""The app ``tether worker tests.ai.interrupt_worker_app:app`` serves in the interrupt
crash test (the test process builds it too, to start runs and send the interrupt).

Environment, read at import: ``AGENT_LLM_URL`` (the scripted LLM server),
``AGENT_TOOL_LOG`` (each tool start appends a JSON line), ``AGENT_HOLD`` (a file the
``hold`` tool waits for), ``AGENT_EVENTS_GATE`` (a file every subscription to a run's
live events waits for, after logging ``{"tool": "events.held"}``: the seam that holds
a turn's interrupt watcher back from listening).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

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


def _hold_events(gate: str) -> None:
    """Make the stores' live-event subscriptions wait for the file ``gate`` (the real
    subscription follows): an event published meanwhile reaches no one."""
    from tether.store.postgres._store import PostgresStore
    from tether.store.sqlite._store import SqliteStore

    for cls in (PostgresStore, SqliteStore):
        def held(self: Any, run_id: str, *, ready: Callable[[], None] | None = None,
                 _real: Any = cls.run_events) -> AsyncIterator[str]:
            async def events() -> AsyncIterator[str]:
                path = os.environ.get("AGENT_TOOL_LOG")
                if path:
                    with open(path, "a", encoding="utf-8") as f:
                        f.write(json.dumps({"tool": "events.held", "pid": os.getpid()}) + "\n")
                while not os.path.exists(gate):
                    await asyncio.sleep(0.02)
                async for data in _real(self, run_id, ready=ready):
                    yield data
            return events()

        cls.run_events = held  # type: ignore[method-assign]


if os.environ.get("AGENT_EVENTS_GATE"):
    _hold_events(os.environ["AGENT_EVENTS_GATE"])
