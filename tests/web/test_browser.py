"""The web UI in a real headless Chromium (Debian's ``chromium``, driven by Playwright):
log in, see the runs, open an agent run waiting for approval, approve it in the inbox,
and watch the run page finish without a reload.

Screenshots of the runs list, the run page and the inbox are saved under the test's
temporary folder; with ``TETHER_UPDATE_SCREENSHOTS=1`` they also replace the ones in
``docs/img/`` that the README shows.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest

from tests.web.helpers import (
    ADMIN,
    READ,
    ROOT,
    TETHER,
    WEBAPP,
    Served,
    env,
    start_serve,
    start_worker,
    wait_for,
)
from tests.web.test_sse import start_llm

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
STREAMED = ("Replay answers every finished step from the journal, so a resumed agent pays "
            "for no model call twice and picks up exactly where it stopped.").split()


@pytest.fixture
def browser() -> Iterator[object]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: scripts/test.sh installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def test_approve_in_inbox_and_watch_the_run_finish(browser: object, tmp_path: Path) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    llm, base_url = start_llm(tmp_path, [
        {"text": "Durable execution journals every step, so a crash costs nothing twice.",
         "input_tokens": 412, "output_tokens": 19, "chunk_delay": 0.01},
        {"tool_calls": [{"name": "buy_report", "arguments": {
            "title": "Durable agents 2025", "price_usd": 49.0}}],
         "input_tokens": 1250, "output_tokens": 38},
        {"text": "Bought the report: adoption of durable agents doubled in 2025.",
         "input_tokens": 1402, "output_tokens": 21},
        {"text": " ".join(STREAMED), "input_tokens": 230, "output_tokens": 60,
         "chunk_delay": 0.12},
    ])
    db = f"sqlite:///{tmp_path}/ui.db"
    served: Served | None = None
    worker = None
    try:
        served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\nread:{READ}\n", app=WEBAPP)
        worker = start_worker(db, tmp_path, extra_env={"TETHER_TEST_LLM_URL": base_url})
        api = {"Authorization": f"Bearer {ADMIN}"}

        def start(workflow: str, run_id: str, *args: object) -> None:
            r = httpx.post(served.url + "/api/v1/runs", headers=api, json={
                "workflow": workflow, "input": list(args), "run_id": run_id})
            assert r.status_code == 201, r.text

        start("stream_answer", "explain-durability", "What is durable execution?")
        wait_for(served.url, "explain-durability", "completed")
        start("parent", "greet-family", "ana")
        start("wait_go", "nightly-report")
        start("shopper", "shopper-7f3a", "Buy the report 'Durable agents 2025'.")
        wait_for(served.url, "shopper-7f3a", "waiting")
        wait_for(served.url, "greet-family", "completed")

        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.goto(served.url + "/runs")
        expect(page).to_have_url(served.url + "/login")  # pages need a session
        page.fill("input[name=token]", ADMIN)
        page.click("button:has-text('Log in')")
        expect(page).to_have_url(served.url + "/runs")
        row = page.locator("tr", has_text="shopper-7f3a")
        expect(row).to_contain_text("waiting")
        expect(row).to_contain_text("needs approval")
        expect(page.locator("tr", has_text="explain-durability")).to_contain_text("completed")
        page.screenshot(path=str(tmp_path / "runs.png"), full_page=True)

        page.click("a:has-text('shopper-7f3a')")
        expect(page.locator("#run-status")).to_have_text("waiting")
        expect(page.locator(".callout")).to_contain_text("buy_report")
        page.evaluate("window.__notReloaded = true")

        inbox = context.new_page()
        inbox.goto(served.url + "/approvals")
        card = inbox.locator(".approval", has_text="shopper-7f3a")
        expect(card).to_contain_text("Durable agents 2025")
        expect(card).to_contain_text("buy_report")
        inbox.screenshot(path=str(tmp_path / "inbox.png"), full_page=True)
        card.locator("input[name=note]").fill("ok, within budget")
        card.locator("button.approve").click()
        expect(inbox.locator(".empty")).to_contain_text("Nothing waits")

        expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
        assert page.evaluate("window.__notReloaded") is True, "the run page was reloaded"
        # The run ended: its actions go (app.js reads the ended statuses off the page).
        expect(page.locator("#actions")).to_be_hidden()
        expect(page.locator(".result")).to_contain_text("adoption of durable agents doubled")
        expect(page.locator(".timeline")).to_contain_text("shopper.tool:buy_report")
        page.screenshot(path=str(tmp_path / "run.png"), full_page=True)

        # The answer streams into the run page as the model produces it.
        start("stream_answer", "explain-replay", "How does replay save tokens?")
        page.goto(served.url + "/runs/explain-replay")
        stream = page.locator("#stream-text")
        expect(stream).to_contain_text(" ".join(STREAMED[:4]), timeout=20_000)
        assert page.locator("#run-status").inner_text() != "completed"
        page.screenshot(path=str(tmp_path / "run-streaming.png"), full_page=True)
        expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
        expect(page.locator(".result")).to_contain_text(STREAMED[-1])

        dark = browser.new_context(viewport={"width": 1360, "height": 900},
                                   color_scheme="dark")
        dark.add_cookies(context.cookies())
        dpage = dark.new_page()
        dpage.goto(served.url + "/runs/explain-durability")
        expect(dpage.locator("#run-status")).to_have_text("completed")
        dpage.screenshot(path=str(tmp_path / "run-dark.png"), full_page=True)
        dark.close()
        context.close()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(10)
        if served is not None:
            served.stop()
        llm.terminate()
        llm.wait(10)
        if llm.stdout is not None:
            llm.stdout.close()
    if os.environ.get("TETHER_UPDATE_SCREENSHOTS") == "1":
        out = ROOT / "docs" / "img"
        out.mkdir(parents=True, exist_ok=True)
        for name in ("runs.png", "inbox.png", "run.png", "run-dark.png", "run-streaming.png"):
            shutil.copy(tmp_path / name, out / name)



def test_the_signal_form_follows_the_awaited_signal(browser: object, tmp_path: Path) -> None:
    """The "Act on this run" form's name field is filled with the signal the run awaits
    and follows it as the head is redrawn: a ``two_signals`` run's "go" sent from the
    waiting box, the field holds "confirm" once the run waits for that (it kept "go",
    the name of a signal already sent, before app.js followed). A name
    the user typed is left alone, and so is the field while it has the focus."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/signals.db"
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\nread:{READ}\n", app=WEBAPP)
    worker = start_worker(db, tmp_path)
    api = {"Authorization": f"Bearer {ADMIN}"}
    try:
        for run_id in ("sig-box", "sig-typed", "sig-focus"):
            r = httpx.post(served.url + "/api/v1/runs", headers=api, json={
                "workflow": "two_signals", "run_id": run_id})
            assert r.status_code == 201, r.text
            wait_for(served.url, run_id, "waiting")
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.click("button:has-text('Log in')")
        name = page.locator("#actions form.signal input[name=name]")
        waits = page.locator("#waits")

        # "go" from the waiting box, with no worker: the page comes back with the run
        # still waiting for "go" (the signal is stored; no worker delivered it); a worker
        # takes it, it waits for "confirm", and the head, redrawn from the run's events
        # (no reload), brings the field along.
        page.goto(served.url + "/runs/sig-box")
        expect(waits).to_contain_text("Waiting for the signal go")
        expect(name).to_have_value("go")
        worker.terminate()
        worker.wait(10)
        with page.expect_navigation():
            page.locator("#waits button:has-text('Send go')").click()
        expect(page.locator(".flash")).to_contain_text("go")
        expect(waits).to_contain_text("Waiting for the signal go")
        expect(name).to_have_value("go")
        page.evaluate("window.__notReloaded = true")
        worker = start_worker(db, tmp_path)
        expect(waits).to_contain_text("Waiting for the signal confirm", timeout=30_000)
        assert page.evaluate("window.__notReloaded") is True, "the run page was reloaded"
        expect(name).to_have_value("confirm")
        assert page.locator("#actions form.signal button").is_enabled()

        # A name the user typed stays when the run moves on to "confirm".
        page.goto(served.url + "/runs/sig-typed")
        expect(name).to_have_value("go")
        name.fill("my-own-name")
        page.locator("h2:has-text('Act on this run')").click()  # (the field loses the focus)
        r = httpx.post(served.url + "/api/v1/runs/sig-typed/signals/go", headers=api,
                       json={"data": 1})
        assert r.status_code == 202, r.text
        expect(waits).to_contain_text("Waiting for the signal confirm", timeout=30_000)
        expect(name).to_have_value("my-own-name")

        # Nor is a field being typed in changed under the user's fingers.
        page.goto(served.url + "/runs/sig-focus")
        expect(name).to_have_value("go")
        name.focus()
        r = httpx.post(served.url + "/api/v1/runs/sig-focus/signals/go", headers=api,
                       json={"data": 1})
        assert r.status_code == 202, r.text
        expect(waits).to_contain_text("Waiting for the signal confirm", timeout=30_000)
        expect(name).to_be_focused()
        expect(name).to_have_value("go")
        context.close()
    finally:
        worker.terminate()
        worker.wait(10)
        served.stop()

def test_read_token_sees_but_cannot_act(browser: object, tmp_path: Path) -> None:
    """A read session sees the pages without action buttons, and a forged form post
    is refused with the store unchanged."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/ro.db"
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\nread:{READ}\n", app=WEBAPP)
    try:
        r = httpx.post(served.url + "/api/v1/runs", json={"workflow": "wait_go",
                                                          "run_id": "ro-1"},
                       headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 201
        context = browser.new_context()
        page = context.new_page()
        page.goto(served.url + "/login")
        page.fill("input[name=token]", READ)
        page.click("button:has-text('Log in')")
        page.goto(served.url + "/runs/ro-1")
        expect(page.locator("#run-status")).to_have_text("queued")
        assert page.locator("#actions").count() == 0
        status = page.evaluate("""async () => {
            const body = new URLSearchParams({csrf: 'forged-but-long-enough-xx'});
            const r = await fetch('/ui/runs/ro-1/cancel', {method: 'POST', body});
            return r.status;
        }""")
        assert status == 403
        context.close()
        doc = httpx.get(served.url + "/api/v1/runs/ro-1",
                        headers={"Authorization": f"Bearer {READ}"}).json()
        assert doc["status"] == "queued"
    finally:
        served.stop()


def test_a_run_id_with_dot_segments_is_never_another_run(browser: object,
                                                        tmp_path: Path) -> None:
    """Run ids are free text, and an app may build them from what its users send: the
    run ``a/../victim`` waits for an approval, and so does ``victim``. The inbox's
    approve button of ``a/../victim`` posted to ``/ui/runs/a/../victim/approval``,
    which the browser resolves to ``/ui/runs/victim/approval``: it approved ``victim``'s
    call. The pages now encode the ``/`` of ids in their paths (``a%2F..%2Fvictim``).
    And a run page's script draws only an HTML answer: with a refresh path that led
    to a JSON document (as ``x/../../../api/v1/runs/...`` did), it put the document's
    text into the page as markup."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/dots.db"
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\nread:{READ}\n", app=WEBAPP)
    worker = start_worker(db, tmp_path)
    api = {"Authorization": f"Bearer {ADMIN}"}
    try:
        for run_id, item in (("victim", "a wire transfer"), ("a/../victim", "a pencil")):
            r = httpx.post(served.url + "/api/v1/runs", headers=api, json={
                "workflow": "purchase", "input": [item], "run_id": run_id})
            assert r.status_code == 201, r.text
        r = httpx.post(served.url + "/api/v1/runs", headers=api, json={
            "workflow": "greet", "input": ['<b class="injected">markup</b>'],
            "run_id": "markup"})
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 30
        while len(httpx.get(served.url + "/api/v1/approvals", headers=api
                            ).json()["approvals"]) < 2:
            assert time.monotonic() < deadline, "the approvals were not requested"
            time.sleep(0.05)
        context = browser.new_context()
        page = context.new_page()
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.click("button:has-text('Log in')")
        page.goto(served.url + "/approvals")
        card = page.locator(".approval", has_text="a pencil")
        expect(card).to_contain_text("a/../victim")
        card.locator("button.approve").click()
        wait_for(served.url, "a%2F..%2Fvictim", "completed")  # (httpx resolves dots too)
        doc = httpx.get(served.url + "/api/v1/runs/victim", headers=api).json()
        assert doc["status"] == "waiting", doc
        assert doc["status_info"]["state"] == "awaiting_approval"

        # The runs list links to the run itself, not to the path its dots lead to.
        page.goto(served.url + "/runs")
        page.click("a:has-text('a/../victim')")
        expect(page.locator("#run-status")).to_have_text("completed")
        assert page.url == served.url + "/runs/a%2F..%2Fvictim"

        # A refresh answered with something else than HTML draws nothing.
        page.goto(served.url + "/runs/victim")
        expect(page.locator("#run-status")).to_have_text("waiting")
        page.evaluate("document.getElementById('run').dataset.refresh = "
                      "'/api/v1/runs/markup'")
        # (The cancel's status event makes the page refresh its parts.)
        with page.expect_response(lambda resp: "/api/v1/runs/markup?part=" in resp.url):
            r = httpx.post(served.url + "/api/v1/runs/victim/cancel", headers=api)
            assert r.status_code == 202, r.text
        page.wait_for_load_state("networkidle")
        assert page.locator(".injected").count() == 0
        assert page.locator("#run-status").inner_text() == "waiting"
        context.close()
    finally:
        worker.terminate()
        worker.wait(10)
        served.stop()


class _ProxyThread:
    """A ``RoundTripProxy`` in front of PostgreSQL, on an event loop of its own thread
    (the browser tests are synchronous): ``down()`` stops it listening and cuts its
    connections, ``up()`` listens again on the same port."""

    def __init__(self) -> None:
        import asyncio
        import threading

        from tests.store.rtproxy import RoundTripProxy

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.proxy = self._call(RoundTripProxy().start())
        self.port = self.proxy.port

    def _call(self, coro: Any) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def down(self) -> None:
        self._call(self.proxy.close())

    def up(self) -> None:
        self._call(self.proxy.start(self.port))

    def stop(self) -> None:
        self.down()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def _waiting_run_open(url: str, run_id: str, context: Any) -> tuple[Any, Any]:
    """A run waiting for signal "go", its page (marked, to tell a reload) and the runs
    list, open in ``context``."""
    from playwright.sync_api import expect

    r = httpx.post(url + "/api/v1/runs", json={"workflow": "wait_go", "run_id": run_id})
    assert r.status_code == 201, r.text
    wait_for(url, run_id, "waiting")
    page = context.new_page()
    page.goto(f"{url}/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_text("waiting")
    page.evaluate("window.__notReloaded = true")
    runs = context.new_page()
    runs.goto(url + "/runs")
    expect(runs.locator("tr", has_text=run_id)).to_contain_text("waiting")
    return page, runs


def _carry_on(url: str, run_id: str, page: Any, runs: Any) -> None:
    """After an outage: the banners go from the run page and the runs list; the run,
    signalled, ends, and the run page shows it without a reload."""
    from playwright.sync_api import expect

    for p in (page, runs):
        expect(p.locator("#offline")).to_be_hidden(timeout=15_000)
    r = httpx.post(f"{url}/api/v1/runs/{run_id}/signals/go", json={"data": 1})
    assert r.status_code in (200, 202), r.text
    expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
    assert page.evaluate("window.__notReloaded") is True, "the run page was reloaded"
    expect(runs.locator("tr", has_text=run_id)).to_contain_text("completed")


@pytest.mark.postgres
def test_the_pages_say_when_the_store_is_down_and_go_on_when_it_is_back(
        browser: object, tmp_path: Path, pg_url: str) -> None:
    """``tether serve`` loses its PostgreSQL server (a proxy between them stops) while a
    run page and the runs list are open: each page shows a banner saying the store is
    unavailable since when, with what it last saw still on screen. When the server is
    back the banner goes, and the run page follows the run to its end without a reload
    (its event stream, which the browser gave up on at the 503, is started anew)."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    proxy = _ProxyThread()
    served = start_serve(proxy.proxy.url(pg_url), tmp_path, app=WEBAPP)
    worker = start_worker(pg_url, tmp_path)  # (its own way to the server)
    try:
        context = browser.new_context(viewport={"width": 1360, "height": 700})
        page, runs = _waiting_run_open(served.url, "outage-1", context)
        assert page.locator("#offline").is_hidden()
        form = context.new_page()
        form.goto(served.url + "/runs/outage-1")

        proxy.down()
        for p in (page, runs):
            expect(p.locator("#offline")).to_be_visible(timeout=15_000)
            expect(p.locator("#offline")).to_contain_text("The store is unavailable")
        expect(runs.locator("tr", has_text="outage-1")).to_contain_text("waiting")
        expect(page.locator("#run-status")).to_have_text("waiting")
        page.screenshot(path=str(tmp_path / "run-store-down.png"))
        fresh = context.new_page()
        fresh.goto(served.url + "/runs")
        expect(fresh.locator(".error-card")).to_contain_text("The store is unavailable")
        fresh.screenshot(path=str(tmp_path / "runs-store-down.png"))
        fresh.close()
        # A form sent meanwhile: the 503 page says to look before repeating, and does
        # not reload itself (that would not send the form again).
        form.locator("#actions input[name=name]").fill("go")
        form.locator("#actions button:has-text('Send signal')").click()
        expect(form.locator(".error-card")).to_contain_text("before you repeat this")
        assert form.locator("meta[http-equiv=refresh]").count() == 0
        form.close()

        proxy.up()
        _carry_on(served.url, "outage-1", page, runs)
        context.close()
        # (The stream open when the store went away ended with a line, not a traceback.)
        log = served.log.read_text()
        assert "event stream ended: PostgreSQL at" in log
        assert "Traceback" not in log, log
    finally:
        worker.terminate()
        worker.wait(10)
        served.stop()
        proxy.stop()
    if os.environ.get("TETHER_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(tmp_path / "run-store-down.png", ROOT / "docs" / "img")


def test_the_pages_say_when_the_server_is_gone_and_go_on_when_it_is_back(
        browser: object, tmp_path: Path) -> None:
    """``tether serve`` stops (a deploy restarts it) while a run page and the runs list
    are open: each says the server cannot be reached; started again on the same port,
    the banner goes and the run page follows the run to its end without a reload."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/gone.db"
    served = start_serve(db, tmp_path, app=WEBAPP)
    worker = start_worker(db, tmp_path)
    try:
        context = browser.new_context()
        page, runs = _waiting_run_open(served.url, "gone-1", context)

        port = int(served.url.rsplit(":", 1)[1])
        served.stop()
        for p in (page, runs):
            expect(p.locator("#offline")).to_be_visible(timeout=15_000)
            expect(p.locator("#offline")).to_contain_text("The Tether server cannot be "
                                                          "reached")
        served = start_serve(db, tmp_path, app=WEBAPP, port=port)
        _carry_on(served.url, "gone-1", page, runs)
        context.close()
    finally:
        worker.terminate()
        worker.wait(10)
        served.stop()


def test_a_run_page_whose_cursor_is_refused_follows_the_run_from_its_start(
        browser: object, tmp_path: Path) -> None:
    """The server refuses (400) an event id that is not one of the run's events: one
    the run no longer has (an erase deletes its streamed chunks; a run purged and
    started again has new events). The run page, whose stream broke while the server
    restarted, came back with such an id, and asked again with it every 5 s for ever;
    it sees the 400 (its HEAD) and starts the stream from the run's first event."""
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    path = tmp_path / "cursor.db"
    db = f"sqlite:///{path}"
    served = start_serve(db, tmp_path, app=WEBAPP)
    worker = start_worker(db, tmp_path)
    try:
        context = browser.new_context()
        page, runs = _waiting_run_open(served.url, "cur-1", context)
        answers: list[int] = []
        page.on("response", lambda r: answers.append(r.status)
                if r.request.method == "GET" and "/api/v1/runs/cur-1/events" in r.url
                else None)
        port = int(served.url.rsplit(":", 1)[1])
        served.stop()
        # The run's events as the page knew them are gone (as for a run purged and
        # started again under its id): the page's cursor is none of the run's events.
        conn = apsw.Connection(str(path))
        try:
            conn.execute("DELETE FROM tether_run_events WHERE run_id = 'cur-1'")
        finally:
            conn.close()
        served = start_serve(db, tmp_path, app=WEBAPP, port=port)
        deadline = time.monotonic() + 45
        while not (400 in answers and 200 in answers[answers.index(400):]):
            assert time.monotonic() < deadline, f"the page never followed again: {answers}"
            page.wait_for_timeout(200)
        _carry_on(served.url, "cur-1", page, runs)
        context.close()
    finally:
        worker.terminate()
        worker.wait(10)
        served.stop()


def test_a_run_in_its_first_step_shows_it_running(browser: object, tmp_path: Path) -> None:
    """A run page opened before the run's first step starts shows that step's row,
    running (attempt, start, running for), without a reload: no event tells of a step's
    start, so the page looks again while no operation is known to be in flight. When the
    step ends, the row is the ended one. Until 2026-12-06 the page said "No operation
    has ended yet" for as long as the first step ran. The screenshot is
    ``docs/img/run-in-flight.png`` (``TETHER_UPDATE_SCREENSHOTS=1``)."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/inflight.db"
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\nread:{READ}\n", app=WEBAPP)
    worker = None
    api = {"Authorization": f"Bearer {ADMIN}"}
    try:
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.click("button:has-text('Log in')")
        r = httpx.post(served.url + "/api/v1/runs", headers=api, json={
            "workflow": "gated_first", "input": ["sources-fetched"],
            "run_id": "ingest-2026-12-06"})
        assert r.status_code == 201, r.text
        page.goto(served.url + "/runs/ingest-2026-12-06")
        expect(page.locator("#run-status")).to_have_text("queued")
        page.evaluate("window.__notReloaded = true")
        worker = start_worker(db, tmp_path, extra_env={"TETHER_TEST_GATE_DIR": str(tmp_path)})
        row = page.locator("tr.op.st-running")
        expect(row).to_contain_text("gated", timeout=30_000)
        expect(row.locator(".pill")).to_have_text("running")
        expect(row).to_contain_text("attempt 1 in flight on worker")
        expect(row.locator("td.num").nth(1)).to_have_text("1")
        took = row.locator("td.num").nth(2)
        expect(took).to_contain_text("…")
        # (it goes on between redraws: app.js counts on from the value drawn)
        drawn = took.inner_text()
        expect(took).not_to_have_text(drawn, timeout=10_000)
        # (and so does the head's "started ... ago" beside its "running for": it stayed
        # as drawn, "started 4 s ago · running for 1.1 min" a minute on, before)
        started = page.locator(".run-head [data-ago]")
        drawn = started.inner_text()
        assert re.fullmatch(r"\d+ s ago", drawn), drawn
        expect(started).not_to_have_text(drawn, timeout=10_000)
        expect(started).to_have_text(re.compile(r"^\d+ (s|min) ago$"))
        expect(page.locator("#run-status")).to_have_text("running")
        assert page.locator("[data-unknown]").count() == 0
        page.screenshot(path=str(tmp_path / "run-in-flight.png"), full_page=True)

        (tmp_path / "sources-fetched").touch()
        expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
        done = page.locator("tr.op")
        expect(done).to_have_count(1)
        expect(done).to_have_class(re.compile(r"\bst-ok\b"))
        expect(done).not_to_contain_text("in flight")
        assert page.evaluate("window.__notReloaded") is True, "the run page was reloaded"

        # A later step: its row follows the ended ones.
        r = httpx.post(served.url + "/api/v1/runs", headers=api, json={
            "workflow": "gated_later", "input": ["ana", "later"],
            "run_id": "ingest-2026-12-07"})
        assert r.status_code == 201, r.text
        page.goto(served.url + "/runs/ingest-2026-12-07")
        expect(page.locator("tr.op.st-running")).to_contain_text("gated", timeout=30_000)
        expect(page.locator("tr.op").first).to_contain_text("hello")
        page.screenshot(path=str(tmp_path / "run-in-flight-later.png"), full_page=True)
        (tmp_path / "later").touch()
        expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
        expect(page.locator("tr.op.st-ok")).to_have_count(2)
        context.close()
    finally:
        for gate in ("sources-fetched", "later"):  # (a stopping worker waits for its step)
            (tmp_path / gate).touch()
        if worker is not None:
            worker.terminate()
            worker.wait(10)
        served.stop()
    if os.environ.get("TETHER_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(tmp_path / "run-in-flight.png", ROOT / "docs" / "img" / "run-in-flight.png")


def test_a_waiting_runs_times_count_on(browser: object, tmp_path: Path) -> None:
    """A sleeping run's page counts on, between redraws, the head's "started ... ago"
    and "(... so far)" and its timer row's duration, as it does an operation in flight's
    "running for". Before, they stayed as drawn (the head's "so far" and the row's
    duration could read 2.00 s and 282.2 ms side by side once either was redrawn)."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/times.db"
    served = start_serve(db, tmp_path, app=WEBAPP)
    worker = start_worker(db, tmp_path)
    try:
        r = httpx.post(served.url + "/api/v1/runs", json={"workflow": "nap", "run_id": "nap"})
        assert r.status_code == 201, r.text
        wait_for(served.url, "nap", "waiting")
        context = browser.new_context()
        page = context.new_page()
        page.goto(served.url + "/runs/nap")
        for cell in (page.locator(".run-head [data-ago]"),
                     page.locator(".run-head .waited [data-ticking]"),
                     page.locator("tr.op [data-ticking]")):
            expect(cell).to_have_count(1)
            drawn = cell.inner_text()
            expect(cell).not_to_have_text(drawn, timeout=10_000)
        context.close()
    finally:
        worker.terminate()
        worker.wait(10)
        served.stop()


def test_a_page_with_no_operation_known_in_flight_looks_again(browser: object,
                                                              tmp_path: Path) -> None:
    """No event tells of a step's start: while the store knows of no operation in flight
    (here a worker that writes its attempts only at the run's end; one as shipped writes
    them within 50 ms), the page says so and draws its timeline again by itself, with no
    event to prompt it, until the run moves on."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/unknown.db"
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\nread:{READ}\n", app=WEBAPP)
    worker = start_worker(db, tmp_path, app="tests.web.webapp_unwritten:app",
                          extra_env={"TETHER_TEST_GATE_DIR": str(tmp_path)})
    api = {"Authorization": f"Bearer {ADMIN}"}
    try:
        r = httpx.post(served.url + "/api/v1/runs", headers=api, json={
            "workflow": "gated_first", "input": ["open"], "run_id": "unwritten"})
        assert r.status_code == 201, r.text
        wait_for(served.url, "unwritten", "running")
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.click("button:has-text('Log in')")
        page.goto(served.url + "/runs/unwritten")
        expect(page.locator("p.empty[data-unknown]")).to_contain_text(
            "No operation of this run is known yet")
        page.evaluate("window.__notReloaded = true")
        for _ in range(3):  # (the run publishes no event meanwhile)
            with page.expect_request(lambda req: req.url.endswith("part=body"),
                                     timeout=15_000):
                pass
        (tmp_path / "open").touch()
        expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
        expect(page.locator("tr.op.st-ok")).to_contain_text("gated")
        assert page.locator("[data-unknown]").count() == 0
        assert page.evaluate("window.__notReloaded") is True, "the run page was reloaded"
        context.close()
    finally:
        (tmp_path / "open").touch()  # (a worker stopping waits for its step to end)
        worker.terminate()
        worker.wait(10)
        served.stop()


def test_a_forms_note_says_where_the_run_is_once_it_moves_on(browser: object,
                                                             tmp_path: Path) -> None:
    """The note a run page shows after its Cancel (or Retry) form says what was asked
    and when ("Asked run ... to cancel at 07:12:03 UTC: ..."); once the run's status
    moves on (the head redrawn from its events, no reload), the note adds where the run
    is now ("It is now cancelled."). Before, "it stops at its next operation" (or
    "queued again") stayed under a head that said cancelled (or completed)."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/notes.db"
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\nread:{READ}\n", app=WEBAPP)
    worker = start_worker(db, tmp_path)
    api = {"Authorization": f"Bearer {ADMIN}"}
    try:
        r = httpx.post(served.url + "/api/v1/runs", headers=api, json={
            "workflow": "wait_go", "run_id": "note-1"})
        assert r.status_code == 201, r.text
        wait_for(served.url, "note-1", "waiting")
        worker.terminate()  # (no worker: the cancel is asked, not yet delivered)
        worker.wait(10)
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.click("button:has-text('Log in')")
        page.goto(served.url + "/runs/note-1")
        page.on("dialog", lambda d: d.accept())
        with page.expect_navigation():
            page.locator("form.cancel button").click()
        note = page.locator(".flash")
        expect(note).to_have_text(re.compile(
            r"^Asked run note-1 to cancel at \d\d:\d\d:\d\d UTC: it stops at its next "
            r"operation\.$"))
        page.evaluate("window.__notReloaded = true")
        worker = start_worker(db, tmp_path)  # delivers the cancel
        expect(page.locator(".pill.big")).to_have_text("cancelled", timeout=30_000)
        expect(note).to_have_text(re.compile(r"operation\. It is now cancelled\.$"))
        assert page.evaluate("window.__notReloaded") is True, "the run page was reloaded"
        page.screenshot(path=str(tmp_path / "note-after-cancel.png"), full_page=True)

        # Retry: asked at a time, queued (no worker); then a worker takes it and it
        # waits for "go" again.
        worker.terminate()
        worker.wait(10)
        with page.expect_navigation():
            page.locator("#retry button").click()
        expect(note).to_contain_text(re.compile(
            r"^Asked at \d\d:\d\d:\d\d UTC to run note-1 again: it was queued, its "
            r"recorded steps kept\.$"))
        expect(page.locator(".pill.big")).to_have_text("queued")
        worker = start_worker(db, tmp_path)
        expect(page.locator(".pill.big")).to_have_text("waiting", timeout=30_000)
        expect(note).to_have_text(re.compile(r"kept\. It is now waiting\.$"))
        page.screenshot(path=str(tmp_path / "note-after-retry.png"), full_page=True)
        context.close()
    finally:
        worker.terminate()
        worker.wait(10)
        served.stop()


def test_a_cancel_from_elsewhere_switches_every_open_page(browser: object,
                                                          tmp_path: Path) -> None:
    """Two pages open on a waiting run, with no worker to deliver a cancel; ``tether
    cancel`` in another process: both pages, without a reload, put the Cancel button's
    note in its place and say in the head since when the cancel was requested. The
    run's status stays ``waiting``, so no status event told the pages: they offered a
    second cancel until the head's next redraw (a run's ``cancel`` event, migration
    0022, now redraws it)."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    db = f"sqlite:///{tmp_path}/cancel.db"
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\nread:{READ}\n", app=WEBAPP)
    worker = start_worker(db, tmp_path)
    api = {"Authorization": f"Bearer {ADMIN}"}
    try:
        r = httpx.post(served.url + "/api/v1/runs", headers=api, json={
            "workflow": "wait_go", "run_id": "far-1"})
        assert r.status_code == 201, r.text
        wait_for(served.url, "far-1", "waiting")
        worker.terminate()  # (no worker: the cancel is asked, not yet delivered)
        worker.wait(10)
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        pages = [context.new_page(), context.new_page()]
        pages[0].goto(served.url + "/login")
        pages[0].fill("input[name=token]", ADMIN)
        pages[0].click("button:has-text('Log in')")
        for page in pages:
            page.goto(served.url + "/runs/far-1")
            expect(page.locator("form.cancel button")).to_be_visible()
            expect(page.locator("[data-cancel-asked]")).to_have_count(0)
            page.evaluate("window.__notReloaded = true")
        done = subprocess.run([*TETHER, "cancel", "far-1", "--db", db], cwd=ROOT, env=env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        for page in pages:
            expect(page.locator("form.cancel")).to_be_hidden(timeout=15_000)
            expect(page.locator("#actions .cancel-asked")).to_be_visible()
            # (the note says since when, as the head: drawn without it, the page copies
            # the head's age, which ticks)
            expect(page.locator("#actions .cancel-asked")).to_have_text(re.compile(
                r"^Cancel requested \d+ s ago: it ends cancelled when a worker serving "
                r"queue default replays it\.$"))
            expect(page.locator(".run-head .meta")).to_contain_text(re.compile(
                r"cancel requested \d+ s ago: it ends cancelled when a worker serving "
                r"queue default replays it"))
            expect(page.locator(".pill.big")).to_have_text("waiting")
            assert page.evaluate("window.__notReloaded") is True, "the run page was reloaded"
        pages[1].screenshot(path=str(tmp_path / "cancel-from-elsewhere.png"), full_page=True)
        context.close()
    finally:
        worker.terminate()
        worker.wait(10)
        served.stop()
