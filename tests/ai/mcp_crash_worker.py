"""A Tether worker process for the MCP crash test.

``python tests/ai/mcp_crash_worker.py DB_PATH MCP_URL GATE_FILE`` builds the app and runs
an embedded worker until it is killed. The test builds the same app in its own process
(``build``) to start the run and read the journal.

The workflow ``record_then_lookup`` calls ``record`` (the side effect that must not be
repeated), then waits in a step until GATE_FILE exists, then calls ``lookup``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from tether import App
from tether.ai.mcp import MCPServer, MCPToolset


def build(db_path: str, url: str, gate: str) -> App:
    app = App(f"sqlite:///{db_path}")
    server = MCPServer.http(url, id="notes")
    toolset = MCPToolset(app, server)

    @app.step
    def wait_for_gate() -> bool:
        while not os.path.exists(gate):
            time.sleep(0.02)
        return True

    @app.workflow
    async def record_then_lookup(note: str) -> dict[str, Any]:
        tools = {t.name: t for t in await toolset.tools()}
        first = await tools["record"].invoke({"note": note})
        await wait_for_gate()
        second = await tools["lookup"].invoke({"term": note})
        return {"first": first.text, "second": second.text}

    return app


async def _serve(app: App) -> None:
    async with app.worker(lease_seconds=2.0):
        print("worker ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_serve(build(sys.argv[1], sys.argv[2], sys.argv[3])))
