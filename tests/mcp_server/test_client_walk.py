"""Tether's MCP face walked as a client walks it, with the official ``mcp`` SDK's client,
against the real servers a user runs: ``tether mcp`` (stdio, a subprocess with its own
worker) and ``tether serve --app`` (its ``/mcp`` over HTTP, a ``tether worker`` beside
it). Each answer is checked against the specification's text: the Tools page of
2025-11-25 (input schemas in JSON Schema 2020-12, input validation errors as tool
results with ``isError``) and the Tasks extension of 2026-07-28 (``tasks/get``'s
statuses and inlined results, ``tasks/cancel``), with the rule of the 2025-11-25 Tasks
for a cancel of an ended task."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from mcp import Client, MCPError, StdioServerParameters
from mcp_types import INVALID_PARAMS, METHOD_NOT_FOUND, RequestParams, TextContent
from mcp_types import Request as SdkRequest
from mcp_types import Result as SdkResult
from mcp_types._v2026_07_28 import CallToolResult as WireCallToolResult

from tests.faults.procs import ROOT
from tests.mcp_server.host import cancel_task, get_task, poll
from tether.mcp_tasks import CreateTaskResult, TasksClientExtension

APP = "tests.mcp_server.apps:app"
#: The servers' import path: this checkout's sources first, then the tests.
PATH = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
ENV = {"PYTHONPATH": PATH, "PATH": os.environ.get("PATH", "")}


class _ListTasks(SdkRequest[RequestParams, Any]):
    method: Any = "tasks/list"
    params: RequestParams | None = None


class _TaskResult(SdkRequest[RequestParams, Any]):
    method: Any = "tasks/result"
    params: RequestParams | None = None


def _stdio(db: str, *, tasks: bool = True) -> Client:
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "tether", "mcp", APP, "--db", db],
                                   cwd=str(ROOT), env=ENV)
    return Client(params, extensions=[TasksClientExtension()] if tasks else [])


@asynccontextmanager
async def _served(db: str, tmp: Path) -> AsyncIterator[str]:
    """``tether serve --app`` and a ``tether worker`` on ``db``: yields the MCP URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    procs = []
    for name, args in (("serve", ["serve", "--app", APP, "--port", str(port)]),
                       ("worker", ["worker", APP])):
        with open(tmp / f"{name}.log", "wb") as log:
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tether", *args, "--db", db, cwd=ROOT, env=ENV,
                stdout=log, stderr=log))
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(600):
                if procs[0].returncode is not None:
                    raise AssertionError((tmp / "serve.log").read_text())
                try:
                    await http.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1)
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            await proc.wait()


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_client_walks_the_face(transport: str, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    async with _clients(transport, db, tmp_path) as (client, plain):
        # tools/list: each inputSchema is JSON Schema 2020-12 (MCP's default dialect)
        # and admits only the workflow's parameters.
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert sorted(tools) == ["ask", "explode", "quote", "slow_sum"]
        for tool in tools.values():
            Draft202012Validator.check_schema(tool.input_schema)
            assert tool.input_schema["additionalProperties"] is False

        # A synchronous call (a client without the extension): the tool's result.
        result = await plain.call_tool("slow_sum", {"numbers": [1, 2]})
        assert (result.is_error, _text(result)) == (False, "3")
        # Input validation errors are tool execution errors (isError), naming the
        # argument; nothing starts.
        wrong = await plain.call_tool("slow_sum", {"numbers": "many", "speed": 2})
        assert wrong.is_error
        assert "numbers: Input should be a valid list" in _text(wrong)
        assert "speed: unexpected argument" in _text(wrong)

        # An unknown tool is a protocol error (the Tools page's "Error Handling"),
        # -32602, which the SDK's client raises, naming the closest tool; to a client
        # with the extension, asking for a task, the same.
        for unknown in (plain.call_tool("slow_summ", {"numbers": [1]}),
                        client.session.call_tool("slow_summ", {"numbers": [1]},
                                                 allow_claimed=True)):
            with pytest.raises(MCPError) as no_tool:
                await unknown
            assert no_tool.value.code == INVALID_PARAMS
            assert no_tool.value.message == "Unknown tool: slow_summ (did you mean 'slow_sum'?)"
            assert no_tool.value.data == {"tool": "slow_summ", "known": sorted(tools)}

        # As a task: CreateTaskResult, then tasks/get until it completes, its result
        # inlined: a CallToolResult of the 2026-07-28 wire (its resultType required).
        created = await client.session.call_tool("slow_sum", {"numbers": [4, 5]},
                                                 allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        # (its status as the store has it when the task is made: a worker that is
        # quick has completed it already)
        assert created.result_type == "task" and created.status in ("working", "completed")
        done = await poll(client, created.task_id, {"completed", "failed", "cancelled"})
        assert done.status == "completed" and done.error is None
        wire = WireCallToolResult.model_validate(done.result)
        assert (wire.result_type, wire.is_error) == ("complete", False)
        assert [c.text for c in wire.content] == ["9"]  # type: ignore[union-attr]

        # A run that fails is a failed task: its error, no result.
        failing = await client.session.call_tool("explode", {"message": "out of fuel"},
                                                 allow_claimed=True)
        assert isinstance(failing, CreateTaskResult)
        failed = await poll(client, failing.task_id, {"completed", "failed", "cancelled"})
        assert (failed.status, failed.result) == ("failed", None)
        assert failed.error is not None and failed.error["code"] == -32603
        assert failed.error["message"] == failed.status_message == "NonRetryable: out of fuel"

        # Cancel a working task: acknowledged, and it ends cancelled.
        long = await client.session.call_tool("slow_sum", {"numbers": [1, 2], "pause": 60},
                                              allow_claimed=True)
        assert isinstance(long, CreateTaskResult)
        await poll(client, long.task_id, {"working"})
        await cancel_task(client, long.task_id)
        cancelled = await poll(client, long.task_id, {"completed", "failed", "cancelled"})
        assert cancelled.status == "cancelled"

        # Cancel an ended task: -32602, the task as it ended.
        for ended in (done, failed, cancelled):
            with pytest.raises(MCPError) as refused:
                await cancel_task(client, ended.task_id)
            assert refused.value.code == INVALID_PARAMS
            assert refused.value.error.data == {"status": ended.status}
            assert (await get_task(client, ended.task_id)).status == ended.status

        # The 2025-11-25 experimental methods the extension replaced: not found.
        for request in (_ListTasks(params=RequestParams.model_validate({"cursor": "c"})),
                        _TaskResult(params=RequestParams.model_validate(
                            {"taskId": created.task_id}))):
            with pytest.raises(MCPError) as missing:
                await client.session.send_request(request, SdkResult)
            assert missing.value.code == METHOD_NOT_FOUND


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_handshake_client_sees_a_task_only_tool_as_its_protocol_says(
        transport: str, tmp_path: Path) -> None:
    """A client on the 2025-11-25 handshake (this server's tasks are the 2026-07-28
    extension's, not served there): the task-only tool is listed with
    ``execution.taskSupport`` "required", and a call of it is -32601 (Method not found),
    the 2025-11-25 Tasks text's answer to a required tool called without a task. Both
    were as to any other tool, and the call's error the extension's -32021, a code of
    2026-07-28. An unknown tool is -32602 there too."""
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    async with contextlib.AsyncExitStack() as stack:
        if transport == "stdio":
            params = StdioServerParameters(command=sys.executable,
                                           args=["-m", "tether", "mcp", APP, "--db", db],
                                           cwd=str(ROOT), env=ENV)
            client = await stack.enter_async_context(Client(params, mode="legacy"))
        else:
            url = await stack.enter_async_context(_served(db, tmp_path))
            client = await stack.enter_async_context(Client(url, mode="legacy"))
        assert client.protocol_version == "2025-11-25"
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert tools["ask"].execution is not None
        assert tools["ask"].execution.task_support == "required"
        assert [name for name, tool in tools.items() if tool.execution] == ["ask"]
        with pytest.raises(MCPError) as refused:
            await client.call_tool("ask", {"question": "?"})
        assert refused.value.code == METHOD_NOT_FOUND
        assert refused.value.message.startswith(
            "Method not found: tool 'ask' (task-only) needs the "
            "io.modelcontextprotocol/tasks extension, on protocol 2026-07-28")
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("asks", {})
        assert (unknown.value.code, unknown.value.message) == (
            INVALID_PARAMS, "Unknown tool: asks (did you mean 'ask'?)")
        result = await client.call_tool("slow_sum", {"numbers": [1, 2]})
        assert (result.is_error, _text(result)) == (False, "3")


def _clients(transport: str, db: str, tmp: Path
                     ) -> AbstractAsyncContextManager[tuple[Client, Client]]:
    """A client with the Tasks extension and one without, of one server."""

    @asynccontextmanager
    async def both() -> AsyncIterator[tuple[Client, Client]]:
        if transport == "stdio":
            async with _stdio(db) as client, _stdio(db, tasks=False) as plain:
                yield client, plain
            return
        async with _served(db, tmp) as url:
            async with Client(url, extensions=[TasksClientExtension()]) as client, \
                    Client(url) as plain:
                yield client, plain

    return both()


def _text(result: Any) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text
