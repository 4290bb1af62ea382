"""The pages load in a real headless Chromium with nothing in the browser's console:
no script error, and no resource the page or the browser asks for that the server
answers with an error. Until 2026-12-06 every page's load logged "Failed to load
resource: the server responded with a status of 404 (Not Found)": the browser asked for
/favicon.ico, which no page named an icon in place of."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.web.helpers import ADMIN, start_serve
from tests.web.test_browser import browser as browser  # the fixture
from tests.web.test_browser import wait_for

pytestmark = pytest.mark.slow


def test_the_pages_log_nothing_in_the_console(browser: object, tmp_path: Path) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    served = start_serve(f"sqlite:///{tmp_path}/ui.db", tmp_path, tokens=f"admin:{ADMIN}\n")
    try:
        r = httpx.post(served.url + "/api/v1/runs", headers={"Authorization": f"Bearer {ADMIN}"},
                       json={"workflow": "greet", "input": ["ana"], "run_id": "c-1"})
        assert r.status_code == 201, r.text
        wait_for(served.url, "c-1", "queued")
        page = browser.new_context().new_page()
        said: list[str] = []
        page.on("console", lambda m: said.append(f"{m.type}: {m.text}")
                if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: said.append(f"page error: {e}"))
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.click("button:has-text('Log in')")
        expect(page).to_have_url(served.url + "/runs")
        for path, seen in (("/runs", "c-1"), ("/runs/c-1", "greet"),
                           ("/approvals", "Approvals"), ("/schedules", "Schedules")):
            page.goto(served.url + path)
            expect(page.locator("main")).to_contain_text(seen)
            page.wait_for_load_state("load")
        # A page closed, the browser has had its answers (the icon's included).
        page.close()
        assert said == []
    finally:
        served.stop()
