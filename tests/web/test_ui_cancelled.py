"""A cancelled run's page says its end in words, as ``tether result`` does: when it was
cancelled and on whose request (its own cancel, or its parent's when the cascade ended
it), not ``tether.errors.Cancelled`` and the engine's traceback; an error the run's own
code raised as it stopped is shown in one line, its traceback behind "details"."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.web.helpers import READ, ui_client
from tests.web.test_ui_and_cli import login


@pytest.fixture
async def ui(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client (no bearer header) of a server with tokens."""
    async with ui_client(sqlite_url) as http:
        yield http


async def _until(app: object, run_id: str, status: str) -> None:
    async with asyncio.timeout(30):
        while (await app.store.run_get(run_id)).status != status:  # type: ignore[attr-defined]
            await asyncio.sleep(0.02)


def _card(page: str) -> str:
    box = re.search(r'<section class="card ended-cancelled"><h2>Cancelled</h2>.*?</section>',
                    page, re.S)
    assert box is not None, page
    return box.group(0)


def _text(html: str) -> str:
    """What a reader sees of ``html``: its text, its spaces as one."""
    return " ".join(re.sub(r"<[^>]+>", "", html).split())


async def test_a_cancelled_run_says_when_and_on_whose_request(ui: httpx.AsyncClient) -> None:
    """A run cancelled while it waited: its card says when it ended and when the cancel
    was asked, each a ``<time>``; no ``tether.errors.Cancelled: run '...' was
    cancelled`` and no traceback (the page showed both, as if it had crashed)."""
    app = ui.app  # type: ignore[attr-defined]
    await login(ui, READ)
    await app.start("wait_go", run_id="cx-1")
    async with app.worker(queues=["default"]):
        await _until(app, "cx-1", "waiting")
        await app.cancel("cx-1")
        await _until(app, "cx-1", "cancelled")
    card = _card((await ui.get("/runs/cx-1")).text)
    said = _text(card)
    assert re.search(r"Cancelled at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d+ s ago\), on a "
                     r"cancel requested (the same second|at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
                     r"UTC)\.", said), said
    assert card.count("<time datetime=") >= 1, card
    assert "tether.errors.Cancelled" not in card and "Traceback" not in card, card
    assert "<details" not in card and "error of its own" not in card, card
    # (wait_go journals nothing before its wait: its retry keeps nothing, as the Retry
    # button's note says; the card said "its recorded steps are kept")
    assert "Retry the run to go on: a retry keeps no recorded operation" in said, said


async def test_a_child_cancelled_by_its_parent_names_the_parent(
        ui: httpx.AsyncClient) -> None:
    """The cascade's child: its card says it was cancelled with its parent run, linked,
    and when the parent's cancel was requested, as ``tether result`` does."""
    app = ui.app  # type: ignore[attr-defined]
    await login(ui, READ)
    await app.start("waiting_parent", run_id="px-1")
    async with app.worker(queues=["default"]):
        await _until(app, "px-1", "waiting")
        [kid] = await app.store.run_search(parent="px-1", limit=10)
        await _until(app, kid.run_id, "waiting")
        await app.cancel("px-1")
        await _until(app, "px-1", "cancelled")
        await _until(app, kid.run_id, "cancelled")
    parent = await app.store.run_get("px-1")
    card = _card((await ui.get(f"/runs/{kid.run_id}")).text)
    assert ('with its parent run <a class="mono" href="/runs/px-1" title="px-1">'
            "px-1</a>, whose cancel was requested at ") in card, card
    assert f'datetime="{_iso(parent.cancel_requested_at)}"' in card, card
    assert "on a cancel requested" not in card and "tether.errors.Cancelled" not in card
    # (the parent's own card: its own request)
    card = _card((await ui.get("/runs/px-1")).text)
    assert "on a cancel requested" in card and "parent run" not in card, card


def _iso(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_an_error_raised_while_cancelling_is_shown_its_traceback_behind_details(
        ui: httpx.AsyncClient) -> None:
    """A run whose clean-up raised as it was cancelled: the card says so in one line,
    the error's text visible, its traceback only inside the "details" disclosure."""
    app = ui.app  # type: ignore[attr-defined]
    await login(ui, READ)
    await app.start("cleanup_fails", run_id="lx-1")
    async with app.worker(queues=["default"]):
        await _until(app, "lx-1", "waiting")
        await app.cancel("lx-1")
        await _until(app, "lx-1", "cancelled")
    card = _card((await ui.get("/runs/lx-1")).text)
    assert ("It stopped on an error of its own, not on the cancel: <span class=\"err\">"
            "RuntimeError: could not release the lock &#39;ledger&#39;</span>") in card, card
    details = re.search(r'<details class="tb-box"><summary>details</summary>(.*?)</details>',
                        card, re.S)
    assert details is not None, card
    assert "Traceback (most recent call last)" in details.group(1)
    assert "Traceback" not in card.replace(details.group(0), "")
    assert "on a cancel requested" in card


async def test_a_run_cancelled_while_queued_has_its_card_too(ui: httpx.AsyncClient) -> None:
    """A run cancelled before any worker took it (no error stored): its page has the
    Cancelled card (it had none: the card was drawn from the error), and its head says
    it was created, not started, and cancelled after how long, not that it "took" it."""
    app = ui.app  # type: ignore[attr-defined]
    await login(ui, READ)
    await app.start("wait_go", run_id="qx-1", queue="nobody-serves")
    await app.cancel("qx-1")
    await _until(app, "qx-1", "cancelled")
    page = (await ui.get("/runs/qx-1")).text
    said = _text(_card(page))
    assert re.search(r"^Cancelled Cancelled at .* UTC \(\d+ s ago\), on a cancel requested ",
                     said), said
    head = _text(re.search(r'<p class="meta">.*?</p>', page, re.S).group(0))
    assert re.search(r"· created \d+ s ago · cancelled after [\d.]+ (µs|ms|s)$", head), head


async def test_a_stored_reason_and_requester_are_said(ui: httpx.AsyncClient) -> None:
    """A cancel's reason and requester, read from the run's document when a store keeps
    them (``cancel_reason``, ``cancelled_by``), and only when they are texts."""
    from tether.serve._ui import cancel_end

    app = ui.app  # type: ignore[attr-defined]
    doc = {"run_id": "r", "parent_run_id": None, "cancel_requested_at": 1.0,
           "error": {"type": "tether.errors.Cancelled", "message": "run 'r' was cancelled"},
           "cancel_reason": " duplicate order ", "cancelled_by": "ana"}
    said = await cancel_end(app, doc)
    assert said["reason"] == "duplicate order" and said["by"] == "ana"
    assert said["own_error"] is False and said["parent"] is None
    said = await cancel_end(app, {**doc, "cancel_reason": {"x": 1}, "cancelled_by": ""})
    assert said["reason"] is None and said["by"] is None
