"""A small HTTP host for Tether's MCP face (Starlette + uvicorn), in-process for tests
and as a process: ``python -m tests.mcp_server.host MODULE:APP --db URL`` prints its
MCP URL on the first line of stdout and serves until killed."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from mcp import Client
from mcp_types import EmptyResult
from starlette.applications import Starlette
from starlette.routing import Route

from tether import App
from tether.mcp_tasks import (
    CancelTaskParams,
    CancelTaskRequest,
    GetTaskParams,
    GetTaskRequest,
    GetTaskResult,
    TasksClientExtension,
    UpdateTaskParams,
    UpdateTaskRequest,
)
from tether.serve.mcp import create_mcp_http


def asgi(app: App, **options: Any) -> Starlette:
    face = create_mcp_http(app, **options)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with app, face.lifespan():
            yield

    return Starlette(routes=[Route("/mcp", endpoint=face.asgi)], lifespan=lifespan)


@asynccontextmanager
async def serve_http(app: App, **options: Any) -> AsyncIterator[str]:
    """Serve ``app``'s MCP face on 127.0.0.1 (a free port); yields the MCP URL.
    ``options`` go to ``create_mcp_http``."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(asgi(app, **options), log_level="warning",
                                           lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        await task
        sock.close()


def tasks_client(url: str) -> Client:
    """The official SDK's client, declaring the Tasks extension."""
    return Client(url, extensions=[TasksClientExtension()])


async def get_task(client: Client, task_id: str) -> GetTaskResult:
    return await client.session.send_request(
        GetTaskRequest(params=GetTaskParams(task_id=task_id)), GetTaskResult)


async def update_task(client: Client, task_id: str, responses: dict[str, Any]) -> Any:
    return await client.session.send_request(
        UpdateTaskRequest(params=UpdateTaskParams(task_id=task_id, input_responses=responses)),
        EmptyResult)


async def cancel_task(client: Client, task_id: str) -> Any:
    return await client.session.send_request(
        CancelTaskRequest(params=CancelTaskParams(task_id=task_id)), EmptyResult)


async def poll(client: Client, task_id: str, statuses: set[str], timeout: float = 30.0
               ) -> GetTaskResult:
    """``tasks/get`` until the task's status is one of ``statuses``."""
    async with asyncio.timeout(timeout):
        while True:
            task = await get_task(client, task_id)
            if task.status in statuses:
                return task
            await asyncio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    module, _, attr = args.target.partition(":")
    app: App = getattr(importlib.import_module(module), attr)
    app.use_store(args.db)

    async def run() -> None:
        async with serve_http(app) as url:
            print(url, flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
