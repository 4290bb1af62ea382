"""The app ``tether worker tests.ai.elicit_worker_app:app`` serves in the elicitation
crash test: a workflow buys a book from the library MCP server (which asks the user to
confirm, by elicitation), then waits in the step ``hold`` for the test's file.

Environment, read at import: ``LIBRARY_LOG`` (the server's request log), ``HOLD`` (the
file ``hold`` waits for), ``HOLD_LOG`` (``hold`` appends a line when it starts).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.forked import stdio_command
from tether import App
from tether.ai.mcp import MCPServer, MCPToolset

LIBRARY = Path(__file__).parent / "mcp_servers" / "library_server.py"

app = App()
library = MCPToolset(app, MCPServer.stdio(
    *stdio_command(LIBRARY, "stdio", start=False), id="library", timeout=20,
    env={"LIBRARY_LOG": os.environ.get("LIBRARY_LOG", "")}), include=["buy"])


@app.step
async def hold() -> str:
    with open(os.environ["HOLD_LOG"], "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")
    while not os.path.exists(os.environ["HOLD"]):
        await asyncio.sleep(0.02)
    return "held"


@app.workflow
async def purchase(title: str) -> str:
    bought = await library.call("buy", {"title": title})
    return f"{bought.text}; {await hold()}"
