"""Multi-agent economics: a child run's LLM spend (an agent used as a tool, a workflow
tool that calls a model) is rolled into its parent's metrics and counts against the
parent's budget; ``tether show`` prints the tree's totals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests import CHECKOUT_PATH, forked
from tether import App, ConfigError, RunFailed, RunNotFound, WorkflowNotFound
from tether.ai import (
    LLM,
    Agent,
    Budget,
    BudgetExceeded,
    call_child,
    set_budget,
    split_budget,
    user_message,
    workflow_tool,
)
from tether.testing.llm_server import RecordedRequest, Reply, ScriptedLLMServer

ROOT = Path(__file__).resolve().parents[2]


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


def script() -> list[Reply]:
    return [Reply(tool_calls=[{"name": "helper", "arguments": {"task": "dig"}}],
                  input_tokens=200, output_tokens=10),
            Reply("dug", input_tokens=1000, output_tokens=100),       # the child agent
            Reply(tool_calls=[{"name": "summarize", "arguments": {"text": "dug"}}],
                  input_tokens=300, output_tokens=10),
            Reply("short", input_tokens=400, output_tokens=40),       # the workflow's call
            Reply("All done.", input_tokens=500, output_tokens=20)]


async def test_child_spend_is_rolled_into_the_parent(store_url: str,
                                                     server: ScriptedLLMServer,
                                                     llm: LLM) -> None:
    server.set_script(script())
    app = App(store_url)
    helper = Agent("helper", model=llm)

    @app.workflow
    async def summarize(text: str) -> str:
        """Summarize a text."""
        return (await llm.chat([user_message(f"Summarize: {text}")])).text or ""

    app.add_agent(Agent("lead", model=llm, tools=[helper, workflow_tool(summarize)]))
    async with app, app.worker():
        assert await (await app.start("lead", "Go.", run_id="p1")).result(timeout=30) \
            == "All done."
        info = await app.get_run("p1")
    m = info.metrics
    assert m["llm.calls"] == 3 and m["tokens.input"] == 1000  # the lead's own calls
    assert m["children.runs"] == 2
    assert m["children.tokens"] == 1100 + 440
    price_in, price_out = 0.4 / 1e6, 1.6 / 1e6
    assert m["children.cost.usd"] == pytest.approx(1400 * price_in + 140 * price_out)
    names = [e["name"] for e in info.journal]
    assert names.count("lead.child_spend") == 2
    shown = await asyncio.to_thread(tether_cli, "show", "p1", db=store_url)
    assert "child runs:       2 runs, 1,540 tokens, $0.000784" in shown.stdout
    assert "tree total:       2,580 tokens" in shown.stdout


async def test_child_spend_counts_against_the_parent_budget(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """The lead's own first call spends 210 tokens, its child 1100: with a budget of
    1000 tokens the lead's next call is refused, never sent."""
    server.set_script(script())
    app = App(sqlite_url)
    app.add_agent(Agent("lead", model=llm, tools=[Agent("helper", model=llm)],
                        budget=Budget(tokens=1000, on_exceed="fail")))
    async with app, app.worker():
        with pytest.raises(RunFailed, match=r"BudgetExceeded.*1310 tokens spent"):
            await (await app.start("lead", "Go.", run_id="p2")).result(timeout=30)
    assert len(server.requests) == 2


def child_loop(turns: int) -> list[Reply]:
    """The lead asks its helper (210 tokens); the helper notes something ``turns``
    times (320 tokens a turn), then answers; the lead then answers."""
    note = Reply(tool_calls=[{"name": "note", "arguments": {"text": "more"}}],
                 input_tokens=300, output_tokens=20)
    return [Reply(tool_calls=[{"name": "helper", "arguments": {"task": "dig deep"}}],
                  input_tokens=200, output_tokens=10),
            *[note] * turns, Reply("dug", input_tokens=300, output_tokens=20),
            Reply("All done.", input_tokens=500, output_tokens=20)]


def note(text: str) -> str:
    """Note something down.

    Args:
        text: the note.
    """
    return f"noted {text}"


async def test_the_parent_budget_bounds_what_its_child_spends(
        store_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """The lead (Budget 1,000 tokens, fail) spends 210, then its helper agent, which has
    no budget of its own, would note six times (2,240 tokens). The helper gets what is
    left, 790 tokens, with its input: it makes two calls (640 tokens) and its third
    (~187 tokens of prompt) is refused; the lead reads the tool's error, and its own
    next call is refused: the tree spent 850 tokens. Without the share the helper made
    all seven calls and the lead's next call was refused at 2,450 tokens of 1,000."""
    server.set_script(child_loop(6))
    app = App(store_url)
    app.add_agent(Agent("lead", model=llm, budget=Budget(tokens=1000, on_exceed="fail"),
                        tools=[Agent("helper", model=llm, tools=[note], max_turns=10)]))
    async with app, app.worker():
        with pytest.raises(RunFailed, match=r"BudgetExceeded.*850 tokens spent"):
            await (await app.start("lead", "Go.", run_id="p3")).result(timeout=30)
        [child] = [r for r in await app.list_runs() if r.parent_run_id == "p3"]
        helper = await app.get_run(child.run_id)
    assert len(server.requests) == 3
    assert helper.input == {"args": ["dig deep"], "ext": {"tether.ai.budget": {
        "usd": None, "tokens": 790, "on_exceed": "fail"}}}
    assert helper.status == "failed" and helper.error is not None
    assert "640 tokens spent" in helper.error["message"]
    assert "budget 790 tokens" in helper.error["message"]
    assert helper.metrics["tokens.input"] + helper.metrics["tokens.output"] == 640


async def test_a_float_token_limit_bounds_the_child_as_an_int_does(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """The same tree under ``Budget(tokens=1000.0)``, a limit as a config file's number
    gives it: the helper's share was 790.0, which its input could not carry, so the
    helper ran with no share: it made all seven calls (2,240 tokens) and the tree spent
    2,450 tokens of 1,000. Now it gets 790 tokens, as under ``Budget(tokens=1000)``."""
    server.set_script(child_loop(6))
    app = App(sqlite_url)
    app.add_agent(Agent("lead", model=llm,
                        budget=Budget(tokens=1000.0, on_exceed="fail"),  # type: ignore[arg-type]
                        tools=[Agent("helper", model=llm, tools=[note], max_turns=10)]))
    async with app, app.worker():
        with pytest.raises(RunFailed, match=r"BudgetExceeded.*850 tokens spent"):
            await (await app.start("lead", "Go.", run_id="p3f")).result(timeout=30)
        [child] = [r for r in await app.list_runs() if r.parent_run_id == "p3f"]
        helper = await app.get_run(child.run_id)
    assert len(server.requests) == 3
    assert helper.input == {"args": ["dig deep"], "ext": {"tether.ai.budget": {
        "usd": None, "tokens": 790, "on_exceed": "fail"}}}


def helpers_model(tasks: list[str], notes: int) -> Any:
    """The lead asks one helper per task in one turn, then answers; each helper notes
    ``notes`` times (320 tokens a turn), then answers (320 tokens)."""

    def respond(request: RecordedRequest) -> Reply:
        messages = request.body["messages"]
        task = next(m["content"] for m in messages if m["role"] == "user")
        seen = sum(1 for m in messages if m["role"] == "tool")
        if task == "Go.":
            if seen:
                return Reply("All done.", input_tokens=500, output_tokens=20)
            return Reply(tool_calls=[{"name": "helper", "arguments": {"task": t},
                                      "id": f"call_{t}"} for t in tasks],
                         input_tokens=200, output_tokens=10)
        if seen < notes:
            return Reply(tool_calls=[{"name": "note", "arguments": {"text": task}}],
                         input_tokens=300, output_tokens=20)
        return Reply(f"dug {task}", input_tokens=300, output_tokens=20)

    return respond


async def test_children_started_together_split_what_is_left(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """Two helpers called in one turn get half of the 790 tokens left each (the first
    one started does not take it all, leaving the second nothing): each makes one call
    (320) and is refused its second; the tree spends 850 of 1,000."""
    server.set_script([])
    server.responder = helpers_model(["north", "south"], notes=6)
    app = App(sqlite_url)
    app.add_agent(Agent("lead", model=llm, budget=Budget(tokens=1000, on_exceed="fail"),
                        tools=[Agent("helper", model=llm, tools=[note], max_turns=10)]))
    async with app, app.worker():
        with pytest.raises(RunFailed, match=r"BudgetExceeded.*850 tokens spent"):
            await (await app.start("lead", "Go.", run_id="p4")).result(timeout=30)
        children = [await app.get_run(r.run_id) for r in await app.list_runs()
                    if r.parent_run_id == "p4"]
    assert sorted(c.input["ext"]["tether.ai.budget"]["tokens"] for c in children) == [395, 395]
    assert all(c.status == "failed" and "budget 395 tokens" in (c.error or {})["message"]
               for c in children)
    assert len(server.requests) == 3


async def test_a_child_at_its_share_waits_for_its_own_raise(
        store_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """Policy wait: the helper, at its share (790 tokens), waits for a raise, with a
    status that says its limits are its share of its parent's; raised, it finishes,
    and the lead, now over its own limit with the helper's spend rolled up, waits for
    its raise in turn, then answers. Every call was made once."""
    server.set_script([])
    server.responder = helpers_model(["deep"], notes=6)
    app = App(store_url)
    app.add_agent(Agent("lead", model=llm, budget=Budget(tokens=1000),
                        tools=[Agent("helper", model=llm, tools=[note], max_turns=10)]))
    async with app, app.worker():
        lead = await app.start("lead", "Go.", run_id="p5")

        async def waiting_for_budget(run_id: str) -> Any:
            while True:
                with contextlib.suppress(RunNotFound):  # (the child, not started yet)
                    info = await app.get_run(run_id)
                    if info.waiting_for == "signal budget":
                        return info
                await asyncio.sleep(0.02)

        child = await asyncio.wait_for(waiting_for_budget("p5.3"), 30)
        assert child.status_info["budget_tokens"] == 790
        assert child.status_info["spent_tokens"] == 640
        assert "share of its parent run's budget" in child.status_info["input"]["message"]
        assert len(server.requests) == 3  # (the lead's, two of the helper's)
        await app.signal("p5.3", "budget", {"tokens": 5000})
        parent = await asyncio.wait_for(waiting_for_budget("p5"), 30)
        assert parent.status_info["spent_tokens"] == 210 + 7 * 320
        await app.signal("p5", "budget", {"tokens": 10_000})
        assert await lead.result(timeout=30) == "All done."
    assert len(server.requests) == 1 + 7 + 1


@pytest.mark.slow
@pytest.mark.faults
async def test_a_child_keeps_its_share_across_a_sigkill(tmp_path: Path, store_url: str) -> None:
    """The worker running the lead and its helper is killed with SIGKILL while the
    helper's second call is in flight (its first, 320 tokens, journaled); a new worker
    replays both runs. The helper's share (790 tokens) is in its input, so the new
    execution is bound by it as the first was: its second call is sent again (the
    killed one never answered), its third is refused, and the tree ends at 850 tokens
    as without the crash. (A share kept only in the killed process would be gone:
    the helper would make all its calls.)"""
    from tests.ai.test_agent_faults import stop_process
    from tests.engine.helpers import wait_for

    respond = helpers_model(["deep"], notes=6)
    release = asyncio.Event()
    held: list[RecordedRequest] = []

    async def gated(request: RecordedRequest) -> Reply:
        messages = request.body["messages"]
        helper_second = (messages[0]["content"] == "deep"
                         and sum(1 for m in messages if m["role"] == "tool") == 1)
        if helper_second and not release.is_set():
            held.append(request)
            await release.wait()
        return respond(request)

    async with ScriptedLLMServer(responder=gated) as server:
        env = {**os.environ, "AGENT_LLM_URL": server.base_url, "PYTHONPATH": CHECKOUT_PATH}
        env.pop("TETHER_DATABASE_URL", None)

        def worker() -> subprocess.Popen[bytes]:
            return forked.Popen([sys.executable, "-m", "tether", "worker",
                                 "tests.ai.child_budget_worker_app:app", "--db", store_url,
                                 "--lease", "2"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        first = worker()
        second: subprocess.Popen[bytes] | None = None
        try:
            async with App(store_url) as app:
                async def started() -> bool:
                    try:
                        await app.start("lead", "Go.", run_id="k1")
                    except WorkflowNotFound:
                        return False
                    return True

                await wait_for(started, timeout=30, what="the worker registers the lead")
                await wait_for(lambda: bool(held), timeout=30,
                               what="the helper's second call is in flight")
                os.kill(first.pid, signal.SIGKILL)
                first.wait(10)
                release.set()
                second = worker()
                with pytest.raises(RunFailed, match=r"BudgetExceeded.*850 tokens spent"):
                    await app.handle("k1").result(timeout=60)
                helper = await app.get_run("k1.3")
        finally:
            for proc in (first, second):
                if proc is not None:
                    stop_process(proc)
    assert helper.input["ext"] == {"tether.ai.budget": {"usd": None, "tokens": 790,
                                                        "on_exceed": "fail"}}
    assert helper.error is not None and "640 tokens spent" in helper.error["message"]
    assert "budget 790 tokens" in helper.error["message"]
    helper_calls = [r for r in server.requests if r.body["messages"][0]["content"] == "deep"]
    assert len(helper_calls) == 3  # the first, the killed second, the second again
    assert len(server.requests) == 4


async def test_a_workflow_tool_child_is_bound_by_the_stricter_budget(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """A workflow tool's child gets its share as an agent's does, and its own
    ``set_budget`` (USD, policy wait) binds it together with the share (790 tokens,
    policy fail): the lower of each limit and ``fail``. Its prompts are short (~10
    tokens): its third call goes with 640 spent (a lone call's overshoot: 960), its
    fourth fails the child instead of waiting for a raise."""
    from tether.ai import set_budget

    server.set_script([
        Reply(tool_calls=[{"name": "drafts", "arguments": {"n": 5}}],
              input_tokens=200, output_tokens=10),
        *[Reply("draft", input_tokens=300, output_tokens=20)] * 5,
        Reply("All done.", input_tokens=500, output_tokens=20)])
    app = App(sqlite_url)

    @app.workflow
    async def drafts(n: int) -> str:
        """Write n drafts."""
        set_budget(usd=1.0)
        for i in range(n):
            await llm.chat([user_message(f"Draft {i}.")])
        return "drafted"

    app.add_agent(Agent("lead", model=llm, budget=Budget(tokens=1000, on_exceed="fail"),
                        tools=[workflow_tool(drafts)]))
    async with app, app.worker():
        with pytest.raises(RunFailed, match=r"BudgetExceeded.*1170 tokens spent"):
            await (await app.start("lead", "Go.", run_id="p6")).result(timeout=30)
        child = await app.get_run("p6.3")
    assert child.status == "failed" and child.error is not None
    assert "960 tokens spent" in child.error["message"]
    assert "budget 790 tokens" in child.error["message"]
    assert len(server.requests) == 4


def spent_all() -> list[Reply]:
    """The lead's first call spends all of its 1,000 tokens and asks its helper; the
    helper answers (110 tokens), then the lead."""
    return [Reply(tool_calls=[{"name": "helper", "arguments": {"task": "dig"}}],
                  input_tokens=990, output_tokens=10),
            Reply("dug", input_tokens=100, output_tokens=10),
            Reply("All done.", input_tokens=500, output_tokens=20)]


async def test_a_child_with_no_share_left_is_refused_before_it_exists(
        store_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """The lead (Budget 1,000 tokens, fail) has spent its 1,000 tokens when it asks its
    helper: the helper's share would be 0 tokens, so no child run is started (it was,
    and failed at its first call); the refusal is the step tether.ai.child_share, failed
    with BudgetExceeded, and the lead's own next call is refused as before."""
    server.set_script(spent_all())
    app = App(store_url)
    app.add_agent(Agent("lead", model=llm, budget=Budget(tokens=1000, on_exceed="fail"),
                        tools=[Agent("helper", model=llm)]))
    async with app, app.worker():
        with pytest.raises(RunFailed, match=r"BudgetExceeded.*1000 tokens spent"):
            await (await app.start("lead", "Go.", run_id="z1")).result(timeout=30)
        children = [r for r in await app.list_runs() if r.parent_run_id == "z1"]
        info = await app.get_run("z1")
    assert children == []
    [refused] = [e for e in info.journal if e["name"] == "tether.ai.child_share"]
    assert refused["status"] == "error"
    assert "BudgetExceeded" in json.dumps(refused)
    assert "1000 tokens spent, 0 held for child runs and 0 in flight leave 0 of budget " \
        "1000 tokens: no share for a child run" in json.dumps(refused)
    assert not [e for e in info.journal if e["kind"] == "child_start"]
    assert len(server.requests) == 1


async def test_a_child_refused_its_share_waits_for_the_parent_raise(
        store_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """Policy wait: the helper's start is refused (0 tokens left), so the lead waits for
    a raise as for its own call, with no child run meanwhile; raised to 5,000 tokens,
    it starts the helper with what is left (4,000) and finishes."""
    server.set_script(spent_all())
    app = App(store_url)
    app.add_agent(Agent("lead", model=llm, budget=Budget(tokens=1000),
                        tools=[Agent("helper", model=llm)]))
    async with app, app.worker():
        lead = await app.start("lead", "Go.", run_id="z2")
        async def waiting_for_budget() -> Any:
            while (info := await app.get_run("z2")).waiting_for != "signal budget":
                await asyncio.sleep(0.02)
            return info

        waiting = await asyncio.wait_for(waiting_for_budget(), 30)
        assert waiting.status_info["budget_tokens"] == 1000
        assert [r for r in await app.list_runs() if r.parent_run_id == "z2"] == []
        await app.signal("z2", "budget", {"tokens": 5000})
        assert await lead.result(timeout=30) == "All done."
        [child] = [await app.get_run(r.run_id) for r in await app.list_runs()
                   if r.parent_run_id == "z2"]
    assert child.input["ext"] == {"tether.ai.budget": {"usd": None, "tokens": 4000,
                                                       "on_exceed": "wait"}}
    assert len(server.requests) == 3


async def test_a_replayed_parent_holds_the_share_its_child_was_given(
        store_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """A parent (Budget 1,000 tokens) starts a child while its own call is in flight:
    the share counts that call's reservation (its prompt and max_tokens=100). Replayed
    after a signal, the parent holds the share stored with the child, not one computed
    again from its replayed ledger, where the call counts what it cost (50 tokens):
    that one was 950 tokens, the child's 900 or so."""
    import tether
    from tether.ai import set_budget
    from tether.ai._budget import current_spending
    from tether.ai._tools import start_tool_child

    requested, answer = asyncio.Event(), asyncio.Event()

    async def respond(request: RecordedRequest) -> Reply:
        requested.set()
        await answer.wait()
        return Reply("hi", input_tokens=40, output_tokens=10)

    server.set_script([])
    server.responder = respond
    app = App(store_url)

    @app.workflow
    async def waits() -> str:
        await tether.wait_for_signal("done")
        return "done"

    @app.step
    async def request_sent() -> None:
        await requested.wait()

    @app.workflow
    async def parent() -> list[int]:
        set_budget(tokens=1000, on_exceed="fail")

        async def child() -> None:
            await request_sent()
            await start_tool_child("waits", [], {}, queue="default")

        await asyncio.gather(llm.chat([user_message("Hi")], max_tokens=100), child())
        await tether.wait_for_signal("go")
        return [current_spending().held()[0], current_spending().tokens]

    async with app, app.worker():
        handle = await app.start(parent, run_id="r5")

        async def started() -> str:
            while not (found := [r.run_id for r in await app.list_runs()
                                 if r.parent_run_id == "r5"]):
                await asyncio.sleep(0.02)
            return found[0]

        child_id = await asyncio.wait_for(started(), 30)
        answer.set()
        while (await app.get_run("r5")).waiting_for != "signal go":
            await asyncio.sleep(0.02)
        await app.signal("r5", "go")
        held, spent = await handle.result(timeout=30)
        share = (await app.get_run(child_id)).input["ext"]["tether.ai.budget"]["tokens"]
        await app.signal(child_id, "done")
    assert spent == 50
    assert share < 950
    assert held == share


async def test_a_fork_of_a_child_with_a_new_input_keeps_its_share(
        store_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """The helper of the first test (share 790 tokens, fail) forked from its start with
    a new task: the fork's input keeps the share, so it is refused its third call as the
    helper was (640 tokens spent). It used to get the new arguments alone, no share:
    it made all its calls and completed."""
    server.set_script([])
    server.responder = helpers_model(["deep"], notes=6)
    app = App(store_url)
    app.add_agent(Agent("lead", model=llm, budget=Budget(tokens=1000, on_exceed="fail"),
                        tools=[Agent("helper", model=llm, tools=[note], max_turns=10)]))
    async with app, app.worker():
        with pytest.raises(RunFailed, match=r"BudgetExceeded"):
            await (await app.start("lead", "Go.", run_id="f1")).result(timeout=30)
        [child] = [r for r in await app.list_runs() if r.parent_run_id == "f1"]
        fork = await app.fork(child.run_id, at=0, input=["again"], new_run_id="f1-fork")
        with pytest.raises(RunFailed, match=r"BudgetExceeded.*640 tokens spent"):
            await fork.result(timeout=30)
        info = await app.get_run("f1-fork")
        # What the parent handed down is not the caller's to give: an input naming it is
        # refused (App.fork takes only args and kwargs), so no fork can drop the share.
        with pytest.raises(ConfigError, match="not 'ext'"):
            await app.fork(child.run_id, at=0, input={"args": ["again"], "ext": {}},
                           new_run_id="f1-fork2")
    assert info.input == {"args": ["again"], "ext": {"tether.ai.budget": {
        "usd": None, "tokens": 790, "on_exceed": "fail"}}}
    assert info.error is not None and "budget 790 tokens" in info.error["message"]


async def test_a_child_refused_under_fail_leaves_its_part_of_the_split(
        store_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """Three children split what is left (``split_budget(3)``): 2 tokens of the parent's
    1,000 (``fail``). The first is refused (a third of 2 tokens is 0) and never
    started, so it counts off the split as a started child does: the second gets half
    (1 token), the third what is left (2: the second spent nothing). The refused child
    used to keep its part: every child was refused, each getting a third of 2 tokens."""
    server.set_script([Reply("spent", input_tokens=990, output_tokens=8)])
    app = App(store_url)

    @app.workflow
    async def plain(task: str) -> str:
        return f"did {task}"

    @app.workflow
    async def lead() -> list[str]:
        set_budget(Budget(tokens=1000, on_exceed="fail"))
        await llm.chat([user_message("Go.")])
        split_budget(3)
        outcomes = []
        for task in ("a", "b", "c"):
            try:
                outcomes.append(await call_child(plain, [task]))
            except BudgetExceeded:
                outcomes.append("refused")
        return outcomes

    async with app, app.worker():
        assert await (await app.start(lead, run_id="split")).result(timeout=30) == [
            "refused", "did b", "did c"]
        children = [await app.get_run(r.run_id) for r in await app.list_runs()
                    if r.parent_run_id == "split"]
    shares = sorted((c.input["args"][0], c.input["ext"]["tether.ai.budget"]["tokens"])
                    for c in children)
    assert shares == [("b", 1), ("c", 2)]
