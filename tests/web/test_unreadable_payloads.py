"""A payload ``tether serve`` cannot decrypt (encrypted with a key it does not have, or
while it has no payload hook at all) is a marker in the HTTP API's documents,
``{"unreadable_payload": true, "key_id": "k1"}``, not its ciphertext (as the MCP face
answers ``{unreadablePayload, keyId}``)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

import tether
from tether import App, RetryPolicy, RunFailed
from tether.encryption import AesGcm
from tether.serve import create_app

pytest.importorskip("cryptography")

KEY = b"k" * 32
MARKER = {"unreadable_payload": True, "key_id": "k1"}


def keyed_app(url: str) -> App:
    app = App(url, payload_hook=AesGcm({"k1": KEY}))

    @app.step
    async def greet(name: str) -> str:
        return f"hello {name}"

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def refuse(name: str) -> None:
        raise ValueError(f"no {name}")

    @app.workflow
    async def hello(name: str) -> str:
        tether.set_status({"greeting": name})
        return await greet(name)

    @app.workflow
    async def fails(name: str) -> None:
        await refuse(name)

    return app


async def _get(app: App, path: str) -> tuple[int, str]:
    transport = httpx.ASGITransport(app=create_app(app, tokens=None, mcp=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        r = await http.get(path)
    return r.status_code, r.text


@pytest.mark.parametrize("reader", ["no hook", "another key"])
async def test_payloads_the_server_cannot_decrypt_are_markers(sqlite_url: str,
                                                              reader: str) -> None:
    writer = keyed_app(sqlite_url)
    async with writer, writer.worker(poll_interval=0.05):
        assert await (await writer.start("hello", "ada", run_id="ok")).result(30) == "hello ada"
        with pytest.raises(RunFailed):
            await (await writer.start("fails", "bob", run_id="bad")).result(30)
    server = App(sqlite_url) if reader == "no hook" else App(
        sqlite_url, payload_hook=AesGcm({"k2": b"2" * 32}))
    async with server:
        bodies = {path: await _get(server, path) for path in (
            "/api/v1/runs/ok", "/api/v1/runs/ok/journal", "/api/v1/runs/ok/events",
            "/api/v1/runs/bad", "/api/v1/runs/bad/journal")}
    for path, (status, body) in bodies.items():
        assert status == 200, (path, body)
        assert "tgcm" not in body, (path, body)  # no ciphertext anywhere
    ok = json.loads(bodies["/api/v1/runs/ok"][1])
    assert ok["status"] == "completed" and ok["input"] == MARKER
    assert ok["result"] == MARKER and ok["status_info"] == MARKER
    journal: list[dict[str, Any]] = json.loads(bodies["/api/v1/runs/ok/journal"][1])["journal"]
    assert journal == ok["journal"]
    assert [(e["kind"], e["name"], e["args"], e["result"]) for e in journal] == [
        ("step", "greet", MARKER, MARKER)]
    assert f"data: {json.dumps({'status_info': MARKER})}" in bodies["/api/v1/runs/ok/events"][1]
    bad = json.loads(bodies["/api/v1/runs/bad"][1])
    assert bad["status"] == "failed" and bad["error"] == MARKER and bad["result"] is None
    assert [e["error"] for e in bad["journal"]] == [MARKER]
    assert [a["error"] for a in bad["attempts"]] == [MARKER]


async def test_the_server_with_the_key_reads_them(sqlite_url: str) -> None:
    writer = keyed_app(sqlite_url)
    async with writer, writer.worker(poll_interval=0.05):
        await (await writer.start("hello", "ada", run_id="ok")).result(30)
        status, body = await _get(writer, "/api/v1/runs/ok")
    doc = json.loads(body)
    assert status == 200 and doc["input"] == ["ada"] and doc["result"] == "hello ada"
    assert doc["status_info"] == {"greeting": "ada"}
    assert [e["result"] for e in doc["journal"]] == ["hello ada"]
