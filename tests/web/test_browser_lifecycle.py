"""Retry, fork and schedules in a real headless Chromium (Debian's ``chromium``, driven
by Playwright): retry a failed run after its code was fixed and watch it complete, fork
a run from a timeline row, and pause a schedule.

Screenshots go to the test's temporary folder; with ``TETHER_UPDATE_SCREENSHOTS=1`` they
also replace the ones in ``docs/img/`` that docs/serve.md shows.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.web.helpers import ADMIN, READ, ROOT, WEBAPP, Served, start_serve, start_worker
from tests.web.test_browser import browser as browser  # the fixture
from tests.web.test_browser import wait_for
from tether import App
from tether._lifecycle import make_spec, to_record

pytestmark = pytest.mark.slow

SHOTS = ("run-retry.png", "run-fork.png", "schedules.png")


def _add_schedules(db: str) -> None:
    async def add() -> None:
        async with App(db) as app:
            now = app.clock.now()
            for spec in (make_spec("greet", "default", "0 9 * * 1-5", name="morning-digest",
                                   timezone="Europe/Paris", args=("team",)),
                         make_spec("steps", "default", "*/15 * * * *", name="refresh-index",
                                   args=(2,), overlap="cancel_previous"),
                         make_spec("greet", "default", "0 3 1 * *", name="monthly-report",
                                   args=("finance",), catchup="all", catchup_max=3)):
                await app.store.schedule_upsert(schedule=to_record(app, spec, now))

    # Playwright's sync API runs an event loop in this thread: use another one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, add()).result()


def test_retry_fork_and_schedules_in_the_browser(browser: object, tmp_path: Path) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/life.db"
    served: Served | None = None
    worker = None
    api = {"Authorization": f"Bearer {ADMIN}"}
    try:
        served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\nread:{READ}\n", app=WEBAPP)
        worker = start_worker(db, tmp_path)  # fragile("order-7") is still broken here

        def start(workflow: str, run_id: str, *args: object) -> None:
            r = httpx.post(served.url + "/api/v1/runs", headers=api, json={
                "workflow": workflow, "input": list(args), "run_id": run_id})
            assert r.status_code == 201, r.text

        start("fixable", "order-7", "order-7")
        start("steps", "research-3", 4)
        wait_for(served.url, "order-7", "failed")
        wait_for(served.url, "research-3", "completed")
        _add_schedules(db)

        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.click("button:has-text('Log in')")

        # A failed run offers Retry; after the fix (a new worker), Retry completes it.
        page.goto(served.url + "/runs/order-7")
        expect(page.locator("#run-status")).to_have_text("failed")
        expect(page.locator("#retry")).to_be_visible()
        expect(page.locator(".failure")).to_contain_text("bug in fragile")
        page.screenshot(path=str(tmp_path / "run-retry.png"), full_page=True)
        worker.terminate()
        worker.wait(10)
        worker = start_worker(db, tmp_path, extra_env={"TETHER_TEST_FIXED": "order-7"})
        page.click("#retry button")
        expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
        expect(page.locator(".result")).to_contain_text("fixed order-7")
        expect(page.locator("#retry")).to_be_hidden()

        # Fork from a timeline row: the form is filled with that position.
        page.goto(served.url + "/runs/research-3")
        page.locator("tr.op", has_text="work").nth(2).locator("a.forkhere").click()
        expect(page.locator("#fork input[name=at]")).to_have_value("2")
        page.fill("#fork input[name=run_id]", "research-3-take-2")
        expect(page.locator("tr.forkpoint")).to_contain_text("work")
        page.evaluate("window.scrollTo(0, 0)")  # the sticky header stays on top
        page.screenshot(path=str(tmp_path / "run-fork.png"), full_page=True)
        page.click("#fork button")
        expect(page).to_have_url(served.url + "/runs/research-3-take-2")
        expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
        expect(page.locator(".run-head")).to_contain_text("forked from research-3 at position 2")
        doc = httpx.get(served.url + "/api/v1/runs/research-3-take-2", headers=api).json()
        assert doc["result"] == [10, 20, 30, 40]
        assert {a["position"] for a in doc["attempts"]} == {2, 3}, "copied steps ran again"

        # Schedules: run one now, pause another from the page.
        page.goto(served.url + "/schedules")
        page.locator("tr", has_text="morning-digest").locator("button:has-text('Run now')").click()
        expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
        expect(page.locator(".result")).to_contain_text("hello team")
        page.goto(served.url + "/schedules")
        row = page.locator("tr", has_text="refresh-index")
        expect(row).to_contain_text("active")
        row.locator("button:has-text('Pause')").click()
        expect(page.locator("tr", has_text="refresh-index")).to_contain_text("paused")
        page.screenshot(path=str(tmp_path / "schedules.png"), full_page=True)
        doc = httpx.get(served.url + "/api/v1/schedules", headers=api).json()
        assert {s["name"]: s["paused"] for s in doc["schedules"]} == {
            "monthly-report": False, "morning-digest": False, "refresh-index": True}
        context.close()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(10)
        if served is not None:
            served.stop()
    if os.environ.get("TETHER_UPDATE_SCREENSHOTS") == "1":
        out = ROOT / "docs" / "img"
        out.mkdir(parents=True, exist_ok=True)
        for name in SHOTS:
            shutil.copy(tmp_path / name, out / name)


def test_the_retry_note_follows_the_run_on_an_open_page(browser: object,
                                                        tmp_path: Path) -> None:
    """A run page opened while the run waits, then the run signalled and cancelled
    elsewhere: the Retry button shows (live), and its note counts what a retry keeps
    now (the signal taken; not the cancel), not what the run had recorded when the page
    was opened ("keeps no recorded operation", drawn then and never redrawn)."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/keeps.db"
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\n", app=WEBAPP)
    worker = start_worker(db, tmp_path)
    api = {"Authorization": f"Bearer {ADMIN}"}
    try:
        r = httpx.post(served.url + "/api/v1/runs", headers=api,
                       json={"workflow": "two_signals", "input": [], "run_id": "keeps-live"})
        assert r.status_code == 201, r.text
        wait_for(served.url, "keeps-live", "waiting")
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.press("input[name=token]", "Enter")
        expect(page).to_have_url(served.url + "/runs")
        page.goto(served.url + "/runs/keeps-live")
        expect(page.locator("#retry")).to_be_hidden()
        expect(page.locator("#retry [data-keeps]")).to_have_text(
            "keeps no recorded operation: runs it from the start under the current code")
        r = httpx.post(served.url + "/api/v1/runs/keeps-live/signals/go", headers=api,
                       json={"data": 1})
        assert r.status_code in (200, 201, 202), r.text
        expect(page.locator("#run-status")).to_have_text("waiting")
        expect(page.locator(".timeline")).to_contain_text("go")
        r = httpx.post(served.url + "/api/v1/runs/keeps-live/cancel", headers=api)
        assert r.status_code in (200, 202), r.text
        expect(page.locator("#run-status")).to_have_text("cancelled", timeout=15_000)
        expect(page.locator("#retry")).to_be_visible()
        expect(page.locator("#retry [data-keeps]")).to_have_text(
            "keeps the 1 recorded operation, runs the rest under the current code")
        page.close()
    finally:
        worker.terminate()
        worker.wait(10)
        served.stop()


def test_schedules_and_relative_times_keep_their_words_whole(browser: object,
                                                             tmp_path: Path) -> None:
    """What a person read wrong before: at 1280 px a schedule whose last run has a long
    id pushed the table past its box (Run now cut off at its edge); a 14-character name
    broke in its middle ("nightly_dige" / "st"); on a phone "asked 46 s ago" broke
    between "46" and "s ago" (at 390 px beside a longer tool name than this app's, at
    340 px beside this one). A page's one-line description sat a blank line below its
    title on a phone."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/layout.db"
    long_name = "morning-greeting-for-the-whole-sales-and-support-organisation"

    async def add() -> None:
        async with App(db) as app:
            now = app.clock.now()
            for spec in (make_spec("greet", "default", "0 9 * * mon-fri", name=long_name,
                                   args=("team",)),
                         make_spec("held_after_signal", "default", "*/5 * * * *",
                                   name="nightly_digest",
                                   timezone="Europe/Paris", args=("x",))):
                await app.store.schedule_upsert(schedule=to_record(app, spec, now))

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, add()).result()
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\n", app=WEBAPP)
    worker = start_worker(db, tmp_path)
    api = {"Authorization": f"Bearer {ADMIN}"}
    try:
        r = httpx.post(served.url + f"/api/v1/schedules/{long_name}/trigger", headers=api)
        assert r.status_code in (200, 201, 202), r.text
        r = httpx.post(served.url + "/api/v1/schedules/nightly_digest/pause", headers=api)
        assert r.status_code == 200, r.text  # (Resume is wider than Pause)
        r = httpx.post(served.url + "/api/v1/runs", headers=api, json={
            "workflow": "purchase", "input": ["globe"], "run_id": "asks-1"})
        assert r.status_code == 201, r.text
        wait_for(served.url, "asks-1", "waiting")
        for width in (1280, 390, 340):
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(served.url + "/login")
            page.fill("input[name=token]", ADMIN)
            page.press("input[name=token]", "Enter")
            expect(page).to_have_url(served.url + "/runs")
            page.goto(served.url + "/schedules")
            expect(page.locator("tr", has_text=long_name)).to_contain_text("…")
            page.screenshot(path=str(tmp_path / f"schedules-{width}.png"), full_page=True)
            # one line: its height is that of one line of its font
            one_line = "e => e.getBoundingClientRect().height < 1.5 * parseFloat(" \
                       "getComputedStyle(e).lineHeight)"
            if width == 1280:
                box = page.locator(".scroll-x")
                sizes = box.evaluate("b => [b.scrollWidth, b.clientWidth]")
                assert sizes[0] <= sizes[1], sizes
            name = page.locator("td.name b", has_text="nightly_digest")
            assert name.evaluate(one_line), "the name broke in its middle"
            page.goto(served.url + "/approvals")
            asked = page.locator(".approval span", has_text="asked")
            expect(asked).to_contain_text("ago")
            assert asked.evaluate(one_line), asked.inner_text()
            head = page.locator(".page-head")
            gap = head.evaluate("h => h.querySelector('p').getBoundingClientRect().top"
                                " - h.querySelector('h1').getBoundingClientRect().bottom")
            if width < 640:  # (wrapped under the title: the row gap and the title's margin)
                assert gap <= 12 + 6, gap  # (the paragraph's 14 px margin too, before)
            page.screenshot(path=str(tmp_path / f"approvals-{width}.png"), full_page=True)
            page.close()
    finally:
        worker.terminate()
        worker.wait(10)
        served.stop()
