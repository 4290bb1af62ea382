"""``GET /metrics`` with its whole-store figures computed in the background
(``metrics_interval`` > 0, the default): right, never going down from one computation
to the next nor across a purge, and a slow computation neither makes a scrape wait nor
answer 503."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest

from tests.web.helpers import add_paid_rounds
from tether import App
from tether.serve import create_app
from tether.serve._metrics import COST_FACTOR, SHARED_KEY
from tether.store._port import LLM_KEYS, STEP_BUCKETS

COUNTERS = ("tether_llm_calls_total", 'tether_llm_tokens_total{type="input",outcome="spent"}',
            'tether_llm_cost_usd_total{outcome="spent"}', "tether_step_duration_seconds_count",
            'tether_step_duration_seconds_bucket{le="+Inf"}', "tether_step_duration_seconds_sum",
            'tether_step_name_duration_seconds_count{step="paid"}',
            'tether_step_name_duration_seconds_bucket{step="paid",le="+Inf"}',
            'tether_step_name_duration_seconds_sum{step="paid"}')


def _value(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


class Scraper:
    """Scrapes /metrics, checking at each scrape that no counter went down."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.seen: dict[str, float] = {}

    async def scrape(self) -> str:
        r = await self.http.get("/metrics")
        assert r.status_code == 200, r.text
        for name in COUNTERS:
            value = _value(r.text, name)
            if value is None:
                continue
            assert value >= self.seen.get(name, 0.0), (name, value, self.seen)
            self.seen[name] = value
        return r.text

    async def until(self, name: str, value: float) -> str:
        """Scrape until a background computation shows ``name`` at ``value``."""
        async with asyncio.timeout(30):
            while True:
                text = await self.scrape()
                if _value(text, name) == value:
                    return text
                await asyncio.sleep(0.02)


@pytest.fixture
async def paid_app(store_url: str) -> AsyncIterator[App]:
    app = App(store_url)

    add_paid_rounds(app)

    async with app:
        yield app


async def test_background_figures_are_right_and_never_go_down_across_refreshes_and_purges(
        paid_app: App) -> None:
    app = paid_app
    asgi = create_app(app, mcp=False, metrics_interval=0.01)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                 base_url="http://127.0.0.1") as http:
        scraper = Scraper(http)
        text = await scraper.scrape()  # (the first waits for the first computation)
        assert _value(text, "tether_step_duration_seconds_count") == 0
        assert _value(text, "tether_metrics_age_seconds") is not None
        assert _value(text, "tether_metrics_computation_seconds") is not None
        async with app.worker():
            for i in range(2):
                run = await app.start("rounds", 0, run_id=f"c{i}")
                assert await run.result(timeout=20) == 2
        text = await scraper.until('tether_runs{status="completed"}', 2)
        counted = [*COUNTERS[:5], *COUNTERS[6:8]]  # (the step `paid`'s too)
        before = [_value(text, n) for n in counted]
        # three generations of each run
        assert before == [6, 600, 3.0, 6, 6, 6, 6], before
        paid_seconds = _value(text, 'tether_step_name_duration_seconds_sum{step="paid"}')
        assert paid_seconds == _value(text, "tether_step_duration_seconds_sum")
        report = await app.store.run_purge(finished_before=app.clock.now() + 1,
                                           statuses=["completed"], limit=100)
        assert report.runs == 2
        # A computation after the purge (no completed run left) counts them as before,
        # and no scrape in between saw a counter go down (Scraper).
        text = await scraper.until('tether_runs{status="completed"}', 0)
        assert [_value(text, n) for n in counted] == before
        assert _value(text, 'tether_step_name_duration_seconds_sum{step="paid"}') == \
            paid_seconds
        assert 'tether_workflow_runs{workflow="rounds",status="completed"} 0' in text
        async with app.worker():
            assert await (await app.start("rounds", 2, run_id="c9")).result(timeout=20) == 2
        text = await scraper.until('tether_runs{status="completed"}', 1)
        assert [_value(text, n) for n in counted] == [7, 700, 3.5, 7, 7, 7, 7]
        assert 'tether_workflow_runs{workflow="rounds",status="completed"} 1' in text
        # The queue and worker gauges are read at each scrape, not computed in the
        # background: a run queued shows at once.
        await app.start("rounds", 5, run_id="q1", queue="later")
        assert 'tether_queue_depth{queue="later"} 1' in (await scraper.scrape()).splitlines()


@pytest.mark.postgres
async def test_a_slow_computation_makes_no_scrape_wait_or_503(pg_migrated_url: str) -> None:
    """The computation is held up (a lock on metric_totals, which it reads): the first
    scrape answers within its request's deadline without the computed figures, not 503;
    the computation goes on under the store's own deadline, not the request's, and once
    it has figures a scrape answers with them at once while the next is held up again."""
    app = App(pg_migrated_url)
    # (a request's deadline that a loaded machine's stall of a scrape's own queries does
    # not reach: past it, the query's connection is severed and the scrape answers 503)
    asgi = create_app(app, mcp=False, request_timeout=2.0, metrics_interval=0.01)
    schema = "tether"
    async with app, httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                      base_url="http://127.0.0.1", timeout=60) as http:
        await app.start("w", run_id="q1", queue="q")
        with psycopg.connect(pg_migrated_url) as locker:
            locker.execute(f"LOCK TABLE {schema}.metric_totals IN ACCESS EXCLUSIVE MODE")
            r = await http.get("/metrics")
            assert r.status_code == 200, r.text
            assert "their first computation has not finished yet" in r.text
            assert _value(r.text, "tether_step_duration_seconds_count") is None
            assert 'tether_queue_depth{queue="q"} 1' in r.text.splitlines()
            await asyncio.sleep(1.0)  # (past the request's deadline, 2 s)
            locker.rollback()  # (the lock goes: the computation begun above ends)
            released = time.monotonic()
        async with asyncio.timeout(30):
            while _value((r := await http.get("/metrics")).text,
                         'tether_runs{status="queued"}') is None:
                await asyncio.sleep(0.02)
        assert r.status_code == 200 and _value(r.text, 'tether_runs{status="queued"}') == 1
        cache = asgi.app.state.metrics  # type: ignore[attr-defined]
        # The computation outlived the request's deadline (held by the lock): the next
        # waits ten times as long after it ended (after the lock went), the store's share
        # of time, not the interval (0.01 s). Made due now:
        assert cache.latest is not None and cache.latest.took > 2
        assert cache.next_at >= released + COST_FACTOR * cache.latest.took
        cache.next_at = 0.0
        with psycopg.connect(pg_migrated_url) as locker:
            locker.execute(f"LOCK TABLE {schema}.metric_totals IN ACCESS EXCLUSIVE MODE")
            for _ in range(3):  # each answers while the computation is held up
                async with asyncio.timeout(20):
                    r = await http.get("/metrics")
                assert r.status_code == 200
                assert _value(r.text, 'tether_runs{status="queued"}') == 1
            assert cache.task is not None and not cache.task.done()
            locker.rollback()


async def test_the_processes_of_a_store_share_their_figures(store_url: str) -> None:
    """Two serve apps on one store (two processes behind one address): the figures
    one computed are the other's too, which computes none while they are fresh, and
    serves them whole (each counter at the highest either served). Before, each
    computed its own once per interval: the store did the work once per process, and
    their figures differed by up to an interval."""
    first, second = App(store_url), App(store_url)
    add_paid_rounds(first)
    a = create_app(first, mcp=False, metrics_interval=3600)
    b = create_app(second, mcp=False, metrics_interval=3600)
    async with first, second, \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=a),
                              base_url="http://127.0.0.1") as ha, \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=b),
                              base_url="http://127.0.0.1") as hb:
        async with first.worker():
            assert await (await first.start("rounds", 0, run_id="r")).result(timeout=20) == 2
        shown = (await ha.get("/metrics")).text
        assert _value(shown, "tether_llm_calls_total") == 3
        again = (await hb.get("/metrics")).text
        assert b.app.state.metrics.task is None  # type: ignore[attr-defined]  # (none)
        for name in (*COUNTERS, 'tether_runs{status="completed"}',
                     "tether_metrics_computation_seconds"):
            assert _value(again, name) == _value(shown, name), name


async def test_figures_an_earlier_version_shared_leave_the_runs_per_workflow_out(
        store_url: str) -> None:
    """The shared figures of a serve process of an earlier version (no runs per workflow
    nor per step name nor ended runs in its row) are served without the series of
    tether_workflow_runs, tether_workflow_runs_ended_total and
    tether_workflow_run_duration_seconds: a gap, not each registered workflow's runs
    read 0 while the store has some."""
    app = App(store_url)
    add_paid_rounds(app)
    async with app:
        async with app.worker():
            assert await (await app.start("rounds", 2, run_id="r")).result(timeout=20) == 2
        now = app.clock.now()
        earlier = {"at": now, "took": 0.01, "runs_by_status": {"completed": 1},
                   "step_count": 1, "step_seconds": 0.0,
                   "step_buckets": [1] * len(STEP_BUCKETS), "llm": dict.fromkeys(LLM_KEYS, 0)}
        assert await app.store.kv_cas(key=SHARED_KEY, value=json.dumps(earlier),
                                      version=None, now=now)
        asgi = create_app(app, mcp=False, metrics_interval=3600)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                     base_url="http://127.0.0.1") as http:
            text = (await http.get("/metrics")).text
        assert 'tether_runs{status="completed"} 1' in text.splitlines(), text
        assert "# TYPE tether_workflow_runs gauge" in text
        assert not [line for line in text.splitlines()
                    if line.startswith(("tether_workflow_runs{",
                                        "tether_step_name_duration_seconds_",
                                        "tether_workflow_runs_ended_total{",
                                        "tether_workflow_run_duration_seconds_"))], text
        assert "# TYPE tether_workflow_runs_ended_total counter" in text
