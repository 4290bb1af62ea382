"""``tether serve``'s MCP endpoint (Streamable HTTP) when the server is stopped: a
synchronous tool call (a client without the Tasks extension) still waiting for its run
answers at once that the run goes on and how to follow it, and the server shuts down
cleanly (exit 0). It was held until uvicorn's graceful-shutdown deadline (3 s), then
cancelled: an ERROR with a traceback, an error response to the client, and (with the
exit statuses of 2026-12-06) exit 1. And which store ``tether serve --app`` serves
without ``--db``: the app's own."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from tests.web.helpers import start_serve
from tether import App
from tether.mcp_tasks import CreateTaskResult, TasksClientExtension


async def test_a_waiting_synchronous_tool_call_answers_when_the_server_stops(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    served = start_serve(db, tmp_path, app="tests.mcp_server.apps:app")
    try:
        async with (
            httpx2.AsyncClient() as http,
            Client(streamable_http_client(served.url + "/mcp", http_client=http)) as client,
        ):
            # No worker: the run stays queued, and the call waits for it (up to 60 s).
            call = asyncio.ensure_future(client.call_tool("slow_sum", {"numbers": [1]}))
            async with App(db) as app:
                for _ in range(600):
                    if await app.store.run_search(limit=1) or call.done():
                        break
                    await asyncio.sleep(0.05)
                (run,) = await app.store.run_search(limit=1)
            assert not call.done()
            served.proc.send_signal(signal.SIGTERM)
            answer = await asyncio.wait_for(call, 30)
        assert await asyncio.to_thread(served.proc.wait, 30) == 0, served.log.read_text()
    finally:
        served.stop()
    assert isinstance(answer, CallToolResult) and answer.is_error, answer
    assert isinstance(answer.content[0], TextContent)
    assert answer.content[0].text == (
        f"run {run.run_id} is still going, and this server is shutting down; it goes on: "
        f"follow it as task {run.run_id} (tasks/get, with the MCP Tasks extension) or with "
        f"`tether result {run.run_id}`; a new call of this tool starts another run")
    log = served.log.read_text()
    assert "Traceback" not in log and "Cancel " not in log, log


async def test_serve_app_without_db_serves_the_apps_own_store(tmp_path: Path) -> None:
    """``tether serve --app MODULE:APP`` without ``--db`` serves the store the app names
    (``App("postgresql://...")``), as ``tether worker`` and ``tether mcp`` of the same
    app do. It served ``$TETHER_DATABASE_URL`` or ``./tether.db`` instead: an MCP task
    (or an API start) went to a store no worker of the app polls, and stayed
    ``working`` for ever."""
    own = f"sqlite:///{tmp_path / 'own.db'}"
    other = f"sqlite:///{tmp_path / 'other.db'}"
    served = start_serve("", tmp_path, app="tests.mcp_server.own_store_app:app",
                         extra_env={"TETHER_TEST_APP_DB": own, "TETHER_DATABASE_URL": other})
    try:
        async with (
            httpx2.AsyncClient() as http,
            Client(streamable_http_client(served.url + "/mcp", http_client=http),
                   extensions=[TasksClientExtension()]) as client,
        ):
            created = await client.session.call_tool("echo", {"text": "hi"},
                                                     allow_claimed=True)
    finally:
        served.stop()
    assert isinstance(created, CreateTaskResult), created
    async with App(own) as app:
        assert await app.store.run_get(created.task_id) is not None
    assert f"serving {own}" in served.log.read_text()
