"""An OpenAI Agents SDK agent in a real ``tether worker`` process killed with SIGKILL
between two model requests: a new worker finishes it, the scripted server's request
log shows no request sent twice, the completed tool call is not run again, and the
handoff and structured output equal an uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")

from tests.engine.helpers import wait_for
from tests.integrations.crash import Workers, assert_no_request_twice, env_for, tool_log
from tether import App, WorkflowNotFound
from tether.testing.llm_server import RecordedRequest, Reply, ScriptedLLMServer

pytestmark = [pytest.mark.slow, pytest.mark.faults]

APP = "tests.integrations.openai_agents_worker_app:app"
PLAN = [{"name": "note", "arguments": {"text": "start"}},
        {"name": "slow_fetch", "arguments": {"url": "https://example.org/durable"}},
        {"name": "transfer_to_reporter", "arguments": {}}]


def respond(request: RecordedRequest) -> Reply:
    """The scripted model answers from the conversation's state: two tools, the
    handoff, then (as the reporter) the structured report."""
    messages = request.body["messages"]
    seen = [m["content"] for m in messages if m["role"] == "tool"]
    if messages[0]["content"] == "Write the report.":
        tools = [s for s in seen if not s.startswith("{")]
        return Reply(json.dumps({"summary": " / ".join(tools),
                                  "sources": len(tools)}),
                     input_tokens=200, output_tokens=30)
    return Reply(tool_calls=[PLAN[len(seen)]], input_tokens=100 + 10 * len(seen),
                 output_tokens=20)


async def start_by_name(app: App, run_id: str) -> None:
    async def started() -> bool:
        try:
            await app.start("researcher", "What is durable execution?", run_id=run_id)
        except WorkflowNotFound:
            return False
        return True

    await wait_for(started, timeout=30, what="a worker registers the agent")


async def run_agent(tmp: Path, db: str, *, kill: bool) -> dict[str, Any]:
    tmp.mkdir()
    if not kill:
        (tmp / "gate").touch()
    async with ScriptedLLMServer(responder=respond) as server:
        env = {**env_for(tmp, server.base_url), "OPENAI_AGENTS_DISABLE_TRACING": "1"}
        workers = Workers(APP, db, env, tmp)
        first = workers.start()
        out: dict[str, Any] = {"first": first.pid}
        try:
            async with App(db) as app:
                await start_by_name(app, "r1")
                if kill:
                    await wait_for(lambda: any(t["tool"] == "slow_fetch"
                                               for t in tool_log(tmp / "tools.jsonl")),
                                   timeout=30, what="slow_fetch starts")
                    out["before"] = await app.get_run("r1")
                    os.kill(first.pid, signal.SIGKILL)
                    first.wait(10)
                    out["requests_before"] = len(server.requests)
                    (tmp / "gate").touch()
                    out["second"] = workers.start().pid
                out["answer"] = await app.handle("r1").result(timeout=60)
                out["after"] = await app.get_run("r1")
        finally:
            workers.stop_all()
        out["requests"] = list(server.requests)
        out["tools"] = tool_log(tmp / "tools.jsonl")
        return out


async def test_sigkill_between_model_requests_repeats_none(tmp_path: Path,
                                                           store_url: str) -> None:
    killed = await run_agent(tmp_path / "killed", store_url, kill=True)
    model = "openai_agents:model:gpt-4.1-mini"
    note, fetch = "openai_agents:tool:note", "openai_agents:tool:slow_fetch"
    before = [(e["name"], e["status"]) for e in killed["before"].journal]
    assert [e for e in before if e[1] == "ok"] == [(model, "ok"), (note, "ok"), (model, "ok")]
    assert killed["requests_before"] == 2
    assert_no_request_twice(killed["requests"])
    assert len(killed["requests"]) == 4  # note, fetch, handoff, report
    assert [t["pid"] for t in killed["tools"] if t["tool"] == "note"] == [killed["first"]]
    fetches = [t for t in killed["tools"] if t["tool"] == "slow_fetch"]
    assert [t["pid"] for t in fetches] == [killed["first"], killed["second"]]
    assert fetches[0]["key"] == fetches[1]["key"]
    after = killed["after"]
    assert [e["name"] for e in after.journal] == [model, note, model, fetch, model, model]
    assert after.metrics["llm.calls"] == 4 and after.metrics["saved.calls"] == 2
    assert killed["answer"] == {"summary": "noted 'start' / page https://example.org/durable: "
                                "42 words", "sources": 2}

    if not store_url.startswith("sqlite"):
        return  # one PostgreSQL database per test: the calm run would reuse run id r1
    calm = await run_agent(tmp_path / "calm", f"sqlite:///{tmp_path}/calm.db", kill=False)
    assert calm["answer"] == killed["answer"]
    assert len(calm["requests"]) == len(killed["requests"])
