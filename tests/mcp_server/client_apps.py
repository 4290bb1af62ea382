"""A Tether app that calls the test's remote task server (``tests.mcp_server.remote``)
through ``tether.ai.mcp``. Subprocesses load ``tests.mcp_server.client_apps:app``, which
reads ``REMOTE_URL`` and ``POLL_FLOOR``; steps append to ``TETHER_TEST_SIDE_FILE``."""

from __future__ import annotations

import os
from typing import Any

from tests.mcp_server.apps import _record
from tether import App
from tether.ai.mcp import MCPServer, MCPToolset


def build(url: str | None = None, *, remote_url: str | None = None,
          poll_floor: float = 3.0) -> tuple[App, MCPServer]:
    app = App(url)
    remote = MCPServer.http(remote_url or os.environ.get("REMOTE_URL", "http://127.0.0.1:9/mcp"),
                            id="remote")
    toolset = MCPToolset(app, remote, poll_floor=poll_floor)

    @app.workflow
    async def use_remote(tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = await toolset.call(tool, arguments)
        return {"text": result.text, "is_error": result.is_error}

    @app.step
    def bump(i: int) -> int:
        _record(f"quick {i}")
        return i

    @app.workflow
    async def quick(i: int) -> int:
        return await bump(i)

    return app, remote


app, remote = build(poll_floor=float(os.environ.get("POLL_FLOOR", "3.0")))
