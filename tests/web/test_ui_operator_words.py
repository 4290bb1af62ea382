"""The words of the operator pages: what replay saved, the inbox's count, a child wait
on a parent's timeline."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.web.helpers import ADMIN, ui_client
from tests.web.test_ui_and_cli import login
from tests.web.test_ui_waits import _until_waiting


@pytest.fixture
async def ui(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with ui_client(sqlite_url) as http:
        yield http


def _row(page: str, run_id: str) -> str:
    """The runs table's row of ``run_id``."""
    row = re.search(rf'<tr>(?:(?!</tr>).)*href="/runs/{re.escape(run_id)}"(?:(?!</tr>).)*</tr>',
                    page, re.S)
    assert row is not None, f"no row of {run_id}"
    return html.unescape(row.group(0))


async def test_what_replay_saved_reads_as_saved_not_as_a_negative_cost(
        ui: httpx.AsyncClient) -> None:
    """A run whose paid call was answered from the journal on its next turn: its Cost
    cell says "$0.0006 saved by replay", not "\N{MINUS SIGN}$0.0006 saved" (a minus sign before a
    saving read as a refund, or as a cost below zero)."""
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("asked_then_wait", "q", run_id="sv-1")
    await _until_waiting(ui, "sv-1")
    await app.signal("sv-1", "go", 1)
    async with app.worker(queues=["default"]):
        assert await app.handle("sv-1").result(timeout=30) == ["answer to q", 1]
    cell = _row((await ui.get("/runs")).text, "sv-1")
    assert "$0.0006 saved by replay" in cell, cell
    assert "\N{MINUS SIGN}" not in cell and "-$" not in cell
    head = html.unescape((await ui.get("/runs/sv-1")).text)
    assert re.search(r"Saved by replay</div><div class=\"v\">\$0\.0006</div>", head), head
