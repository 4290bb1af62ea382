"""``tether_workflow_runs_ended_total`` and ``tether_workflow_run_duration_seconds``
scraped from a real ``tether serve`` on a real store: counters of the runs that ended,
per workflow, that a purge or a ``tether retry`` between two scrapes does not take
down, and that count the next ends on top of what they had."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.web.helpers import serving
from tests.web.test_metrics_exposition import Family, check_histogram, histograms, parse
from tether import App
from tether.errors import RunFailed

FAMILY = "tether_workflow_runs_ended_total"
HISTOGRAM = "tether_workflow_run_duration_seconds"


def _workflows(app: App, fixed: list[bool]) -> None:
    @app.workflow
    async def ok() -> str:
        return "done"

    @app.workflow
    async def boom() -> str:
        if not fixed:
            raise ValueError("boom")
        return "fixed"

    @app.workflow
    async def idle() -> str:
        return "never started"


def _scrape(url: str) -> dict[str, Family]:
    r = httpx.get(url + "/metrics", timeout=30)
    assert r.status_code == 200, r.text
    return parse(r.text)


def _ends(families: dict[str, Family]) -> dict[tuple[str, str], float]:
    return {(labels["workflow"], labels["status"]): v
            for _, labels, v in families[FAMILY].samples}


def _count_and_sum(families: dict[str, Family], workflow: str) -> tuple[float, float]:
    series = histograms(families[HISTOGRAM], "workflow")[workflow]
    check_histogram(series)
    by_name = {name: v for name, _, v in series.samples}
    return by_name[f"{HISTOGRAM}_count"], by_name[f"{HISTOGRAM}_sum"]


async def _wall_time(app: App, workflow: str) -> float:
    """The seconds from creation to end of the workflow's ended runs the store keeps."""
    runs = await app.list_runs(limit=1000)
    return sum(max(r.finished_at - r.created_at, 0.0) for r in runs
               if r.workflow == workflow and r.finished_at is not None
               and r.status in ("completed", "failed", "cancelled"))


async def _run(app: App, workflow: str, n: int, prefix: str) -> None:
    async with app.worker():
        for i in range(n):
            run = await app.start(workflow, run_id=f"{prefix}{i}")
            try:
                await run.result(timeout=60)
            except RunFailed:
                pass


async def test_a_purge_between_two_scrapes_takes_no_ended_run_off_the_counters(
        store_url: str, tmp_path: Path) -> None:
    app = App(store_url)
    _workflows(app, [])
    async with app:
        await _run(app, "ok", 3, "a")
        await _run(app, "boom", 2, "b")
        ok_seconds = await _wall_time(app, "ok")
        with serving(store_url, tmp_path, app=None,
                     args=("--metrics-interval", "0")) as served:
            families = _scrape(served.url)
            ends = _ends(families)
            assert ends == {("ok", "completed"): 3, ("ok", "failed"): 0,
                            ("ok", "cancelled"): 0, ("boom", "completed"): 0,
                            ("boom", "failed"): 2, ("boom", "cancelled"): 0,
                            ("idle", "completed"): 0, ("idle", "failed"): 0,
                            ("idle", "cancelled"): 0}
            assert families[FAMILY].type == "counter"
            assert families[HISTOGRAM].type == "histogram"
            count, seconds = _count_and_sum(families, "ok")
            assert count == 3
            assert seconds == pytest.approx(ok_seconds, abs=1e-5)
            assert _count_and_sum(families, "boom")[0] == 2
            live = await app.store.store_stats(now=app.clock.now())
            report = await app.store.run_purge(finished_before=app.clock.now() + 1,
                                               statuses=["completed", "failed"], limit=100)
            assert report.runs == 5
            families = _scrape(served.url)
            assert _ends(families) == ends
            assert _count_and_sum(families, "ok") == (3, pytest.approx(ok_seconds, abs=1e-5))
            # The store's figures after the purge (its totals) are those it had of the
            # runs it kept, bucket by bucket.
            purged = await app.store.store_stats(now=app.clock.now())
            assert purged.run_ends == live.run_ends
            assert purged.run_durations.keys() == live.run_durations.keys()
            for workflow, figures in live.run_durations.items():
                assert purged.run_durations[workflow] == pytest.approx(figures)
            # The gauge counts the runs kept: none.
            gauge = {(labels["workflow"], labels["status"]): v
                     for _, labels, v in families["tether_workflow_runs"].samples}
            assert gauge[("ok", "completed")] == gauge[("boom", "failed")] == 0
            # The next ends count on top of the purged ones.
            await _run(app, "ok", 1, "c")
            await _run(app, "boom", 1, "d")
            new_seconds = await _wall_time(app, "ok")
            families = _scrape(served.url)
            assert _ends(families)[("ok", "completed")] == 4
            assert _ends(families)[("boom", "failed")] == 3
            count, seconds = _count_and_sum(families, "ok")
            assert count == 4
            assert seconds == pytest.approx(ok_seconds + new_seconds, abs=1e-5)
            # The store counts them (its totals), not only what was served before
            # (the serve processes' shared figures, whose counters never go down).
            stats = await app.store.store_stats(now=app.clock.now())
            assert (stats.run_ends[("ok", "completed")],
                    stats.run_ends[("boom", "failed")]) == (4, 3)
            assert stats.run_durations["ok"][0] == 4


async def test_a_retried_run_keeps_its_end_and_counts_again_when_it_ends_again(
        store_url: str, tmp_path: Path) -> None:
    """``tether retry`` queues a failed run again: its failure stays counted (the gauge of
    failed runs goes down, the counter does not) and its next end counts too; a
    registered workflow with no run has its series at 0."""
    fixed: list[bool] = []
    app = App(store_url)
    _workflows(app, fixed)
    async with app:
        await _run(app, "boom", 1, "r")
        with serving(store_url, tmp_path, app=None,
                     args=("--metrics-interval", "0")) as served:
            families = _scrape(served.url)
            assert _ends(families)[("boom", "failed")] == 1
            assert _ends(families)[("idle", "completed")] == 0
            assert _count_and_sum(families, "idle") == (0, 0)
            await app.retry("r0")
            families = _scrape(served.url)
            assert _ends(families)[("boom", "failed")] == 1
            assert _count_and_sum(families, "boom")[0] == 1
            async with app.worker():  # (it fails again: a second end)
                with pytest.raises(RunFailed):
                    await app.handle("r0").result(timeout=60)
            families = _scrape(served.url)
            assert _ends(families)[("boom", "failed")] == 2
            await app.retry("r0")
            fixed.append(True)
            async with app.worker():
                assert await app.handle("r0").result(timeout=60) == "fixed"
            families = _scrape(served.url)
            assert (_ends(families)[("boom", "failed")],
                    _ends(families)[("boom", "completed")]) == (2, 1)
            assert _count_and_sum(families, "boom")[0] == 3
            stats = await app.store.store_stats(now=app.clock.now())
            assert (stats.run_ends[("boom", "failed")],
                    stats.run_ends[("boom", "completed")]) == (2, 1)
