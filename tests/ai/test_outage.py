"""Provider outages: a run waits (released) through 503s and a 429 with Retry-After and
completes with no error surfaced; fifty runs share one circuit breaker, so the outage
is probed by one caller at a time instead of fifty retry loops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tether import App, RetryPolicy
from tether.ai import LLM, CircuitBreaker, user_message
from tether.testing import Fault, Outage, Reply, ScriptedLLMServer


def make_llm(server: ScriptedLLMServer, protocol: str, **kwargs: Any) -> LLM:
    if protocol == "openai":
        return LLM("openai:gpt-4.1-mini", base_url=server.base_url, **kwargs)
    return LLM("anthropic:claude-sonnet-4-5", base_url=server.anthropic_base_url, **kwargs)


async def watch_statuses(app: App, run_id: str, seen: set[str], stop: asyncio.Event) -> None:
    while not stop.is_set():
        info = await app.get_run(run_id)
        seen.add(info.status.value)
        if info.waiting_for:
            seen.add(info.waiting_for.split(":")[0])
        await asyncio.sleep(0.05)


async def ride_out_outage(url: str, protocol: str, *, outage: float, retry: RetryPolicy,
                          breaker: CircuitBreaker) -> tuple[dict[str, Any], list[Any], set[str]]:
    """One run through ``outage`` seconds of 503, then a 429 with Retry-After, then an
    answer. Returns the journal entry, the request log and the statuses seen."""
    script = [Fault.rate_limit(retry_after=1), Reply("we are back")]
    async with ScriptedLLMServer(script, outage=Outage(outage)) as server:
        app = App(url)
        llm = make_llm(server, protocol, retry=retry, breaker=breaker)

        @app.workflow
        async def wf() -> str:
            return (await llm.chat([user_message("status?")])).text or ""

        seen: set[str] = set()
        stop = asyncio.Event()
        async with app.worker(sticky_wait=0.2, poll_interval=0.1):
            handle = await app.start(wf, run_id="o")
            watcher = asyncio.create_task(watch_statuses(app, "o", seen, stop))
            assert await handle.result(timeout=outage + 60) == "we are back"
            stop.set()
            await watcher
        info = await app.get_run("o")
        await llm.aclose()
        await app.close()
    assert info.error is None
    (entry,) = info.journal
    return entry, list(server.requests), seen


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_a_short_outage_is_waited_out(store_url: str, protocol: str) -> None:
    """2 s of 503 and a 429: the run is released while it waits, the breaker opens and
    probes, and the call completes; the journal has one entry with every attempt."""
    entry, requests, seen = await ride_out_outage(
        store_url, protocol, outage=2.0,
        retry=RetryPolicy(initial_interval=0.1, backoff=2.0, max_interval=0.4,
                          max_attempts=None),
        breaker=CircuitBreaker(failures=3, cooldown=0.5, max_cooldown=1.0, probe_wait=0.2))
    outcomes = [r.outcome for r in requests]
    assert outcomes[-2:] == ["fault:429", "reply"]
    assert set(outcomes[:-2]) == {"outage"}
    assert entry["status"] == "ok" and entry["attempts"] == len(requests)
    assert "waiting" in seen and "postponed llm" in seen  # released, by the breaker
    # The 429's Retry-After (1 s) was honoured although the policy's max is 0.4 s.
    assert requests[-1].time - requests[-2].time >= 0.95
    assert {r.headers["idempotency-key"] for r in requests} == {"o:0"}


@pytest.mark.slow
@pytest.mark.faults
async def test_a_twenty_second_outage_and_a_429(sqlite_url: str) -> None:
    """The issue's scenario: 503 for the first 20 s, then a 429 with Retry-After, then
    the answer. The run waits, completes with no error, and the journal shows the
    attempts (default breaker; retry backoff capped at 4 s to bound the test)."""
    entry, requests, seen = await ride_out_outage(
        sqlite_url, "openai", outage=20.0,
        retry=RetryPolicy(initial_interval=0.5, backoff=2.0, max_interval=4.0,
                          max_attempts=None),
        breaker=CircuitBreaker())
    outcomes = [r.outcome for r in requests]
    assert outcomes[-2:] == ["fault:429", "reply"]
    assert entry["status"] == "ok" and entry["attempts"] == len(requests)
    assert "waiting" in seen and "postponed llm" in seen
    # 5 failures open the breaker; after that only probes reach the provider.
    assert len(requests) <= 5 + 4 + 2, outcomes
    print(f"\n20 s outage: {len(requests)} requests, {entry['attempts']} attempts journaled")


@pytest.fixture
async def down_for_20s() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer(responder=lambda req: Reply("fine"),
                                 outage=Outage(20.0, since="first_request")) as server:
        yield server


@pytest.mark.slow
@pytest.mark.faults
async def test_fifty_runs_share_one_breaker_through_an_outage(
        sqlite_url: str, down_for_20s: ScriptedLLMServer) -> None:
    """50 runs against a provider down for 20 s: after the first wave (one request per
    run, all in flight before the first failure came back) only single probes reach it,
    and all 50 complete once it is back. Without the breaker each run would retry on
    its own schedule (1, 2, 4, 8 s...: about 5 requests per run during the outage)."""
    server = down_for_20s
    app = App(sqlite_url)
    llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url,
              breaker=CircuitBreaker(failures=5, cooldown=2.0, max_cooldown=8.0))

    @app.workflow
    async def wf(i: int) -> str:
        return (await llm.chat([user_message(f"question {i}")])).text or ""

    started = time.time()
    async with app.worker(concurrency=50, poll_interval=0.2):
        handles = [await app.start(wf, i, run_id=f"run-{i}") for i in range(50)]
        results = await asyncio.gather(*(h.result(timeout=120) for h in handles))
    assert results == ["fine"] * 50
    requests = [r for r in server.requests if r.protocol == "openai"]
    down = [r for r in requests if r.outcome == "outage"]
    answered = [r for r in requests if r.outcome == "reply"]
    # The breaker opens at the 5th failure; a second later every request in flight
    # before that has arrived, and only probes can follow.
    opened = down[4].time + 1.0
    late = [r for r in down if r.time > opened]
    assert len(answered) == 50
    assert len(down) <= 50 + 6  # a retry loop per run would make about 250
    assert len(late) <= 6, [round(r.time - started, 1) for r in late]
    infos = [await app.get_run(f"run-{i}") for i in range(50)]
    assert all(i.error is None for i in infos)
    print(f"\n50 runs, 20 s outage: {len(down)} requests during the outage, of which "
          f"{len(late)} after the breaker opened (probes); {len(answered)} answers after; "
          f"all done in {time.time() - started:.1f} s")
    await llm.aclose()
    await app.close()
