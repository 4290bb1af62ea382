"""A time no date can show (a retry policy's or a ``Postpone``'s delay of 1e12 s, the
year 33,700): the run waits for it as asked, ``tether show`` and the run page show it as
"after 9999-12-31". Until 2026-12-06 the worker's log line of the failed attempt raised
("ValueError: year 33715 is out of range") and failed the run, and ``tether show`` and
the run page (500) failed on a pending entry with such a time."""

from __future__ import annotations

import asyncio
import os
import sys

import tether
from tests import forked
from tests.engine.helpers import status_is, wait_for
from tests.web.helpers import ADMIN, ui_client
from tests.web.test_ui_and_cli import login
from tether import App, RetryPolicy


async def test_a_retry_past_the_year_9999_waits_and_is_shown(store_url: str) -> None:
    app = App(store_url)

    @app.step(retry=RetryPolicy(initial_interval=1e12, max_interval=1e12))
    def flaky() -> int:
        raise RuntimeError("down")

    @app.workflow
    async def far_retry() -> int:
        return await flaky()

    @app.step
    def later() -> int:
        raise tether.Postpone(1e12, "far later")

    @app.workflow
    async def far_postpone() -> int:
        return await later()

    async with app.worker():
        await app.start(far_retry, run_id="far-retry")
        await app.start(far_postpone, run_id="far-postpone")
        for run_id in ("far-retry", "far-postpone"):
            await wait_for(lambda run_id=run_id: status_is(app, run_id, "waiting", "failed"),
                           timeout=30)
    assert (await app.get_run("far-retry")).status.value == "waiting"  # (was failed)
    await app.close()

    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    for run_id in ("far-retry", "far-postpone"):
        shown = await asyncio.to_thread(
            forked.run, [sys.executable, "-m", "tether", "show", run_id, "--db", store_url],
            capture_output=True, text=True, timeout=60, env=env)
        assert shown.returncode == 0, shown.stderr
        assert "after 9999-12-31" in shown.stdout, shown.stdout

    async with ui_client(store_url) as http:
        await login(http, ADMIN)
        for run_id in ("far-retry", "far-postpone"):
            page = await http.get(f"/runs/{run_id}")
            assert page.status_code == 200, page.text[:300]
            assert "after 9999-12-31" in page.text
