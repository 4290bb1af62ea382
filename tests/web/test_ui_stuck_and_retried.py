"""The runs list and the run page say the truth about stuck and retried runs, on both
stores: the runs list's *Waiting for* says that no live worker has a queued or waiting
run's version, and that a queued run's queue is paused (it was empty, as for a run about
to be claimed), as ``tether runs`` does; the run page's Operations card counts every
attempt of the run's steps that the store holds, those before a retry of the run
included, as ``tether show`` lists them (it summed the journal's entries: "2 attempts"
of a run whose failing step had run 4 times)."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tests.web import webapp
from tests.web.helpers import ADMIN, READ, ui_client
from tests.web.test_ui_and_cli import login
from tether import App, RunFailed


@pytest.fixture
async def ui(store_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with ui_client(store_url) as http:
        yield http


def _waits(page: str, run_id: str) -> str:
    """The *Waiting for* cell of ``run_id``'s row of the runs table, as text."""
    row = re.search(r'<tr>\s*<td><span class="pill[^<]*</span>.*?href="[^"]*/runs/'
                    + re.escape(run_id) + r'".*?</tr>', page, re.S)
    assert row is not None, page
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row[0], re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", cells[-1])).strip()


async def test_the_runs_list_says_when_no_live_worker_has_a_runs_version(
        ui: httpx.AsyncClient, store_url: str) -> None:
    """A run pinned to v1 stays queued while v2's workers serve its queue: its *Waiting
    for* was empty. It says "no live worker of version 'v1'" now (after a waiting run's
    wait), not for a run of no version nor once a v1 worker is live; a run of a paused
    queue says "queue paused"."""
    old, new = App(store_url, version="v1"), App(store_url, version="v2")
    for app in (old, new):
        @app.workflow(queue="nobody-serves-it")
        async def job() -> None:
            return None

        @app.workflow(queue="nobody-serves-it")
        async def waits() -> None:
            await tether.wait_for_signal("go")

    plain = ui.app  # type: ignore[attr-defined]
    await login(ui, READ)
    async with old, new:
        await old.start("waits", run_id="pinned-w")
        async with old.worker(queues=["nobody-serves-it"]):
            await wait_for(lambda: status_is(old, "pinned-w", "waiting"), timeout=30,
                           what="pinned-w waits")
        await old.start("job", run_id="pinned-1")
        await plain.start("greet", "x", run_id="plain-1")
        await plain.pause_queue("held")
        await plain.start("greet", "y", run_id="held-1", queue="held")
        async with new.worker(queues=["idle"]):
            for path in ("/runs", "/ui/runs"):
                r = await ui.get(path)
                assert r.status_code == 200, r.text
                page = r.text
                assert _waits(page, "pinned-1") == "no live worker of version 'v1'", page
                assert _waits(page, "pinned-w") == \
                    "signal go; no live worker of version 'v1'", page
                assert _waits(page, "plain-1") == "", page
                assert _waits(page, "held-1") == "queue paused", page
            async with old.worker(queues=["idle"]):
                page = (await ui.get("/runs")).text
            assert "no live worker" not in page, page
            assert _waits(page, "pinned-w") == "signal go", page


def _card(page: str) -> str:
    card = re.search(r'<div class="k">Operations</div>.*?<div class="sub">(.*?)</div>',
                     page, re.S)
    assert card is not None, page
    return html.unescape(re.sub(r"<[^>]+>", "", card[1])).strip()


async def _attempts(ui: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    r = await ui.get(f"/api/v1/runs/{run_id}", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    return list(r.json()["attempts"])


async def test_the_operations_card_counts_the_attempts_before_a_retry(
        ui: httpx.AsyncClient) -> None:
    """A run whose step fails, retried three times (``tether retry``): its journal holds
    the step's last attempt alone, and the card said "2 attempts" (1 for ``hello``, 1
    for ``fragile``) where ``tether show`` lists 4 attempts of ``fragile``. It counts
    the attempt history now: 5."""
    webapp.FIXED.discard("card")
    app = ui.app  # type: ignore[attr-defined]
    await login(ui, READ)
    await app.start("fixable", "card", run_id="card-1")
    async with app.worker(queues=["default"]):
        with pytest.raises(RunFailed):
            await app.handle("card-1").result(timeout=30)
        for _ in range(3):
            await app.retry("card-1")
            with pytest.raises(RunFailed):
                await app.handle("card-1").result(timeout=30)
    attempts = await _attempts(ui, "card-1")
    assert [a["name"] for a in attempts].count("fragile") == 4, attempts
    assert len(attempts) == 5, attempts
    page = (await ui.get("/runs/card-1")).text
    assert _card(page) == "1 failed · 5 attempts", _card(page)


async def test_the_operations_card_of_a_run_of_no_step_counts_no_attempts(
        ui: httpx.AsyncClient) -> None:
    """A parent made only of a child's start and result read "2 operations · 0 failed
    · 0 attempts", as if none of them had run: only steps have attempts, and its card
    says none. A run of steps keeps its count."""
    app = ui.app  # type: ignore[attr-defined]
    await login(ui, READ)
    await app.start("parent", "ana", run_id="kids-only")
    await app.start("steps", 2, run_id="two-steps")
    async with app.worker(queues=["default"]):
        await app.handle("kids-only").result(timeout=30)
        await app.handle("two-steps").result(timeout=30)
    page = (await ui.get("/runs/kids-only")).text
    assert re.search(r'<div class="k">Operations</div><div class="v">2</div>', page), page
    assert _card(page) == "0 failed", _card(page)
    assert _card((await ui.get("/runs/two-steps")).text) == "0 failed · 2 attempts"
