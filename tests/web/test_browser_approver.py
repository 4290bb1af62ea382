"""What only a browser shows, walked in a real headless Chromium: a note typed in the
inbox across its redraws, what Enter in an approval's note does (HTML's implicit
submission), and a timeline row whose error is one long word."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.web.helpers import ADMIN, READ, WEBAPP, start_serve, start_worker
from tests.web.test_browser import browser as browser  # the fixture
from tests.web.test_browser import wait_for

pytestmark = pytest.mark.slow


def test_an_approvers_note_and_a_long_error_word(browser: object, tmp_path: Path) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/walk.db"
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\nread:{READ}\n", app=WEBAPP)
    worker = start_worker(db, tmp_path)
    api = {"Authorization": f"Bearer {ADMIN}"}
    try:
        for workflow, run_id, args in (
            ("purchase", "enter-1", ["atlas"]),
            ("purchase", "typed-1", ["globe"]),
            ("fixable", "long-word", ["w" * 150]),
            ("wait_go", "x" * 190 + "-end", []),
        ):
            r = httpx.post(
                served.url + "/api/v1/runs",
                headers=api,
                json={"workflow": workflow, "input": args, "run_id": run_id},
            )
            assert r.status_code == 201, r.text
        wait_for(served.url, "enter-1", "waiting")
        wait_for(served.url, "long-word", "failed")
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.press("input[name=token]", "Enter")
        expect(page).to_have_url(served.url + "/runs")

        # A note typed in the inbox, then left (to read the arguments): the inbox is
        # redrawn every 3 s, and the redraw emptied it.
        wait_for(served.url, "typed-1", "waiting")
        page.goto(served.url + "/approvals")
        card = page.locator(".approval", has_text="typed-1")
        card.locator("input[name=note]").fill("ask finance first")
        page.click("h1")
        page.evaluate("document.querySelector('#approvals .inbox').dataset.old = '1'")
        expect(page.locator("#approvals .inbox[data-old]")).to_have_count(0)  # redrawn
        expect(card.locator("input[name=note]")).to_have_value("ask finance first")

        # Enter in the note of a run page's approval: nothing is sent; a page asks to
        # choose, the note kept (Approve, the form's first button, approved it).
        page.goto(served.url + "/runs/enter-1")
        page.fill(".callout input[name=note]", "too dear")
        page.press(".callout input[name=note]", "Enter")
        expect(page.locator("h1")).to_have_text("Approve or reject?")
        expect(page.locator("input[name=note]")).to_have_value("too dear")
        page.screenshot(path=str(tmp_path / "approve-or-reject.png"), full_page=True)
        doc = httpx.get(served.url + "/api/v1/runs/enter-1", headers=api).json()
        assert doc["status"] == "waiting", doc
        page.click("button.reject")
        expect(page.locator(".flash")).to_contain_text("Rejected buy for run enter-1")
        done = wait_for(served.url, "enter-1", "completed")
        assert done["result"] == {"approved": False, "note": "too dear"}

        # A step's error of one long word wraps in its cell: it ran out of the
        # timeline's card (a wide window scrolled the table sideways to read it).
        page.goto(served.url + "/runs/long-word")
        row = page.locator(".timeline .err")
        expect(row).to_contain_text("bug in fragile")
        box = page.locator(".timeline").locator("xpath=..")
        sizes = box.evaluate("b => [b.scrollWidth, b.clientWidth]")
        page.screenshot(path=str(tmp_path / "long-word.png"), full_page=True)
        assert sizes[0] <= sizes[1], sizes
        cell = row.evaluate("e => [e.scrollWidth, e.clientWidth]")
        assert cell[0] <= cell[1], cell
        # Logged out in another tab while the inbox is open: its next redraw says the
        # session has ended (with a link to log in) and keeps what it showed; the
        # redraw drew the login page, header and all, inside the inbox.
        page.goto(served.url + "/approvals")
        expect(page.locator(".approval", has_text="typed-1")).to_be_visible()
        other = context.new_page()
        other.goto(served.url + "/runs")
        other.click("button:has-text('log out')")
        expect(other).to_have_url(served.url + "/login")
        expect(page.locator("#offline")).to_be_visible(timeout=10_000)
        expect(page.locator("#offline")).to_contain_text("Your session has ended.")
        expect(page.locator("#offline")).to_contain_text(
            "nothing sent from it is done until you log in again")
        expect(page.locator("#offline")).not_to_contain_text("keeps trying")
        expect(page.locator("#offline a.login")).to_be_visible()
        page.screenshot(path=str(tmp_path / "inbox-session-ended.png"))
        assert page.locator("header").count() == 1
        assert page.locator("#approvals input[name=token]").count() == 0
        expect(page.locator(".approval", has_text="typed-1")).to_be_visible()
        context.close()

        # Logged out, then Back (no JavaScript, which would not redraw anything): the
        # browser asks again and is led to log in; it showed the run page, its
        # approval and arguments, from its cache.
        plain = browser.new_context(
            viewport={"width": 1100, "height": 800}, java_script_enabled=False
        )
        page = plain.new_page()
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.press("input[name=token]", "Enter")
        expect(page).to_have_url(served.url + "/runs")
        page.goto(served.url + "/approvals")
        expect(page.locator(".approval", has_text="typed-1")).to_be_visible()
        page.click("button:has-text('log out')")
        expect(page).to_have_url(served.url + "/login")
        page.go_back()
        # (the login form, which leads back to the page asked for once logged in)
        expect(page).to_have_url(served.url + "/login?next=%2Fapprovals")
        assert page.locator(".approval").count() == 0
        plain.close()

        # A long run id on a phone: the waiting box's command line, the note after a
        # form, and an error page's reason wrap; unbroken, they widened the page to
        # 1,400 px (and a 1360 px window's).
        phone = browser.new_context(viewport={"width": 390, "height": 800})
        page = phone.new_page()
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.press("input[name=token]", "Enter")
        expect(page).to_have_url(served.url + "/runs")
        long_id = "x" * 190 + "-end"
        page.goto(served.url + "/runs/" + long_id)
        expect(page.locator("#waits")).to_contain_text("tether signal")
        page.screenshot(path=str(tmp_path / "long-id-390.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.click("#waits button")
        expect(page.locator(".flash")).to_contain_text("Sent signal")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.goto(served.url + "/runs?workflow=" + "w" * 300)
        expect(page.locator(".error-card")).to_contain_text("400")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        phone.close()
    finally:
        worker.terminate()
        worker.wait(10)
        served.stop()
