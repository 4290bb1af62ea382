"""A pydantic-ai agent in a real ``tether worker`` process killed with SIGKILL between
two model requests: a new worker finishes it, the scripted server's request log shows
no request sent twice, the completed tool call is not run again, and the typed output
equals an uninterrupted run's."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")

from tests.engine.helpers import wait_for
from tests.integrations.crash import Workers, assert_no_request_twice, env_for, tool_log
from tether import App, WorkflowNotFound
from tether.testing.llm_server import RecordedRequest, Reply, ScriptedLLMServer

pytestmark = [pytest.mark.slow, pytest.mark.faults]

APP = "tests.integrations.pydantic_ai_worker_app:app"
PLAN = [{"name": "note", "arguments": {"text": "start"}},
        {"name": "slow_fetch", "arguments": {"url": "https://example.org/durable"}}]


def respond(request: RecordedRequest) -> Reply:
    """The scripted model answers from the conversation's state (tool results seen)."""
    seen = [m["content"] for m in request.body["messages"] if m["role"] == "tool"]
    if len(seen) < len(PLAN):
        return Reply(tool_calls=[PLAN[len(seen)]], input_tokens=100 + 10 * len(seen),
                     output_tokens=20)
    return Reply(tool_calls=[{"name": "final_result", "arguments": {
        "summary": " / ".join(seen), "sources": len(seen)}}], input_tokens=200,
        output_tokens=30)


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
        workers = Workers(APP, db, env_for(tmp, server.base_url), tmp)
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
    before = [(e["name"], e["status"]) for e in killed["before"].journal]
    model, note, fetch = ("pydantic_ai:researcher__model.request",
                          "pydantic_ai:researcher__function_toolset__<agent>.call_tool:note",
                          "pydantic_ai:researcher__function_toolset__<agent>.call_tool:"
                          "slow_fetch")
    assert [e for e in before if e[1] == "ok"] == [(model, "ok"), (note, "ok"), (model, "ok")]
    assert killed["requests_before"] == 2
    assert len(killed["requests"]) == 3
    assert_no_request_twice(killed["requests"])
    assert [t["pid"] for t in killed["tools"] if t["tool"] == "note"] == [killed["first"]]
    fetches = [t for t in killed["tools"] if t["tool"] == "slow_fetch"]
    # In flight when the worker died: it runs again, with the same idempotency key.
    assert [t["pid"] for t in fetches] == [killed["first"], killed["second"]]
    assert fetches[0]["key"] == fetches[1]["key"]
    after = killed["after"]
    assert [e["name"] for e in after.journal] == [model, note, model, fetch, model]
    assert after.metrics["llm.calls"] == 3
    assert after.metrics["saved.calls"] == 2  # the new worker replayed two requests
    # This process has not registered the workflow: the result is the Report's JSON.
    assert killed["answer"] == {"summary": "noted 'start' / page https://example.org/durable: "
                                "42 words", "sources": 2}

    db = f"sqlite:///{tmp_path}/calm.db" if store_url.startswith("sqlite") else store_url
    if db == store_url:
        return  # one PostgreSQL database per test: the calm run would reuse run id r1
    calm = await run_agent(tmp_path / "calm", db, kill=False)
    assert calm["answer"] == killed["answer"]
    assert len(calm["requests"]) == len(killed["requests"])
