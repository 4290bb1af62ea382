"""The runs list says the truth about stuck runs, on both stores: its *Waiting for*
says that no live worker has a queued or waiting run's version, and that a queued run's
queue is paused (it was empty, as for a run about to be claimed), as ``tether runs``
does."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator

import httpx
import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tests.web.helpers import READ, ui_client
from tests.web.test_ui_and_cli import login
from tether import App


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

