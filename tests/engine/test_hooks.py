"""Engine hooks the AI layer builds on: Postpone, Retry-After, run metrics, replay counts."""

from __future__ import annotations

import time

import tether
from tests.engine.helpers import journal_has, status_is, wait_for
from tether import App, Postpone, RetryPolicy
from tether.ext import add_metrics
from tether.testing import TestEnv


async def test_postpone_is_not_a_failed_attempt(store_url: str) -> None:
    """A step postponed twice then run once completes under max_attempts=1, with one
    attempt recorded."""
    app = App(store_url)
    calls: list[int] = []

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def gated() -> str:
        calls.append(tether.step_attempt())
        if len(calls) <= 2:
            raise Postpone(0.02, "rate limit")
        return "done"

    @app.workflow
    async def wf() -> str:
        return await gated()

    async with app.worker():
        assert await (await app.start(wf, run_id="p")).result(timeout=10) == "done"
    (entry,) = (await app.get_run("p")).journal
    assert (entry["status"], entry["attempts"], entry["result"]) == ("ok", 1, "done")
    assert calls == [1, 1, 1]  # the attempt number does not move while postponed
    await app.close()


async def test_long_postpone_releases_the_run(store_url: str) -> None:
    """A postponement longer than the in-memory wait releases the run (status waiting,
    saying why), and it completes when due."""
    app = App(store_url)
    calls: list[float] = []

    @app.step
    async def gated() -> int:
        calls.append(time.time())
        if len(calls) == 1:
            raise Postpone(0.6, "circuit open")
        return len(calls)

    @app.workflow
    async def wf() -> int:
        return await gated()

    async with app.worker(sticky_wait=0.05, poll_interval=0.1):
        handle = await app.start(wf, run_id="r")
        info = await wait_for(lambda: _waiting(app, "r"), timeout=10)
        assert "postponed gated: circuit open" in (info.waiting_for or "")
        (entry,) = info.journal
        assert entry["status"] == "pending" and entry["attempts"] == 0
        assert await handle.result(timeout=10) == 2
    assert calls[1] - calls[0] >= 0.55
    await app.close()


async def _waiting(app: App, run_id: str) -> tether.RunInfo | None:
    info = await app.get_run(run_id)
    return info if info.status == tether.RunStatus.WAITING else None


class Throttled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"429, retry after {retry_after}s")
        self.retry_after = retry_after


async def test_retry_after_on_an_error_stretches_the_backoff(store_url: str) -> None:
    """An error carrying ``retry_after`` delays the next attempt at least that long,
    even past the policy's max_interval."""
    app = App(store_url)
    starts: list[float] = []

    @app.step(retry=RetryPolicy(initial_interval=0.01, backoff=1.0, max_interval=0.01,
                                max_attempts=None))
    async def provider() -> int:
        starts.append(time.time())
        if len(starts) == 1:
            raise Throttled(0.5)
        return len(starts)

    @app.workflow
    async def wf() -> int:
        return await provider()

    async with app.worker():
        assert await (await app.start(wf, run_id="t")).result(timeout=10) == 2
    assert starts[1] - starts[0] >= 0.45
    (entry,) = (await app.get_run("t")).journal
    assert entry["attempts"] == 2
    await app.close()


async def test_metrics_spent_in_steps_and_saved_by_replay_once_per_operation(
        store_url: str) -> None:
    """Metrics added by a step body persist with the run; a replayed result adds its
    ``on_replay`` metrics once per operation, however many times the run is replayed."""
    app = App(store_url)
    executed: list[str] = []

    @app.step(on_replay=lambda result: {"saved.tokens": result["tokens"]})
    async def think(prompt: str) -> dict[str, int]:
        executed.append(prompt)
        add_metrics({"tokens": 10})
        return {"tokens": 10}

    @app.workflow
    async def wf() -> int:
        await think("a")
        await tether.wait_for_signal("go")
        await think("b")
        await tether.wait_for_signal("go")
        return 0

    async with app.worker(sticky_wait=0.01, poll_interval=0.1):
        handle = await app.start(wf, run_id="m")
        for k in (1, 2):
            await wait_for(lambda: status_is(app, "m", "waiting"), timeout=10)
            await app.signal("m", "go")
            await wait_for(lambda k=k: journal_has(app, "m", k, kind="signal"), timeout=10)
        assert await handle.result(timeout=10) == 0
    assert executed == ["a", "b"]
    info = await app.get_run("m")
    # "a" was replayed twice (after each signal), "b" once: each counted once.
    assert info.metrics == {"tokens": 20.0, "saved.tokens": 20.0}
    await app.close()


async def test_metrics_from_a_sync_step(store_url: str) -> None:
    """add_metrics works from a plain ``def`` step, which runs in a thread."""
    app = App(store_url)

    @app.step
    def count() -> int:
        add_metrics({"rows": 3})
        add_metrics({"rows": 4})
        return 7

    @app.workflow
    async def wf() -> int:
        return await count()

    async with app.worker():
        assert await (await app.start(wf, run_id="s")).result(timeout=10) == 7
    assert (await app.get_run("s")).metrics == {"rows": 7.0}
    await app.close()


async def test_a_step_rate_limit_holds_across_runs(store_url: str) -> None:
    """RateLimit("k", 2, per=1): ten calls from five concurrent runs are spread over
    the bucket's refill (at most 2 at once, 2 more per second), none fails, and no
    attempt is used up by waiting. Virtual time (``TestEnv``): the refill waits pass
    when every run waits, and the call times are exact."""
    app = App(store_url)
    times: list[float] = []
    env = TestEnv(app, store_url=store_url, start_time=0.0)

    @app.step(rate_limit=tether.RateLimit("test-api", 2, per=1.0),
              retry=RetryPolicy(max_attempts=1))
    async def call_api(i: int) -> int:
        times.append(env.now())
        return i

    @app.workflow
    async def wf(n: int) -> int:
        return await call_api(n) + await call_api(n)

    async with env:
        handles = [await env.start(wf, i) for i in range(5)]
        results = [await h.result(timeout=30) for h in handles]
    assert results == [0, 2, 4, 6, 8]
    times.sort()
    assert len(times) == 10
    # A full bucket of 2, then 2 per second: the 10th call is at least 4 s after the 1st.
    assert times[-1] - times[0] >= 3.5
    for i in range(len(times)):
        in_window = [t for t in times if times[i] <= t < times[i] + 1.0]
        assert len(in_window) <= 4  # a token bucket's bound: capacity 2 + 2 refilled


def test_rate_limit_rejects_impossible_settings() -> None:
    import pytest

    for bad in (dict(key="", limit=1), dict(key="k", limit=0), dict(key="k", limit=1, cost=2)):
        with pytest.raises(ValueError):
            tether.RateLimit(**bad)  # type: ignore[arg-type]


def test_rate_limit_rejects_non_finite_settings() -> None:
    # NaN passed "<= 0": the limit was accepted at import and every run of the step
    # failed when the store refused it.
    import pytest

    nan, inf = float("nan"), float("inf")
    for bad in (dict(limit=nan), dict(limit=inf), dict(limit=5, per=nan),
                dict(limit=5, per=inf), dict(limit=5, cost=nan)):
        with pytest.raises(tether.ConfigError, match="finite"):
            tether.RateLimit("k", **bad)  # type: ignore[arg-type]
