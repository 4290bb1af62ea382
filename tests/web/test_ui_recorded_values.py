"""An entry that records a value rather than runs one (``now``, ``random``, ``uuid``, a
patch, a child's start) has no attempts and takes no time of its own: the run page's
Attempts and Duration cells draw an en dash for it, as ``tether show`` draws ``-``
(until 2026-12-07 the page drew 0 and "0 µs"), in the current generation's timeline and
in an earlier generation's table alike. A step keeps its attempts and duration."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

import tether
from tests.web.helpers import READ, served_app
from tether import App

READ_HEADERS = {"Authorization": f"Bearer {READ}"}
DASH = "\u2013"


def make_app(url: str) -> App:
    app = App(url)

    @app.step
    async def add_one(n: int) -> int:
        return n + 1

    @app.workflow
    async def child() -> str:
        return "done"

    @app.workflow
    async def recorder(round_no: int) -> int:
        tether.now()
        tether.random()
        tether.uuid()
        tether.patched("fix-1")
        handle = await tether.start_child(child)
        await handle.result()
        n = await add_one(round_no)
        if round_no < 1:
            tether.continue_as_new(round_no + 1)
        return n

    return app


@pytest.fixture
async def served(store_url: str) -> AsyncIterator[tuple[App, httpx.AsyncClient]]:
    async with served_app(make_app(store_url)) as pair:
        yield pair


def _cells(html: str) -> dict[str, list[str]]:
    """Each row's cells (tags stripped), by the row's kind."""
    rows: dict[str, list[str]] = {}
    for row in re.findall(r'<tr class="op [^"]*">(.*?)</tr>', html, re.S):
        cells = [re.sub(r"<[^>]+>", "", c).strip()
                 for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        rows[cells[1]] = cells
    return rows


async def test_a_recorded_values_row_draws_no_attempts_and_no_duration(
        served: tuple[App, httpx.AsyncClient]) -> None:
    app, http = served
    async with app.worker():
        handle = await app.start("recorder", 0, run_id="rec-1")
        assert await handle.result(timeout=30) == 2
    page = (await http.get("/runs/rec-1", headers=READ_HEADERS)).text
    timeline = page.split('class="timeline"', 1)[1].split("</table>", 1)[0]
    earlier = page.split('id="generations"', 1)[1].split("</section>", 1)[0]
    for html in (timeline, earlier):
        rows = _cells(html)
        for kind in ("now", "random", "uuid", "patch", "child_start"):
            # (cells: position, kind, name, status, attempts, started, duration, details)
            assert rows[kind][4] == DASH and rows[kind][6] == DASH, (kind, rows[kind])
        step = rows["step"]
        assert step[4] == "1" and step[6] not in (DASH, ""), step
        assert rows["child_result"][4] == DASH
