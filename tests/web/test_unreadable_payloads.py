"""A payload ``tether serve`` cannot decrypt (encrypted with a key it does not have, or
while it has no payload hook at all) is a marker in the HTTP API's documents,
``{"unreadable_payload": true, "key_id": "k1"}``, not its ciphertext (as the MCP face
answers ``{unreadablePayload, keyId}``)."""

from __future__ import annotations

import asyncio
import json
from html.parser import HTMLParser
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


NOTE = "encrypted — key k1 is not loaded on this server"


class _Notes(HTMLParser):
    """The text of each note (``class="sealed"``) a page shows for a payload it cannot
    decrypt."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.notes: list[str] = []
        self._depth = 0  # inside a note: how many of its elements are open
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._depth:
            self._depth += 1
        elif "sealed" in (dict(attrs).get("class") or "").split():
            self._depth = 1
            self.notes.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.notes[-1] += data


def _sealed_notes(page: str) -> list[str]:
    return _Notes(page).notes


async def test_the_run_page_shows_a_note_for_each_payload_it_cannot_decrypt(
        sqlite_url: str) -> None:
    """The run page (and its live fragments) showed the API's marker as JSON in the
    input, result, live status, a step's arguments, result and error, and a signal's
    payload; only the failure line had words. Each is now the same note, naming the key
    (one per journal entry, however many of its payloads are sealed)."""
    writer = keyed_app(sqlite_url)

    @writer.workflow
    async def review(name: str) -> str:
        tether.set_status({"reviewing": name})
        said = await tether.wait_for_signal("go")
        await tether.wait_for_signal("more")
        return f"{name}: {said}"

    async with writer, writer.worker(poll_interval=0.05):
        await (await writer.start("hello", "ada", run_id="ok")).result(30)
        with pytest.raises(RunFailed):
            await (await writer.start("fails", "bob", run_id="bad")).result(30)
        await writer.start(review, "cy", run_id="wait")
        await writer.signal("wait", "go", {"by": "ana"})
        for _ in range(600):
            info = await writer.get_run("wait")
            if info.waiting_for and "more" in info.waiting_for:
                break
            await asyncio.sleep(0.05)
        assert info.waiting_for and "more" in info.waiting_for, info
    server = App(sqlite_url)
    async with server:
        pages = {path: await _get(server, path) for path in (
            "/runs/ok", "/runs/bad", "/runs/wait", "/ui/runs/wait?part=head",
            "/ui/runs/wait?part=body", "/runs")}
    for path, (status, page) in pages.items():
        assert status == 200, (path, page)
        assert "unreadable_payload" not in page and "tgcm" not in page, (path, page)
    notes = {path: _sealed_notes(page) for path, (_, page) in pages.items()}
    assert {note for found in notes.values() for note in found} == {NOTE}, notes
    # A page's notes: its result or failure or live status, a line for each journal
    # entry (naming its payloads: "arguments · result: <note>"), its input.
    assert len(notes["/runs/ok"]) == 3, pages["/runs/ok"][1]
    assert len(notes["/runs/bad"]) == 3, pages["/runs/bad"][1]
    assert len(notes["/runs/wait"]) == 3, pages["/runs/wait"][1]
    assert "arguments · result: <span class=\"sealed inline\"" in pages["/runs/ok"][1]
    assert "arguments · error: <span class=\"sealed inline\"" in pages["/runs/bad"][1]
    assert "result: <span class=\"sealed inline\"" in pages["/runs/wait"][1]  # the signal
    assert "<details>" not in pages["/runs/ok"][1]  # nothing readable to expand
    assert notes["/ui/runs/wait?part=head"] + notes["/ui/runs/wait?part=body"] == notes[
        "/runs/wait"]
    assert notes["/runs"] == []  # the list shows no payloads


async def test_the_run_page_shows_payloads_it_can_read(sqlite_url: str) -> None:
    writer = keyed_app(sqlite_url)
    async with writer, writer.worker(poll_interval=0.05):
        await (await writer.start("hello", "ada", run_id="ok")).result(30)
        status, page = await _get(writer, "/runs/ok")
    assert status == 200 and _sealed_notes(page) == [] and "hello ada" in page, page
