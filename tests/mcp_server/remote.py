"""A task-capable MCP server written for the client-side tests (the official SDK's
``MCPServer`` with the Tasks extension and an in-memory task table).

Tools (task-only):
- ``long_job(seconds)``: a task that completes ``seconds`` after it was created.
- ``held_job(what)``: a task that works until the file named by ``REMOTE_RELEASE``
  exists (a long job whose end the test chooses), then completes with ``done: <what>``.
- ``confirm_job(what)``: input_required with an approval-shaped elicitation (key
  ``confirm``) until answered; then completed (or an error result if rejected).
- ``name_job()``: input_required asking for a ``name``; then ``hello <name>``.

Every ``tools/call`` and ``tasks/*`` request is appended to the file named by
``REMOTE_LOG`` (``call <tool> <task>``, ``get <task>``, ``update <task> <keys>``,
``cancel <task>``). ``python -m tests.mcp_server.remote`` prints its URL on the first
line of stdout and serves until killed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolRequestParams
from starlette.applications import Starlette
from starlette.routing import Route

from tether.mcp_tasks import CreateTaskResult, TasksExtension, iso_time, missing_capability


def _log(line: str) -> None:
    path = os.environ.get("REMOTE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


@dataclass
class _Task:
    task_id: str
    tool: str
    arguments: dict[str, Any]
    created: float
    answers: dict[str, Any] = field(default_factory=dict)
    cancelled: bool = False


class RemoteTasks:
    def __init__(self, poll_interval_ms: int = 1000) -> None:
        self.tasks: dict[str, _Task] = {}
        self.by_key: dict[str, str] = {}
        self.poll_interval_ms = poll_interval_ms

    async def call_tool(self, params: CallToolRequestParams, *, tasks: bool,
                        call_next: Callable[[], Awaitable[Any]]) -> Any:
        if not tasks:
            raise missing_capability(f"tool {params.name!r}")
        key = (params.meta or {}).get("idempotency_key")
        if key is not None and key in self.by_key:
            task = self.tasks[self.by_key[key]]
        else:
            task = _Task(uuid.uuid4().hex, params.name, dict(params.arguments or {}), time.time())
            self.tasks[task.task_id] = task
            if key is not None:
                self.by_key[key] = task.task_id
            _log(f"call {params.name} {task.task_id}")
        view = self._view(task)
        return CreateTaskResult.model_validate(
            {k: v for k, v in view.items() if k not in ("result", "inputRequests")})

    def _view(self, task: _Task) -> dict[str, Any]:
        now = time.time()
        out: dict[str, Any] = {"taskId": task.task_id, "createdAt": iso_time(task.created),
                               "lastUpdatedAt": iso_time(now), "ttlMs": None,
                               "pollIntervalMs": self.poll_interval_ms}
        if task.cancelled:
            return {**out, "status": "cancelled"}
        if task.tool == "long_job":
            if now - task.created >= float(task.arguments.get("seconds", 0)):
                return {**out, "status": "completed", "result": _text(
                    f"done after {task.arguments.get('seconds')} s")}
            return {**out, "status": "working"}
        if task.tool == "held_job":
            release = os.environ.get("REMOTE_RELEASE")
            if release and os.path.exists(release):
                return {**out, "status": "completed",
                        "result": _text(f"done: {task.arguments.get('what')}")}
            return {**out, "status": "working"}
        if task.tool == "confirm_job":
            answer = task.answers.get("confirm")
            if answer is None:
                return {**out, "status": "input_required", "inputRequests": {"confirm": {
                    "method": "elicitation/create", "params": {
                        "mode": "form", "message": f"Confirm {task.arguments.get('what')}?",
                        "requestedSchema": {"type": "object", "properties": {
                            "approved": {"type": "boolean"}, "note": {"type": "string"}},
                            "required": ["approved"]}}}}}
            content = answer.get("content") or {}
            if not content.get("approved"):
                return {**out, "status": "completed",
                        "result": _text(f"rejected: {content.get('note')}", True)}
            return {**out, "status": "completed", "result": _text(
                f"confirmed {task.arguments.get('what')} ({content.get('note')})")}
        answer = task.answers.get("name")
        if answer is None:
            return {**out, "status": "input_required", "inputRequests": {"name": {
                "method": "elicitation/create", "params": {
                    "mode": "form", "message": "Your name?", "requestedSchema": {
                        "type": "object", "properties": {"name": {"type": "string"}}}}}}}
        return {**out, "status": "completed",
                "result": _text(f"hello {(answer.get('content') or {}).get('name')}")}

    async def get_task(self, task_id: str) -> dict[str, Any] | None:
        _log(f"get {task_id}")
        task = self.tasks.get(task_id)
        return None if task is None else self._view(task)

    async def update_task(self, task_id: str, input_responses: Mapping[str, Any]) -> bool:
        task = self.tasks.get(task_id)
        if task is None:
            return False
        _log(f"update {task_id} {','.join(sorted(input_responses))}")
        for key, value in input_responses.items():
            task.answers.setdefault(key, value)
        return True

    async def cancel_task(self, task_id: str) -> bool:
        task = self.tasks.get(task_id)
        if task is None:
            return False
        _log(f"cancel {task_id}")
        task.cancelled = True
        return True


def _text(text: str, is_error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}


def long_job(seconds: float) -> str:
    """Work for ``seconds`` (as a task)."""
    raise AssertionError("answered by the task backend")


def held_job(what: str) -> str:
    """Work on ``what`` until released (as a task)."""
    raise AssertionError("answered by the task backend")


def confirm_job(what: str) -> str:
    """Do ``what`` once a person confirms it (as a task)."""
    raise AssertionError("answered by the task backend")


def name_job() -> str:
    """Greet the person, asking for a name (as a task)."""
    raise AssertionError("answered by the task backend")


def build(poll_interval_ms: int = 1000) -> Starlette:
    backend = RemoteTasks(poll_interval_ms)
    server: MCPServer = MCPServer(
        name="remote", tools=[Tool.from_function(f)
                              for f in (long_job, held_job, confirm_job, name_job)],
        extensions=[TasksExtension(backend)])
    manager = StreamableHTTPSessionManager(
        app=server._lowlevel_server, stateless=True,
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with manager.run():
            yield

    return Starlette(routes=[Route("/mcp", endpoint=StreamableHTTPASGIApp(manager))],
                     lifespan=lifespan)


@asynccontextmanager
async def serve_remote(poll_interval_ms: int = 1000) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build(poll_interval_ms), log_level="warning"))
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


def main() -> None:
    async def run() -> None:
        async with serve_remote(int(os.environ.get("REMOTE_POLL_MS", "1000"))) as url:
            print(url, flush=True)
            await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
