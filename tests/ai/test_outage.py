"""Provider outages, in virtual time (``TestEnv``): a run waits (released) through
503s and a 429 with Retry-After and completes with no error surfaced; fifty runs share
one circuit breaker, so the outage is probed by one caller at a time instead of fifty
retry loops."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import pytest

from tether import App, RetryPolicy
from tether.ai import LLM, CircuitBreaker, user_message
from tether.testing import Fault, Outage, Reply, TestEnv


async def ride_out_outage(url: str, protocol: str, *, outage: float, retry: RetryPolicy,
                          breaker: CircuitBreaker) -> tuple[dict[str, Any], list[Any], set[str]]:
    """One run through ``outage`` seconds of 503, then a 429 with Retry-After, then an
    answer, in virtual time: one wake-up at a time (``env.skip()``), noting the run's
    status and what it waits for at each stop. Returns the journal entry, the request
    log and the statuses seen."""
    app = App()
    spec = "openai:gpt-4.1-mini" if protocol == "openai" else "anthropic:claude-sonnet-4-5"
    llm = LLM(spec, retry=retry, breaker=breaker, api_key="test")
    env = TestEnv(app, llm=[Fault.rate_limit(retry_after=1), Reply("we are back")],
                  llms=[llm], store_url=url, start_time=0.0)
    env.llm.outage = Outage(outage)

    @app.workflow
    async def wf() -> str:
        return (await llm.chat([user_message("status?")])).text or ""

    seen: set[str] = set()
    async with env:
        handle = await env.start(wf, run_id="o")
        while True:
            await env.settle()
            info = await env.app.get_run("o")
            if info.status.is_ended:
                break
            seen.add(info.status.value)
            if info.waiting_for:
                seen.add(info.waiting_for.split(":")[0])
            assert await env.skip()
        assert await handle.result() == "we are back"
        requests = list(env.llm.requests)
        await llm.aclose()
    assert info.error is None
    (entry,) = info.journal
    return entry, requests, seen


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
    assert requests[-1].time - requests[-2].time >= 1.0 - 1e-9
    assert {r.headers["idempotency-key"] for r in requests} == {"o:0"}


async def test_a_twenty_second_outage_and_a_429() -> None:
    """The issue's scenario, in virtual time (``TestEnv``): 503 for the first 20 s,
    then a 429 with Retry-After, then the answer. The run waits released (the clock
    only skips while no run is running), completes with no error, and the journal shows
    the attempts (default breaker; retry backoff capped at 4 s)."""
    app = App()
    llm = LLM("openai:gpt-4.1-mini", breaker=CircuitBreaker(),
              retry=RetryPolicy(initial_interval=0.5, backoff=2.0, max_interval=4.0,
                                max_attempts=None))

    @app.workflow
    async def wf() -> str:
        return (await llm.chat([user_message("status?")])).text or ""

    env = TestEnv(app, llm=[Fault.rate_limit(retry_after=1), Reply("we are back")],
                  llms=[llm], start_time=0.0)
    env.llm.outage = Outage(20.0)
    async with env:
        assert await (await env.start(wf, run_id="o")).result() == "we are back"
        info = await env.app.get_run("o")
        requests = list(env.llm.requests)
    (entry,) = info.journal
    outcomes = [r.outcome for r in requests]
    assert outcomes[-2:] == ["fault:429", "reply"]
    assert set(outcomes[:-2]) == {"outage"}
    assert info.error is None
    assert entry["status"] == "ok" and entry["attempts"] == len(requests)
    assert requests[-2].time >= 20.0 - 1e-9  # the outage lasted 20 (virtual) seconds
    assert requests[-1].time - requests[-2].time >= 1.0 - 1e-9  # Retry-After honoured
    # 5 failures open the breaker; after that only probes reach the provider.
    assert len(requests) <= 5 + 4 + 2, outcomes
    assert {r.headers["idempotency-key"] for r in requests} == {"o:0"}


@pytest.mark.parametrize("retry_after", ["86400", "a week ahead"])
async def test_a_huge_retry_after_is_honoured_up_to_the_ceiling(retry_after: str) -> None:
    """A 429 asking for a day (or with an HTTP-date a week ahead) under the default LLM
    policy (no max_duration): the journaled next attempt is due 120 s after the 429
    (``RetryPolicy.max_retry_after`` left out), not a day or a week later, and the
    call completes then. Virtual time: the figures are the journal's, not a stopwatch's."""
    if retry_after == "a week ahead":
        retry_after = email.utils.formatdate(time.time() + 7 * 86_400, usegmt=True)
    app = App()
    llm = LLM("openai:gpt-4.1-mini", api_key="test")

    @app.workflow
    async def wf() -> str:
        return (await llm.chat([user_message("status?")])).text or ""

    env = TestEnv(app, llm=[Fault.rate_limit(retry_after=retry_after), Reply("we are back")],
                  llms=[llm], start_time=0.0)
    async with env:
        handle = await env.start(wf, run_id="r")
        await env.settle()
        info = await env.app.get_run("r")
        (pending,) = info.journal
        (throttled,) = env.llm.requests
        assert throttled.outcome == "fault:429"
        assert pending["status"] == "pending" and pending["attempts"] == 1
        assert "retry after" in pending["error"]["message"]
        assert pending["next_attempt_at"] == pytest.approx(throttled.time + 120.0, abs=1.0)
        assert await env.skip()
        assert await handle.result() == "we are back"
        requests = list(env.llm.requests)
        await llm.aclose()
    assert [r.outcome for r in requests] == ["fault:429", "reply"]
    assert requests[1].time == pytest.approx(pending["next_attempt_at"], abs=1.0)


async def test_fifty_runs_share_one_breaker_through_an_outage() -> None:
    """50 runs against a provider down for 20 s (virtual time, ``TestEnv``): after the
    first wave (one request per run, all in flight before the first failure came back)
    only single probes reach it, and all 50 complete once it is back. Without the
    breaker each run would retry on its own schedule (1, 2, 4, 8 s...: about 5 requests
    per run during the outage)."""
    app = App()
    llm = LLM("openai:gpt-4.1-mini",
              breaker=CircuitBreaker(failures=5, cooldown=2.0, max_cooldown=8.0))

    @app.workflow
    async def wf(i: int) -> str:
        return (await llm.chat([user_message(f"question {i}")])).text or ""

    env = TestEnv(app, llms=[llm], start_time=0.0, concurrency=50)
    env.llm.responder = lambda req: Reply("fine")
    env.llm.outage = Outage(20.0, since="first_request")
    async with env:
        handles = [await env.start(wf, i, run_id=f"run-{i}") for i in range(50)]
        results = [await h.result(timeout=120) for h in handles]
        infos = [await env.app.get_run(f"run-{i}") for i in range(50)]
        requests = [r for r in env.llm.requests if r.protocol == "openai"]
    assert results == ["fine"] * 50
    down = [r for r in requests if r.outcome == "outage"]
    answered = [r for r in requests if r.outcome == "reply"]
    # The breaker opens at the 5th failure; a second later every request in flight
    # before that has arrived, and only probes can follow.
    opened = down[4].time + 1.0
    late = [r for r in down if r.time > opened]
    assert len(answered) == 50
    assert len(down) <= 50 + 6  # a retry loop per run would make about 250
    assert len(late) <= 6, [r.time for r in late]
    assert all(i.error is None for i in infos)
