"""The operator pages in a real headless Chromium: on a phone (390 px) what a run waits
for and what replay saved keep to one line in the runs table, a parent's timeline row
for its child wait keeps its note readable, and what a thumb presses is 40 px tall;
punctuation after inline code sits next to it; a wait for several children follows
them live. Screenshots go to the test's temporary folder."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.web.helpers import ADMIN, ROOT, WEBAPP, start_serve, start_worker
from tests.web.test_browser import browser as browser  # the fixture
from tests.web.test_browser import wait_for

pytestmark = pytest.mark.slow

GO = "go-01a24fd1274c781c966a580383fa9eb7"
SAVED = "saved-01a24fd1274a7519b33475a2b12c7e"

#: An element's text on one line: the box of its text (not of its padding) is under one
#: and a half of its font's lines tall.
ONE_LINE = ("e => { const r = document.createRange(); r.selectNodeContents(e); "
            "return r.getBoundingClientRect().height < 1.5 * parseFloat("
            "getComputedStyle(e).lineHeight); }")


def test_the_runs_table_and_a_child_wait_on_a_phone(browser: object, tmp_path: Path) -> None:
    """At 390 px the runs table scrolls sideways; its Waiting-for column was squeezed to
    a word ("signal" / "go" on two lines, each row three lines tall) and "$0.0006 saved
    by replay" wrapped under the cost."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/walk.db"
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\n", app=WEBAPP)
    worker = start_worker(db, tmp_path)
    api = {"Authorization": f"Bearer {ADMIN}"}
    try:
        # (ids as long as the ones Tether makes: they take the table's width on a phone)
        for workflow, run_id, args in (("wait_go", GO, []), ("asked_then_wait", SAVED, ["q"]),
                                       ("waiting_parent", "wp-w", [])):
            r = httpx.post(served.url + "/api/v1/runs", headers=api, json={
                "workflow": workflow, "input": args, "run_id": run_id})
            assert r.status_code == 201, r.text
        for run_id in (GO, SAVED, "wp-w"):
            wait_for(served.url, run_id, "waiting")
        r = httpx.post(served.url + f"/api/v1/runs/{SAVED}/signals/go", headers=api,
                       json={"data": 1})
        assert r.status_code in (200, 202), r.text
        wait_for(served.url, SAVED, "completed")
        page = browser.new_page(viewport={"width": 390, "height": 900})
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.press("input[name=token]", "Enter")
        expect(page).to_have_url(served.url + "/runs")
        waits = page.locator("tr", has_text=GO).locator("td").last
        expect(waits).to_have_text("signal go")
        page.screenshot(path=str(tmp_path / "runs-390.png"), full_page=True)
        assert waits.evaluate(ONE_LINE), "what the run waits for went on two lines"
        saved = page.locator("tr", has_text=SAVED).locator(".saved")
        expect(saved).to_have_text("$0.0006 saved by replay")
        assert saved.evaluate(ONE_LINE), "what replay saved went on two lines"
        page.goto(served.url + "/runs/wp-w")
        row = page.locator("tr.k-child_result")
        expect(row).to_contain_text("child run of wait_go, now waiting")
        page.screenshot(path=str(tmp_path / "child-wait-390.png"), full_page=True)
        width = row.locator("td.details").evaluate("e => e.getBoundingClientRect().width")
        assert width >= 240, width  # (a note in a column a word wide: a row a screen tall)
        page.close()
    finally:
        worker.terminate()
        worker.wait(10)
        served.stop()


#: How far the text after an element's first ``code`` (its next text node's first
#: character) begins from the code's own text, in CSS pixels.
GAP_AFTER_CODE = ("e => { const c = e.querySelector('code'); const code = document.createRange();"
                  " code.selectNodeContents(c); const next = document.createRange();"
                  " next.setStart(c.nextSibling, 0); next.setEnd(c.nextSibling, 1);"
                  " return next.getBoundingClientRect().left"
                  " - code.getBoundingClientRect().right; }")


def test_punctuation_after_code_sits_next_to_it(browser: object, tmp_path: Path) -> None:
    """The ";" after "declared in code with ``@app.schedule``" sits next to the code, as
    after plain text: the code's 4 px of padding put a gap before it that read as a
    space ("run ``x`` , waiting"), in every status line and note with code before a
    comma or a full stop. The box is drawn by a shadow that takes no room."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/code.db"
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\n", app=WEBAPP)
    try:
        for scheme in ("light", "dark"):
            page = browser.new_page(viewport={"width": 1280, "height": 800},
                                    color_scheme=scheme)
            page.goto(served.url + "/login")
            page.fill("input[name=token]", ADMIN)
            page.press("input[name=token]", "Enter")
            expect(page).to_have_url(served.url + "/runs")
            page.goto(served.url + "/schedules")
            line = page.locator(".page-head p.muted")
            expect(line).to_contain_text("declared in code with @app.schedule; each tick")
            page.screenshot(path=str(tmp_path / f"code-{scheme}.png"))
            gap = line.evaluate(GAP_AFTER_CODE)
            assert gap < 2, f"a {gap:.1f} px gap between the code and the ';' after it"
            page.close()
    finally:
        served.stop()


#: The height of each element a selector finds that is shown, in CSS pixels.
HEIGHTS = ("els => els.filter(e => e.offsetParent !== null || e.getClientRects().length)"
           ".map(e => [['INPUT', 'SELECT'].includes(e.tagName) ? e.name"
           " : e.textContent.trim(), e.getBoundingClientRect().height])")


def test_what_a_thumb_presses_on_a_phone_is_40_px_tall(browser: object,
                                                        tmp_path: Path) -> None:
    """At 390 px the header's links ("Runs", "Approvals", "log out") and time switch, the
    filters' fields and button, "clear", the pager's links and a run page's buttons are
    40 px tall at least: they were 20 to 34 px, "log out" beside "UTC"."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/thumb.db"
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\n", app=WEBAPP)
    api = {"Authorization": f"Bearer {ADMIN}"}
    try:
        for run_id in ("thumb-1", "thumb-2"):  # (queued: no worker runs them)
            r = httpx.post(served.url + "/api/v1/runs", headers=api, json={
                "workflow": "wait_go", "input": [], "run_id": run_id})
            assert r.status_code == 201, r.text
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.press("input[name=token]", "Enter")
        expect(page).to_have_url(served.url + "/runs")
        page.goto(served.url + "/runs?status=queued&limit=1")
        expect(page.locator(".pager")).to_contain_text("Older runs")
        page.screenshot(path=str(tmp_path / "thumb-runs-390.png"), full_page=True)
        found = page.locator("header nav a, header button, form.filters > *:not([type=hidden])"
                             ", .pager a").evaluate_all(HEIGHTS)
        names = {str(name) for name, _ in found}
        assert {"Runs", "Approvals", "log out", "UTC", "Filter", "clear",
                "Older runs →", "workflow", "status"} <= names, names
        short = [(name, height) for name, height in found if height < 40]
        assert not short, f"under 40 px tall on a phone: {short}"
        page.goto(served.url + "/runs/thumb-1")
        found = page.locator("main button, main input:not([type=hidden])").evaluate_all(HEIGHTS)
        assert any(name == "Cancel run" for name, _ in found), found
        short = [(name, height) for name, height in found if height < 40]
        assert not short, f"under 40 px tall on a phone: {short}"
        page.close()
    finally:
        served.stop()


def test_a_fan_out_row_follows_its_children_live(browser: object, tmp_path: Path) -> None:
    """A parent awaiting three children at once, its page open: the timeline's row of
    that wait and the wait box say how many ended and each child's status, and follow
    them as they end, without a reload (the body is redrawn on the parent's events).
    With ``TETHER_UPDATE_SCREENSHOTS=1`` its screenshot replaces
    ``docs/img/run-fan-out.png``."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/fan.db"
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\n", app=WEBAPP)
    worker = start_worker(db, tmp_path)
    api = {"Authorization": f"Bearer {ADMIN}"}
    try:
        r = httpx.post(served.url + "/api/v1/runs", headers=api, json={
            "workflow": "fan_out_parent", "input": [], "run_id": "digest-fan-out"})
        assert r.status_code == 201, r.text
        for _ in range(600):
            doc = wait_for(served.url, "digest-fan-out", "waiting")
            if str(doc.get("waiting_for")).count("child ") == 2:
                break
            time.sleep(0.05)
        awaited = re.findall(r"child (\S+)", str(doc["waiting_for"]))
        assert len(awaited) == 2, doc
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.press("input[name=token]", "Enter")
        expect(page).to_have_url(served.url + "/runs")
        page.goto(served.url + "/runs/digest-fan-out")
        row = page.locator("tr.k-child_result", has_text="3 child runs")
        expect(row).to_contain_text("waits for 3 child runs at once: 1 ended, 2 not yet")
        expect(page.locator("#waits")).to_contain_text("Waiting for 3 child runs at once")
        page.evaluate("window.__notReloaded = true")
        r = httpx.post(served.url + f"/api/v1/runs/{awaited[0]}/signals/go", headers=api,
                       json={"data": 1})
        assert r.status_code in (200, 201, 202), r.text
        expect(row).to_contain_text("2 ended, 1 not yet", timeout=20_000)
        expect(row.locator(".fan-out li").nth(1)).to_contain_text("completed")
        expect(page.locator("#waits")).to_contain_text("2 ended, 1 not yet")
        assert page.evaluate("window.__notReloaded") is True, "the page was reloaded"
        page.screenshot(path=str(tmp_path / "run-fan-out.png"), full_page=True)
        page.close()
    finally:
        worker.terminate()
        worker.wait(10)
        served.stop()
    if os.environ.get("TETHER_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(tmp_path / "run-fan-out.png", ROOT / "docs" / "img" / "run-fan-out.png")
