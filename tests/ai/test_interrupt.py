"""Interrupting an agent's turn (``Agent(interruptible=True)``): the model call or the
tool calls in flight are cut, every tool call left without a result is closed with
``interrupted by the user``, the interrupt's message reaches the next model request,
and a replay (after a release or a SIGKILL) gives the same conversation and sends no
request twice."""

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

import httpx
import pytest

from tests import CHECKOUT_PATH, forked
from tests.ai.test_approvals import next_pending
from tests.ai.test_mcp import stop_process
from tests.engine.helpers import wait_for
from tether import App, WorkflowNotFound
from tether.ai import LLM, Agent, Budget, approve, function_tool, set_budget, user_message
from tether.errors import ConfigError, RunFailed
from tether.testing import export_history, replay
from tether.testing.llm_server import RecordedRequest, Reply, ScriptedLLMServer
from tether.testing.responses_api import ScriptedResponsesServer

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.ai.interrupt_worker_app:app"


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as s:
        yield s


@pytest.fixture
async def llm(server: ScriptedLLMServer) -> AsyncIterator[LLM]:
    async with LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None) as client:
        yield client


def tether_cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    return forked.run([sys.executable, "-m", "tether", *args, "--db", db],
                      capture_output=True, text=True, timeout=60, env=env)


def tail(request: RecordedRequest, n: int) -> list[dict[str, Any]]:
    return [{k: m.get(k) for k in ("role", "content", "tool_call_id") if m.get(k) is not None}
            for m in request.body["messages"][-n:]]


async def test_an_interrupt_during_a_long_tool_call_closes_it_and_passes_the_message(
        store_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """Sent from the CLI while one tool call of the turn still runs: that call is
    cancelled and closed with ``interrupted by the user``, the finished one keeps its
    result, the message follows them in the next request, and the history replays."""
    server.set_script([
        Reply(tool_calls=[{"name": "quick", "arguments": {"q": "a"}, "id": "c1"},
                          {"name": "slow", "arguments": {"q": "b"}, "id": "c2"}]),
        Reply("Done with the cache.")])
    started = asyncio.Event()
    cancelled: list[str] = []

    @function_tool
    async def quick(q: str) -> str:
        """Quick lookup."""
        return f"quick {q}"

    @function_tool
    async def slow(q: str) -> str:
        """Slow lookup."""
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(q)
            raise
        return "never"

    app = App(store_url)
    app.add_agent(Agent("analyst", model=llm, tools=[quick, slow], interruptible=True))
    async with app, app.worker():
        handle = await app.start("analyst", "Look it up.", run_id="i1")
        await asyncio.wait_for(started.wait(), 20)
        sent = await asyncio.to_thread(tether_cli, "signal", "i1", "interrupt", "--data",
                                       '"use the cache"', db=store_url)
        assert sent.returncode == 0, sent.stderr
        assert await handle.result(timeout=20) == "Done with the cache."
        info = await app.get_run("i1")
        history = await export_history(app, "i1")
    assert cancelled == ["b"]
    assert len(server.requests) == 2
    assert tail(server.requests[1], 3) == [
        {"role": "tool", "content": "quick a", "tool_call_id": "c1"},
        {"role": "tool", "content": "interrupted by the user", "tool_call_id": "c2"},
        {"role": "user", "content": "use the cache"}]
    slow_entry = next(e for e in info.journal if e["name"] == "analyst.tool:slow")
    assert slow_entry["status"] == "error" and slow_entry["attempts"] == 1
    assert [e["kind"] for e in info.journal].count("signal") == 3  # one take, two checks
    [result] = await replay(app, history)
    assert result.compatible, result.message
    assert result.replayed == len(info.journal)


async def test_a_worker_stopping_as_an_interrupted_tool_call_ends_hands_the_run_back(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """A worker's stop that comes while a tool call cut by an interrupt is still ending
    (its clean-up awaits something) stops the step there: the run is handed back to the
    queue, no next turn asked for, the step left to the next worker, where the interrupt
    waiting in the inbox cuts it before it starts and the turn ends as an interrupted
    one does. (The step took the
    stop's cancel for the end of the cut work and swallowed it: its code went on, and
    the stopping worker journaled its outcome; only the run's next operation, seeing
    the worker stopping, ended it.)"""
    server.set_script([
        Reply(tool_calls=[{"name": "slow", "arguments": {"q": "b"}, "id": "c1"}]),
        Reply("The next turn.")])
    started, cleaning = asyncio.Event(), asyncio.Event()

    @function_tool
    async def slow(q: str) -> str:
        """Slow lookup."""
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cleaning.set()
            await asyncio.sleep(3600)  # a clean-up, cut short by the stop's cancel
            raise
        return "never"

    app = App(sqlite_url)
    agent = app.add_agent(Agent("analyst", model=llm, tools=[slow], interruptible=True))
    async with app:
        worker = app.worker()
        await worker.start()
        try:
            handle = await app.start("analyst", "Look it up.", run_id="i9")
            await asyncio.wait_for(started.wait(), 20)
            await agent.interrupt(app, "i9", "stop there")
            await asyncio.wait_for(cleaning.wait(), 20)
        finally:
            await asyncio.wait_for(worker.stop(), 20)
        info = await app.get_run("i9")
        assert len(server.requests) == 1
        assert info.status == "queued"
        # Cut by the stop, not by the interrupt: not journaled, the next worker runs it
        # (and its turn's interrupt, waiting in the inbox, cuts it before it starts).
        assert [e["name"] for e in info.journal] == ["interrupt", "llm:openai:gpt-4.1-mini"]
        started.clear()
        async with app.worker():
            assert await handle.result(timeout=20) == "The next turn."
    assert not started.is_set()
    assert tail(server.requests[1], 2) == [
        {"role": "tool", "content": "interrupted by the user", "tool_call_id": "c1"},
        {"role": "user", "content": "stop there"}]


async def test_a_step_cancelled_as_its_interrupted_work_ends_is_cancelled() -> None:
    """``interruptibly`` cancelled while the work the interrupt cut is still ending
    raises the cancellation, not ``TurnInterrupted``: the cancel of the step (a worker
    stopping) is not lost."""
    from tether.ai._interrupt import TurnScope, entered, interruptibly

    async def watch(scope: TurnScope) -> None:
        await asyncio.Event().wait()

    scope = TurnScope(watch)
    ending = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ending.set()
            await asyncio.Event().wait()  # its clean-up, until cancelled again
        return "never"

    async def step() -> str:
        with entered(scope):
            return await interruptibly(work())

    task = asyncio.create_task(step())
    try:
        while not scope._watcher:
            await asyncio.sleep(0)
        scope.interrupted.set()
        await asyncio.wait_for(ending.wait(), 10)
        task.cancel()
        await asyncio.wait({task}, timeout=10)
        assert task.cancelled()
        # The work ends too: the cancel of the step cuts its clean-up, as before.
        work_task = {*asyncio.all_tasks()} - {asyncio.current_task(), scope._watcher}
        if work_task:
            await asyncio.wait(work_task, timeout=10)
        assert all(t.done() for t in work_task)
    finally:
        scope.close()


async def test_an_interrupt_during_the_model_call_drops_the_partial_turn(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """Cut while the model is still answering: its request is abandoned, nothing of it
    enters the conversation, and the next request carries the task and the message;
    after a release, the replay sends nothing again."""
    gate = asyncio.Event()

    async def slow_answer(request: RecordedRequest) -> Reply:
        await gate.wait()
        return Reply("too late")

    server.set_script([slow_answer, Reply("Short answer.")])
    app = App(sqlite_url)
    agent = app.add_agent(Agent("writer", model=llm, interruptible=True))

    @app.workflow
    async def twice(task: str) -> str:
        first = await agent.workflow(task)  # type: ignore[misc]
        return str(first)

    async with app, app.worker():
        handle = await app.start("writer", "Write a long essay.", run_id="i2")
        await wait_for(lambda: _count(server, 1), timeout=20)
        await agent.interrupt(app, "i2", "make it short")
        assert await handle.result(timeout=20) == "Short answer."
        info = await app.get_run("i2")
        history = await export_history(app, "i2")
    gate.set()
    assert tail(server.requests[1], 2) == [
        {"role": "user", "content": "Write a long essay."},
        {"role": "user", "content": "make it short"}]
    llm_entries = [e for e in info.journal if e["name"].startswith("llm:")]
    assert [e["status"] for e in llm_entries] == ["error", "ok"]
    assert "TurnInterrupted" in json.dumps(llm_entries[0]["error"])
    [result] = await replay(app, history)
    assert result.compatible, result.message


async def test_an_interrupt_sent_before_the_watcher_listens_cuts_the_turn(
        store_url: str, server: ScriptedLLMServer, llm: LLM,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Sent (by another process: the CLI) after the turn began but before its watcher's
    subscription to the live events was in place, so its announcement reached no one:
    the watcher finds it in the run's inbox once it listens, and the model call is cut.
    It used to be missed: the turn waited for the whole answer (here, for ever) and
    only the next turn would have seen the message. The subscription is held back by
    a gate on the worker's (real) store until the signal is sent."""
    answering = asyncio.Event()

    async def endless_answer(request: RecordedRequest) -> Reply:
        answering.set()
        await asyncio.Event().wait()
        return Reply("never")

    server.set_script([endless_answer, Reply("Short answer.")])
    app = App(store_url)
    app.add_agent(Agent("writer", model=llm, interruptible=True))
    async with app, app.worker():
        subscribing, held = asyncio.Event(), asyncio.Event()
        events = app.store.run_events

        async def gated(run_id: str, **kwargs: Any) -> AsyncIterator[str]:
            subscribing.set()
            await held.wait()
            async for data in events(run_id, **kwargs):
                yield data

        monkeypatch.setattr(app.store, "run_events", gated)
        handle = await app.start("writer", "Write a long essay.", run_id="i5")
        await asyncio.wait_for(answering.wait(), 20)
        await asyncio.wait_for(subscribing.wait(), 20)
        sent = await asyncio.to_thread(tether_cli, "signal", "i5", "interrupt", "--data",
                                       '"make it short"', db=store_url)
        assert sent.returncode == 0, sent.stderr
        held.set()
        assert await handle.result(timeout=20) == "Short answer."
        info = await app.get_run("i5")
        history = await export_history(app, "i5")
    assert tail(server.requests[1], 2) == [
        {"role": "user", "content": "Write a long essay."},
        {"role": "user", "content": "make it short"}]
    llm_entries = [e for e in info.journal if e["name"].startswith("llm:")]
    assert [e["status"] for e in llm_entries] == ["error", "ok"]
    assert "TurnInterrupted" in json.dumps(llm_entries[0]["error"])
    [result] = await replay(app, history)
    assert result.compatible, result.message
    assert result.replayed == len(info.journal)


async def test_an_interrupt_sent_while_awaiting_approval_cuts_the_approved_call(
        store_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """Sent while the run waits released for the approval of a tool call of the turn:
    once approved, the call does not run (the turn's first step body finds the
    interrupt waiting in the run's inbox before it starts), the model reads
    ``interrupted by the user`` and the message. It used to run the approved call (the
    interrupt was not announced to anyone), and only the next turn saw the message."""
    booked: list[str] = []

    @function_tool(requires_approval=True)
    async def book_flight(destination: str) -> str:
        """Book a flight (spends money)."""
        booked.append(destination)
        return f"booked {destination}"

    server.set_script([Reply(tool_calls=[{"name": "book_flight",
                                          "arguments": {"destination": "Rome"},
                                          "id": "b1"}]),
                       Reply("Not booked.")])
    app = App(store_url)
    agent = app.add_agent(Agent("travel", model=llm, tools=[book_flight],
                                interruptible=True))
    async with app, app.worker():
        handle = await app.start("travel", "Book me a flight.", run_id="i6")
        await next_pending(app)
        await agent.interrupt(app, "i6", "stay home")
        await approve(app, "i6")
        assert await handle.result(timeout=20) == "Not booked."
        info = await app.get_run("i6")
        history = await export_history(app, "i6")
    assert booked == []
    assert tail(server.requests[1], 2) == [
        {"role": "tool", "content": "interrupted by the user", "tool_call_id": "b1"},
        {"role": "user", "content": "stay home"}]
    call = next(e for e in info.journal if e["name"] == "travel.tool:book_flight")
    assert call["status"] == "error" and "TurnInterrupted" in json.dumps(call["error"])
    [result] = await replay(app, history)
    assert result.compatible, result.message


def _estimated_prompt(message: dict[str, Any]) -> int:
    """The documented estimate of a one-message prompt's tokens (its canonical JSON at
    4 bytes a token, plus one)."""
    return len(json.dumps(message, sort_keys=True, separators=(",", ":")).encode()) // 4 + 1


async def _chunk_arrived(app: App, run_id: str) -> bool:
    """A chunk of the run's answer reached the worker (its live event is stored)."""
    events = await app.store.run_events_latest(run_id=run_id, kind="chunk")
    return any('"llm.chunk"' in (e.data or "") for e in events)


@pytest.mark.parametrize("api", ["chat", "responses", "anthropic"])
async def test_a_turn_interrupted_mid_stream_counts_what_was_billed(store_url: str,
                                                                    api: str) -> None:
    """Interrupted after the first 400 characters of its answer had streamed in, the
    model call was billed its prompt and that output, as a cut stream is: what the
    provider told (Anthropic: 1,000 input tokens in ``message_start``) and an estimate
    of the rest (the 4,000-character prompt's 1,008 tokens for OpenAI, the 400
    characters' 100 output tokens). It counts in the metrics and the run's budget, so
    the next turn (its prompt ~1,020 tokens) is refused by a 2,000-token budget. It used
    to count nothing: the interrupted call's tokens were lost to the budget, the next
    turn sent. The history replays."""
    prompt = user_message("q" * 4000)
    words = " ".join(w * 399 for w in "abcd")  # (4 chunks of 400 characters)
    told_in = 1000 if api == "anthropic" else 0
    estimate_in = 0 if told_in else _estimated_prompt(prompt)
    told_out = 1 if api == "anthropic" else 0  # (Anthropic's message_start says 1)
    estimated = estimate_in + 100 - told_out
    app = App(store_url)
    async with ScriptedResponsesServer() as server:
        server.set_script([Reply(words, input_tokens=1000, output_tokens=50,
                                 chunk_delay=3600),
                           Reply("never", input_tokens=10, output_tokens=1)])
        llm = (LLM("anthropic:claude-sonnet-4-5", base_url=server.anthropic_base_url,
                   api_key="test", breaker=None) if api == "anthropic" else
               LLM("openai:gpt-4.1-mini", base_url=server.base_url, api_key="test",
                   breaker=None, api=api))
        agent = app.add_agent(Agent("essayist", model=llm, interruptible=True))

        @app.workflow
        async def budgeted(task: str) -> str:
            set_budget(Budget(tokens=2_000, on_exceed="fail"))
            return str(await agent.workflow(task))  # type: ignore[misc]

        try:
            async with app, app.worker():
                handle = await app.start(budgeted, prompt["content"], run_id=f"b-{api}")
                await wait_for(lambda: _chunk_arrived(app, f"b-{api}"), timeout=20)
                # (Once: a watcher not listening yet finds it in the run's inbox.)
                await agent.interrupt(app, f"b-{api}", "make it short")
                with pytest.raises(RunFailed, match=rf"BudgetExceeded.*"
                                   rf"{told_in + estimate_in + 100} tokens spent"):
                    await handle.result(timeout=20)
                info = await app.get_run(f"b-{api}")
                history = await export_history(app, f"b-{api}")
        finally:
            await llm.aclose()
    assert len(server.requests) == 1
    assert info.metrics["tokens.input"] == told_in + estimate_in
    assert info.metrics["tokens.output"] == 100
    assert info.metrics["tokens.estimated"] == estimated
    assert "llm.calls" not in info.metrics
    call, refused = [e for e in info.journal if e["name"].startswith("llm:")]
    assert "TurnInterrupted" in call["error"]["type"]
    assert "BudgetExceeded" in refused["error"]["type"]
    assert call["error"]["attrs"]["failed_attempts"] == {
        "tokens": told_in + estimate_in + 100,
        "usd": pytest.approx(info.metrics["cost.usd"]), "estimated": estimated}
    [result] = await replay(app, history)
    assert result.compatible, result.message


async def test_an_interrupt_without_a_message_only_cuts(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """``interrupt`` with no data closes the running call and adds no user message."""
    server.set_script([Reply(tool_calls=[{"name": "slow", "arguments": {"q": "x"},
                                          "id": "c9"}]),
                       Reply("ok")])
    started = asyncio.Event()

    @function_tool
    async def slow(q: str) -> str:
        """Slow."""
        started.set()
        await asyncio.sleep(3600)
        return "never"

    app = App(sqlite_url)
    agent = app.add_agent(Agent("quiet", model=llm, tools=[slow], interruptible=True))
    async with app, app.worker():
        handle = await app.start("quiet", "Go.", run_id="i3")
        await asyncio.wait_for(started.wait(), 20)
        await agent.interrupt(app, "i3")
        assert await handle.result(timeout=20) == "ok"
    assert tail(server.requests[1], 2) == [
        {"role": "assistant"},
        {"role": "tool", "content": "interrupted by the user", "tool_call_id": "c9"}]


async def test_interrupting_a_plain_agent_is_refused(llm: LLM) -> None:
    agent = Agent("plain", model=llm)
    with pytest.raises(ConfigError, match="not interruptible"):
        await agent.interrupt(App("sqlite:///:memory:"), "r", "stop")


async def _count(server: ScriptedLLMServer, n: int) -> bool:
    return len(server.requests) >= n


def _tool_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fetcher_model(request: RecordedRequest) -> Reply:
    """slow_fetch first; after the interrupt, hold; then the answer."""
    messages = request.body["messages"]
    tools = [m for m in messages if m["role"] == "tool"]
    if not tools:
        return Reply("fetching", tool_calls=[{"name": "slow_fetch",
                                              "arguments": {"url": "https://example.org"}}])
    if len(tools) == 1:
        return Reply("holding", tool_calls=[{"name": "hold", "arguments": {"what": "it"}}])
    return Reply("Answer: " + " / ".join(str(m["content"]) for m in tools))


@pytest.mark.slow
async def test_sigkill_after_an_interrupt_sends_no_request_twice(tmp_path: Path) -> None:
    """A real worker runs the agent; the interrupt cuts slow_fetch; the worker is
    SIGKILLed in the next turn's tool. A new worker replays the interrupted turn from
    the journal: slow_fetch does not start again and no model request is sent twice."""
    db = f"sqlite:///{tmp_path}/agent.db"
    log, hold = tmp_path / "tools.jsonl", tmp_path / "hold"
    async with ScriptedLLMServer(responder=fetcher_model) as server:
        env = {**os.environ, "AGENT_LLM_URL": server.base_url, "AGENT_TOOL_LOG": str(log),
               "AGENT_HOLD": str(hold), "PYTHONPATH": CHECKOUT_PATH}
        env.pop("TETHER_DATABASE_URL", None)
        procs: list[subprocess.Popen[bytes]] = []

        def worker() -> subprocess.Popen[bytes]:
            proc = forked.Popen([sys.executable, "-m", "tether", "worker", APP, "--db", db,
                                     "--lease", "2"], cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(proc)
            return proc

        first = worker()
        try:
            async with App(db) as app:
                async def started() -> bool:
                    try:
                        await app.start("fetcher", "Fetch it.", run_id="k1")
                    except WorkflowNotFound:
                        return False
                    return True

                await wait_for(started, timeout=30, what="the worker registers the agent")
                await wait_for(lambda: _has(log, "slow_fetch"), timeout=30,
                               what="slow_fetch starts")
                await app.signal("k1", "interrupt", "use the cache")
                await wait_for(lambda: _has(log, "hold"), timeout=30, what="hold starts")
                os.kill(first.pid, signal.SIGKILL)
                first.wait(10)
                hold.touch()
                worker()
                answer = await app.handle("k1").result(timeout=60)
        finally:
            for proc in procs:
                stop_process(proc)
    requests = list(server.requests)
    bodies = [json.dumps(r.body, sort_keys=True) for r in requests]
    assert len(requests) == 3 and len(set(bodies)) == 3, "a model request was sent twice"
    assert answer == "Answer: interrupted by the user / held it"
    assert requests[1].body["messages"][-1] == {"role": "user", "content": "use the cache"}
    tools = _tool_log(log)
    assert [t["tool"] for t in tools if t["tool"].startswith("slow_fetch")] == [
        "slow_fetch", "slow_fetch.cancelled"]
    holds = [t for t in tools if t["tool"] == "hold"]
    assert len(holds) == 2 and holds[0]["key"] == holds[1]["key"]  # cut by the kill: rerun


@pytest.mark.slow
@pytest.mark.postgres
async def test_an_interrupt_over_the_http_api_reaches_a_worker_not_listening_yet(
        pg_url: str, tmp_path: Path) -> None:
    """End to end on PostgreSQL: a ``tether serve`` process takes the interrupt (``POST
    /api/v1/runs/{id}/signals/interrupt``, the route the web UI's form also ends in,
    through ``App.signal``) while the worker process's turn has begun its model call but
    its watcher is held back from listening (``AGENT_EVENTS_GATE``): once it listens,
    it finds the interrupt in the run's inbox and cuts the call. Before, the turn
    waited for the whole answer (here, for ever)."""
    from tests.web.helpers import start_serve

    log, gate = tmp_path / "tools.jsonl", tmp_path / "gate"

    async def endless_answer(request: RecordedRequest) -> Reply:
        await asyncio.Event().wait()
        return Reply("never")

    async with ScriptedLLMServer([endless_answer, Reply("Short answer.")]) as server:
        env = {**os.environ, "AGENT_LLM_URL": server.base_url, "AGENT_TOOL_LOG": str(log),
               "AGENT_EVENTS_GATE": str(gate), "PYTHONPATH": CHECKOUT_PATH}
        env.pop("TETHER_DATABASE_URL", None)
        worker = forked.Popen([sys.executable, "-m", "tether", "worker", APP, "--db", pg_url],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        served = await asyncio.to_thread(start_serve, pg_url, tmp_path, app=None)
        try:
            async with App(pg_url) as app, httpx.AsyncClient(base_url=served.url) as http:
                async def started() -> bool:
                    try:
                        await app.start("fetcher", "Write a long essay.", run_id="h1")
                    except WorkflowNotFound:
                        return False
                    return True

                await wait_for(started, timeout=30, what="the worker registers the agent")
                await wait_for(lambda: _count(server, 1), timeout=30, what="the model call")
                await wait_for(lambda: _has(log, "events.held"), timeout=30,
                               what="the watcher subscribes")
                sent = await http.post("/api/v1/runs/h1/signals/interrupt",
                                       json={"data": "make it short"})
                assert sent.status_code == 202, sent.text
                gate.touch()
                answer = await app.handle("h1").result(timeout=30)
                info = await app.get_run("h1")
        finally:
            served.stop()
            stop_process(worker)
    assert answer == "Short answer."
    assert len(server.requests) == 2
    assert server.requests[1].body["messages"][-1] == {"role": "user",
                                                      "content": "make it short"}
    llm_entries = [e for e in info.journal if e["name"].startswith("llm:")]
    assert [e["status"] for e in llm_entries] == ["error", "ok"]
    assert "TurnInterrupted" in json.dumps(llm_entries[0]["error"])


async def _has(path: Path, tool: str) -> bool:
    return any(t.get("tool", t.get("kind")) == tool for t in _tool_log(path))


async def test_an_interrupt_cuts_an_mcp_tool_call(sqlite_url: str, tmp_path: Path,
                                                  server: ScriptedLLMServer, llm: LLM) -> None:
    """A call to a real MCP server (stdio) that hangs is cut like a function tool's:
    the model reads ``interrupted by the user`` for it, and the journal keeps the cut."""
    from tether.ai.mcp import MCPServer, MCPToolset

    library = Path(__file__).parent / "mcp_servers" / "library_server.py"
    mcp = MCPServer.stdio(*forked.stdio_command(library, "stdio"), id="library", timeout=60,
                          env={"PROGRESS_GATE": str(tmp_path / "never"),
                               "LIBRARY_LOG": str(tmp_path / "library.jsonl")})
    server.set_script([Reply(tool_calls=[{"name": "index", "arguments": {"n": 2},
                                          "id": "m1"}]),
                       Reply("Stopped indexing.")])
    app = App(sqlite_url)
    toolset = MCPToolset(app, mcp, include=["index"])
    agent = app.add_agent(Agent("indexer", model=llm, tools=[toolset], interruptible=True))
    async with app, app.worker():
        handle = await app.start("indexer", "Index.", run_id="i4")
        await wait_for(lambda: _has(tmp_path / "library.jsonl", "tool"), timeout=30,
                       what="the MCP call reaches the server")
        await agent.interrupt(app, "i4", "enough")
        assert await handle.result(timeout=30) == "Stopped indexing."
        info = await app.get_run("i4")
    await mcp.aclose()
    assert tail(server.requests[1], 2) == [
        {"role": "tool", "content": "interrupted by the user", "tool_call_id": "m1"},
        {"role": "user", "content": "enough"}]
    call = next(e for e in info.journal if e["name"] == "mcp:library.call_tool")
    assert call["status"] == "error" and "TurnInterrupted" in json.dumps(call["error"])

