"""A blocked, a running and waiting runs' pages and the inbox on a touch screen (390 x
844, light and dark) in a real headless Chromium: no page scrolls sideways; what a
thumb presses (a timeline row's fork link, a "details", a button, a link on its own
line) is 40 px tall; the fork link is shown where nothing hovers, and reached with Tab,
with a ring, where something does; a command and the runs table too wide for their box
have a shade on the edge they scroll towards; a run id in a form's note is read on one line.
Screenshots go to the test's temporary folder."""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path

import httpx
import pytest

import tether
from tests.web.helpers import ADMIN, WEBAPP, start_serve, start_worker
from tests.web.test_browser import browser as browser  # the fixture
from tests.web.test_browser import wait_for
from tests.web.test_browser_walk import HEIGHTS, ONE_LINE
from tether import App

pytestmark = pytest.mark.slow

WAITING = "research-2026-12-07-ab12"
BUDGET = "budget-2026-12-07-cd34"
APPROVAL = "purchase-2026-12-07-ef56"
RUNNING = "running-2026-12-07-aa11"
BLOCKED = "nightly-digest-2026-12-07-blocked-9f3a"
DONE = "research-3"
PARENT = "digest-2026-12-07-ef56"

#: What a thumb presses on these pages, links that stand on their own line included.
TARGETS = ("main button, main input:not([type=hidden]), main summary, a.forkhere,"
           " .approval-head a, h2 a, .tree li > a, .fan-out li > a, .inbox p.small > a")

#: Whether the page scrolls sideways (wider than its window).
SIDEWAYS = "() => document.documentElement.scrollWidth > window.innerWidth"

#: Whether an element's box draws a shade on the edges it scrolls towards: the covers
#: that move with its content (``local``) over the shades that stay (``scroll``).
SHADED = ("e => { const s = getComputedStyle(e); return e.scrollWidth > e.clientWidth"
          " && (s.backgroundImage.match(/linear-gradient/g) || []).length === 4"
          " && s.backgroundAttachment.startsWith('local, local, scroll, scroll'); }")


def _block(db: str, run_id: str) -> None:
    """``run_id`` blocked: run to a wait after step ``a``, then replayed under code that
    asks for step ``b`` first (non-determinism)."""

    async def run(first: str) -> None:
        app = App(db)

        @app.step
        async def a() -> int:
            return 1

        @app.step
        async def b() -> int:
            return 2

        @app.workflow
        async def patient(first: str = first) -> int:
            await (a() if first == "a" else b())
            return int(await tether.wait_for_signal("go", timeout=3600))

        async with app, app.worker():
            if first == "a":
                await app.start(patient, run_id=run_id)
                status = "waiting"
            else:
                await app.signal(run_id, "go", 1)
                status = "blocked"
            async with asyncio.timeout(30):
                while (await app.store.run_get(run_id)).status != status:
                    await asyncio.sleep(0.02)

    # Playwright's sync API runs an event loop in this thread: use another one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        for first in ("a", "b"):
            pool.submit(asyncio.run, run(first)).result()


def test_run_pages_on_a_touch_screen(browser: object, tmp_path: Path) -> None:
    """At 390 px on a touch screen: the fork link was invisible (shown on hover only)
    and 13 px tall, a "details" 17 px; a command cut at the box's edge and the
    timeline cut at "Started" read as whole; the signal form's note broke the run id at
    its hyphens ("research-2026-12-07-" / "ab12.")."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/phone.db"
    _block(db, BLOCKED)
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\n", app=WEBAPP)
    worker = start_worker(db, tmp_path, extra_env={"TETHER_TEST_GATE_DIR": str(tmp_path)})
    api = {"Authorization": f"Bearer {ADMIN}"}
    try:
        for workflow, run_id, args in (
                ("wait_go", WAITING, []), ("over_budget", BUDGET, ["What is it?"]),
                ("purchase", APPROVAL, ["atlas"]), ("gated_later", RUNNING, ["ana", "gate"]),
                ("steps", DONE, [3]), ("waiting_parent", PARENT, [])):
            r = httpx.post(served.url + "/api/v1/runs", headers=api, json={
                "workflow": workflow, "input": args, "run_id": run_id})
            assert r.status_code == 201, r.text
        for run_id, status in ((WAITING, "waiting"), (BUDGET, "waiting"),
                               (APPROVAL, "waiting"), (RUNNING, "running"),
                               (DONE, "completed"), (PARENT, "waiting")):
            wait_for(served.url, run_id, status)
        for scheme in ("light", "dark"):
            context = browser.new_context(viewport={"width": 390, "height": 844},
                                          color_scheme=scheme, has_touch=True,
                                          is_mobile=True)
            page = context.new_page()
            page.goto(served.url + "/login")
            page.fill("input[name=token]", ADMIN)
            page.press("input[name=token]", "Enter")
            expect(page).to_have_url(served.url + "/runs")
            assert page.evaluate("matchMedia('(hover: none)').matches")
            for run_id in (BLOCKED, RUNNING, BUDGET, APPROVAL, WAITING, DONE, PARENT):
                page.goto(served.url + "/runs/" + run_id)
                expect(page.locator("#run-status")).to_be_visible()
                page.screenshot(path=str(tmp_path / f"{run_id}-390-{scheme}.png"),
                                full_page=True)
                assert not page.evaluate(SIDEWAYS), f"{run_id}: the page scrolls sideways"
                forks = page.locator("a.forkhere")
                if run_id != WAITING:  # (its one row, its wait, has no position yet)
                    expect(forks.first).to_be_visible()
                shown = forks.evaluate_all("els => els.map(e => getComputedStyle(e).opacity)")
                assert set(shown) <= {"1"}, f"{run_id}: the fork link is not shown: {shown}"
                found = page.locator(TARGETS).evaluate_all(HEIGHTS)
                short = [(name, height) for name, height in found if height < 40]
                assert not short, f"{run_id}: under 40 px tall on a phone: {short}"
                # (the timeline's entries are blocks at the card's width: nothing
                # to scroll to; tests/web/test_browser_phone_timeline.py)
                assert page.locator(".timeline").evaluate(
                    "e => e.parentElement.scrollWidth <= e.parentElement.clientWidth")
            names = {str(name) for name, _ in found}
            assert {f"{PARENT}.0", "list them"} <= names, names  # (the last page's)
            page.goto(served.url + "/runs")
            assert page.locator(".scroll-x").first.evaluate(SHADED), \
                "the runs table has no shade where it scrolls"
            page.goto(served.url + "/approvals")
            link = page.locator(".inbox p.small > a", has_text=APPROVAL)
            assert link.evaluate("e => e.getBoundingClientRect().height") >= 40
            assert not page.evaluate(SIDEWAYS), "the inbox scrolls sideways"
            page.goto(served.url + "/runs/" + BLOCKED)
            command = page.locator(".failure code", has_text="tether resume")
            expect(command).to_have_text(f"tether resume {BLOCKED}")
            assert command.evaluate(SHADED), "the command has no shade where it scrolls"
            page.goto(served.url + "/runs/" + WAITING)
            assert page.locator("#waits code").evaluate(SHADED)
            context.close()

        # The note of the signal form: the run id on one line, its full stop with it.
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.press("input[name=token]", "Enter")
        page.goto(served.url + "/runs/" + WAITING)
        page.locator("#waits button").click()
        note = page.locator("main > .flash")
        expect(note).to_contain_text(f"Sent signal 'go' to run {WAITING}.")
        page.screenshot(path=str(tmp_path / "note-390.png"))
        said = note.locator(".id")
        expect(said).to_have_text(f"{WAITING}.")
        assert said.evaluate(ONE_LINE), "the run id in the note broke over two lines"
        assert not page.evaluate(SIDEWAYS), "the page scrolls sideways"
        page.close()
    finally:
        (tmp_path / "gate").touch()  # (the running step ends: the worker stops at once)
        worker.terminate()
        worker.wait(10)
        served.stop()


def test_the_fork_link_with_a_mouse_and_a_keyboard(browser: object, tmp_path: Path) -> None:
    """Where a pointer hovers, a row's fork link shows on the row under it, and on a
    Tab to it with a 2 px ring in the accent colour (the browser's own thin ring, 1 px,
    was all that marked it)."""
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/mouse.db"
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\n", app=WEBAPP)
    worker = start_worker(db, tmp_path)
    api = {"Authorization": f"Bearer {ADMIN}"}
    try:
        r = httpx.post(served.url + "/api/v1/runs", headers=api, json={
            "workflow": "steps", "input": [2], "run_id": DONE})
        assert r.status_code == 201, r.text
        wait_for(served.url, DONE, "completed")
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.press("input[name=token]", "Enter")
        page.goto(served.url + "/runs/" + DONE)
        assert not page.evaluate("matchMedia('(hover: none)').matches")
        fork = page.locator("a.forkhere").first
        opacity = "e => getComputedStyle(e).opacity"
        assert fork.evaluate(opacity) == "0"  # (until its row is hovered)
        page.locator("tr.op").first.hover()
        assert fork.evaluate(opacity) == "1"
        page.mouse.move(0, 0)
        page.locator("h1").click()
        for _ in range(80):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.classList.contains('forkhere')"):
                break
        else:
            raise AssertionError("Tab never reached a fork link")
        focused = page.locator("a.forkhere:focus")
        assert focused.evaluate(opacity) == "1"
        ring = focused.evaluate("e => [getComputedStyle(e).outlineStyle,"
                                " parseFloat(getComputedStyle(e).outlineWidth)]")
        assert ring[0] not in ("none", "") and ring[1] >= 2, ring
        page.screenshot(path=str(tmp_path / "fork-focused.png"))
        page.close()
    finally:
        worker.terminate()
        worker.wait(10)
        served.stop()
