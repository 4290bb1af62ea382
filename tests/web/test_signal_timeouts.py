"""A signal wait whose timeout passed is an expected answer ("nothing came"), not a
failed operation: an interruptible agent's "is an interrupt waiting?" check
(``wait_for_signal("interrupt", timeout=0)``, once or twice a turn) and a workflow's
own ``wait_for_signal(..., timeout=...)`` that times out.

Its journal entry keeps its stored status ``error`` (replay raises ``SignalTimeout``
from it); the faces show it as ``timed out``: the run's document gives it
``outcome: timed_out`` and leaves it out of ``failed_operations``, the run page draws a
neutral row and its head's *failed* count leaves it out, ``tether show`` (a pipe's
lines and a terminal's) prints ``timed out`` and the message. Until 2026-12-06 every
healthy turn of an interruptible agent drew a red ``error`` row (``SignalTimeout: no
signal 'interrupt' arrived within 0.0 s``) and the head counted it failed."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import tether
from tests.web.helpers import ADMIN, READ
from tests.web.test_ui_and_cli import login
from tether import App
from tether.ai import LLM, Agent, function_tool
from tether.testing.llm_server import Reply, ScriptedLLMServer


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as s:
        yield s


@pytest.fixture
async def llm(server: ScriptedLLMServer) -> AsyncIterator[LLM]:
    async with LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None) as client:
        yield client


@function_tool
async def quick(q: str) -> str:
    """Quick lookup."""
    return f"quick {q}"


def _client(app: App) -> httpx.AsyncClient:
    from tether.serve import Tokens, create_app

    asgi = create_app(app, tokens=Tokens({ADMIN: "admin", READ: "read"}), mcp=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                             base_url="http://127.0.0.1")


async def _faces(app: App, run_id: str) -> tuple[dict[str, Any], str, str, list[str]]:
    """The run's document (the API's), its page, its head (as the live redraw fetches
    it) and ``tether show``'s two outputs (a pipe's lines, an 80-column terminal's)."""
    from tether.cli._runs import print_timeline
    from tether.cli._show_fit import print_fitted

    async with _client(app) as http:
        r = await http.get(f"/api/v1/runs/{run_id}",
                           headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 200, r.text
        journal = await http.get(f"/api/v1/runs/{run_id}/journal",
                                 headers={"Authorization": f"Bearer {ADMIN}"})
        assert journal.json()["journal"] == r.json()["journal"]  # (its outcomes too)
        await login(http, ADMIN)
        page = (await http.get(f"/runs/{run_id}")).text
        head = (await http.get(f"/ui/runs/{run_id}?part=head")).text
    info = await app.get_run(run_id)
    wide, fitted = io.StringIO(), io.StringIO()
    print_timeline(info, wide)
    print_fitted(info, 80, fitted.write)
    return r.json(), page, head, [wide.getvalue(), fitted.getvalue()]


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr class="op .*?</tr>', page, re.S)


def _journal_lines(text: str) -> list[str]:
    """The journal table's lines of ``tether show``'s output (up to the attempts)."""
    body = text.split("\nattempts:", 1)[0].split("\nmetrics:", 1)[0]
    return [ln for ln in body.splitlines() if re.match(r" *\d+  \S", ln)]


async def test_an_interruptible_agents_healthy_turns_show_no_failure(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    server.set_script([
        Reply(tool_calls=[{"name": "quick", "arguments": {"q": "a"}, "id": "c1"}]),
        Reply("Done.")])
    app = App(sqlite_url)
    app.add_agent(Agent("helper", model=llm, tools=[quick], interruptible=True))
    async with app, app.worker():
        handle = await app.start("helper", "Look it up.", run_id="t/1")
        assert await handle.result(timeout=30) == "Done."
        doc, page, head, shows = await _faces(app, "t/1")
    checks = [e for e in doc["journal"] if e["kind"] == "signal"]
    assert len(checks) >= 2, doc["journal"]  # (at least one check a turn, two turns)
    # Stored as before (replay reads it) ...
    assert {e["status"] for e in checks} == {"error"}
    assert all("SignalTimeout" in e["error"]["type"] for e in checks)
    # ... shown as what it is.
    assert {e["outcome"] for e in checks} == {"timed_out"}
    assert {e["outcome"] for e in doc["journal"] if e["kind"] != "signal"} == {"ok"}
    assert doc["failed_operations"] == 0
    rows = _rows(page)
    assert not [r for r in rows if "st-error" in r or 'class="err"' in r], rows
    timed = [r for r in rows if "st-timed_out" in r]
    assert len(timed) == len(checks)
    for row in timed:
        assert '<span class="pill o-timed_out">timed out</span>' in row
        assert "no signal &#39;interrupt&#39; arrived within 0.0 s" in row
        assert " wait" not in row.split(">", 1)[0]  # a check waited no time: no wait band
    assert "0 failed · " in head
    for text in shows:
        lines = _journal_lines(text)
        assert len(lines) == len(doc["journal"]), text
        assert not [ln for ln in lines if " error " in ln], text
        assert len([ln for ln in lines if " timed out " in ln]) == len(checks), text
        assert "SignalTimeout" not in text
        assert "no signal 'interrupt' arrived within 0.0 s" in text


async def test_an_interrupt_counts_only_the_cut_call_as_failed(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    server.set_script([
        Reply(tool_calls=[{"name": "quick", "arguments": {"q": "a"}, "id": "c1"},
                          {"name": "slow", "arguments": {"q": "b"}, "id": "c2"}]),
        Reply("Done with the cache.")])
    started = asyncio.Event()

    @function_tool
    async def slow(q: str) -> str:
        """Slow lookup."""
        started.set()
        await asyncio.sleep(3600)
        return "never"

    app = App(sqlite_url)
    agent = app.add_agent(Agent("analyst", model=llm, tools=[quick, slow],
                                interruptible=True))
    async with app, app.worker():
        handle = await app.start("analyst", "Look it up.", run_id="t-2")
        await asyncio.wait_for(started.wait(), 20)
        await agent.interrupt(app, "t-2", "use the cache")
        assert await handle.result(timeout=30) == "Done with the cache."
        doc, page, head, shows = await _faces(app, "t-2")
    failed = [e for e in doc["journal"] if e["outcome"] == "error"]
    assert [e["name"] for e in failed] == ["analyst.tool:slow"]
    assert doc["failed_operations"] == 1
    signals = [e for e in doc["journal"] if e["kind"] == "signal"]
    assert {e["outcome"] for e in signals} == {"ok", "timed_out"}  # the take, the checks
    rows = _rows(page)
    assert len([r for r in rows if "st-error" in r]) == 1
    assert "1 failed · " in head
    for text in shows:
        errors = [ln for ln in _journal_lines(text) if " error " in ln]
        assert len(errors) == 1 and "analyst.tool:slow" in errors[0], text


async def test_a_workflows_own_signal_timeout_is_not_a_failure(sqlite_url: str) -> None:
    app = App(sqlite_url)

    @app.workflow
    async def ask(name: str) -> str:
        try:
            return str(await tether.wait_for_signal("answer", timeout=0.05))
        except tether.SignalTimeout:
            return "no answer"

    async with app, app.worker():
        handle = await app.start("ask", "x", run_id="t-3")
        assert await handle.result(timeout=30) == "no answer"
        doc, page, head, shows = await _faces(app, "t-3")
    [entry] = doc["journal"]
    assert (entry["status"], entry["outcome"]) == ("error", "timed_out")
    assert doc["failed_operations"] == 0
    assert "0 failed · " in head and "st-error" not in page
    assert "no signal &#39;answer&#39; arrived within 0.05 s" in page
    assert [" wait" in r for r in _rows(page) if "k-signal" in r] == [True]  # it waited
    # its details name the timeout as such, not as an error
    assert "<summary>arguments · timeout</summary>" in page, page
    assert '<div class="label">timeout</div>' in page
    assert '<div class="label">error</div>' not in page
    for text in shows:
        [line] = _journal_lines(text)
        assert " timed out " in line and "no signal 'answer' arrived within 0" in line


async def test_the_openapi_document_names_the_outcomes(sqlite_url: str) -> None:
    app = App(sqlite_url)
    async with app, _client(app) as http:
        r = await http.get("/openapi.json", headers={"Authorization": f"Bearer {ADMIN}"})
        spec = r.json()["components"]["schemas"]["Run"]
    schemas = r.json()["components"]["schemas"]
    assert spec["properties"]["journal"]["items"] == {
        "$ref": "#/components/schemas/JournalEntry"}
    entry = schemas["JournalEntry"]["properties"]
    assert entry["outcome"]["enum"] == ["ok", "error", "pending", "timed_out"]
    assert entry["status"]["enum"] == ["ok", "error", "pending"]
    assert spec["properties"]["failed_operations"]["type"] == "integer"
