"""A streamed answer whose worker is killed midway, in a real headless Chromium: the run
page shows the answer of the attempt that finishes, not the dead attempt's words with
the new attempt's after them.

A worker killed with SIGKILL publishes nothing more (no ``llm.error`` that would tell
the page to drop the partial text); the worker that takes the run over calls the model
again at the same journal position, and its chunks carry the next ``attempt``. Until
2026-12-06 the page reset its text only when the position changed, so it read
"w0 w1 w2 w3 w4 The second answer, whole." while the new answer streamed and after."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.web.helpers import ADMIN, WEBAPP, start_serve, start_worker
from tests.web.test_browser import browser as browser  # the fixture
from tests.web.test_browser import wait_for
from tests.web.test_sse import start_llm

pytestmark = pytest.mark.slow

FIRST = " ".join(f"w{i}" for i in range(200))
SECOND = "The second answer, whole."


def test_a_stream_taken_over_after_a_kill_shows_only_the_new_attempt(
        browser: object, tmp_path: Path) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    # The first request streams slowly (the worker is killed while it does); the second,
    # the new worker's, streams the answer the run keeps.
    llm, base_url = start_llm(tmp_path, [
        {"text": FIRST, "chunk_delay": 0.1, "input_tokens": 10, "output_tokens": 200},
        {"text": SECOND, "chunk_delay": 0.05, "input_tokens": 10, "output_tokens": 5},
    ])
    db = f"sqlite:///{tmp_path}/ui.db"
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\n", app=WEBAPP)
    env = {"TETHER_TEST_LLM_URL": base_url}
    first = start_worker(db, tmp_path, extra_env=env)
    second = None
    try:
        r = httpx.post(served.url + "/api/v1/runs", headers={"Authorization": f"Bearer {ADMIN}"},
                       json={"workflow": "stream_answer", "input": ["q"], "run_id": "kill-1"})
        assert r.status_code == 201, r.text
        page = browser.new_context().new_page()
        page.goto(served.url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.click("button:has-text('Log in')")
        page.goto(served.url + "/runs/kill-1")
        stream = page.locator("#stream-text")
        expect(stream).to_contain_text("w0 w1 w2 w3", timeout=30_000)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = start_worker(db, tmp_path, extra_env=env)
        doc = wait_for(served.url, "kill-1", "completed", timeout=60)
        assert doc["result"] == SECOND
        attempts = [a["attempt"] for a in doc["attempts"]]  # type: ignore[union-attr]
        assert attempts == [1, 2], doc["attempts"]
        expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
        # What the page streamed is the kept answer alone.
        expect(stream).to_have_text(SECOND, timeout=10_000)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        served.stop()
        llm.terminate()
        llm.wait(10)
        if llm.stdout is not None:
            llm.stdout.close()
