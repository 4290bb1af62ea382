"""``tether serve``'s MCP face (Streamable HTTP) when a token is removed from the token
file while a request made with it is still being answered: the answer ends with a
JSON-RPC error saying so. A ``subscriptions/listen`` stream of task notifications went
on sending the task's changes (its end included), and a synchronous ``tools/call``
waiting for its run its progress and then its result, for as long as they lasted; a
GET stream (the 2025 protocols') stayed open."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from tests.web.helpers import start_serve
from tether.serve.mcp._http import TOKEN_REMOVED

ADMIN = "admin-token-0123456789"
CALLER = "caller-token-0123456789"
READ = "read-token-0123456789"
MODERN = "2026-07-28"


def _request(rid: int, method: str, params: dict[str, Any], token: str, *,
             tasks: bool = True) -> dict[str, Any]:
    """The arguments of a 2026-07-28 request (``httpx``'s ``stream``/``post``)."""
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": (
                {"extensions": {"io.modelcontextprotocol/tasks": {}}} if tasks else {})}
    headers = {"accept": "application/json, text/event-stream",
               "content-type": "application/json", "mcp-protocol-version": MODERN,
               "mcp-method": method, "authorization": f"Bearer {token}"}
    if method == "tools/call":
        headers["mcp-name"] = params["name"]
    body = {"jsonrpc": "2.0", "id": rid, "method": method,
            "params": {**params, "_meta": {**meta, **params.get("_meta", {})}}}
    return {"content": json.dumps(body), "headers": headers}


def _message(line: str) -> dict[str, Any] | None:
    if not line.startswith("data:"):
        return None
    message: dict[str, Any] = json.loads(line[5:])
    return message


async def test_answers_being_sent_end_once_their_token_is_removed(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    served = start_serve(db, tmp_path, app="tests.mcp_server.apps:app",
                         tokens=f"admin:{ADMIN}\nadmin:{CALLER}\nread:{READ}\n")
    token_file = next(tmp_path.glob("tokens-*.txt"))
    url = served.url + "/mcp"
    listened: list[dict[str, Any]] = []
    called: list[dict[str, Any]] = []
    try:
        # No worker: the runs stay queued until cancelled below.
        async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=120)) as http:
            created = await http.post(url, **_request(
                1, "tools/call", {"name": "slow_sum", "arguments": {"numbers": [1]}},
                ADMIN))
            task_id = created.json()["result"]["taskId"]

            async def follow(request: dict[str, Any], into: list[dict[str, Any]],
                             first: asyncio.Event) -> None:
                async with http.stream("POST", url, **request) as answer:
                    assert answer.status_code == 200, await answer.aread()
                    async for line in answer.aiter_lines():
                        message = _message(line)
                        if message is not None:
                            into.append(message)
                            if message.get("method") in ("notifications/tasks",
                                                         "notifications/progress"):
                                first.set()

            getting = asyncio.ensure_future(http.get(url, headers={
                "authorization": f"Bearer {READ}", "accept": "text/event-stream",
                "mcp-protocol-version": "2025-11-25"}))
            heard, progressed = asyncio.Event(), asyncio.Event()
            listening = asyncio.ensure_future(follow(_request(
                2, "subscriptions/listen", {"notifications": {"taskIds": [task_id]}},
                READ), listened, heard))
            calling = asyncio.ensure_future(follow(_request(
                3, "tools/call", {"name": "slow_sum", "arguments": {"numbers": [2]},
                                  "_meta": {"progressToken": "p"}}, CALLER, tasks=False),
                called, progressed))
            await asyncio.wait_for(heard.wait(), 60)
            await asyncio.wait_for(progressed.wait(), 60)
            progress = next(m for m in called if m.get("method") == "notifications/progress")
            call_run = progress["params"]["message"].split()[1].rstrip(":")

            token_file.write_text(f"admin:{ADMIN}\n")  # READ and CALLER removed
            for token in (READ, CALLER):
                for _ in range(600):
                    refused = await http.get(served.url + "/api/v1/runs", headers={
                        "Authorization": f"Bearer {token}"})
                    if refused.status_code == 401:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the removed token still works")
            for run_id in (task_id, call_run):
                cancelled = await http.post(f"{served.url}/api/v1/runs/{run_id}/cancel",
                                            headers={"Authorization": f"Bearer {ADMIN}"})
                assert cancelled.status_code == 202, cancelled.text
            await asyncio.wait_for(asyncio.gather(listening, calling), 90)
            got = await asyncio.wait_for(getting, 90)
    finally:
        served.stop()
    said = json.dumps([listened, called])
    assert "cancelled" not in said, said  # neither the task's end nor the call's result
    for messages, rid in ((listened, 2), (called, 3)):
        assert messages[-1] == {"jsonrpc": "2.0", "id": rid, "error": {
            "code": -32600, "message": TOKEN_REMOVED,
            "data": {"httpStatus": 401, "error": "unauthorized"}}}, messages
        assert all("result" not in m for m in messages), messages
    assert got.status_code == 200, got.text  # (an event stream, begun)
    streamed = [m for m in map(_message, got.text.splitlines()) if m is not None]
    assert streamed == [{"jsonrpc": "2.0", "id": None, "error": {
        "code": -32600, "message": TOKEN_REMOVED,
        "data": {"httpStatus": 401, "error": "unauthorized"}}}], got.text
    log = served.log.read_text()
    assert "MCP request ended: the token it was made with no longer counts" in log, log


async def test_the_face_served_bare_answers(tmp_path: Path) -> None:
    """``create_mcp_http(app).asgi`` served by an ASGI server itself (no Starlette app
    around it: no ``app`` in the request's scope, no tokens) answers as before the check
    of the request's token was put in front of it."""
    from tests.mcp_server import apps
    from tether.serve.mcp import create_mcp_http

    app = apps.build(f"sqlite:///{tmp_path / 'tether.db'}")
    face = create_mcp_http(app)
    async with app, face.lifespan(), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=face.asgi),
            base_url="http://127.0.0.1") as http:
        request = _request(1, "tools/list", {}, "none")
        answer = await http.post("/mcp", **request)
    assert answer.status_code == 200, answer.text
    assert "slow_sum" in {t["name"] for t in answer.json()["result"]["tools"]}
