"""MCP beyond tools, against a real MCP server over stdio (the SDK's ``MCPServer`` in
``mcp_servers/library_server.py``): resources and prompts read as journaled operations
and given to an agent as context, progress notifications of a tool call shown as the
run's live status."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import tether
from tests import CHECKOUT_PATH, forked
from tests.ai.test_mcp import stop_process
from tests.engine.helpers import wait_for
from tether import App, RunFailed, WorkflowNotFound
from tether.ai import LLM, Agent
from tether.ai.mcp import MCPPrompt, MCPResource, MCPServer, MCPToolset
from tether.errors import ConfigError
from tether.testing import export_history, replay
from tether.testing.llm_server import Reply, ScriptedLLMServer

LIBRARY = Path(__file__).parent / "mcp_servers" / "library_server.py"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as s:
        yield s


@pytest.fixture
async def llm(server: ScriptedLLMServer) -> AsyncIterator[LLM]:
    async with LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None) as client:
        yield client


def library(tmp_path: Path, **env: str) -> MCPServer:
    return MCPServer.stdio(*forked.stdio_command(LIBRARY, "stdio"),
                           env={"LIBRARY_LOG": str(tmp_path / "library.jsonl"), **env},
                           id="library", timeout=20)


def log_of(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "library.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


async def test_resources_and_prompts_are_durable_operations(sqlite_url: str,
                                                            tmp_path: Path) -> None:
    """In a workflow each read is one journaled step with a typed result; a replay of
    the recorded history asks the server nothing."""
    mcp = library(tmp_path)
    app = App(sqlite_url)
    toolset = MCPToolset(app, mcp)

    @app.workflow
    async def read_both() -> dict[str, Any]:
        res = await toolset.read_resource("library://books/978")
        prompt = await toolset.get_prompt("review", {"topic": "Dune", "tone": "dry"})
        assert isinstance(res, MCPResource) and isinstance(prompt, MCPPrompt)
        return {"text": res.text, "mime": res.contents[0]["mimeType"],
                "messages": prompt.messages, "description": prompt.description}

    async with app, app.worker():
        out = await (await app.start(read_both, run_id="m1")).result(timeout=30)
        info = await app.get_run("m1")
        history = await export_history(app, "m1")
    await mcp.aclose()
    assert json.loads(out["text"]) == {"isbn": "978", "title": "Book 978"}
    assert out["mime"] == "application/json"
    assert out["messages"] == [
        {"role": "user", "content": "Review Dune in a dry tone."},
        {"role": "assistant", "content": "Understood: I will be brief and cite pages."}]
    assert out["description"] == "Review something in a given tone."
    assert [e["name"] for e in info.journal] == ["mcp:library.read_resource",
                                                 "mcp:library.get_prompt"]
    before = len(log_of(tmp_path))
    [result] = await replay(app, history)
    assert result.compatible and result.replayed == 2
    assert len(log_of(tmp_path)) == before


async def test_an_unknown_resource_fails_at_once_with_the_servers_reason(
        sqlite_url: str, tmp_path: Path) -> None:
    mcp = library(tmp_path)
    app = App(sqlite_url)
    toolset = MCPToolset(app, mcp)

    @app.workflow
    async def read_missing() -> str:
        return (await toolset.read_resource("library://nope")).text

    async with app, app.worker():
        handle = await app.start(read_missing, run_id="m2")
        with pytest.raises(RunFailed) as caught:
            await handle.result(timeout=30)
        info = await app.get_run("m2")
    await mcp.aclose()
    assert "library://nope" in str(caught.value) or "nope" in json.dumps(info.journal)
    assert info.journal[0]["attempts"] == 1  # refused, not retried


async def test_agent_context_and_tool_progress_as_live_status(
        sqlite_url: str, tmp_path: Path, server: ScriptedLLMServer, llm: LLM) -> None:
    """The agent's first request carries the resource as a system message and the
    prompt's messages before the task; while ``index`` runs, its progress notifications
    are the run's live status."""
    gate = tmp_path / "gate"
    mcp = library(tmp_path, PROGRESS_GATE=str(gate))
    app = App(sqlite_url)
    toolset = MCPToolset(app, mcp, include=["index"])
    app.add_agent(Agent("librarian", model=llm, instructions="Help readers.",
                        tools=[toolset],
                        context=[toolset.resource("library://policy"),
                                 toolset.prompt("review", {"topic": "the policy"})]))
    server.set_script([Reply(tool_calls=[{"name": "index", "arguments": {"n": 3}}]),
                       Reply("Indexed; loans last 21 days.")])
    async with app, app.worker():
        handle = await app.start("librarian", "Index the shelves.", run_id="m3")
        status: Any = None
        async with asyncio.timeout(30):
            while not (isinstance(status, dict) and status.get("progress") == 2.0):
                status = (await app.get_run("m3")).status_info
                await asyncio.sleep(0.05)
        gate.touch()
        assert await handle.result(timeout=30) == "Indexed; loans last 21 days."
    await mcp.aclose()
    assert status == {"state": "tool progress", "server": "library", "tool": "index",
                      "progress": 2.0, "total": 3.0, "message": "shelf 2 of 3"}
    first = server.requests[0].body["messages"]
    assert first == [
        {"role": "system", "content": "Help readers."},
        {"role": "system", "content": "Resource library://policy:\nBooks are lent for 21 "
                                      "days. Rare books stay in the reading room."},
        {"role": "user", "content": "Review the policy in a plain tone."},
        {"role": "assistant", "content": "Understood: I will be brief and cite pages."},
        {"role": "user", "content": "Index the shelves."}]


async def test_context_must_be_mcp_resources_or_prompts_of_the_app(llm: LLM) -> None:
    app = App("sqlite:///:memory:")
    with pytest.raises(ConfigError, match="context takes MCP resources"):
        app.add_agent(Agent("bad", model=llm, context=["just a string"]))  # type: ignore[list-item]


async def test_elicitation_during_a_tool_call_is_a_durable_wait(sqlite_url: str,
                                                               tmp_path: Path) -> None:
    """The server asks for input during ``buy`` (an ``input_required`` result): the run
    waits released, its live status shows the server's message and schema, the answer
    (the signal ``mcp_input``) goes back to the server, and a later replay of the run
    (after a release) sends nothing to the server again."""
    mcp = library(tmp_path)
    app = App(sqlite_url)
    toolset = MCPToolset(app, mcp, include=["buy"])

    @app.workflow
    async def purchase(title: str) -> str:
        result = await toolset.call("buy", {"title": title})
        await tether.wait_for_signal("go")  # released: the call above is replayed after
        return result.text

    async with app, app.worker():
        handle = await app.start(purchase, "Dune", run_id="e1")
        async with asyncio.timeout(30):
            while (info := await app.get_run("e1")).status != "waiting":
                await asyncio.sleep(0.05)
        asked = info.status_info["input"]
        sent_before = len(log_of(tmp_path))
        await app.signal("e1", "mcp_input", {"confirm": True, "quantity": 2})
        async with asyncio.timeout(30):
            while (info := await app.get_run("e1")).waiting_for != "signal go":
                await asyncio.sleep(0.05)
        calls_before_replay = len(log_of(tmp_path))
        await app.signal("e1", "go")
        assert await handle.result(timeout=30) == "bought 2 x 'Dune'"
        info = await app.get_run("e1")
        history = await export_history(app, "e1")
    await mcp.aclose()
    assert info.status == "completed"
    assert asked["message"] == "Buy 'Dune' for $12?" and asked["signal"] == "mcp_input"
    assert asked["request"]["params"]["requestedSchema"]["properties"]["confirm"]["type"] \
        == "boolean"
    assert sent_before == 0  # the tool's body waits for the answer: it has not run
    bought = [e for e in log_of(tmp_path) if e.get("name") == "buy"]
    assert len(bought) == 1 and bought[0]["action"] == "accept"
    assert len(log_of(tmp_path)) == calls_before_replay  # the replay asked nothing
    assert [e["name"] for e in info.journal] == [
        "mcp:library.call_tool", "mcp_input", "mcp:library.resume_tool", "go"]
    [result] = await replay(app, history)
    assert result.compatible, result.message


@pytest.mark.slow
async def test_sigkill_after_an_answered_elicitation_repeats_nothing(tmp_path: Path) -> None:
    """A real worker: the server asks, the answer comes, the call completes; the worker
    is SIGKILLed in the next step. The new worker replays the recorded rounds and the
    answer: the server's tool body ran once, and no call reaches it again."""
    db = f"sqlite:///{tmp_path}/e.db"
    hold, hold_log = tmp_path / "hold", tmp_path / "hold.log"
    env = {**os.environ, "PYTHONPATH": CHECKOUT_PATH,
           "LIBRARY_LOG": str(tmp_path / "library.jsonl"),
           "HOLD": str(hold), "HOLD_LOG": str(hold_log)}
    env.pop("TETHER_DATABASE_URL", None)
    procs: list[subprocess.Popen[bytes]] = []

    def worker() -> subprocess.Popen[bytes]:
        proc = forked.Popen([sys.executable, "-m", "tether", "worker",
                                 "tests.ai.elicit_worker_app:app", "--db", db, "--lease", "2"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    first = worker()
    try:
        async with App(db) as app:
            async def started() -> bool:
                try:
                    await app.start("purchase", "Dune", run_id="k1")
                except WorkflowNotFound:
                    return False
                return True

            await wait_for(started, timeout=30, what="the worker registers the workflow")
            async with asyncio.timeout(30):
                while (await app.get_run("k1")).status != "waiting":
                    await asyncio.sleep(0.05)
            await app.signal("k1", "mcp_input", {"confirm": True, "quantity": 4})
            await wait_for(lambda: _has_line(hold_log), timeout=30, what="hold starts")
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            served_before = len(log_of(tmp_path))
            hold.touch()
            worker()
            answer = await app.handle("k1").result(timeout=60)
            info = await app.get_run("k1")
    finally:
        for proc in procs:
            stop_process(proc)
    assert answer == "bought 4 x 'Dune'; held"
    bought = [e for e in log_of(tmp_path) if e.get("name") == "buy"]
    assert len(bought) == 1
    assert len(log_of(tmp_path)) == served_before  # the new worker asked the server nothing
    assert [e["name"] for e in info.journal] == [
        "mcp:library.call_tool", "mcp_input", "mcp:library.resume_tool", "hold"]
    assert len(hold_log.read_text().split()) == 2  # hold was cut by the kill: it ran again


async def _has_line(path: Path) -> bool:
    # Not mere existence: open() creates the file before the line is written, and a
    # kill in between would lose the first worker's line.
    return path.exists() and path.read_text().endswith("\n")


async def test_an_elicitation_asking_for_approval_waits_in_the_approvals_inbox(
        sqlite_url: str, tmp_path: Path) -> None:
    """A requested schema with a boolean ``approved`` makes the wait an approval: it is
    listed by ``pending_approvals`` (``tether approvals``, the inbox) with the server's
    message, and approving it sends the answer, with the note, back to the server."""
    from tether.ai import approve, pending_approvals

    mcp = library(tmp_path)
    app = App(sqlite_url)
    toolset = MCPToolset(app, mcp, include=["withdraw"])

    @app.workflow
    async def withdraw(title: str) -> str:
        return (await toolset.call("withdraw", {"title": title})).text

    async with app, app.worker():
        handle = await app.start(withdraw, "Dune", run_id="e2")
        async with asyncio.timeout(30):
            while not (waiting := await pending_approvals(app)):
                await asyncio.sleep(0.05)
        await approve(app, "e2", note="out of print")
        assert await handle.result(timeout=30) == "withdrew 'Dune' (out of print)"
    await mcp.aclose()
    [pending] = waiting
    assert pending.run_id == "e2" and pending.tool == "library:withdraw"
    assert pending.reason == "Withdraw 'Dune' from the catalogue?"
