"""``tether_workflow_runs`` and ``tether_step_name_duration_seconds`` scraped from a real
``tether serve`` on a real store: bounded (the workflows and step names with the most
runs and steps, the rest under "other"), adding up to ``tether_runs`` and the histogram
of all steps, and the step names' counters not going down when ``tether retry`` takes
a failed step's entry back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import tether
from tests.web.helpers import serving
from tests.web.test_metrics_exposition import Family, check_histogram, histograms, parse
from tether import App
from tether.errors import RunFailed

#: As src/tether/serve/_metrics.py caps them (WORKFLOW_SERIES, STEP_NAME_SERIES).
WORKFLOWS, STEP_NAMES = 100, 50


def _many_names(app: App) -> None:
    """Register ``STEP_NAMES + 5`` steps (``s00``...) and a workflow ``many`` running
    each once and ``s54`` three more times; ``WORKFLOWS + 1`` workflows (``w000``...)
    that run no step."""
    def make_step(i: int) -> Callable[[], Awaitable[int]]:
        async def step() -> int:
            return i
        return app.step(name=f"s{i:02d}")(step)

    steps = [make_step(i) for i in range(STEP_NAMES + 5)]

    @app.workflow
    async def many() -> int:
        for step in [*steps, steps[-1], steps[-1], steps[-1]]:
            await step()
        return len(steps)

    def make_workflow(i: int) -> None:
        async def workflow() -> int:
            return i
        app.workflow(name=f"w{i:03d}")(workflow)

    for i in range(WORKFLOWS + 1):
        make_workflow(i)


def _scrape(url: str) -> dict[str, Family]:
    r = httpx.get(url + "/metrics", timeout=30)
    assert r.status_code == 200, r.text
    return parse(r.text)


async def test_workflows_and_step_names_past_the_caps_are_summed_as_other(
        store_url: str, tmp_path: Path) -> None:
    app = App(store_url)
    _many_names(app)
    async with app:
        async with app.worker():
            runs = [await app.start("many", run_id="many")]
            runs += [await app.start(f"w{i:03d}", run_id=f"w{i:03d}")
                     for i in range(WORKFLOWS + 1)]
            runs.append(await app.start(f"w{WORKFLOWS:03d}", run_id="again"))
            for run in runs:
                await run.result(timeout=60)
    with serving(store_url, tmp_path, app=None, args=("--metrics-interval", "0")) as served:
        families = _scrape(served.url)
    # Runs: w100 has 2, every other workflow 1; of those, the first by name are kept
    # ("many", then w000 ... w097), and w098 and w099 are "other".
    runs_by = {(labels["workflow"], labels["status"]): v
               for _, labels, v in families["tether_workflow_runs"].samples}
    workflows = {w for w, _ in runs_by}
    assert len(workflows) == WORKFLOWS + 1, sorted(workflows)
    assert workflows == {"many", "other", *(f"w{i:03d}" for i in range(WORKFLOWS - 2)),
                         f"w{WORKFLOWS:03d}"}
    assert runs_by[("other", "completed")] == 2
    assert runs_by[(f"w{WORKFLOWS:03d}", "completed")] == 2
    assert runs_by[("w000", "failed")] == 0
    # The ended runs' counter and histogram have the same cap (every run here ended).
    ends_by = {(labels["workflow"], labels["status"]): v
               for _, labels, v in families["tether_workflow_runs_ended_total"].samples}
    assert ends_by == {k: v for k, v in runs_by.items()
                       if k[1] in ("completed", "failed", "cancelled")}
    per_workflow = histograms(families["tether_workflow_run_duration_seconds"], "workflow")
    assert {w: series.samples[-1][2] for w, series in per_workflow.items()} == {
        w: sum(v for (w2, _), v in ends_by.items() if w2 == w) for w in workflows}
    totals = {labels["status"]: v for _, labels, v in families["tether_runs"].samples}
    for status, total in totals.items():
        assert sum(v for (_, s), v in runs_by.items() if s == status) == total, status
    # Steps: s54 ran 4 times, every other step name once: s54 and s00 ... s48 are kept,
    # s49 ... s53 summed as "other".
    per_step = histograms(families["tether_step_name_duration_seconds"], "step")
    for series in per_step.values():
        check_histogram(series)
    counts = {name: series.samples[-1][2] for name, series in per_step.items()}
    assert counts == {"s54": 4, "other": 5, **{f"s{i:02d}": 1 for i in range(STEP_NAMES - 1)}}
    assert sum(counts.values()) == families["tether_step_duration_seconds"].samples[-1][2]


def _fails_then_passes(app: App, fixed: list[bool]) -> Any:
    @app.step
    async def fetch() -> str:
        return "page"

    @app.step(retry=tether.RetryPolicy(max_attempts=1))
    async def parse_page(page: str) -> str:
        if not fixed:
            raise ValueError("unparsable")
        return page.upper()

    @app.workflow
    async def scrape() -> str:
        return await parse_page(await fetch())

    return scrape


async def test_a_retry_leaves_the_step_names_counters_as_they_were(
        store_url: str, tmp_path: Path) -> None:
    """``tether retry`` of a run whose step failed takes that step's entry back (its
    attempt runs again): its step name's counters keep what it counted, as the
    histogram of all steps does, and the step's next outcome counts once more."""
    fixed: list[bool] = []
    app = App(store_url)
    _fails_then_passes(app, fixed)
    async with app:
        async with app.worker():
            run = await app.start("scrape", run_id="sc")
            with pytest.raises(RunFailed):
                await run.result(timeout=60)
        with serving(store_url, tmp_path, app=None,
                     args=("--metrics-interval", "0")) as served:
            def count(name: str) -> float:
                families = _scrape(served.url)
                series = histograms(families["tether_step_name_duration_seconds"], "step")
                return series[name].samples[-1][2]

            assert (count("fetch"), count("parse_page")) == (1, 1)
            await app.retry("sc")
            assert (count("fetch"), count("parse_page")) == (1, 1)
            fixed.append(True)
            async with app.worker():
                assert await app.handle("sc").result(timeout=60) == "PAGE"
            assert (count("fetch"), count("parse_page")) == (1, 2)
