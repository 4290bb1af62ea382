"""Budgets: a run over its LLM budget waits (released) for ``tether budget`` to raise it,
or fails with ``BudgetExceeded``; the decision replays identically."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

import tether
from tests import forked
from tests.engine.helpers import status_is, wait_for
from tether import App
from tether.ai import LLM, Budget, BudgetExceeded, set_budget, user_message
from tether.ai._budget import BUDGET_INPUT_SCHEMA, budget_payload
from tether.errors import ConfigError, RunFailed, TetherError
from tether.testing import Reply, ScriptedLLMServer


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
        wanted = info.status_info["input"]  # what the run asks for (MCP's input_required)
        assert wanted["signal"] == "budget" and wanted["schema"] == BUDGET_INPUT_SCHEMA
        assert "(1010 of 1500 tokens spent)" in wanted["message"]
        assert len(server.requests) == 1
        proc = await asyncio.to_thread(tether_cli, "budget", "b1", "--tokens", "5000",
                                       db=store_url)
        assert proc.returncode == 0, proc.stderr
        assert "budget of run b1 set to tokens 5000" in proc.stdout
        assert await handle.result(timeout=15) == ["one", "two"]
    info = await app.get_run("b1")
    kinds = [(e["kind"], e["status"]) for e in info.journal]
    assert kinds == [("step", "ok"), ("step", "error"), ("signal", "ok"), ("step", "ok")]
    refused = info.journal[1]["error"]
    assert refused["type"] == "tether.ai._budget.BudgetExceeded"
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
