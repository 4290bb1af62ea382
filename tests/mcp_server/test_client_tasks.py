"""Client side: a Tether workflow calls a task-capable MCP server (written for the test).
The remote task is followed on durable timers; its input requests become a Tether
approval or the ``mcp_input`` signal and go back with tasks/update; cancelling the run
cancels the remote task."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.mcp_server import client_apps
from tests.mcp_server.remote import serve_remote
from tether import App, RunFailed
from tether.ai import LLM, Agent, approve, pending_approvals
from tether.ai.mcp import MCPServer, MCPToolset
from tether.testing.llm_server import Reply, ScriptedLLMServer


@pytest.fixture
async def remote_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "remote.log"
    monkeypatch.setenv("REMOTE_LOG", str(path))
    return path


@pytest.fixture
async def client_app(store_url: str, remote_log: Path) -> AsyncIterator[App]:
    async with serve_remote(poll_interval_ms=100) as url:
        app, remote = client_apps.build(store_url, remote_url=url, poll_floor=0.1)
        async with app, app.worker(), remote:
            yield app


def log_lines(path: Path) -> list[list[str]]:
    return [ln.split() for ln in path.read_text().splitlines()] if path.exists() else []


async def wait_until(check: object, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_remote_task_is_followed_to_its_result(client_app: App, remote_log: Path) -> None:
    """The call returns a task; the run polls it and returns the result; one call."""
    handle = await client_app.start("use_remote", "long_job", {"seconds": 0.5})
    assert await handle.result(timeout=30) == {"text": "done after 0.5 s", "is_error": False}
    lines = log_lines(remote_log)
    assert [ln[:2] for ln in lines if ln[0] == "call"] == [["call", "long_job"]]
    task_id = lines[0][2]
    assert any(ln == ["get", task_id] for ln in lines)
    journal = (await client_app.get_run(handle.run_id)).journal
    call = next(e for e in journal if e["name"] == "mcp:remote.call_tool")
    assert call["result"]["task_id"] == task_id


async def test_remote_input_required_becomes_an_approval(client_app: App,
                                                         remote_log: Path) -> None:
    """The remote elicitation asking for ``approved`` is a Tether approval; approving
    it sends tasks/update once and the task completes."""
    handle = await client_app.start("use_remote", "confirm_job", {"what": "deploy"})

    async def pending() -> bool:
        return bool(await pending_approvals(client_app))

    await wait_until(pending)
    [approval] = await pending_approvals(client_app)
    assert approval.run_id == handle.run_id
    assert approval.tool == "remote:confirm_job"
    assert approval.reason == "Confirm deploy?"
    await approve(client_app, handle.run_id, note="go")
    assert await handle.result(timeout=30) == {"text": "confirmed deploy (go)",
                                               "is_error": False}
    updates = [ln for ln in log_lines(remote_log) if ln[0] == "update"]
    assert len(updates) == 1 and updates[0][2] == "confirm"


async def test_remote_input_answered_by_the_mcp_input_signal(client_app: App) -> None:
    """Another input request is a wait for the ``mcp_input`` signal, described in the
    run's status; the signal's payload is the answer's content."""
    handle = await client_app.start("use_remote", "name_job", {})

    async def awaiting() -> bool:
        info = await client_app.get_run(handle.run_id)
        return isinstance(info.status_info, dict) and info.status_info.get(
            "state") == "awaiting_input" and info.waiting_for == "signal mcp_input"

    await wait_until(awaiting)
    info = await client_app.get_run(handle.run_id)
    assert info.status_info["input"]["message"] == "Your name?"
    assert info.status_info["input"]["key"] == "name"
    await client_app.signal(handle.run_id, "mcp_input", {"name": "Ada"})
    assert await handle.result(timeout=30) == {"text": "hello Ada", "is_error": False}


async def test_cancelling_the_run_cancels_the_remote_task(client_app: App,
                                                          remote_log: Path) -> None:
    handle = await client_app.start("use_remote", "long_job", {"seconds": 120})

    async def polled() -> bool:
        return any(ln[0] == "get" for ln in log_lines(remote_log))

    await wait_until(polled)
    await client_app.cancel(handle.run_id)
    with pytest.raises(RunFailed):
        await handle.result(timeout=30)
    lines = log_lines(remote_log)
    task_id = lines[0][2]
    assert ["cancel", task_id] in lines


async def test_parallel_remote_tasks_in_one_agent_turn(store_url: str, remote_log: Path) -> None:
    """Two remote tasks launched in one turn, the second finishing first, with a worker
    that releases the run at every poll (so each poll is a replay): each tool message
    carries its own task's result, and each tool was called once."""
    async with ScriptedLLMServer() as llm_server, serve_remote(poll_interval_ms=100) as url:
        llm_server.set_script([
            Reply(tool_calls=[{"name": "long_job", "arguments": {"seconds": 1.5}},
                              {"name": "long_job", "arguments": {"seconds": 0.2}}]),
            Reply("both done"),
        ])
        async with LLM("openai:gpt-4.1-mini", base_url=llm_server.base_url,
                       breaker=None) as llm:
            app = App(store_url)
            remote = MCPServer.http(url, id="remote")
            app.add_agent(Agent("runner", model=llm, tools=[
                MCPToolset(app, remote, include=["long_job"], poll_floor=0.3)]))
            async with app, app.worker(sticky_wait=0), remote:
                handle = await app.start("runner", "run both jobs")
                assert await handle.result(timeout=60) == "both done"
        tool_texts = [m["content"] for m in llm_server.requests[1].body["messages"]
                      if m["role"] == "tool"]
    assert tool_texts == ["done after 1.5 s", "done after 0.2 s"]
    assert len([ln for ln in log_lines(remote_log) if ln[0] == "call"]) == 2


async def test_a_task_the_server_forgot_ends_the_call_as_an_error(store_url: str,
                                                                  remote_log: Path) -> None:
    """A remote server restarted with its tasks in memory answers -32602 for the task:
    the call ends as an error result (not a failed run retrying forever)."""
    async with serve_remote(poll_interval_ms=100) as url:
        app, remote = client_apps.build(store_url, remote_url=url, poll_floor=0.1)
        async with app, remote:
            handle = await app.start("use_remote", "long_job", {"seconds": 60})
            async with app.worker():
                async def polled() -> bool:
                    return any(ln[0] == "get" for ln in log_lines(remote_log))

                await wait_until(polled)
    async with serve_remote(poll_interval_ms=100) as url2:  # a new server: no tasks
        app2, remote2 = client_apps.build(store_url, remote_url=url2, poll_floor=0.1)
        async with app2, remote2, app2.worker():
            result = await app2.handle(handle.run_id).result(timeout=30)
    assert result["is_error"] is True
    assert "remote task failed: task gone" in result["text"]




async def test_a_remote_poll_interval_out_of_reason_does_not_fail_the_run(
    store_url: str, remote_log: Path
) -> None:
    """``pollIntervalMs`` is a server's suggestion. One beyond what a durable timer
    takes (10**15 ms: 31,000 years) made the run's first timer a ConfigError: the run
    failed, its remote task left going. A suggestion is honoured up to an hour: the
    run waits on its timer (released) to poll the task then."""
    async with serve_remote(poll_interval_ms=10**15) as url:
        app, remote = client_apps.build(store_url, remote_url=url, poll_floor=0.1)
        async with app, remote, app.worker():
            handle = await app.start("use_remote", "long_job", {"seconds": 0})
            async with asyncio.timeout(30):
                while (run := await app.get_run(handle.run_id)).status not in (
                        "waiting", "failed", "completed"):
                    await asyncio.sleep(0.05)
    assert run.status == "waiting", run.error
    assert run.waiting_for is not None and run.waiting_for.startswith("timer"), run.waiting_for
    [timer] = [e for e in run.journal if e["kind"] == "sleep"]
    assert [ln[:2] for ln in log_lines(remote_log) if ln[0] == "call"] == [["call", "long_job"]]
    # (the timer's due time is its started time plus the interval, an hour at most)
    assert timer["result"] - timer["started_at"] == pytest.approx(3600.0)


@pytest.mark.slow
async def test_a_remote_server_gone_past_the_calls_retries_does_not_fail_the_run(
        store_url: str, remote_log: Path) -> None:
    """Following a remote task the server already started retries its transport
    failures without end by default (``DEFAULT_MCP_TASK_RETRY``). With the calls' 6
    attempts (``DEFAULT_MCP_RETRY``) a server unreachable for ~16 s failed the run, and
    its task went on over there, its work lost to this run. Here the server stays gone
    past a 7th attempt of the poll and the run is still retrying, not failed."""
    remote_server = contextlib.AsyncExitStack()
    url = await remote_server.enter_async_context(serve_remote(poll_interval_ms=100))
    try:
        app, remote = client_apps.build(store_url, remote_url=url, poll_floor=0.1)
        async with app, remote, app.worker():
            handle = await app.start("use_remote", "long_job", {"seconds": 600})

            async def polled() -> bool:
                return any(ln[0] == "get" for ln in log_lines(remote_log))

            await wait_until(polled)
            await remote_server.aclose()  # the remote server is gone, its task with it

            async def seventh_failure() -> bool:
                run = await app.get_run(handle.run_id)
                assert run.status not in ("failed", "completed"), run.error
                entry = next((e for e in run.journal if e["name"] == "mcp:remote.get_task"
                              and e["status"] == "pending"), None)
                return entry is not None and entry["attempts"] >= 7

            # (0.5 s doubling: the 7th attempt fails ~32 s after the first)
            await wait_until(seventh_failure, timeout=90)
            await app.cancel(handle.run_id)
    finally:
        await remote_server.aclose()


@pytest.mark.parametrize("tool", ["name_job", "confirm_job"])
async def test_a_remote_task_that_ends_while_the_run_awaits_its_input_ends_the_call(
        store_url: str, remote_log: Path, tool: str) -> None:
    """While the run waits for the answer to a remote input request (the ``mcp_input``
    signal, or an approval), it still polls the remote task: a task cancelled over
    there (by the server, another client, an expiry) ends the call as an error result
    at the next poll. Until 2026-12-06 the run stopped polling while it waited, so it
    waited on, for an answer the task no longer wanted. Each poll is journaled (a
    signal wait with a timeout, then ``get_task``); the worker releases the run at
    every wait, so each poll is a replay."""
    arguments = {"what": "deploy"} if tool == "confirm_job" else {}
    async with serve_remote(poll_interval_ms=100) as url:
        app, remote = client_apps.build(store_url, remote_url=url, poll_floor=0.1)
        outside = MCPServer.http(url, id="outside")
        async with app, remote, outside, app.worker(sticky_wait=0):
            handle = await app.start("use_remote", tool, arguments)

            async def awaiting() -> bool:
                info = await app.get_run(handle.run_id)
                return (isinstance(info.status_info, dict)
                        and info.status_info.get("state") in ("awaiting_input",
                                                              "awaiting_approval"))

            await wait_until(awaiting)
            task_id = next(ln[2] for ln in log_lines(remote_log) if ln[0] == "call")
            await outside.cancel_task(task_id)
            assert await handle.result(timeout=20) == {
                "text": "remote task cancelled: cancelled", "is_error": True}
            run = await app.get_run(handle.run_id)
            assert await pending_approvals(app) == []
    assert [ln for ln in log_lines(remote_log) if ln[0] == "update"] == []
    kinds = [(e["kind"], e["name"]) for e in run.journal]
    signal = "approval" if tool == "confirm_job" else "mcp_input"
    assert ("signal", signal) in kinds, kinds
    assert kinds[-1] == ("step", "mcp:remote.get_task")
