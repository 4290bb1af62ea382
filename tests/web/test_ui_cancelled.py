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

from tests.web.helpers import ADMIN, READ, ui_client
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
    # (the link and its comma in a span that does not wrap: a line broke between them)
    assert ('with its parent run <span class="nowrap"><a class="mono" href="/runs/px-1"'
            ' title="px-1">px-1</a>,</span> whose cancel was requested at ') in card, card
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


async def test_the_cancel_form_takes_a_reason_and_the_card_says_it(
        ui: httpx.AsyncClient) -> None:
    """The Act card's cancel form has a reason field: the reason is stored with the
    cancel (``cancel_reason``, as ``tether cancel --reason`` stores it) and the card of
    the run, once cancelled, says it; a reason of two lines is a 400 naming why, and
    nothing is asked. (The form asked without one: a person cancelling from the page
    could not say why, as the CLI and the API can.)"""
    app = ui.app  # type: ignore[attr-defined]
    csrf = await login(ui, ADMIN)
    await app.start("wait_go", run_id="rx-1")
    async with app.worker(queues=["default"]):
        await _until(app, "rx-1", "waiting")
        page = (await ui.get("/runs/rx-1")).text
        assert 'name="reason"' in page and 'maxlength="1000"' in page, page
        r = await ui.post("/ui/runs/rx-1/cancel", data={"csrf": csrf, "reason": "a\nb"})
        assert r.status_code == 400 and "control characters" in r.text, r.text
        assert not (await app.store.run_get("rx-1")).cancel_requested
        r = await ui.post("/ui/runs/rx-1/cancel",
                          data={"csrf": csrf, "reason": " duplicate order "})
        assert r.status_code in (200, 303), r.text
        await _until(app, "rx-1", "cancelled")
    assert (await app.get_run("rx-1")).cancel_reason == "duplicate order"
    said = _text(_card((await ui.get("/runs/rx-1")).text))
    assert "Reason duplicate order" in said, said
    assert "on a cancel requested" in said, said
