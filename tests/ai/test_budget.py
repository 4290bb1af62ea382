"""Budgets: a run over its LLM budget waits (released) for ``tether budget`` to raise it,
or fails with ``BudgetExceeded``; the decision replays identically."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

import tether
from tests import forked
from tests.engine.helpers import status_is, wait_for
from tether import App
from tether.ai import (
    LLM,
    Budget,
    BudgetExceeded,
    ChatReply,
    FatalProviderError,
    MeteredModel,
    PriceTable,
    RetryableProviderError,
    Usage,
    set_budget,
    user_message,
)
from tether.ai._budget import (
    BUDGET_HINT_BEFORE,
    BUDGET_INPUT_SCHEMA,
    Claim,
    RunSpending,
    budget_hint,
    budget_payload,
    raise_command,
    stricter,
)
from tether.cli._runs import print_metrics
from tether.errors import ConfigError, RunFailed, TetherError
from tether.testing import Fault, Reply, ScriptedLLMServer, export_history, replay
from tether.testing.llm_server import RecordedRequest
from tether.testing.responses_api import ScriptedResponsesServer


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as srv:
        yield srv


def tether_cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    return forked.run([sys.executable, "-m", "tether", *args, "--db", db],
                      capture_output=True, text=True, timeout=60, env=env)


async def test_a_run_over_budget_waits_and_resumes_when_raised(
        store_url: str, server: ScriptedLLMServer) -> None:
    """Token budget 1500: the first call spends 1010 tokens; the second would pass the
    limit, so the run waits, released, with a status saying so; ``tether budget``
    raises it and the run completes. The refused call sent no request."""
    server.set_script([Reply("one", input_tokens=1000, output_tokens=10),
                       Reply("two", input_tokens=1000, output_tokens=10)])
    app = App(store_url)
    llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url)

    @app.workflow
    async def wf() -> list[str]:
        set_budget(tokens=1500)
        first = await llm.chat([user_message("a " * 2000)])
        second = await llm.chat([user_message("b " * 2000)])
        return [first.text or "", second.text or ""]

    async with app.worker(sticky_wait=0.01, poll_interval=0.05):
        handle = await app.start(wf, run_id="b1")
        await wait_for(lambda: status_is(app, "b1", "waiting"), timeout=15)
        info = await app.get_run("b1")
        assert info.waiting_for == "signal budget"
        assert info.status_info["waiting_for"] == "budget"
        assert info.status_info["spent_tokens"] == 1010
        assert info.status_info["budget_tokens"] == 1500
        # The hint names the run (as the API's status_info and --json show it).
        assert info.status_info["hint"] == "raise it: tether budget b1 --usd X --tokens N"
        wanted = info.status_info["input"]  # what the run asks for (MCP's input_required)
        assert wanted["signal"] == "budget" and wanted["schema"] == BUDGET_INPUT_SCHEMA
        assert "(1010 of 1500 tokens spent)" in wanted["message"]
        assert len(server.requests) == 1
        proc = await asyncio.to_thread(tether_cli, "budget", "b1", "--tokens", "5000",
                                       db=store_url)
        assert proc.returncode == 0, proc.stderr
        assert "budget of run b1 set to 5,000 tokens" in proc.stdout
        assert "not waiting on its budget" not in proc.stderr, proc.stderr
        assert await handle.result(timeout=15) == ["one", "two"]
    info = await app.get_run("b1")
    kinds = [(e["kind"], e["status"]) for e in info.journal]
    # (the raise, then the run's marker that its raises are each their budget's)
    assert kinds == [("step", "ok"), ("step", "error"), ("signal", "ok"), ("patch", "ok"),
                     ("step", "ok")]
    refused = info.journal[1]["error"]
    assert refused["type"] == "tether.ai.BudgetExceeded"
    assert "1010 tokens spent" in refused["message"] and "budget 1500 tokens" in refused["message"]
    assert info.journal[2]["result"] == {"tokens": 5000}
    assert len(server.requests) == 2
    assert info.metrics["llm.calls"] == 2 and info.metrics["tokens.input"] == 2000
    assert info.status_info is None
    shown = await asyncio.to_thread(tether_cli, "show", "b1", db=store_url)
    assert "LLM spent:        2 calls, 2,000 input + 20 output tokens, $0.000832" in shown.stdout
    # The released run replayed the first call once when the budget was raised.
    assert "saved by replay:  1 call, 1,000 input + 10 output tokens, $0.000416" in shown.stdout
    await llm.aclose()
    await app.close()


async def test_policy_fail_raises_budget_exceeded(
        sqlite_url: str, server: ScriptedLLMServer) -> None:
    """A USD budget with ``on_exceed="fail"``: the call that would pass it raises
    ``BudgetExceeded`` in the workflow (catchable), without a request."""
    server.set_script([Reply("one", input_tokens=100_000, output_tokens=1000)])
    app = App(sqlite_url)
    llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url)
    budget = Budget(usd=0.045, on_exceed="fail")

    @app.workflow
    async def wf() -> str:
        await llm.chat([user_message("x")], budget=budget)  # $0.0416: under
        try:
            await llm.chat([user_message("y " * 40_000)], budget=budget)
        except BudgetExceeded as exc:
            return str(exc)
        return "not refused"

    async with app.worker():
        message = await (await app.start(wf, run_id="b2")).result(timeout=15)
    assert "budget exceeded: $0.041600 spent + ~$0.0" in message
    assert "> budget $0.045000" in message
    assert len(server.requests) == 1
    await llm.aclose()
    await app.close()


async def test_an_uncaught_budget_exceeded_fails_the_run(
        sqlite_url: str, server: ScriptedLLMServer) -> None:
    app = App(sqlite_url)
    llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url)

    @app.workflow
    async def wf() -> None:
        set_budget(Budget(tokens=10, on_exceed="fail"))
        await llm.chat([user_message("far more than ten tokens of prompt, surely")])

    async with app.worker():
        with pytest.raises(RunFailed, match=r"BudgetExceeded.*budget 10 tokens"):
            await (await app.start(wf, run_id="b3")).result(timeout=15)
    assert server.requests == []
    await llm.aclose()
    await app.close()


def test_budget_payload_from_an_answer() -> None:
    """An answer giving new limits becomes what `tether budget` sends; anything else is
    a ValueError that says what is wrong (never a payload the run would ignore)."""
    assert budget_payload({"usd": 5}) == {"usd": 5.0}
    assert budget_payload({"tokens": 200000.0, "usd": None}) == {"tokens": 200000}
    assert budget_payload({"usd": 0.5, "tokens": 0}) == {"usd": 0.5, "tokens": 0}
    for answer, why in (("5", "an object"), ({}, "give the new limit"),
                        ({"usd": None}, "give the new limit"),
                        ({"value": "5"}, "unexpected field 'value'"),
                        ({"usd": "5"}, "usd must be"), ({"usd": -1}, "usd must be"),
                        ({"usd": float("inf")}, "usd must be"), ({"usd": True}, "usd must be"),
                        ({"tokens": 1.5}, "tokens must be"), ({"tokens": -1}, "tokens must be")):
        with pytest.raises(ValueError, match=why):
            budget_payload(answer)


def test_a_limit_that_is_not_a_number_is_a_config_error() -> None:
    """``Budget(usd="5")`` raised a bare TypeError from ``math.isfinite``, and
    ``Budget(tokens=True)`` was a budget of 1 token; a ``budget`` signal
    ``{"usd": true}`` (``tether signal RUN budget --data '{"usd": true}'``) set the limit
    to $1 where every other malformed payload changes nothing."""
    for bad in ("5", True, False, [5], b"5"):
        with pytest.raises(ConfigError, match="usd= must be a finite number >= 0"):
            Budget(usd=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="tokens= must be a finite number >= 0"):
            Budget(tokens=bad)  # type: ignore[arg-type]
    assert Budget(usd=5, tokens=100).to_dict() == {"usd": 5, "tokens": 100,
                                                   "on_exceed": "wait"}
    spending = RunSpending()
    spending.apply_signal({"usd": True, "tokens": True})
    assert (spending.override_usd, spending.override_tokens) == (None, None)
    spending.apply_signal({"usd": 2, "tokens": 300})
    assert (spending.override_usd, spending.override_tokens) == (2.0, 300)


async def test_a_raise_is_the_raise_of_the_budget_that_refused(
        store_url: str, server: ScriptedLLMServer) -> None:
    """A run of 10,000 tokens guards one call with ``budget=Budget(tokens=100)``: the
    guard refuses it (400 spent) and a person raises it to 1,000. That raise was taken
    for every budget of the run: its next plain calls were refused at 1,200 tokens of
    "1,000", the run's 10,000 lowered. Now the run keeps its 10,000 (and says so), and
    the guard of a later call of its own (``fail``) still refuses at its 100."""
    server.set_script([Reply(f"r{i}", input_tokens=390, output_tokens=10) for i in range(5)])
    app = App(store_url)
    llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url)

    @app.workflow
    async def wf() -> list[str]:
        set_budget(tokens=10_000)
        out = [(await llm.chat([user_message("a")])).text or ""]
        out.append((await llm.chat([user_message("b")], budget=Budget(tokens=100))).text
                   or "")
        for q in "cde":
            out.append((await llm.chat([user_message(q)])).text or "")
        try:
            await llm.chat([user_message("f")], budget=Budget(tokens=100, on_exceed="fail"))
        except BudgetExceeded as exc:
            out.append(f"refused under {exc.budget_tokens}")
        return out

    async with llm, app, app.worker(sticky_wait=0.01, poll_interval=0.05):
        handle = await app.start(wf, run_id="g1")
        await wait_for(lambda: status_is(app, "g1", "waiting"), timeout=15)
        assert (await app.get_run("g1")).status_info["budget_tokens"] == 100
        await app.signal("g1", "budget", {"tokens": 1000})
        assert await handle.result(timeout=15) == ["r0", "r1", "r2", "r3", "r4",
                                                  "refused under 100"]
        info = await app.get_run("g1")
    assert info.budget_limits == {"usd": None, "tokens": 10_000}
    assert len(server.requests) == 5


def test_a_token_limit_given_as_a_float_is_kept_as_an_int() -> None:
    """``Budget(tokens=1000.0)`` (a number read from a config file) was kept a float: a
    child's share of it was a float too, which ``Budget.from_dict`` could not read, so
    the child ran with no share at all. A whole float is now its int; ``1.5`` is a
    clear error, as it is in a ``budget`` signal's payload."""
    budget = Budget(tokens=1000.0)  # type: ignore[arg-type]
    assert budget.tokens == 1000 and type(budget.tokens) is int
    assert Budget(tokens=1e5, usd=0.5).to_dict() == {  # type: ignore[arg-type]
        "usd": 0.5, "tokens": 100_000, "on_exceed": "wait"}
    with pytest.raises(ConfigError, match=r"tokens= must be a whole number >= 0, got 1.5"):
        Budget(tokens=1.5)  # type: ignore[arg-type]
    # A share journaled of a float limit by an earlier Tether reads back.
    assert Budget.from_dict({"usd": None, "tokens": 790.0, "on_exceed": "fail"}) == Budget(
        tokens=790, on_exceed="fail")


def test_bad_budgets_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="needs a limit"):
        Budget()
    with pytest.raises(ConfigError, match="usd= must be a finite number >= 0"):
        Budget(usd=-1)
    with pytest.raises(ConfigError, match="on_exceed= must be 'wait' or 'fail'"):
        Budget(tokens=5, on_exceed="pray")  # type: ignore[arg-type]
    with pytest.raises(TetherError, match="inside a workflow"):
        set_budget(usd=1.0)


async def test_budget_cli_bad_input(sqlite_url: str) -> None:
    """No limit, a negative limit, an unknown run: one-line errors."""
    app = App(sqlite_url)

    @app.workflow
    async def wf() -> None:
        await tether.sleep(0)

    await app.start(wf, run_id="x")
    await app.close()
    no_limit = await asyncio.to_thread(tether_cli, "budget", "x", db=sqlite_url)
    assert no_limit.returncode == 2 and "give the new limit" in no_limit.stderr
    negative = await asyncio.to_thread(tether_cli, "budget", "x", "--usd", "-3", db=sqlite_url)
    assert negative.returncode == 2 and "--usd must be a number >= 0" in negative.stderr
    unknown = await asyncio.to_thread(tether_cli, "budget", "nope", "--usd", "3", db=sqlite_url)
    assert unknown.returncode == 1 and "no run with id 'nope'" in unknown.stderr
    for proc in (no_limit, negative, unknown):
        assert "Traceback" not in proc.stderr


def outcome(result: ChatReply | BaseException) -> str:
    """A gathered call's outcome: its text, or the kind of error it raised."""
    if isinstance(result, BudgetExceeded):
        return "BudgetExceeded"
    if isinstance(result, FatalProviderError):
        return "FatalProviderError"
    if isinstance(result, BaseException):
        raise result
    return result.text or ""


class Concurrency:
    """A responder that answers each request after a short pause (so calls that go
    together overlap) and remembers how many were in flight at once."""

    def __init__(self, reply: Reply, pause: float = 0.05) -> None:
        self.reply = reply
        self.pause = pause
        self.now = 0
        self.most = 0
        #: The prompts answered, in the order their requests came.
        self.prompts: list[str] = []

    async def __call__(self, request: RecordedRequest) -> Reply:
        self.now += 1
        self.most = max(self.most, self.now)
        self.prompts.append(request.body["messages"][-1]["content"])
        try:
            await asyncio.sleep(self.pause)
        finally:
            self.now -= 1
        return self.reply


async def test_gathered_calls_cannot_pass_the_budget_together(store_url: str) -> None:
    """Five gathered calls of 1,000 tokens each under ``Budget(tokens=1_500)``: each
    reserves its prompt's estimate plus its output bound (here the default, 4,096), so
    no two fit at once; one goes, the next is decided when it has answered (1,000 spent:
    it goes too), and the other three are refused (2,000 spent): the overshoot is one
    call's. Before reservations all five went at once (5,000 tokens)."""
    answer = Concurrency(Reply("ok", input_tokens=990, output_tokens=10))
    app = App(store_url)
    llm = LLM("openai:gpt-4.1-mini", base_url="http://unused")

    @app.workflow
    async def wf() -> list[str]:
        set_budget(Budget(tokens=1_500, on_exceed="fail"))
        outcomes = await asyncio.gather(
            *(llm.chat([user_message(f"call {i}")]) for i in range(5)),
            return_exceptions=True)
        return [outcome(o) for o in outcomes]

    async with ScriptedLLMServer(responder=answer) as server:
        llm.base_url = server.base_url
        async with app.worker():
            outcomes = await (await app.start(wf, run_id="g1")).result(timeout=30)
        assert len(server.requests) == 2
        await llm.aclose()
    assert sorted(outcomes) == ["BudgetExceeded"] * 3 + ["ok"] * 2
    assert answer.most == 1
    info = await app.get_run("g1")
    assert info.metrics["tokens.input"] + info.metrics["tokens.output"] == 2_000
    refused = [e["error"]["message"] for e in info.journal if e["status"] == "error"]
    assert len(refused) == 3
    assert all("2000 tokens spent" in m and "budget 1500 tokens" in m for m in refused)
    await llm.aclose()
    await app.close()


async def test_calls_whose_bounds_fit_go_together(sqlite_url: str) -> None:
    """A reservation is a bound, not a queue: five calls with ``max_tokens=100`` under
    ``Budget(tokens=2_000)`` reserve about 103 tokens each, which fit together, so all
    five are in flight at once (and spend 5 x 110 = 550)."""
    answer = Concurrency(Reply("ok", input_tokens=100, output_tokens=10))
    app = App(sqlite_url)
    llm = LLM("openai:gpt-4.1-mini", base_url="http://unused")

    @app.workflow
    async def wf() -> int:
        set_budget(Budget(tokens=2_000, on_exceed="fail"))
        replies = await asyncio.gather(
            *(llm.chat([user_message(f"call {i}")], max_tokens=100) for i in range(5)))
        return len(replies)

    async with ScriptedLLMServer(responder=answer) as server:
        llm.base_url = server.base_url
        async with app.worker():
            assert await (await app.start(wf, run_id="g2")).result(timeout=30) == 5
    assert answer.most == 5
    await llm.aclose()
    await app.close()


async def test_a_failed_attempt_releases_its_reservation(sqlite_url: str) -> None:
    """Two gathered calls whose bounds do not fit together. The first goes; its first
    attempt fails (503) and is retried after 0.2 s. Its reservation goes with the failed
    attempt, so the second, which waited for it, is decided alone and goes meanwhile;
    then the first's retry. Had the reservation stayed until the retry answered, the
    second would have waited for it (the order first, first, second). Before
    reservations the two were in flight at once."""
    calls: list[str] = []
    most = [0, 0]

    async def respond(request: RecordedRequest) -> Reply | Fault:
        prompt = request.body["messages"][-1]["content"]
        calls.append(prompt)
        most[0] += 1
        most[1] = max(most)
        try:
            await asyncio.sleep(0.05)
        finally:
            most[0] -= 1
        if calls == ["first"]:
            return Fault.http(503, "overloaded")
        return Reply(f"{prompt} answered", input_tokens=490, output_tokens=10)

    app = App(sqlite_url)
    llm = LLM("openai:gpt-4.1-mini", base_url="http://unused",
              retry=tether.RetryPolicy(initial_interval=0.2, max_attempts=None))

    @app.workflow
    async def wf() -> list[str]:
        set_budget(Budget(tokens=1_500, on_exceed="fail"))
        outcomes = await asyncio.gather(llm.chat([user_message("first")]),
                                        llm.chat([user_message("second")]),
                                        return_exceptions=True)
        return [outcome(o) for o in outcomes]

    async with ScriptedLLMServer(responder=respond) as server:
        llm.base_url = server.base_url
        async with app.worker():
            outcomes = await (await app.start(wf, run_id="g3")).result(timeout=30)
        await llm.aclose()
    assert outcomes == ["first answered", "second answered"]
    assert calls == ["first", "second", "first"] and most[1] == 1
    await app.close()


async def test_a_crash_mid_way_gives_the_same_decisions(store_url: str) -> None:
    """The five gathered calls again, with the worker stopped (its steps cut off, as a
    crash does) while the second admitted call is in flight: the journal then holds the
    first call only, and the ledger is gone with the execution. A new worker replays the
    first call and decides the four others live: the same decisions, position by
    position, as an uninterrupted run (two answered, three refused at 2,000 tokens
    spent), and the finished run replays against its journal."""
    requests = 0
    gate = asyncio.Event()

    async def respond(request: RecordedRequest) -> Reply:
        nonlocal requests
        requests += 1
        if requests == 2:
            await gate.wait()  # the first worker is stopped meanwhile
        return Reply("ok", input_tokens=990, output_tokens=10)

    app = App(store_url)
    llm = LLM("openai:gpt-4.1-mini", base_url="http://unused")

    @app.workflow
    async def five() -> list[str]:
        set_budget(Budget(tokens=1_500, on_exceed="fail"))
        outcomes = await asyncio.gather(
            *(llm.chat([user_message(f"call {i}")]) for i in range(5)),
            return_exceptions=True)
        return [outcome(o) for o in outcomes]

    async with ScriptedLLMServer(responder=respond) as server:
        llm.base_url = server.base_url
        async with app.worker():
            handle = await app.start(five, run_id="c1")
            await wait_for(lambda: requests == 2, timeout=15)
            # The first call's entry commits a moment after its answer admitted the
            # second call (the ledger is in memory): stopped before, the cut would hold
            # nothing (1 in 40 runs under load), not the state this test is about.
            for _ in range(750):
                if (await app.get_run("c1")).journal:
                    break
                await asyncio.sleep(0.02)
        cut = await app.get_run("c1")
        assert [(e["position"], e["status"]) for e in cut.journal] == [(0, "ok")]
        gate.set()
        async with app.worker():
            outcomes = await handle.result(timeout=30)
            calm = await (await app.start(five, run_id="c2")).result(timeout=30)
        await llm.aclose()
    assert outcomes == calm == ["ok", "ok"] + ["BudgetExceeded"] * 3
    crashed, uninterrupted = await app.get_run("c1"), await app.get_run("c2")
    decisions = [[(e["position"], e["status"], (e["error"] or {}).get("message"))
                  for e in info.journal] for info in (crashed, uninterrupted)]
    assert decisions[0] == decisions[1]
    assert [d[1] for d in decisions[0]] == ["ok", "ok", "error", "error", "error"]
    assert requests == 3 + 2  # the call cut off was asked again
    [verdict] = await replay(app, await export_history(app, "c1"))
    assert verdict.compatible, verdict.message
    await app.close()


async def test_gathered_calls_over_budget_wait_for_one_raise(store_url: str) -> None:
    """Policy ``wait`` with the five gathered calls: two go, three are refused and
    wait, released, for the ``budget`` signal. One raise lets all three go: the first
    refused call waits for the signal, the others wait for it (in memory, each a patch
    marker in the journal), and every one is issued again under the new limits. A
    replay of the finished run takes the same branches."""
    answer = Concurrency(Reply("ok", input_tokens=990, output_tokens=10))
    app = App(store_url)
    llm = LLM("openai:gpt-4.1-mini", base_url="http://unused")

    @app.workflow
    async def wf() -> list[str]:
        set_budget(tokens=1_500)
        replies = await asyncio.gather(
            *(llm.chat([user_message(f"call {i}")]) for i in range(5)))
        return [r.text or "" for r in replies]

    async with ScriptedLLMServer(responder=answer) as server:
        llm.base_url = server.base_url
        async with app.worker(sticky_wait=0.01, poll_interval=0.05):
            handle = await app.start(wf, run_id="w1")
            await wait_for(lambda: status_is(app, "w1", "waiting"), timeout=15)
            info = await app.get_run("w1")
            assert info.waiting_for == "signal budget"
            assert info.status_info["spent_tokens"] == 2_000
            assert len(server.requests) == 2
            await app.signal("w1", "budget", {"tokens": 10_000})
            assert await handle.result(timeout=15) == ["ok"] * 5
        await llm.aclose()
        assert len(server.requests) == 5
    info = await app.get_run("w1")
    kinds = [e["kind"] for e in info.journal]
    assert kinds.count("signal") == 1 and kinds.count("step") == 8
    assert info.metrics["tokens.input"] + info.metrics["tokens.output"] == 5_000
    assert info.status_info is None
    [verdict] = await replay(app, await export_history(app, "w1"))
    assert verdict.compatible, verdict.message
    await app.close()


async def test_metered_requests_reserve_the_budget_too(sqlite_url: str) -> None:
    """``MeteredModel`` (the pydantic-ai and OpenAI Agents SDK integrations): five
    gathered requests of 1,000 tokens under ``Budget(tokens=1_500)``, each estimated
    right (990 + ``max_output_tokens=10``): no two fit at once, so one goes, and the
    four others, decided once it answered (1,000 + ~990 > 1,500), are refused. Before
    reservations all five went at once (5,000 tokens)."""
    in_flight = [0, 0]

    async def request() -> dict[str, Any]:
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        try:
            await asyncio.sleep(0.05)
        finally:
            in_flight[0] -= 1
        return {"usage": {"input_tokens": 990, "output_tokens": 10}}

    def usage(result: Any) -> tuple[Usage, str | None]:
        return Usage.from_dict(result["usage"]), None

    meter = MeteredModel("openai", base_url="http://unused", breaker=None)
    app = App(sqlite_url)

    @app.workflow
    async def wf() -> list[str]:
        set_budget(Budget(tokens=1_500, on_exceed="fail"))
        outcomes = await asyncio.gather(
            *(meter.call("metered:test", request, model="gpt-4.1-mini", usage=usage,
                         estimate_tokens=990, max_output_tokens=10, args={"i": i})
              for i in range(5)), return_exceptions=True)
        return ["refused" if isinstance(o, BudgetExceeded) else "ok" for o in outcomes]

    async with app.worker():
        outcomes = await (await app.start(wf, run_id="m1")).result(timeout=30)
    assert outcomes == ["ok"] + ["refused"] * 4
    assert in_flight[1] == 1
    info = await app.get_run("m1")
    assert info.metrics["tokens.input"] + info.metrics["tokens.output"] == 1_000
    await app.close()


async def test_a_metered_jobs_polls_are_one_call_and_never_refused(
        sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """``MeteredModel`` and a job (OpenAI's background mode) under ``Budget(tokens=
    1_500)``: the request that queues it answers without usage (``pending=``: no
    warning) and is the call; another request then spends 1,400 tokens; the job's poll
    (``polls=True``, estimated 990: a request would be refused) is not refused, adds no
    call, and counts the 1,000 tokens the job used, so the next request is refused.
    Replayed (the run released by a sleep), the job is one saved call."""
    async def queue() -> dict[str, Any]:
        return {"state": "suspended", "usage": {"input_tokens": 0, "output_tokens": 0}}

    async def other() -> dict[str, Any]:
        return {"state": "complete", "usage": {"input_tokens": 1_300, "output_tokens": 100}}

    async def poll() -> dict[str, Any]:
        return {"state": "complete", "usage": {"input_tokens": 900, "output_tokens": 100}}

    def usage(result: Any) -> tuple[Usage, str | None]:
        return Usage.from_dict(result["usage"]), None

    def pending(result: Any) -> bool:
        return bool(result["state"] == "suspended")

    meter = MeteredModel("openai", base_url="http://jobs.invalid", breaker=None)
    app = App(sqlite_url)

    @app.workflow
    async def wf() -> str:
        set_budget(Budget(tokens=1_500, on_exceed="fail"))
        await meter.call("metered:queue", queue, model="gpt-4.1-mini", usage=usage,
                         estimate_tokens=10, pending=pending)
        await meter.call("metered:other", other, model="gpt-4.1-mini", usage=usage,
                         estimate_tokens=10, pending=pending)
        await meter.call("metered:poll", poll, model="gpt-4.1-mini", usage=usage,
                         estimate_tokens=990, pending=pending, polls=True)
        await tether.sleep(0.3)  # (past sticky_wait: the next execution replays)
        try:
            await meter.call("metered:next", other, model="gpt-4.1-mini", usage=usage,
                             estimate_tokens=10, pending=pending)
        except BudgetExceeded as exc:
            return f"refused at {exc.spent_tokens}"
        return "sent"

    with caplog.at_level("WARNING", logger="tether.ai"):
        async with app, app.worker(sticky_wait=0.05, poll_interval=0.05):
            assert await (await app.start(wf, run_id="jobs")).result(timeout=30) == \
                "refused at 2400"
            info = await app.get_run("jobs")
    assert not [r for r in caplog.records if "without the usage" in r.getMessage()]
    assert [e["name"] for e in info.journal if e["kind"] == "step"] == [
        "metered:queue", "metered:other", "metered:poll", "metered:next"]
    assert info.journal[2]["result"]["poll"] is True
    assert info.metrics["llm.calls"] == 2
    assert info.metrics["tokens.input"] + info.metrics["tokens.output"] == 2_400
    assert info.metrics["saved.calls"] == 2
    assert info.metrics["saved.tokens.input"] == 1_300 + 900


@pytest.mark.parametrize("decided", ["live", "on replay"])
async def test_a_metered_call_that_fails_for_good_counts_its_paid_attempts(
        store_url: str, decided: str) -> None:
    """``MeteredModel``: a request whose three attempts are all cut after the provider
    told its prompt (1,000 tokens) and 40 characters of answer came (10 tokens
    estimated) fails for good once its retries run out. The workflow catches the error;
    what the three attempts were paid (3,030 tokens, carried on the final journaled
    error) is in the run's tally, so its next request (990 estimated) is refused by a
    4,000-token budget: in the execution that made the attempts, and in the next one
    (the run released by a sleep), which reads them back from the replayed error. The
    budget used to forget them once the call failed: the next request was sent."""
    sent: list[str] = []
    executions: list[int] = []
    price = PriceTable().price("gpt-4.1-mini")

    async def cut() -> dict[str, Any]:
        sent.append("cut")
        exc = RetryableProviderError("stream cut", provider="openai", status=200)
        exc.usage, exc.delivered = Usage(1000, 0), 40
        raise exc

    async def answer() -> dict[str, Any]:
        sent.append("answer")
        return {"usage": {"input_tokens": 990, "output_tokens": 10}}

    def usage(result: Any) -> tuple[Usage, str | None]:
        return Usage.from_dict(result["usage"]), None

    meter = MeteredModel("openai", base_url="http://unused", breaker=None,
                         retry=tether.RetryPolicy(initial_interval=0.01, max_attempts=3))
    app = App(store_url)

    @app.workflow
    async def wf() -> dict[str, Any]:
        executions.append(1)
        set_budget(Budget(tokens=4_000, on_exceed="fail"))
        try:
            await meter.call("metered:cut", cut, model="gpt-4.1-mini", usage=usage,
                             estimate_tokens=990)
        except BudgetExceeded:
            raise
        except Exception as exc:
            failed = type(exc).__name__
        if decided == "on replay":
            await tether.sleep(0.3)  # (past sticky_wait: the next execution replays)
        try:
            await meter.call("metered:next", answer, model="gpt-4.1-mini", usage=usage,
                             estimate_tokens=990)
        except BudgetExceeded as exc:
            return {"failed": failed, "refused": exc.spent_tokens, "usd": exc.spent_usd}
        return {"failed": failed, "refused": None}

    async with app, app.worker(sticky_wait=0.05, poll_interval=0.05):
        got = await (await app.start(wf, run_id="m-fail")).result(timeout=30)
        info = await app.get_run("m-fail")
    assert sent == ["cut"] * 3
    assert got == {"failed": "StepError[RetryableProviderError]", "refused": 3030,
                   "usd": pytest.approx(3 * price.cost(Usage(1000, 10)))}, got
    error = info.journal[0]["error"]
    assert error["attrs"]["failed_attempts"] == {
        "tokens": 3030, "estimated": 30, "usd": pytest.approx(3 * price.cost(Usage(1000, 10)))}
    assert info.metrics["tokens.input"] == 3000 and info.metrics["tokens.output"] == 30
    assert info.metrics["tokens.estimated"] == 30
    # "on replay": the second execution got the failure from the journal.
    assert len(executions) == (2 if decided == "on replay" else 1)


def test_a_child_share_is_what_is_left_split_between_the_children_started_together() -> None:
    """What the run spent, its calls in flight and the shares it holds for other
    children are cut from the limits; the rest is split between the children started
    together; a child's spend, rolled up, replaces its share."""
    spending = RunSpending(budget=Budget(tokens=1000, usd=1.0))
    spending.add(200, 0.10)
    call = Claim()
    call.in_flight, call.tokens, call.usd = True, 100, 0.05
    spending.claims.add(call)
    spending.splitting = 2
    first = spending.share()
    assert first is not None
    assert (first.tokens, first.usd, first.on_exceed) == (350, pytest.approx(0.425), "wait")
    spending.hold("a", first)
    assert spending.splitting == 1 and spending.held() == (350, pytest.approx(0.425))
    second = spending.share()
    assert second is not None and second.tokens == 350
    spending.hold("b", second)
    spending.roll_up("a", 50, 0.01)
    assert spending.children == {"b": (350, pytest.approx(0.425))}
    assert spending.tokens == 250
    assert RunSpending().share() is None  # no budget, no share


def test_the_stricter_budget_takes_the_lower_limits_and_fail() -> None:
    own = Budget(usd=2.0, on_exceed="wait")
    share = Budget(usd=5.0, tokens=790, on_exceed="fail")
    assert stricter(own, share) == Budget(usd=2.0, tokens=790, on_exceed="fail")
    assert stricter(None, share) is share and stricter(own, None) is own
    assert stricter(Budget(tokens=10), Budget(tokens=20)) == Budget(tokens=10)
    assert Budget.from_dict(share.to_dict()) == share
    for bad in (None, "x", {}, {"tokens": -1}, {"usd": "1"}, {"tokens": 5, "on_exceed": "?"}):
        assert Budget.from_dict(bad) is None


async def test_a_usd_budget_refuses_a_model_it_cannot_price(
        sqlite_url: str, server: ScriptedLLMServer) -> None:
    """A model the price table does not know costs $0 against a budget: under a USD
    limit alone its calls went on without end (here: five calls of 100,000 tokens
    under $0.01, all sent). Now the first is refused, journaled, before any request,
    with what to do; priced at (0, 0), or under a token limit too, it goes."""
    server.set_script([Reply("ok", input_tokens=100_000, output_tokens=10)] * 10)
    app = App(sqlite_url)
    unpriced = LLM("openai-compatible:my-llama", base_url=server.base_url, api_key="k",
                   breaker=None)
    free = LLM("openai-compatible:my-llama", base_url=server.base_url, api_key="k",
               breaker=None, prices={"my-llama": (0, 0)})

    @app.workflow
    async def wf(which: str, tokens: int | None) -> int:
        set_budget(usd=0.01, tokens=tokens, on_exceed="fail")
        llm = unpriced if which == "unpriced" else free
        for i in range(5):
            await llm.chat([user_message(f"q{i}")])
        return 5

    async with app.worker():
        with pytest.raises(RunFailed, match=r"ProviderConfigError: model 'my-llama' has no "
                                            r"price, so a budget in USD cannot bound"):
            await (await app.start(wf, "unpriced", None, run_id="u1")).result(timeout=15)
        assert len(server.requests) == 0
        assert await (await app.start(wf, "free", None, run_id="u2")).result(timeout=15) == 5
        with pytest.raises(RunFailed, match="BudgetExceeded"):
            await (await app.start(wf, "unpriced", 250_000, run_id="u3")).result(timeout=15)
    assert len(server.requests) == 5 + 3
    info = await app.get_run("u1")
    assert info.journal[0]["status"] == "error" and info.journal[0]["attempts"] == 1
    await unpriced.aclose()
    await free.aclose()
    await app.close()


async def test_an_absurd_max_tokens_reaches_the_provider_not_an_overflow(
        sqlite_url: str, server: ScriptedLLMServer) -> None:
    """``max_tokens=10**400`` under a USD budget: its reservation is counted at most
    2**53 tokens, so the call is decided and sent (the provider answers for it, here
    with a reply); before, pricing the bound raised OverflowError in the step, retried
    without end, the run never ending and nothing said to the caller."""
    server.set_script([Reply("ok", input_tokens=10, output_tokens=5)])
    app = App(sqlite_url)
    llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url, api_key="k", breaker=None)

    @app.workflow
    async def wf() -> str:
        set_budget(usd=1.0)
        return (await llm.chat([user_message("q")], max_tokens=10**400)).text or ""

    async with app.worker():
        assert await (await app.start(wf, run_id="huge")).result(timeout=15) == "ok"
    assert server.requests[0].body["max_tokens"] == 10**400
    await llm.aclose()
    await app.close()


async def test_a_budget_signal_with_a_limit_past_any_float_changes_nothing(
        sqlite_url: str, server: ScriptedLLMServer) -> None:
    """``{"tokens": 10**400}`` is valid JSON that ``tether signal`` or the API sends as
    it is: the run waiting on its budget takes it as a malformed raise (nothing
    changes, it waits again) and goes on with the next one; before, OverflowError
    failed the run. ``budget_payload`` (MCP answers) and ``Budget`` refuse it clearly."""
    server.set_script([Reply("ok", input_tokens=100, output_tokens=5)])
    app = App(sqlite_url)
    llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url, api_key="k", breaker=None)

    @app.workflow
    async def wf() -> str:
        set_budget(tokens=50)
        return (await llm.chat([user_message("q" * 400)])).text or ""

    async with app.worker():
        handle = await app.start(wf, run_id="huge")
        await wait_for(lambda: status_is(app, "huge", "waiting"), timeout=15)
        await app.signal("huge", "budget", {"tokens": 10**400, "usd": 10**400})

        async def took_it() -> bool:  # (the signal journaled, the run ended or waiting)
            info = await app.get_run("huge")
            return (any(e["kind"] == "signal" for e in info.journal)
                    and info.status in ("waiting", "failed"))

        await wait_for(took_it, timeout=15)
        assert (await app.get_run("huge")).status == "waiting"
        await app.signal("huge", "budget", {"tokens": 1000})
        assert await handle.result(timeout=15) == "ok"
    with pytest.raises(ValueError, match="tokens must be a whole number >= 0"):
        budget_payload({"tokens": 10**400})
    with pytest.raises(ValueError, match="usd must be a number >= 0"):
        budget_payload({"usd": 10**400})
    with pytest.raises(ConfigError, match="tokens= must be a finite number"):
        Budget(tokens=10**400)
    await llm.aclose()
    await app.close()


@pytest.mark.parametrize("cut", ["reset", "error"])
async def test_a_streamed_attempt_cut_after_its_usage_counts_it(store_url: str,
                                                                cut: str) -> None:
    """Anthropic reports a stream's input tokens (and 1 output token) in its first
    event: the attempt cut after two chunks (connection reset, or an ``overloaded``
    error event) was paid for them. They count in the run's metrics and its budget, as
    the retried attempt's answer does: 1,000 input, and the output the two chunks
    delivered ("one two ", 8 characters: 2 tokens, more than the 1 told, so 1 of them
    estimated), + 1,050 = 2,052 tokens against 1,500, so the next call is refused,
    also when the run is replayed (after a signal) before it. They used to count
    nothing: 1,050 spent, the next call sent."""
    app = App(store_url)
    fault = ({"reset_after_chunks": 2} if cut == "reset" else {"error_after_chunks": 2})

    async with ScriptedLLMServer() as server:
        server.set_script([Reply("one two three four", input_tokens=1000, output_tokens=50,
                                 **fault),
                           Reply("one two three four", input_tokens=1000, output_tokens=50),
                           Reply("never", input_tokens=10, output_tokens=1)])
        llm = LLM("anthropic:claude-sonnet-4-5", base_url=server.anthropic_base_url,
                  api_key="test", breaker=None,
                  retry=tether.RetryPolicy(initial_interval=0.01, max_attempts=None))

        @app.workflow
        async def wf() -> str:
            set_budget(Budget(tokens=1_500, on_exceed="fail"))
            first = await llm.stream([user_message("First.")])
            await tether.wait_for_signal("go")
            await llm.chat([user_message("Second.")])
            return first.text or ""

        async with app, app.worker():
            handle = await app.start(wf, run_id=f"s-{cut}")
            await wait_for(lambda: status_is(app, f"s-{cut}", "waiting"), timeout=20)
            await app.signal(f"s-{cut}", "go")
            with pytest.raises(RunFailed, match=r"BudgetExceeded.*2052 tokens spent"):
                await handle.result(timeout=30)
            info = await app.get_run(f"s-{cut}")
        await llm.aclose()
    assert len(server.requests) == 2
    assert info.metrics["tokens.input"] == 2000 and info.metrics["tokens.output"] == 52
    assert info.metrics["llm.calls"] == 1 and info.metrics["tokens.estimated"] == 1


def _estimated_prompt(message: dict[str, Any]) -> int:
    """The documented estimate of a one-message prompt's tokens: the message's
    canonical JSON (sorted keys, no spaces) at 4 bytes a token, plus one."""
    return len(json.dumps(message, sort_keys=True, separators=(",", ":")).encode()) // 4 + 1


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("cut", ["reset", "error"])
async def test_a_stream_cut_before_its_usage_counts_an_estimate(store_url: str, api: str,
                                                                cut: str) -> None:
    """OpenAI tells a stream's usage at its end only (Chat Completions' last chunk, the
    Responses API's ``response.completed``): an attempt cut midway (connection reset,
    or an error event) told nothing, though the provider billed its prompt and the
    output it delivered. It counts an estimate: the prompt's (4,000 characters: its
    canonical JSON at 4 bytes a token) and the two chunks delivered (800 characters:
    200 tokens), in the metrics (``tokens.estimated`` says how many are estimates) and
    in the budget (the retry still fits: 1,208 + 1,008 <= 2,250), also when the run is
    replayed (after a signal) before the next call, which is refused: 1,008 + 200 +
    1,050 >= 2,250. It used to count nothing: 1,050
    spent, the next call sent, and an agent whose streams kept being cut spent without
    bound. The attempts that got no answer (a 503, a reset before any byte) count
    nothing: providers do not bill them. ``tether show`` and the call's span say how
    many tokens are estimated."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import tether.otel

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = App(store_url)
    fault = ({"reset_after_chunks": 2} if cut == "reset" else {"error_after_chunks": 2})
    words = " ".join(w * 399 for w in "abcd")  # (4 chunks of 400 characters, spaces included)
    prompt = user_message("q" * 4000)
    estimate_in = _estimated_prompt(prompt)
    estimate_out = 800 // 4

    async with ScriptedResponsesServer() as server:
        server.set_script([Fault.http(503), Fault.reset(),
                           Reply(words, input_tokens=1000, output_tokens=50, **fault),
                           Reply(words, input_tokens=1000, output_tokens=50),
                           Reply("never", input_tokens=10, output_tokens=1)])
        llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url, api_key="test",
                  breaker=None, api=api,
                  retry=tether.RetryPolicy(initial_interval=0.01, max_attempts=None))

        @app.workflow
        async def wf() -> str:
            set_budget(Budget(tokens=2_250, on_exceed="fail"))
            first = await llm.stream([prompt])
            await tether.wait_for_signal("go")
            await llm.chat([user_message("Second.")])
            return first.text or ""

        run_id = f"o-{api}-{cut}"
        observer = tether.otel.instrument(provider)
        try:
            async with app, app.worker():
                handle = await app.start(wf, run_id=run_id)
                await wait_for(lambda: status_is(app, run_id, "waiting"), timeout=20)
                await app.signal(run_id, "go")
                spent = estimate_in + estimate_out + 1050
                with pytest.raises(RunFailed,
                                   match=rf"BudgetExceeded.*{spent} tokens spent"):
                    await handle.result(timeout=30)
                info = await app.get_run(run_id)
        finally:
            tether.otel.uninstrument(observer)
            await llm.aclose()
    assert len(server.requests) == 4
    assert info.metrics["tokens.input"] == estimate_in + 1000
    assert info.metrics["tokens.output"] == estimate_out + 50
    assert info.metrics["tokens.estimated"] == estimate_in + estimate_out
    assert info.metrics["llm.calls"] == 1
    record = info.journal[0]["result"]
    assert record["failed"]["tokens"] == record["failed"]["estimated"] == (
        estimate_in + estimate_out)
    assert record["failed"]["usd"] == pytest.approx(
        (estimate_in * 0.4 + estimate_out * 1.6) / 1e6)
    shown: list[str] = []
    print_metrics(info.metrics, shown.append)
    assert (f"{estimate_in + 1000:,} input + {estimate_out + 50:,} output tokens" in shown[1]
            and f"({estimate_in + estimate_out:,} tokens estimated: answers cut before "
            "their usage was told)" in shown[1]), shown
    answered = [dict(s.attributes or {}) for s in exporter.get_finished_spans()
                if (s.attributes or {}).get("gen_ai.usage.input_tokens") == 1000]
    assert len(answered) == 1
    assert answered[0]["tether.failed_attempts.tokens"] == estimate_in + estimate_out
    assert answered[0]["tether.failed_attempts.estimated_tokens"] == (
        estimate_in + estimate_out)


@pytest.mark.parametrize("api", ["chat", "responses", "anthropic"])
async def test_a_plain_answer_cut_in_its_body_counts_its_prompt(store_url: str,
                                                                api: str) -> None:
    """A plain (not streamed) answer whose connection drops in its body (headers and
    half the body sent) was billed whole, though nothing of its usage arrived. It counts
    an estimate of its prompt (4,000 characters: 1,008 tokens, its canonical JSON at 4
    bytes a token) and no output (the bytes that came are mostly not answer), in the
    metrics and the budget: 1,008 + 1,050 against 2,060, so the next call is refused,
    also when the run is replayed (after a signal) before it. It used to count nothing:
    1,050 spent, the next call sent, and an agent whose plain calls kept being cut spent
    without bound. A reset before any byte of answer counts nothing."""
    app = App(store_url)
    prompt = user_message("q" * 4000)
    estimate_in = _estimated_prompt(prompt)

    async with ScriptedResponsesServer() as server:
        server.set_script([Fault.reset(), Fault.truncate(),
                           Reply("answer", input_tokens=1000, output_tokens=50),
                           Reply("never", input_tokens=10, output_tokens=1)])
        llm = (LLM("anthropic:claude-sonnet-4-5", base_url=server.anthropic_base_url,
                   api_key="test", breaker=None,
                   retry=tether.RetryPolicy(initial_interval=0.01, max_attempts=None))
               if api == "anthropic" else
               LLM("openai:gpt-4.1-mini", base_url=server.base_url, api_key="test",
                   breaker=None, api=api,
                   retry=tether.RetryPolicy(initial_interval=0.01, max_attempts=None)))

        @app.workflow
        async def wf() -> str:
            set_budget(Budget(tokens=2_060, on_exceed="fail"))
            first = await llm.chat([prompt])
            await tether.wait_for_signal("go")
            await llm.chat([user_message("Second.")])
            return first.text or ""

        run_id = f"p-{api}"
        try:
            async with app, app.worker():
                handle = await app.start(wf, run_id=run_id)
                await wait_for(lambda: status_is(app, run_id, "waiting"), timeout=20)
                await app.signal(run_id, "go")
                with pytest.raises(RunFailed,
                                   match=rf"BudgetExceeded.*{estimate_in + 1050} tokens spent"):
                    await handle.result(timeout=30)
                info = await app.get_run(run_id)
        finally:
            await llm.aclose()
    assert [r.outcome for r in server.requests] == ["fault:reset", "fault:truncate", "reply"]
    assert info.metrics["tokens.input"] == estimate_in + 1000
    assert info.metrics["tokens.output"] == 50
    assert info.metrics["tokens.estimated"] == estimate_in
    assert info.metrics["llm.calls"] == 1
    record = info.journal[0]["result"]
    assert record["failed"]["tokens"] == record["failed"]["estimated"] == estimate_in


@pytest.mark.parametrize("exhausted", ["next call", "next attempt"])
async def test_cut_attempts_paid_before_a_release_still_count(store_url: str,
                                                              exhausted: str) -> None:
    """Anthropic streams cut after their usage was told (1,002 tokens paid each), retried
    after a wait longer than the worker's ``sticky_wait``: the run is released between
    attempts, and each attempt runs in a new execution. What the earlier executions'
    attempts were paid is carried on each failure's journaled error, so the record's
    ``failed`` counts all three cuts and the next call is refused by a budget they
    exhausted (3,006 + 1,050 >= 4,000); with a budget of 2,010 the third attempt is
    refused itself (2,004 spent + its prompt's 9). The metrics count each cut once.
    They used to count the last execution's cut only: the record said 1,002, the next
    call (or attempt) was sent, past the budget."""
    app = App(store_url)
    cut = Reply("one two three four", input_tokens=1000, output_tokens=50,
                reset_after_chunks=2)
    limit = 4_000 if exhausted == "next call" else 2_010

    async with ScriptedLLMServer() as server:
        server.set_script([cut, cut, cut,
                           Reply("one two three four", input_tokens=1000, output_tokens=50),
                           Reply("never", input_tokens=10, output_tokens=1)])
        llm = LLM("anthropic:claude-sonnet-4-5", base_url=server.anthropic_base_url,
                  api_key="test", breaker=None,
                  retry=tether.RetryPolicy(initial_interval=0.2, backoff=1.0,
                                           max_attempts=None))

        @app.workflow
        async def wf() -> str:
            set_budget(Budget(tokens=limit, on_exceed="fail"))
            first = await llm.stream([user_message("First.")])
            await llm.chat([user_message("Second.")])
            return first.text or ""

        run_id = f"rel-{exhausted.replace(' ', '-')}"
        async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
            handle = await app.start(wf, run_id=run_id)
            spent = 4056 if exhausted == "next call" else 2004
            with pytest.raises(RunFailed, match=rf"BudgetExceeded.*{spent} tokens spent"):
                await handle.result(timeout=60)
            info = await app.get_run(run_id)
        await llm.aclose()
    if exhausted == "next call":
        assert len(server.requests) == 4
        assert info.journal[0]["result"]["failed"] == {
            "tokens": 3006, "estimated": 3,
            "usd": pytest.approx(3 * PriceTable().price("claude-sonnet-4-5").cost(
                Usage(1000, 2)))}
        assert info.metrics["tokens.input"] == 4000 and info.metrics["tokens.output"] == 56
        assert info.metrics["llm.calls"] == 1 and info.metrics["tokens.estimated"] == 3
    else:
        assert len(server.requests) == 2
        refused = info.journal[0]["error"]
        assert refused["type"] == "tether.ai.BudgetExceeded"
        assert refused["attrs"]["failed_attempts"]["tokens"] == 2004
        assert info.metrics["tokens.input"] == 2000 and info.metrics["tokens.output"] == 4


def test_the_budget_hint_names_its_run_shell_quoted_and_an_older_hint_gets_it() -> None:
    """A hint written now holds the run's id, quoted as a shell needs it, and is taken
    as it is (an id holding ``RUN_ID`` is not replaced again); a hint recorded before it
    held the id gets the run's id for its ``RUN_ID``."""
    assert budget_hint("ticket 7") == "raise it: tether budget 'ticket 7' --usd X --tokens N"
    assert raise_command(budget_hint("RUN_ID-2"), "RUN_ID-2") == (
        "tether budget RUN_ID-2 --usd X --tokens N")
    assert raise_command(BUDGET_HINT_BEFORE, "it's") == (
        "tether budget 'it'\"'\"'s' --usd X --tokens N")
    assert raise_command("wait a bit", "b1") is None and raise_command(None, "b1") is None


async def test_show_says_a_runs_budget_whether_or_not_it_waits_on_it(
        store_url: str, server: ScriptedLLMServer) -> None:
    """``tether show`` (and ``--json``'s ``budget``) said a run's budget only while the
    run waited on it (its status's figures): a run under ``Budget(tokens=5000,
    usd=0.5)`` that spent 1,840 tokens and waited for another signal, or ended, said
    nothing of it. Its limits are journaled with each call's record, and ``show`` says
    them with what the run spent. A run with no budget has no such line (``null``)."""
    from tests.cli.test_fit import on_terminal

    server.set_script([Reply("one", input_tokens=1800, output_tokens=40),
                       Reply("two", input_tokens=10, output_tokens=5)])
    app = App(store_url)
    llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url)

    @app.workflow
    async def budgeted() -> str:
        set_budget(Budget(tokens=5000, usd=0.5))
        first = await llm.chat([user_message("a question")])
        await tether.wait_for_signal("go")
        return first.text or ""

    @app.workflow
    async def unbudgeted() -> str:
        return (await llm.chat([user_message("another")])).text or ""

    async with app, app.worker(poll_interval=0.05):
        await app.start(budgeted, run_id="bs-1")
        await wait_for(lambda: _waits_for(app, "bs-1", "signal go"), timeout=20,
                       what="bs-1 waiting for go")
        cost = (await app.get_run("bs-1")).metrics["cost.usd"]
        waiting = await asyncio.to_thread(tether_cli, "show", "bs-1", db=store_url)
        as_json = await asyncio.to_thread(tether_cli, "show", "bs-1", "--json", db=store_url)
        await app.signal("bs-1", "go", None)
        await (app.handle("bs-1")).result(timeout=20)
        ended = await asyncio.to_thread(tether_cli, "show", "bs-1", db=store_url)
        fitted = await asyncio.to_thread(on_terminal, "show", "bs-1", db=store_url,
                                         columns=40)
        await (await app.start(unbudgeted, run_id="nb-1")).result(timeout=20)
        plain = await asyncio.to_thread(tether_cli, "show", "nb-1", db=store_url)
        plain_json = await asyncio.to_thread(tether_cli, "show", "nb-1", "--json",
                                             db=store_url)
    await llm.aclose()  # (its pooled connections, else warned of in a later test)
    line = f"budget: 1,840 of 5,000 tokens · ${cost:.4f} of $0.50"
    assert waiting.returncode == 0, waiting.stderr
    assert line in waiting.stdout.splitlines(), waiting.stdout
    assert json.loads(as_json.stdout)["budget"] == {
        "usd": 0.5, "tokens": 5000, "spent_usd": round(cost, 6), "spent_tokens": 1840}
    assert line in ended.stdout.splitlines(), ended.stdout
    # (on a terminal 40 columns wide: each limit's figures on a line, under the label)
    at = fitted.splitlines().index("budget: 1,840 of 5,000 tokens")
    assert fitted.splitlines()[at + 1] == f"        ${cost:.4f} of $0.50", fitted
    assert "budget:" not in plain.stdout, plain.stdout
    assert json.loads(plain_json.stdout)["budget"] is None


async def _waits_for(app: App, run_id: str, what: str) -> bool:
    return (await app.get_run(run_id)).waiting_for == what


def test_a_raise_warning_counts_the_next_calls_estimate() -> None:
    """The warning of a raise that cannot let a run waiting on its budget go on names a
    limit that does: what it spent plus its refused call's estimate (``estimate_*`` in
    its status), USD rounded up to the millionth shown. It said "a limit above what it
    spent", and a raise to just above that was refused again; a raise past what it spent
    but under the estimate was not warned of at all. A status recorded without the
    estimate keeps the words of old."""
    from tether.ai import Budget
    from tether.ai._budget import RunSpending, short_raise

    spending = RunSpending()
    spending.add(100, 0.000112)
    status = spending.status(Budget(usd=0.0001, tokens=1000), "r", ["usd"],
                             (16, 0.0000064))
    assert (status["estimate_tokens"], status["estimate_usd"]) == (16, 0.0000064)
    assert short_raise(status, None, 5000) == (
        "it stopped at its USD limit ($0.000112 spent of $0.000100), which this raise "
        "leaves as it was; a USD limit of at least $0.000119 ($0.000112 spent + "
        "~$0.000006 for its next call) lets it go on")
    assert short_raise(status, 0.000115, None) == (
        "the new USD limit, $0.000115, is under the $0.000112 it has spent + ~$0.000006 "
        "for its next call; a USD limit of at least $0.000119 lets it go on")
    assert short_raise(status, 0.000119, None) is None
    spending.check(Budget(usd=0.000119), estimate_tokens=16, estimate_usd=0.0000064)
    old = {k: v for k, v in status.items() if not k.startswith("estimate_")}
    assert short_raise(old, None, 5000) == (
        "it stopped at its USD limit ($0.000112 spent of $0.000100), which this raise "
        "leaves as it was; a USD limit above $0.000112 lets it go on")
    assert short_raise(old, 0.000115, None) is None


async def _show_json(app: App, url: str, run_id: str) -> dict[str, Any]:
    shown = await asyncio.to_thread(tether_cli, "show", run_id, "--json", db=url)
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


async def test_show_says_a_budget_before_the_runs_first_call(
        store_url: str, server: ScriptedLLMServer) -> None:
    """Before a run's first LLM call: a child run's share of its parent's budget is in
    its input, and ``tether show`` says it from its start, with ``no model call yet``.
    A run whose only budget is its call's (``llm.chat(budget=)``), the call in flight,
    says ``budget: no model call yet`` (those limits are journaled with the call;
    ``limits_unknown`` in ``--json``); once the call answers, its limits."""
    from tether.ai import call_child

    gate = asyncio.Event()

    async def held(_: RecordedRequest) -> Reply:
        await gate.wait()
        return Reply("one", input_tokens=1800, output_tokens=40)

    server.set_script([held])
    app = App(store_url)
    llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url)

    @app.workflow
    async def researcher() -> str:
        await tether.wait_for_signal("go")
        return (await llm.chat([user_message("a question")])).text or ""

    @app.workflow
    async def lead() -> str:
        set_budget(Budget(tokens=5000, usd=0.5))
        return str(await call_child(researcher))

    @app.workflow
    async def asker() -> str:
        return (await llm.chat([user_message("a question")],
                               budget=Budget(tokens=5000, usd=0.5))).text or ""

    async with app, app.worker(poll_interval=0.05):
        await app.start(lead, run_id="lead-1")
        child = await wait_for(lambda: _child_waiting(app, "lead-1"), timeout=20,
                               what="the child waiting for go")
        share = (await app.get_run(child)).input["ext"]["tether.ai.budget"]
        doc = await _show_json(app, store_url, child)
        assert doc["budget"] == {"usd": share["usd"], "tokens": share["tokens"],
                                 "spent_usd": 0.0, "spent_tokens": 0,
                                 "no_call_yet": True}, doc["budget"]
        assert share["tokens"] == 5000, share
        plain = await asyncio.to_thread(tether_cli, "show", child, db=store_url)
        assert ("budget: 0 of 5,000 tokens · $0 of $0.50 · no model call yet"
                in plain.stdout.splitlines()), plain.stdout
        await app.cancel("lead-1")

        await app.start(asker, run_id="ask-1")
        doc = await wait_for(lambda: _in_flight(app, store_url, "ask-1"), timeout=20,
                             what="ask-1's call in flight")
        assert doc["budget"] == {"usd": None, "tokens": None, "spent_usd": 0.0,
                                 "spent_tokens": 0, "limits_unknown": "no model call yet"}
        plain = await asyncio.to_thread(tether_cli, "show", "ask-1", db=store_url)
        assert ("budget: no model call yet (its limits are journaled with its calls)"
                in plain.stdout.splitlines()), plain.stdout
        gate.set()
        assert await app.handle("ask-1").result(timeout=20) == "one"
        doc = await _show_json(app, store_url, "ask-1")
        assert (doc["budget"]["tokens"], doc["budget"]["usd"]) == (5000, 0.5), doc["budget"]
        assert "no_call_yet" not in doc["budget"], doc["budget"]
    await llm.aclose()


async def test_a_budget_is_shown_from_when_the_workflow_enters_it(
        store_url: str, server: ScriptedLLMServer) -> None:
    """A run that sets its budget and then spends its first minutes in tool steps, no
    LLM call yet: ``tether show``, its ``--json`` (the API's document), ``tether
    budget``'s raise and the run page said nothing of its budget until its first call
    journaled the limits. They now say the limits from ``set_budget`` on, spent 0 and
    ``no model call yet``; a ``tether budget`` sent before the run reaches its budget
    (kept for then) is said as a raise sent and not taken yet. The limits are in the
    run's metrics under private keys (``App.get_run``'s ``metrics`` leave them out),
    not in its journal: its positions are those of the same run without a budget. A
    raise the run takes is kept there too."""
    from tether.serve._ui import run_view

    gate = asyncio.Event()
    server.set_script([Reply("one", input_tokens=1000, output_tokens=10),
                       Reply("two", input_tokens=1000, output_tokens=10)])
    app = App(store_url)
    llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url)

    @app.step
    async def search(query: str) -> str:
        await gate.wait()  # (a tool that takes minutes)
        return f"found {query}"

    @app.workflow
    async def researcher(budgeted: bool) -> list[str]:
        if budgeted:
            set_budget(Budget(usd=5.0, tokens=1500))
        await tether.wait_for_signal("go")
        found = await search("papers")
        first = await llm.chat([user_message(found + " a" * 2000)])
        second = await llm.chat([user_message("b " * 2000)])
        return [first.text or "", second.text or ""]

    async with app, app.worker(poll_interval=0.05, sticky_wait=0.01):
        await app.start(researcher, True, run_id="r-1")
        await wait_for(lambda: _waiting_for(app, "r-1", "signal go"), timeout=20,
                       what="r-1 waiting for go")
        doc = await _show_json(app, store_url, "r-1")
        assert doc["budget"] == {"usd": 5.0, "tokens": 1500, "spent_usd": 0.0,
                                 "spent_tokens": 0, "no_call_yet": True}, doc["budget"]
        await _budget_alone_is_the_documents(app, "r-1")  # (entered, no call yet)
        plain = await asyncio.to_thread(tether_cli, "show", "r-1", db=store_url)
        assert ("budget: 0 of 1,500 tokens · $0 of $5.00 · no model call yet"
                in plain.stdout.splitlines()), plain.stdout
        info = await app.get_run("r-1")
        assert info.budget_limits == {"usd": 5.0, "tokens": 1500}
        assert not [k for k in info.metrics if k.startswith("_")], info.metrics

        # (a budget signal that gives no limit changes nothing: not said as a raise)
        await app.signal("r-1", "budget", {"tokens": "5000"})
        raised = await asyncio.to_thread(tether_cli, "budget", "r-1", "--tokens", "5000",
                                         db=store_url)
        assert raised.returncode == 0, raised.stderr
        # (it said "set to 5,000 tokens" alone: the run keeps the raise for when it
        # reaches its budget)
        assert ("tether: warning: run 'r-1' is not waiting on its budget: it keeps these "
                "limits and takes them when it reaches its budget") in raised.stderr, \
            raised.stderr
        await app.signal("r-1", "go")
        await wait_for(lambda: _in_step(app, "r-1", "search"), timeout=20,
                       what="r-1 in its search step")
        doc = await _show_json(app, store_url, "r-1")
        assert doc["budget"] == {"usd": 5.0, "tokens": 1500, "spent_usd": 0.0,
                                 "spent_tokens": 0, "no_call_yet": True,
                                 "kept_raise": {"usd": None, "tokens": 5000, "more": 0}
                                 }, doc["budget"]
        await _budget_alone_is_the_documents(app, "r-1")  # (a raise kept)
        plain = await asyncio.to_thread(tether_cli, "show", "r-1", db=store_url)
        assert ("budget: 0 of 1,500 tokens · $0 of $5.00 · no model call yet · raise to "
                "5,000 tokens sent, not taken yet" in plain.stdout.splitlines()), plain.stdout
        card = (await run_view(app, "r-1"))["budget_card"]
        assert card == {"used": "0", "limits": ["0 of 1,500 tokens", "$0 of $5.00"],
                        "level": "", "note": "no model call yet · raise to 5,000 tokens "
                        "sent, not taken yet"}, card

        # The second call passes 1,500 tokens: the run takes the raise kept for it.
        gate.set()
        assert await app.handle("r-1").result(timeout=30) == ["one", "two"]
        doc = await _show_json(app, store_url, "r-1")
        assert doc["budget"] == {"usd": 5.0, "tokens": 5000, "spent_usd": doc["budget"][
            "spent_usd"], "spent_tokens": 2020}, doc["budget"]
        await _budget_alone_is_the_documents(app, "r-1")  # (ended, a raise taken)

        await app.start(researcher, False, run_id="r-2")
        await wait_for(lambda: _waiting_for(app, "r-2", "signal go"), timeout=20,
                       what="r-2 waiting for go")
        assert (await _show_json(app, store_url, "r-2"))["budget"] is None
        await app.signal("r-2", "budget", {"tokens": 5000})  # (no budget: never taken)
        server.set_script([Reply("one", input_tokens=1000, output_tokens=10),
                           Reply("two", input_tokens=1000, output_tokens=10)])
        await app.signal("r-2", "go")
        assert await app.handle("r-2").result(timeout=30) == ["one", "two"]
        budgeted, plain_run = (await app.get_run("r-1")).journal, (
            await app.get_run("r-2")).journal
    # (up to its first call: r-1 then waits on its budget and takes the raise)
    assert ([(e["position"], e["kind"], e["name"]) for e in budgeted[:3]]
            == [(e["position"], e["kind"], e["name"]) for e in plain_run[:3]]
            == [(0, "signal", "go"), (1, "step", "search"),
                (2, "step", "llm:openai:gpt-4.1-mini")]), (budgeted, plain_run)
    await llm.aclose()


async def test_a_run_that_ended_without_a_model_call_says_no_model_call(
        store_url: str) -> None:
    """A run that entered a budget and ended having called no model (its tools answered
    alone, or it failed first): ``tether show``, its ``--json`` (the API's document) and
    the run page said "no model call yet" (``"no_call_yet": true``) of a run that never
    will. They say "no model call" now (``"no_call": true``, ``no_call_yet`` absent)."""
    from tether.serve._ui import run_view

    app = App(store_url)

    @app.workflow
    async def thrifty(fail: bool) -> str:
        set_budget(Budget(usd=0.5, tokens=5000))
        if fail:
            raise ValueError("no model needed to fail")
        return "answered without a model"

    async with app, app.worker(poll_interval=0.05):
        assert await (await app.start(thrifty, False, run_id="t-1")).result(
            timeout=20) == "answered without a model"
        with pytest.raises(RunFailed):
            await (await app.start(thrifty, True, run_id="t-2")).result(timeout=20)
        for run_id in ("t-1", "t-2"):
            doc = await _show_json(app, store_url, run_id)
            assert doc["budget"] == {"usd": 0.5, "tokens": 5000, "spent_usd": 0.0,
                                     "spent_tokens": 0, "no_call": True}, doc["budget"]
            plain = await asyncio.to_thread(tether_cli, "show", run_id, db=store_url)
            assert ("budget: 0 of 5,000 tokens · $0 of $0.50 · no model call"
                    in plain.stdout.splitlines()), plain.stdout
            card = (await run_view(app, run_id))["budget_card"]
            assert card["note"] == "no model call", card


async def test_an_agents_budget_is_shown_while_its_first_call_is_in_flight(
        store_url: str, server: ScriptedLLMServer) -> None:
    """An agent's ``budget=`` is the run's budget from the agent's start: while its first
    model call is in flight, ``tether show`` says its limits with ``no model call yet``
    (it said ``no model call yet (its limits are journaled with its calls)``, limits
    unknown)."""
    from tether.ai import Agent

    gate = asyncio.Event()

    async def held(_: RecordedRequest) -> Reply:
        await gate.wait()
        return Reply("done", input_tokens=100, output_tokens=5)

    server.set_script([held])
    app = App(store_url)
    llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url)
    app.add_agent(Agent("budgeted", model=llm, budget=Budget(tokens=5000, usd=0.5)))
    async with app, app.worker(poll_interval=0.05):
        await app.start("budgeted", "answer briefly", run_id="ag-1")
        doc = await wait_for(lambda: _in_flight(app, store_url, "ag-1"), timeout=20,
                             what="ag-1's call in flight")
        assert doc["budget"] == {"usd": 0.5, "tokens": 5000, "spent_usd": 0.0,
                                 "spent_tokens": 0, "no_call_yet": True}, doc["budget"]
        await _budget_alone_is_the_documents(app, "ag-1")  # (a call in flight)
        plain = await asyncio.to_thread(tether_cli, "show", "ag-1", db=store_url)
        assert ("budget: 0 of 5,000 tokens · $0 of $0.50 · no model call yet"
                in plain.stdout.splitlines()), plain.stdout
        gate.set()
        assert await app.handle("ag-1").result(timeout=20) == "done"
    await llm.aclose()


async def _budget_alone_is_the_documents(app: App, run_id: str) -> None:
    """``budget_of`` (what the MCP face's budget request reads: the budget alone, not
    the run's earlier generations) is the run document's ``budget``, byte for byte."""
    from tether._show import budget_of, run_document

    doc = await run_document(app, run_id, children=False)
    assert json.dumps(await budget_of(app, run_id)) == json.dumps(doc["budget"])


async def _waiting_for(app: App, run_id: str, what: str) -> bool:
    return (await app.get_run(run_id)).waiting_for == what


async def _in_step(app: App, run_id: str, name: str) -> bool:
    from tether._show import run_document

    doc = await run_document(app, run_id, children=False)
    return any(op["name"] == name for op in doc["in_flight"])


async def _child_waiting(app: App, parent: str) -> str | None:
    kids = await app.store.run_search(parent=parent, limit=10)
    return next((k.run_id for k in kids if k.waiting_for == "signal go"), None)


async def _in_flight(app: App, url: str, run_id: str) -> dict[str, Any] | None:
    doc = await _show_json(app, url, run_id)
    return doc if doc["in_flight"] else None


async def test_show_and_the_run_page_cope_with_calls_recorded_before_their_limits(
        sqlite_url: str, server: ScriptedLLMServer) -> None:
    """Calls recorded before each call's record held its limits (the journals of
    ``tests/golden``: no ``"budget"`` in the record) tell no budget: ``tether show``,
    its ``--json`` and the run page's Budget card say the limits are unknown, with what
    the run spent, and do not fail. A call without a budget now records ``"budget":
    null``, and a run of those has no budget line."""
    import apsw
    import httpx

    from tether._budgets import LIMITS_NOT_RECORDED, run_budget
    from tether.serve import create_app
    from tether.testing import load_history

    golden = load_history(os.path.join(os.path.dirname(__file__), "..", "golden",
                                       "summarize.json"))
    assert run_budget(golden.journal, {}, None)["limits_unknown"] == LIMITS_NOT_RECORDED

    server.set_script([Reply("one", input_tokens=1800, output_tokens=40),
                       Reply("two", input_tokens=10, output_tokens=5)])
    app = App(sqlite_url)
    llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url)

    @app.workflow
    async def budgeted() -> str:
        set_budget(Budget(tokens=5000, usd=0.5))
        return (await llm.chat([user_message("a question")])).text or ""

    @app.workflow
    async def unbudgeted() -> str:
        return (await llm.chat([user_message("another")])).text or ""

    async with app, app.worker(poll_interval=0.05):
        assert await (await app.start(budgeted, run_id="old-1")).result(timeout=20) == "one"
        assert await (await app.start(unbudgeted, run_id="nb-2")).result(timeout=20) == "two"
        cost = (await app.get_run("old-1")).metrics["cost.usd"]
    await llm.aclose()
    (result,) = [e["result"] for e in (await _journal(sqlite_url, "nb-2"))]
    assert result["budget"] is None
    # The journal as an earlier Tether wrote it: the call's record without its limits.
    conn = apsw.Connection(sqlite_url.removeprefix("sqlite:///"))
    conn.execute("UPDATE tether_journal SET result = json_remove(result, '$.budget') "
                 "WHERE run_id = 'old-1'")
    # (nor did it keep the limits its workflow entered in the run's metrics)
    conn.execute("UPDATE tether_runs SET metrics = json_remove(metrics, "
                 "'$.\"_budget.entered\"', '$.\"_budget.usd\"', '$.\"_budget.tokens\"') "
                 "WHERE run_id = 'old-1'")
    conn.close()

    doc = await _show_json(app, sqlite_url, "old-1")
    assert doc["budget"] == {"usd": None, "tokens": None, "spent_usd": round(cost, 6),
                             "spent_tokens": 1840, "limits_unknown": LIMITS_NOT_RECORDED}
    plain = await asyncio.to_thread(tether_cli, "show", "old-1", db=sqlite_url)
    assert plain.returncode == 0, plain.stderr
    assert (f"budget: limits unknown ({LIMITS_NOT_RECORDED}) · 1,840 tokens · "
            f"${cost:.4f} spent") in plain.stdout.splitlines(), plain.stdout
    none = await asyncio.to_thread(tether_cli, "show", "nb-2", db=sqlite_url)
    assert "budget:" not in none.stdout, none.stdout
    reader = App(sqlite_url)
    await reader._open()
    try:
        async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(reader, tokens=None, mcp=False)),
                base_url="http://127.0.0.1") as http:
            page = (await http.get("/runs/old-1")).text
    finally:
        await reader.close()
    card = page[page.index('<div class="k">Budget</div>'):]
    card = card[:card.index("</div></div>")]
    assert "limits unknown" in card and "1,840 tokens" in card, card
    assert LIMITS_NOT_RECORDED in card, card


async def _journal(url: str, run_id: str) -> list[dict[str, Any]]:
    async with App(url) as app:
        return list((await app.get_run(run_id)).journal)
