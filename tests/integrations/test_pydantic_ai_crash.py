"""A pydantic-ai agent in a real ``tether worker`` process killed with SIGKILL between
two model requests: a new worker finishes it, the scripted server's request log shows
no request sent twice, the completed tool call is not run again, and the typed output
equals an uninterrupted run's. And killed between two attempts of a model request
whose streams were cut: what the cut attempts were paid still counts. And killed after a
request in OpenAI's background mode: it is one call, spent once and saved once."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")

from tests import CHECKOUT_PATH
from tests.engine.helpers import wait_for
from tests.integrations.crash import (
    Workers,
    assert_no_request_twice,
    env_for,
    pending_after_paid,
    tool_log,
)
from tether import App, RunFailed, WorkflowNotFound
from tether.testing.llm_server import RecordedRequest, Reply, ScriptedLLMServer
from tether.testing.responses_api import ScriptedResponsesServer

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


async def start_by_name(app: App, run_id: str, workflow: str = "researcher",
                        *args: Any) -> None:
    async def started() -> bool:
        try:
            await app.start(workflow, *(args or ("What is durable execution?",)),
                            run_id=run_id)
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


async def killed_in_slow_fetch(tmp: Path, store_url: str, server: Any, run_id: str,
                               workflow: str, prompt: str) -> tuple[list[Any], Any, Any]:
    """Start ``workflow`` with ``prompt`` on one worker, SIGKILL it while ``slow_fetch``
    runs, start another: (the requests the server had at the kill, the run's answer, the
    run after)."""
    workers = Workers(APP, store_url, env_for(tmp, server.base_url), tmp)
    first = workers.start()
    try:
        async with App(store_url) as app:
            await start_by_name(app, run_id, workflow, prompt)
            await wait_for(lambda: any(t["tool"] == "slow_fetch"
                                       for t in tool_log(tmp / "tools.jsonl")),
                           timeout=30, what="slow_fetch starts")
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            before = list(server.requests)
            (tmp / "gate").touch()
            workers.start()
            answer = await app.handle(run_id).result(timeout=60)
            return before, answer, await app.get_run(run_id)
    finally:
        workers.stop_all()


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


async def test_cut_requests_paid_before_a_sigkill_still_count(tmp_path: Path,
                                                              store_url: str) -> None:
    """A streamed model request (``MeteredModel``) cut after two chunks (each paid its
    prompt's estimate and 200 tokens) twice in a worker that is then killed with
    SIGKILL while it holds the run waiting for the third attempt (1.8 s, below the
    sticky wait); a second worker is cut once more, then answered. The request's
    record counts the three cuts, the metrics each once, and the 2,000-token budget
    they exhausted refuses the agent's next request. Before the paid attempts were
    carried on each failure's journaled error, the new worker counted its own cut only
    and the next request was sent."""
    words = " ".join(w * 399 for w in "abcd")
    cut = Reply(words, input_tokens=1000, output_tokens=50, reset_after_chunks=2)
    script = [cut, cut, cut, Reply("Done.", input_tokens=1000, output_tokens=50),
              Reply("never", input_tokens=10, output_tokens=1)]
    async with ScriptedLLMServer(script=script) as server:
        env = {**os.environ, "AGENT_LLM_URL": server.base_url, "PYTHONPATH": CHECKOUT_PATH}
        workers = Workers("tests.integrations.pydantic_ai_cut_worker_app:app", store_url,
                          env, tmp_path)
        first = workers.start()
        try:
            async with App(store_url) as app:
                await start_by_name(app, "cut-kill", "write", "q" * 400, 2_000)
                pending = await pending_after_paid(app, "cut-kill", 2)
                os.kill(first.pid, signal.SIGKILL)
                first.wait(10)
                assert len(server.requests) == 2  # (killed while the step waited)
                workers.start()
                with pytest.raises(RunFailed, match="BudgetExceeded"):
                    await app.handle("cut-kill").result(timeout=60)
                info = await app.get_run("cut-kill")
        finally:
            workers.stop_all()
    assert len(server.requests) == 4 and all(r.stream for r in server.requests)
    assert info.journal[0]["name"] == "pydantic_ai:writer__model.request_stream"
    failed = info.journal[0]["result"]["failed"]
    each = failed["estimated"] // 3  # (the prompt's estimate and the 200 delivered)
    assert 100 + 200 < each < 200 + 200
    assert failed["tokens"] == failed["estimated"] == 3 * each
    assert pending["error"]["attrs"]["failed_attempts"]["tokens"] == 2 * each
    # Each cut counted once: two by the killed worker, one by the new one.
    assert info.metrics["tokens.estimated"] == 3 * each
    assert info.metrics["tokens.input"] + info.metrics["tokens.output"] == 1050 + 3 * each
    assert info.metrics["llm.calls"] == 1
    # The new worker made the third and fourth attempts. (The killed worker's rows
    # of the history may lack its last attempt, or hold it as it began: its start and
    # its end are each written up to 50 ms later, and a start whose end was not
    # written reads as ``interrupted``, its worker gone.)
    tries = [(a["attempt"], a["status"], a["worker_id"]) for a in info.attempts
             if a["position"] == 0]
    assert [(n, s) for n, s, _ in tries[-2:]] == [(3, "error"), (4, "ok")], tries
    assert tries[-2][2] == tries[-1][2]
    assert {(n, s) for n, s, w in tries if w != tries[-1][2]} <= {
        (1, "error"), (2, "error"), (2, "interrupted")}, tries


def delegation_respond(request: RecordedRequest) -> Reply:
    """The helper answers; the boss asks it, then fetches, then answers."""
    messages = request.body["messages"]
    if any(m["role"] == "system" and "helper" in str(m["content"]) for m in messages):
        return Reply("four", input_tokens=1000, output_tokens=20)
    seen = [m["content"] for m in messages if m["role"] == "tool"]
    if not seen:
        return Reply(tool_calls=[{"name": "ask_helper", "arguments": {"question": "2+2?"}}],
                     input_tokens=100, output_tokens=10)
    if len(seen) == 1:
        return Reply(tool_calls=[{"name": "slow_fetch",
                                  "arguments": {"url": "https://example.org/four"}}],
                     input_tokens=120, output_tokens=10)
    return Reply(" / ".join(seen), input_tokens=200, output_tokens=30)


async def test_sigkill_after_a_delegated_agent_repeats_none_of_its_requests(
        tmp_path: Path, store_url: str) -> None:
    """``boss``'s tool (durable=False) runs ``helper``; the worker is killed while the
    next tool (slow_fetch) runs. The new worker replays the boss's and the helper's
    requests from the journal: each request reached the model once, and the ledger
    counts the helper's with the boss's."""
    tmp = tmp_path / "d"
    tmp.mkdir()
    async with ScriptedLLMServer(responder=delegation_respond) as server:
        before, answer, after = await killed_in_slow_fetch(tmp, store_url, server, "d1",
                                                           "boss", "Ask the helper")
    assert len(before) == 3
    assert answer == "four / page https://example.org/four: 42 words"
    assert len(server.requests) == 4
    assert_no_request_twice(list(server.requests))
    assert [e["name"] for e in after.journal] == [
        "pydantic_ai:boss__model.request", "pydantic_ai:helper__model.request",
        "pydantic_ai:boss__model.request",
        "pydantic_ai:boss__function_toolset__<agent>.call_tool:slow_fetch",
        "pydantic_ai:boss__model.request"]
    assert after.metrics["llm.calls"] == 4
    assert after.metrics["tokens.input"] == 100 + 1000 + 120 + 200
    assert after.metrics["saved.calls"] == 3  # (the new worker replayed three requests)


async def test_sigkill_after_a_compaction_sends_it_once(tmp_path: Path,
                                                        store_url: str) -> None:
    """``summarized``: the agent compacts an earlier conversation (OpenAI's
    ``/v1/responses/compact``, a metered step), asks, and calls ``slow_fetch``; the
    worker is killed with SIGKILL while the tool runs. The new worker answers the
    compaction and the first request from the journal (``saved.*``) and sends only the
    last request: the compaction reached the provider once, and the ledger counts it
    once."""
    tmp = tmp_path / "c"
    tmp.mkdir()
    script = [Reply("They asked where Paris is: in France.", input_tokens=3_000,
                    output_tokens=200),
              Reply(tool_calls=[{"name": "slow_fetch",
                                 "arguments": {"url": "https://example.org/rome"}}],
                    input_tokens=400, output_tokens=10),
              Reply("Rome is in Italy.", input_tokens=500, output_tokens=6)]
    async with ScriptedResponsesServer(script=script) as server:
        sent, answer, after = await killed_in_slow_fetch(tmp, store_url, server, "s1",
                                                         "summarized", "And Rome?")
    before = [r.path for r in sent]
    assert before == ["/v1/responses/compact", "/v1/responses"]
    assert [r.path for r in server.requests] == [*before, "/v1/responses"]
    assert_no_request_twice(list(server.requests))
    assert answer == "Rome is in Italy."
    request = "pydantic_ai:summarizer__model.request"
    assert [e["name"] for e in after.journal] == [
        "pydantic_ai:summarizer__model.compact_messages", request,
        "pydantic_ai:summarizer__function_toolset__<agent>.call_tool:slow_fetch", request]
    assert after.journal[0]["result"]["usage"]["input_tokens"] == 3_000
    assert after.metrics["llm.calls"] == 3
    assert after.metrics["tokens.input"] == 3_000 + 400 + 500
    # The new worker replayed the compaction and the first request.
    assert after.metrics["saved.calls"] == 2
    assert after.metrics["saved.tokens.input"] == 3_400


async def test_sigkill_after_a_background_request_counts_it_once(tmp_path: Path,
                                                                 store_url: str) -> None:
    """``backgrounder`` sends each request in OpenAI's background mode (queued, then
    polled: two ``model.request`` steps for one request); its first asks for
    ``slow_fetch``, and the worker is killed with SIGKILL while the tool runs. The new
    worker answers the first job's create and poll from the journal and sends only the
    second job's: each job reached the provider once, and the ledger counts each
    request once, spent or saved (until 2026-12-07 each job counted two calls, and the
    replayed one two saved calls)."""
    tmp = tmp_path / "b"
    tmp.mkdir()
    script = [Reply(tool_calls=[{"name": "slow_fetch",
                                 "arguments": {"url": "https://example.org/otters"}}],
                    input_tokens=400, output_tokens=10),
              Reply("Otters float.", input_tokens=500, output_tokens=6)]
    async with ScriptedResponsesServer(script=script) as server:
        sent, answer, after = await killed_in_slow_fetch(tmp, store_url, server, "bg1",
                                                         "backgrounder", "Do otters float?")
    before = [(r.method, r.outcome) for r in sent]
    assert before == [("POST", "queued"), ("GET", "reply")]
    assert [(r.method, r.outcome) for r in server.requests] == [*before, *before]
    sent = [(r.method, r.path, json.dumps(r.body, sort_keys=True)) for r in server.requests]
    assert len(set(sent)) == len(sent), "the model received a request twice"
    assert answer == "Otters float."
    request = "pydantic_ai:backgrounder__model.request"
    assert [e["name"] for e in after.journal] == [
        request, request,
        "pydantic_ai:backgrounder__function_toolset__<agent>.call_tool:slow_fetch",
        request, request]
    assert after.metrics["llm.calls"] == 2
    assert after.metrics["tokens.input"] == 400 + 500
    assert after.metrics["cost.usd"] == pytest.approx((900 * 2.0 + 16 * 16.0) / 1e6)
    # The new worker replayed the first job: its create and its poll, one request.
    assert after.metrics["saved.calls"] == 1
    assert after.metrics["saved.tokens.input"] == 400


async def _chunks(app: App, run_id: str) -> list[str]:
    """The text of the run's ``llm.chunk`` events stored for observers, in order."""
    events = await app.store.run_events_latest(run_id=run_id, kind="chunk")
    return [json.loads(e.data or "{}").get("text", "") for e in events]


async def test_sigkill_while_a_background_request_streams_creates_its_job_once(
        tmp_path: Path, store_url: str) -> None:
    """``bgstreamer`` streams its request (an ``event_stream_handler``) in OpenAI's
    background mode; the worker is killed with SIGKILL while the job's text streams in
    (a chunk of it reached the observers). The create's step was journaled at the
    job's ``response.created``: the new worker answers it from the journal and streams
    the same job again (``starting_after`` the create's event), so the server saw one
    create; the ledger counts one call and the job's tokens once. The observers got
    the text the killed worker had read, then the whole text from the new worker."""
    tmp = tmp_path / "s"
    tmp.mkdir()
    text = " ".join(f"otter{i}" for i in range(16))
    script = [Reply(text, chunk_delay=0.5, input_tokens=900, output_tokens=40)]
    async with ScriptedResponsesServer(script=script) as server:
        workers = Workers(APP, store_url, env_for(tmp, server.base_url), tmp)
        first = workers.start()
        try:
            async with App(store_url) as app:
                await start_by_name(app, "bs1", "bgstreamer", "Tell me about otters")

                async def streaming() -> bool:
                    return bool(await _chunks(app, "bs1"))

                await wait_for(streaming, timeout=30, what="the job's text reaches the worker")
                os.kill(first.pid, signal.SIGKILL)
                first.wait(10)
                killed = await app.get_run("bs1")
                heard_before = await _chunks(app, "bs1")
                sent_before = list(server.requests)
                workers.start()
                answer = await app.handle("bs1").result(timeout=90)
                after = await app.get_run("bs1")
                heard = await _chunks(app, "bs1")
        finally:
            workers.stop_all()
    assert killed.status != "completed" and "".join(heard_before) != text
    job = next(iter(server.background))
    assert [(r.method, r.path, r.query) for r in sent_before] == [
        ("POST", "/v1/responses", ""),
        ("GET", f"/v1/responses/{job}", "starting_after=0&stream=true")]
    assert [(r.method, r.path, r.query) for r in server.requests] == [
        *[(r.method, r.path, r.query) for r in sent_before],
        ("GET", f"/v1/responses/{job}", "starting_after=0&stream=true")]
    assert [r.method for r in server.requests].count("POST") == 1
    assert answer == text
    stream = "pydantic_ai:bgstreamer__model.request_stream"
    assert [e["name"] for e in after.journal] == [stream, stream]
    assert after.metrics["llm.calls"] == 1
    assert (after.metrics["tokens.input"], after.metrics["tokens.output"]) == (900, 40)
    assert after.metrics["cost.usd"] == pytest.approx((900 * 2.0 + 40 * 16.0) / 1e6)
    # (what the killed worker had published, then the new worker's whole stream)
    assert "".join(heard) == "".join(heard_before) + text
