"""Times in the viewer's own zone, in a real headless Chromium: the server draws every
absolute time in UTC in a ``<time datetime>`` (what a page without its script shows),
app.js shows it in the browser's zone, named, the UTC time in its title; the header's
switch puts the page in UTC, and the choice is kept across a reload and the live
redraws."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.web.helpers import WEBAPP, Served, start_serve, start_worker
from tests.web.test_browser import browser as browser  # the fixture
from tests.web.test_browser import wait_for
from tests.web.test_browser_lifecycle import _add_schedules

pytestmark = pytest.mark.slow

#: A zone and what Chromium (language en-US) calls it in December.
LOS_ANGELES = ("America/Los_Angeles", "PST")
KOLKATA = ("Asia/Kolkata", "GMT+5:30")


@dataclass
class Site:
    url: str
    worker: subprocess.Popen[bytes]
    server: Served

    def stop_worker(self) -> None:
        self.worker.terminate()
        self.worker.wait(10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Site]:
    """A server without tokens (loopback, admin) and a worker, with a run waiting for an
    approval (``buy-1``), one asleep for 3 h (``nap-1``), one completed (``steps-1``)
    and schedules."""
    db = f"sqlite:///{tmp_path}/times.db"
    server = start_serve(db, tmp_path, app=WEBAPP)
    worker = start_worker(db, tmp_path)
    try:
        for workflow, run_id, args in (("purchase", "buy-1", ["atlas"]), ("nap", "nap-1", []),
                                       ("steps", "steps-1", [2])):
            r = httpx.post(server.url + "/api/v1/runs", json={
                "workflow": workflow, "input": args, "run_id": run_id})
            assert r.status_code == 201, r.text
        wait_for(server.url, "buy-1", "waiting")
        wait_for(server.url, "nap-1", "waiting")
        wait_for(server.url, "steps-1", "completed")
        _add_schedules(db)
        yield Site(server.url, worker, server)
    finally:
        worker.terminate()
        worker.wait(10)
        server.stop()


def _utc(iso: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    assert when.tzinfo is not None and when.utcoffset() == dt.timedelta(0), iso
    return when


def _utc_text(iso: str) -> str:
    return _utc(iso).strftime("%Y-%m-%d %H:%M:%S UTC")


def _local_text(iso: str, zone: tuple[str, str], clock: bool = False) -> str:
    local = _utc(iso).astimezone(ZoneInfo(zone[0]))
    return local.strftime("%H:%M:%S" if clock else "%Y-%m-%d %H:%M:%S") + " " + zone[1]


def _times(page: Any) -> list[dict[str, Any]]:
    """The page's absolute times: their ``datetime``, text, title, and whether they are a
    time of day (a form's note)."""
    items = page.eval_on_selector_all("time", """els => els.map(e => ({
        iso: e.getAttribute("datetime"), text: e.textContent, title: e.title,
        clock: e.hasAttribute("data-clock")}))""")
    assert isinstance(items, list)
    return items


def _titles(page: Any) -> list[dict[str, Any]]:
    """The relative times ("41 s ago") that hold an absolute one in their title."""
    items = page.eval_on_selector_all("[data-at]", """els => els.map(e => ({
        iso: e.dataset.at, say: e.dataset.say || "", title: e.title}))""")
    assert isinstance(items, list)
    return items


def _assert_local(page: Any, zone: tuple[str, str], *, times: int, titles: int) -> None:
    """At least ``times`` absolute times and ``titles`` relative ones, each in ``zone``
    (named), its UTC time kept in its title."""
    items = _times(page)
    assert len(items) >= times, items
    for t in items:
        assert t["text"] == _local_text(t["iso"], zone, t["clock"]), t
        assert t["title"] == _utc_text(t["iso"]), t
    rel = _titles(page)
    assert len(rel) >= titles, rel
    for t in rel:
        assert t["title"] == (f"{t['say']}{_local_text(t['iso'], zone)} "
                              f"({_utc_text(t['iso'])})"), t


def _assert_utc(page: Any, *, times: int, titles: int) -> None:
    items = _times(page)
    assert len(items) >= times, items
    for t in items:
        whole = _utc_text(t["iso"])
        assert t["text"] == (whole[11:] if t["clock"] else whole), t
        assert t["title"] == whole, t
    rel = _titles(page)
    assert len(rel) >= titles, rel
    for t in rel:
        assert t["title"] == t["say"] + _utc_text(t["iso"]), t


def _redrawn(page: Any, selector: str) -> None:
    """Wait until the live fragment ``selector`` holds is drawn again (a marker set on
    what it holds now is gone)."""
    from playwright.sync_api import expect

    page.evaluate("s => document.querySelector(s).firstElementChild.dataset.old = '1'",
                  selector)
    expect(page.locator(f"{selector} > [data-old]")).to_have_count(0, timeout=15_000)


def test_times_in_los_angeles_and_the_switch_to_utc(browser: Any, served: Site,
                                                    tmp_path: Path) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  timezone_id=LOS_ANGELES[0], locale="en-US")
    page = context.new_page()
    url = served.url

    # The run page: the head's "started ... ago", the timeline's start times, the timer.
    page.goto(url + "/runs/nap-1")
    expect(page.locator("#zones")).to_be_visible()
    expect(page.locator("#zones button[data-zone=local]")).to_have_attribute(
        "aria-pressed", "true")
    expect(page.locator("#waits time")).to_have_text(re.compile(r" PST$"))
    _assert_local(page, LOS_ANGELES, times=4, titles=2)
    page.goto(url + "/runs/buy-1")
    _assert_local(page, LOS_ANGELES, times=1, titles=2)  # (asked ... ago: an approval)
    # The runs list (when each started: titles), the inbox, the schedules' next ticks.
    page.goto(url + "/runs")
    _assert_local(page, LOS_ANGELES, times=0, titles=4)
    page.goto(url + "/approvals")
    _assert_local(page, LOS_ANGELES, times=0, titles=1)
    page.goto(url + "/schedules")
    _assert_local(page, LOS_ANGELES, times=3, titles=0)

    # A live redraw keeps the zone: the runs list redrawn (every 2 s), a run page's
    # parts redrawn as the run moves on (buy-1 approved: it completes).
    page.goto(url + "/runs")
    _redrawn(page, "#runs")
    _assert_local(page, LOS_ANGELES, times=0, titles=4)
    page.goto(url + "/runs/buy-1")
    page.evaluate("document.querySelector('[data-part=body]').firstElementChild"
                  ".dataset.old = '1'")
    r = httpx.post(url + "/api/v1/runs/buy-1/approval", json={"approved": True,
                                                               "approval_id": "1"})
    assert r.status_code < 300, r.text
    expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
    expect(page.locator("[data-part=body] > [data-old]")).to_have_count(0)  # (redrawn)
    _assert_local(page, LOS_ANGELES, times=1, titles=1)

    # UTC, a click away: the text is the server's, and stays so after a reload, on the
    # other pages and across a live redraw.
    page.goto(url + "/runs/nap-1")
    page.click("#zones button[data-zone=utc]")
    expect(page.locator("#zones button[data-zone=utc]")).to_have_attribute(
        "aria-pressed", "true")
    _assert_utc(page, times=4, titles=2)
    page.reload()
    expect(page.locator("#zones button[data-zone=utc]")).to_have_attribute(
        "aria-pressed", "true")
    _assert_utc(page, times=4, titles=2)
    page.goto(url + "/runs")
    _redrawn(page, "#runs")
    _assert_utc(page, times=0, titles=4)
    page.goto(url + "/schedules")
    _assert_utc(page, times=3, titles=0)
    # ... and back.
    page.click("#zones button[data-zone=local]")
    _assert_local(page, LOS_ANGELES, times=3, titles=0)
    page.reload()
    _assert_local(page, LOS_ANGELES, times=3, titles=0)

    # The banner of a server gone says since when in the zone too, and follows the switch.
    page.goto(url + "/runs")
    served.server.stop()
    since = page.locator("#offline .since time")
    expect(since).to_have_text(re.compile(r"^\d\d:\d\d:\d\d PST$"), timeout=15_000)
    _assert_local(page, LOS_ANGELES, times=1, titles=4)
    page.click("#zones button[data-zone=utc]")
    expect(since).to_have_text(re.compile(r"^\d\d:\d\d:\d\d UTC$"))
    _assert_utc(page, times=1, titles=4)
    context.close()


def test_a_half_hour_zone_and_a_forms_note(browser: Any, served: Site,
                                           tmp_path: Path) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 390, "height": 844},
                                  timezone_id=KOLKATA[0], locale="en-US")
    page = context.new_page()
    page.goto(served.url + "/runs/nap-1")
    expect(page.locator("#waits time")).to_have_text(re.compile(r" GMT\+5:30$"))
    _assert_local(page, KOLKATA, times=4, titles=2)
    # The note of the form just sent says when it asked, as a time of day in this zone
    # (no worker: the cancel is asked, not delivered before the page is drawn).
    served.stop_worker()
    page.on("dialog", lambda d: d.accept())
    with page.expect_navigation():
        page.locator("form.cancel button").click()
    note = page.locator(".flash")
    expect(note).to_have_text(re.compile(
        r"^Asked run nap-1 to cancel at \d\d:\d\d:\d\d GMT\+5:30: it stops at its next "
        r"operation\.$"))
    [flash] = [t for t in _times(page) if t["clock"]]
    assert abs((_utc(flash["iso"]) - dt.datetime.now(dt.UTC)).total_seconds()) < 120
    _assert_local(page, KOLKATA, times=5, titles=2)
    page.click("#zones button[data-zone=utc]")
    expect(note).to_have_text(re.compile(r"^Asked run nap-1 to cancel at \d\d:\d\d:\d\d UTC: "))
    _assert_utc(page, times=5, titles=2)
    context.close()


def test_without_a_script_the_times_are_utc(browser: Any, served: Site) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  timezone_id=LOS_ANGELES[0], java_script_enabled=False)
    page = context.new_page()
    for path, times, titles in (("/runs/nap-1", 4, 2), ("/runs", 0, 4), ("/approvals", 0, 1),
                                ("/schedules", 3, 0)):
        page.goto(served.url + path)
        _assert_utc(page, times=times, titles=titles)
        # (the switch would do nothing: it is not shown)
        expect(page.locator("#zones")).to_be_hidden()
    context.close()
