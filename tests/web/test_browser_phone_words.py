"""A run page on a phone (390 x 844, light and dark) in a real headless Chromium: a shell
command and a run id are read whole, never broken at their hyphens, and the page never
scrolls sideways; the Act card's note of a cancel requested says since when, and ticks;
the cancelled run's card says when, on whose request, in words. Screenshots go to the
test's temporary folder; with ``TETHER_UPDATE_SCREENSHOTS=1`` the cancelled run's
replaces ``docs/img/run-cancelled.png``."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests.web.helpers import ADMIN, ROOT, WEBAPP, start_serve, start_worker
from tests.web.test_browser import browser as browser  # the fixture
from tests.web.test_browser import wait_for
from tests.web.test_browser_walk import ONE_LINE

pytestmark = pytest.mark.slow

#: A run id as people name theirs: hyphens a phone broke the lines at.
RUN = "research-2026-12-07-ab12"
PARENT = "digest-2026-12-07-ef56"

#: Whether the page scrolls sideways (wider than its window).
SIDEWAYS = "() => document.documentElement.scrollWidth > window.innerWidth"


def test_a_phone_reads_commands_and_ids_whole(browser: object, tmp_path: Path) -> None:
    """At 390 px, "tether signal research-2026-12-07-ab12 go --data JSON" broke at
    "research-2026-12-07-" / "ab12", and the head's "child of" link at its hyphens:
    each is one line now (the command scrolls in its box), and the page does not
    scroll sideways; a cancel asked in the Act card says since when in its note, an
    age that ticks with its time in its title; once the run ends, its card says when
    it was cancelled, on a cancel requested when, with no traceback."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/phone.db"
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\n", app=WEBAPP)
    worker = start_worker(db, tmp_path)
    api = {"Authorization": f"Bearer {ADMIN}"}
    try:
        for workflow, run_id in (("wait_go", RUN), ("waiting_parent", PARENT)):
            r = httpx.post(served.url + "/api/v1/runs", headers=api, json={
                "workflow": workflow, "run_id": run_id})
            assert r.status_code == 201, r.text
        for run_id in (RUN, PARENT, PARENT + ".0"):
            wait_for(served.url, run_id, "waiting")
        worker.terminate()  # (no worker: a cancel is asked, not yet delivered)
        worker.wait(10)
        pages = {}
        for scheme in ("light", "dark"):
            page = browser.new_page(viewport={"width": 390, "height": 844},
                                    color_scheme=scheme)
            page.on("dialog", lambda dialog: dialog.accept())  # (Cancel run asks first)
            page.goto(served.url + "/login")
            page.fill("input[name=token]", ADMIN)
            page.press("input[name=token]", "Enter")
            expect(page).to_have_url(served.url + "/runs")
            page.goto(served.url + "/runs/" + RUN)
            command = page.locator("#waits code")
            expect(command).to_have_text(f"tether signal {RUN} go --data JSON")
            page.screenshot(path=str(tmp_path / f"waiting-390-{scheme}.png"), full_page=True)
            assert command.evaluate(ONE_LINE), "the command broke over two lines"
            assert not page.evaluate(SIDEWAYS), "the page scrolls sideways"
            page.goto(served.url + f"/runs/{PARENT}.0")
            parent = page.locator(".run-head .meta a", has_text=PARENT)
            expect(parent).to_have_attribute("title", PARENT)
            page.screenshot(path=str(tmp_path / f"child-390-{scheme}.png"), full_page=True)
            assert parent.evaluate(ONE_LINE), "the parent's id broke over two lines"
            assert not page.evaluate(SIDEWAYS), "the page scrolls sideways"
            pages[scheme] = page
        page = pages["light"]
        page.goto(served.url + "/runs/" + RUN)
        page.locator("form.cancel button").click()
        note = page.locator("#actions .cancel-asked")
        expect(note).to_be_visible()
        age = note.locator("[data-asked-when] [data-ago]")
        expect(age).to_have_text(re.compile(r"^\d+ s ago$"))
        expect(age).to_have_attribute("title", re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"))
        expect(note).to_have_text(re.compile(
            r"^Cancel requested \d+ s ago: it ends cancelled when a worker serving queue "
            r"default replays it\.$"))
        first = age.inner_text()
        expect(age).not_to_have_text(first, timeout=15_000)  # (it ticks)
        page.screenshot(path=str(tmp_path / "cancel-asked-390.png"), full_page=True)
        worker = start_worker(db, tmp_path)  # delivers the cancel
        for scheme, page in pages.items():
            page.goto(served.url + "/runs/" + RUN)
            card = page.locator(".ended-cancelled")
            expect(card).to_contain_text(re.compile(
                r"Cancelled at .+ \(\d+ s ago\), on a cancel requested "
                r"(the same second|at .+)\."),
                timeout=30_000)
            expect(card).not_to_contain_text("Traceback")
            expect(card).not_to_contain_text("tether.errors.Cancelled")
            assert not page.evaluate(SIDEWAYS), "the page scrolls sideways"
            page.screenshot(path=str(tmp_path / f"cancelled-390-{scheme}.png"), full_page=True)
            page.close()
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.press("input[name=token]", "Enter")
        page.goto(served.url + "/runs/" + RUN)
        expect(page.locator(".ended-cancelled")).to_contain_text("Cancelled at")
        page.screenshot(path=str(tmp_path / "run-cancelled.png"), full_page=True)
        page.close()
    finally:
        worker.terminate()
        worker.wait(10)
        served.stop()
    if os.environ.get("TETHER_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(tmp_path / "run-cancelled.png", ROOT / "docs" / "img" / "run-cancelled.png")


def test_a_runs_page_of_several_statuses_does_not_scroll_sideways_on_a_phone(
        browser: object, tmp_path: Path) -> None:
    """``/runs?status=...`` of several statuses names them in the status menu ("queued or
    running or ..."): the menu stays within the page at 390 px (it grew as wide as its
    name, and the filters and the page with it scrolled sideways)."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    served = start_serve(f"sqlite:///{tmp_path}/statuses.db", tmp_path,
                         tokens=f"admin:{ADMIN}\n", app=WEBAPP)
    try:
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.press("input[name=token]", "Enter")
        expect(page).to_have_url(served.url + "/runs")
        page.goto(served.url + "/runs?status=queued,running,waiting,completed,failed")
        menu = page.locator("select[name=status] option:checked")
        expect(menu).to_have_text("queued or running or waiting or completed or failed")
        page.screenshot(path=str(tmp_path / "statuses-390.png"), full_page=True)
        assert not page.evaluate(SIDEWAYS), "the page scrolls sideways"
    finally:
        served.stop()
