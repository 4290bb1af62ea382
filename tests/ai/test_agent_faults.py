"""An agent in a real ``tether worker`` process killed with SIGKILL mid-run: a new worker
finishes it without sending the model any request twice and without repeating a
completed tool or MCP call, and the answer is the one an uninterrupted run gives.

The scripted model answers from the state of the conversation (how many tool results
it has seen), so an interrupted and an uninterrupted run get the same replies. The
kill lands while ``slow_fetch`` waits for a gate file: every earlier operation has
committed, and no model request is in flight.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import CHECKOUT_PATH, forked
from tests.ai.test_mcp import calls, free_port, start_http_server, stop_process
from tests.engine.helpers import wait_for
from tether import App, WorkflowNotFound
from tether.testing.llm_server import RecordedRequest, Reply, ScriptedLLMServer

pytestmark = [pytest.mark.slow, pytest.mark.faults]

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.ai.agent_worker_app:app"
TASK = "Find out what durable execution is."


def _tool_results(request: RecordedRequest) -> list[str]:
    return [m["content"] for m in request.body["messages"] if m["role"] == "tool"]


def research_model(with_mcp: bool) -> Any:
    """The scripted model: note, (record and lookup over MCP,) slow_fetch, answer."""
    plan: list[dict[str, Any]] = [{"name": "note", "arguments": {"text": "start"}}]
    if with_mcp:
        plan += [{"name": "record", "arguments": {"note": "durable"}},
                 {"name": "lookup", "arguments": {"term": "journal"}}]
    plan.append({"name": "slow_fetch", "arguments": {"url": "https://example.org/durable"}})

    def respond(request: RecordedRequest) -> Reply:
        seen = _tool_results(request)
        if len(seen) < len(plan):
            return Reply(f"step {len(seen) + 1}", tool_calls=[plan[len(seen)]],
                         input_tokens=100 + 10 * len(seen), output_tokens=20)
        return Reply("Answer: " + " / ".join(seen), input_tokens=200, output_tokens=30)

    return respond


class Workers:
    """``tether worker`` subprocesses of one test, ended by PID."""

    def __init__(self, db: str, env: dict[str, str]) -> None:
        self.db = db
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        proc = forked.Popen(
            [sys.executable, "-m", "tether", "worker", APP, "--db", self.db, "--lease", "2"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            stop_process(proc)


def tool_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def start_when_registered(app: App, run_id: str) -> None:
    """Start the agent by name once a worker has registered it in the store."""
    async def started() -> bool:
        try:
            await app.start("researcher", TASK, run_id=run_id)
        except WorkflowNotFound:
            return False
        return True

    await wait_for(started, timeout=30, what="the worker registers the agent")


def env_for(tmp: Path, server: ScriptedLLMServer, mcp: str = "") -> dict[str, str]:
    return {**os.environ, "AGENT_LLM_URL": server.base_url, "AGENT_GATE": str(tmp / "gate"),
            "AGENT_TOOL_LOG": str(tmp / "tools.jsonl"), "AGENT_MCP": mcp,
            "NOTES_CALL_LOG": str(tmp / "mcp.jsonl"), "PYTHONPATH": CHECKOUT_PATH}


async def uninterrupted_answer(tmp: Path, db: str, with_mcp: bool, mcp: str) -> tuple[
        str, list[RecordedRequest]]:
    """The answer (and the model's requests) of the same agent when nothing fails."""
    tmp.mkdir()
    (tmp / "gate").touch()
    async with ScriptedLLMServer(responder=research_model(with_mcp)) as server:
        workers = Workers(db, env_for(tmp, server, mcp))
        workers.start()
        try:
            async with App(db) as app:
                await start_when_registered(app, "calm-1")
                answer = await app.handle("calm-1").result(timeout=60)
        finally:
            workers.stop_all()
        return str(answer), list(server.requests)


async def killed_run(tmp: Path, db: str, *, with_mcp: bool, mcp: str = "") -> dict[str, Any]:
    """Run the agent, SIGKILL its worker while slow_fetch runs, finish on a new worker."""
    async with ScriptedLLMServer(responder=research_model(with_mcp)) as server:
        env = env_for(tmp, server, mcp)
        workers = Workers(db, env)
        first = workers.start()
        try:
            async with App(db) as app:
                await start_when_registered(app, "kill-1")
                log = tmp / "tools.jsonl"
                await wait_for(lambda: any(t["tool"] == "slow_fetch" for t in tool_log(log)),
                               timeout=30, what="slow_fetch starts")
                before = await app.get_run("kill-1")
                os.kill(first.pid, signal.SIGKILL)
                first.wait(10)
                requests_before = len(server.requests)
                (tmp / "gate").touch()
                second = workers.start()
                answer = await app.handle("kill-1").result(timeout=60)
                after = await app.get_run("kill-1")
        finally:
            workers.stop_all()
        return {"answer": answer, "before": before, "after": after, "first": first.pid,
                "second": second.pid, "requests": list(server.requests),
                "requests_before": requests_before, "tools": tool_log(tmp / "tools.jsonl")}


def assert_no_request_twice(requests: list[RecordedRequest]) -> None:
    bodies = [json.dumps(r.body, sort_keys=True) for r in requests]
    keys = [r.headers.get("idempotency-key") for r in requests]
    assert len(set(bodies)) == len(bodies), "the model received a request twice"
    assert None not in keys and len(set(keys)) == len(keys)


async def test_sigkill_mid_agent_repeats_no_model_request(tmp_path: Path, store_url: str) -> None:
    """Killed after three committed operations (two LLM turns and a tool), the agent
    resumes on a new worker: the model receives each request once, the completed tool
    call is not run again, and the answer equals an uninterrupted run's."""
    killed = tmp_path / "killed"
    killed.mkdir()
    result = await killed_run(killed, store_url, with_mcp=False)
    before = [(e["name"], e["status"]) for e in result["before"].journal]
    assert before == [("llm:openai:gpt-4.1-mini", "ok"), ("researcher.tool:note", "ok"),
                      ("llm:openai:gpt-4.1-mini", "ok"), ("researcher.tool:slow_fetch",
                                                          "pending")][:len(before)]
    assert len([s for _, s in before if s == "ok"]) == 3
    assert_no_request_twice(result["requests"])
    assert result["requests_before"] == 2 and len(result["requests"]) == 3
    notes = [t for t in result["tools"] if t["tool"] == "note"]
    assert [t["pid"] for t in notes] == [result["first"]]
    fetches = [t for t in result["tools"] if t["tool"] == "slow_fetch"]
    # In flight when the worker died, so it runs again, with the same idempotency key.
    assert [t["pid"] for t in fetches] == [result["first"], result["second"]]
    assert fetches[0]["key"] == fetches[1]["key"] == "kill-1:3"
    assert result["after"].metrics["llm.calls"] == 3

    calm_answer, calm_requests = await uninterrupted_answer(
        tmp_path / "calm", _db(store_url, tmp_path, "calm"), False, "")
    assert result["answer"] == calm_answer
    assert calm_answer == "Answer: noted 'start' / page https://example.org/durable: 42 words"
    assert len(calm_requests) == len(result["requests"])


def _db(store_url: str, tmp_path: Path, name: str) -> str:
    """A second store of the same backend for the uninterrupted run: a new SQLite file,
    or (PostgreSQL) the same database, whose runs have other ids."""
    if store_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path}/{name}.db"
    return store_url


@pytest.fixture
def notes_http(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    log = tmp_path / "mcp-http.jsonl"
    port = free_port()
    proc = start_http_server(port, log)
    try:
        yield f"http://127.0.0.1:{port}/mcp", log
    finally:
        stop_process(proc)


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_sigkill_does_not_repeat_completed_mcp_calls(
        tmp_path: Path, transport: str, request: pytest.FixtureRequest) -> None:
    """The agent calls two MCP tools (stdio or streamable HTTP), then is killed; after
    the restart the MCP server has received each of those calls once."""
    if transport == "http":
        url, mcp_log = request.getfixturevalue("notes_http")
        mcp = url
    else:
        mcp, mcp_log = "stdio", tmp_path / "mcp.jsonl"
    result = await killed_run(tmp_path, f"sqlite:///{tmp_path}/agent.db", with_mcp=True,
                              mcp=mcp)
    assert_no_request_twice(result["requests"])
    assert len(result["requests"]) == 5
    recorded = calls(mcp_log, note="durable")
    looked_up = calls(mcp_log, term="journal")
    assert len(recorded) == 1 and len(looked_up) == 1
    names = [e["name"] for e in result["after"].journal]
    record_pos = next(e["position"] for e in result["after"].journal
                      if e["name"] == "mcp:notes.call_tool")
    assert recorded[0]["meta_key"] == f"kill-1:{record_pos}"
    assert names.count("mcp:notes.list_tools") == 1
    assert result["answer"] == ("Answer: noted 'start' / recorded 'durable' / journal: a word "
                                "/ page https://example.org/durable: 42 words")
