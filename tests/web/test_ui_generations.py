"""A run continued as new keeps its id and starts a fresh journal; its earlier
generations' journals are archived. ``tether show`` and the run's document
(``history``) list them, and so does its page: the head names the generation, and a
section under the timeline draws each earlier generation (its input and operations).
Until 2026-12-07 the page drew the current generation alone and never said the run had
continued as new: a run whose result held values no operation of its timeline had
produced (taken in an earlier generation), with no way to see where they came from."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import tether
from tests.web.helpers import READ, served_app
from tether import App

READ_HEADERS = {"Authorization": f"Bearer {READ}"}


def make_app(url: str) -> App:
    app = App(url)

    @app.step
    async def gather_notes(round_no: int) -> str:
        return f"notes-of-round-{round_no}"

    @app.workflow
    async def notebook(round_no: int, notes: list[str]) -> list[str]:
        notes = [*notes, await gather_notes(round_no)]
        if round_no < 2:
            tether.continue_as_new(round_no + 1, notes)
        return notes

    @app.workflow
    async def once() -> str:
        return await gather_notes(0)

    return app


@pytest.fixture
async def served(store_url: str) -> AsyncIterator[tuple[App, httpx.AsyncClient]]:
    async with served_app(make_app(store_url)) as pair:
        yield pair


async def _page(http: httpx.AsyncClient, run_id: str) -> str:
    r = await http.get(f"/runs/{run_id}", headers=READ_HEADERS)
    assert r.status_code == 200, r.text
    return r.text


def _generation_rows(page: str) -> list[list[str]]:
    """The cells of the rows of the earlier generations' tables."""
    section = page.split('id="generations"', 1)[1].split("</section>", 1)[0]
    rows = re.findall(r'<tr class="op [^"]*">(.*?)</tr>', section, re.S)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows]


async def test_a_run_page_draws_the_generations_before_the_current_one(
        served: tuple[App, httpx.AsyncClient]) -> None:
    app, http = served
    async with app.worker():
        handle = await app.start("notebook", 0, [], run_id="nb-1")
        assert await handle.result(timeout=30) == [
            "notes-of-round-0", "notes-of-round-1", "notes-of-round-2"]
    info: Any = await app.get_run("nb-1")
    assert info.generation == 2
    page = await _page(http, "nb-1")
    head = page.split('id="live-head"', 1)[1].split('id="live-body"', 1)[0]
    assert re.search(r"generation <b>2</b>", head), head
    assert "Earlier generations" in page and "continued as new 2 times" in page
    rows = _generation_rows(page)
    # Newest first: generation 1, then 0; each one step whose result it shows.
    assert [cells[0] for cells in rows] == ["g1.0", "g0.0"]
    assert all("gather_notes" in cells[2] for cells in rows)
    assert "notes-of-round-1" in rows[0][7] and "notes-of-round-0" in rows[1][7]
    # Each generation's own input is shown (generation 0 started from nothing).
    section = page.split('id="generations"', 1)[1].split("</section>", 1)[0]
    assert "generation 1 · 1 operation" in section and "generation 0 · 1 operation" in section
    assert "notes-of-round-0" in section.split("generation 1 · ", 1)[1].split("<table", 1)[0]


async def test_a_run_that_never_continued_has_no_generations_section(
        served: tuple[App, httpx.AsyncClient]) -> None:
    app, http = served
    async with app.worker():
        handle = await app.start("once", run_id="o-1")
        assert await handle.result(timeout=30) == "notes-of-round-0"
    page = await _page(http, "o-1")
    assert 'id="generations"' not in page and "continued as new" not in page


async def test_only_the_newest_generations_are_drawn(
        served: tuple[App, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch) -> None:
    from tether.serve import _ui

    monkeypatch.setattr(_ui, "GENERATIONS_SHOWN", 1)
    app, http = served
    async with app.worker():
        handle = await app.start("notebook", 0, [], run_id="nb-2")
        await asyncio.wait_for(handle.result(), 30)
    page = await _page(http, "nb-2")
    assert [cells[0] for cells in _generation_rows(page)] == ["g1.0"]
    assert "1 older generation not drawn" in page


async def test_show_gives_each_earlier_generation_the_header_of_the_current_one(
        served: tuple[App, httpx.AsyncClient]) -> None:
    """``tether show`` of a run continued as new: each generation's table has the header
    row (POS KIND NAME ...), the earlier ones too (they had none until 2026-12-07), as
    printed in full and fitted to a terminal."""
    import io

    from tether.cli._runs import print_timeline
    from tether.cli._show_fit import print_fitted

    app, _ = served
    async with app.worker():
        handle = await app.start("notebook", 0, [], run_id="nb-h")
        await handle.result(timeout=30)
    info = await app.get_run("nb-h")
    for draw in (lambda out: print_timeline(info, out),
                 lambda out: print_fitted(info, 100, out.write)):
        out = io.StringIO()
        draw(out)
        lines = out.getvalue().splitlines()
        headers = [i for i, line in enumerate(lines) if line.split()[:3] == ["POS", "KIND",
                                                                             "NAME"]]
        headings = [i for i, line in enumerate(lines) if line.startswith("generation ")]
        assert len(headings) == 3 and len(headers) == 3, out.getvalue()
        # each heading, then its header, then its row (gather_notes)
        for heading, header in zip(headings, headers, strict=True):
            assert heading < header
            assert "gather_notes" in lines[header + 1]
