"""`tether serve`'s app serves MCP at /mcp behind the same tokens as its API."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import uvicorn
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from tests.mcp_server import apps
from tests.mcp_server.host import cancel_task, get_task, poll, update_task
from tether.mcp_tasks import CreateTaskResult, TasksClientExtension
from tether.serve import Tokens, create_app

ADMIN = "admin-token-0123456789"
READ = "read-token-0123456789"


@asynccontextmanager
async def serving(store_url: str, tokens: Tokens | None = None, **options: Any
                  ) -> AsyncIterator[str]:
    """``create_app`` (``options`` go to it) serving the test app, its worker beside."""
    app = apps.build(store_url)
    asgi = create_app(app, tokens=tokens or Tokens({ADMIN: "admin", READ: "read"}),
                      **options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        runner = apps.build(store_url)
        async with runner, runner.worker():
            yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def client(url: str, token: str | None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers) as http, Client(
            streamable_http_client(url, http_client=http),
            extensions=[TasksClientExtension()]) as connected:
        yield connected


async def test_mcp_needs_a_token(store_url: str) -> None:
    async with serving(store_url) as url:
        async with httpx2.AsyncClient() as http:
            denied = await http.post(url, json={"jsonrpc": "2.0", "id": 1,
                                                "method": "tools/list", "params": {}})
        assert denied.status_code == 401
        async with client(url, ADMIN) as admin:
            created = await admin.session.call_tool("slow_sum", {"numbers": [7, 8]},
                                                    allow_claimed=True)
            assert isinstance(created, CreateTaskResult)
            done = await poll(admin, created.task_id, {"completed", "failed"})
    assert done.result is not None
    assert done.result["content"][0]["text"] == "15"


async def test_a_read_token_may_look_not_change(store_url: str) -> None:
    """A ``read`` token (docs/serve.md: "may only look") lists tools and reads tasks,
    and is refused what changes runs: tools/call, tasks/update, tasks/cancel."""
    async with serving(store_url) as url:
        async with client(url, ADMIN) as admin:
            created = await admin.session.call_tool("ask", {"question": "Name?"},
                                                    allow_claimed=True)
            assert isinstance(created, CreateTaskResult)
            waiting = await poll(admin, created.task_id, {"input_required"})
        assert waiting.input_requests is not None
        [key] = waiting.input_requests
        async with client(url, READ) as reader:
            assert "ask" in {t.name for t in (await reader.list_tools()).tools}
            assert (await get_task(reader, created.task_id)).status == "input_required"
            with pytest.raises(MCPError, match="may read, not change"):
                await reader.session.call_tool("slow_sum", {"numbers": [1]},
                                               allow_claimed=True)
            with pytest.raises(MCPError, match="may read, not change"):
                await update_task(reader, created.task_id,
                                  {key: {"action": "accept", "content": {"text": "x"}}})
            with pytest.raises(MCPError, match="may read, not change"):
                await cancel_task(reader, created.task_id)
        async with client(url, ADMIN) as admin:
            task = await get_task(admin, created.task_id)
            assert task.status == "input_required"
            assert task.input_requests is not None and list(task.input_requests) == [key]
            await cancel_task(admin, created.task_id)
            assert (await poll(admin, created.task_id, {"cancelled"})).status == "cancelled"


async def test_mcp_answers_at_its_path_without_a_redirect(store_url: str) -> None:
    """``/mcp`` itself is the endpoint (docs/serve.md), not a redirect to ``/mcp/``: a
    307 built from the request's ``Host`` sent the SDK client off its origin behind a
    reverse proxy that forwards its own upstream name (nginx's default), and the SDK
    refuses such a redirect, so no MCP call could be made through the proxy."""
    tools_list = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Authorization": f"Bearer {READ}",
               "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-06-18"}
    async with serving(store_url) as url:
        async with httpx2.AsyncClient(headers=headers) as http:
            for path in (url, url + "/"):
                answer = await http.post(path, json=tools_list, follow_redirects=False)
                assert answer.status_code == 200, (path, answer.status_code,
                                                   answer.headers.get("location"))
                assert '"slow_sum"' in answer.text
        proxied = {"Authorization": f"Bearer {READ}", "Host": "tether.internal:8233"}
        async with httpx2.AsyncClient(headers=proxied) as http, Client(
                streamable_http_client(url, http_client=http),
                extensions=[TasksClientExtension()]) as reader:
            assert "slow_sum" in {t.name for t in (await reader.list_tools()).tools}


async def test_mcp_refuses_another_origin_with_a_token_too(store_url: str) -> None:
    """The MCP specification's rule ("if the Origin header is present and invalid,
    servers MUST respond with HTTP 403 Forbidden"), as docs/mcp-server.md promises it,
    holds on a server with tokens too: a request naming another origin was served when
    it carried a valid token. It is refused whatever its token and method; a client
    that names no ``Origin`` (the SDK's), or this server's, is served."""
    tools_list = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    accept = {"Accept": "application/json, text/event-stream",
              "MCP-Protocol-Version": "2025-06-18"}
    async with serving(store_url) as url:
        for token in (ADMIN, READ):
            auth = {**accept, "Authorization": f"Bearer {token}"}
            async with httpx2.AsyncClient(headers=auth) as http:
                for origin in ("http://evil.example", "null"):
                    post = await http.post(url, json=tools_list, headers={"Origin": origin})
                    assert post.status_code == 403, (token, origin)
                    assert "another origin" in post.text, post.text
                    get = await http.get(url, headers={"Origin": origin})
                    assert get.status_code == 403, (token, origin)
                own = url.rsplit("/", 1)[0]
                answer = await http.post(url, json=tools_list, headers={"Origin": own})
                assert answer.status_code == 200 and '"slow_sum"' in answer.text
        async with client(url, ADMIN) as admin:
            assert "slow_sum" in {t.name for t in (await admin.list_tools()).tools}


async def test_mcp_refuses_another_origin(store_url: str) -> None:
    """The MCP specification: Streamable HTTP servers must validate ``Origin`` and
    answer 403 to one that is not theirs (DNS rebinding, a page of another site). On a
    loopback server without tokens a script of another origin was served every GET
    (the stream); now every method is refused, and a client without ``Origin``, or
    with this server's, is served. The refusal says why (another origin): it said
    "send it ... with an Authorization header", which /mcp refuses too."""
    tools_list = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    accept = {"Accept": "application/json, text/event-stream",
              "MCP-Protocol-Version": "2025-06-18"}
    async with serving(store_url, Tokens()) as url:
        async with httpx2.AsyncClient(headers=accept) as http:
            for origin in ("http://evil.example", "null"):
                headers = {"Origin": origin}
                post = await http.post(url, json=tools_list, headers=headers)
                assert post.status_code == 403, origin
                assert "another origin" in post.text, post.text
                assert "Authorization" not in post.text, post.text
                get = await http.get(url, headers=headers)
                assert get.status_code == 403, origin
                assert "another origin" in get.text, get.text
            own = url.rsplit("/", 1)[0]
            answer = await http.post(url, json=tools_list, headers={"Origin": own})
            assert answer.status_code == 200 and '"slow_sum"' in answer.text
        async with client(url, None) as local:
            assert "slow_sum" in {t.name for t in (await local.list_tools()).tools}
