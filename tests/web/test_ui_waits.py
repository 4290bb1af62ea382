"""A waiting run's page says what the run waits for and how a person answers it: the
signal's name (with a form that sends it, and the message and data a workflow asked
for), the timer's wake-up time, the child it waits for and what that child waits for."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest

import tether
from tests.web import webapp
from tests.web.helpers import ADMIN, READ, ui_client
from tests.web.test_ui_and_cli import login
from tether.store._port import Wait


@pytest.fixture
async def ui(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with ui_client(sqlite_url) as http:
        yield http


async def _until_waiting(ui: httpx.AsyncClient, *run_ids: str) -> None:
    """Run a worker until every one of ``run_ids`` is waiting."""
    app = ui.app  # type: ignore[attr-defined]
    async with app.worker(queues=["default"]):
        for run_id in run_ids:
            for _ in range(600):
                if (await app.get_run(run_id)).status == "waiting":
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"{run_id} never waited")


def _waits_box(page: str) -> str:
    box = re.search(r'<section class="card callout waitbox" id="waits">(.*?)</section>',
                    page, re.S)
    assert box is not None, "no box saying what the run waits for"
    return box.group(1)


async def test_a_run_waiting_for_a_signal_offers_to_send_it(ui: httpx.AsyncClient) -> None:
    csrf = await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("wait_go", run_id="ws/1")
    await _until_waiting(ui, "ws/1")
    box = _waits_box((await ui.get("/runs/ws/1")).text)
    assert "Waiting for the signal" in box and ">go</span>" in box
    assert 'action="/ui/runs/ws%2F1/signal"' in box
    assert '<input type="hidden" name="name" value="go">' in box
    assert "tether signal ws/1 go --data JSON" in box
    # The form in the box sends the signal: the run goes on with its data.
    r = await ui.post("/ui/runs/ws/1/signal", data={"csrf": csrf, "name": "go",
                                                     "data": '{"by": "ana"}'})
    assert r.status_code == 303
    async with app.worker(queues=["default"]):
        assert await app.handle("ws/1").result(timeout=30) == {"by": "ana"}
    assert 'id="waits"' not in (await ui.get("/runs/ws/1")).text
    # A read session is told it may not send it, and gets no form.
    await login(ui, READ)
    await app.start("wait_go", run_id="ws-2")
    await _until_waiting(ui, "ws-2")
    box = _waits_box((await ui.get("/runs/ws-2")).text)
    assert "<form" not in box and "may read, not send it" in box


async def test_a_run_waiting_for_two_signals_at_once_offers_each(
        ui: httpx.AsyncClient) -> None:
    """A run whose branches wait for ``go`` and ``stop`` at once ("signal go or signal
    stop"): the box has a form for each, each sending its own name, and the timeline a
    row for each. The box offered one form, "Send go or signal stop", which sent a
    signal of that name (nothing waits for it), and the timeline one row so named."""
    csrf = await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("go_and_stop", run_id="gs-1")
    await _until_waiting(ui, "gs-1")
    page = (await ui.get("/runs/gs-1")).text
    box = _waits_box(page)
    names = re.findall(r'<input type="hidden" name="name" value="([^"]*)">', box)
    assert names == ["go", "stop"], box
    assert "Send go</button>" in box and "Send stop</button>" in box
    assert "tether signal gs-1 go --data JSON" in box
    assert "tether signal gs-1 stop --data JSON" in box
    assert " or signal " not in box
    rows = re.findall(r'<tr class="op k-signal st-waiting wait">.*?</tr>', page, re.S)
    assert [re.search(r'<td class="mono" title="([^"]*)"', r).group(1)  # type: ignore[union-attr]
            for r in rows] == ["go", "stop"], rows
    r = await ui.post("/ui/runs/gs-1/signal", data={"csrf": csrf, "name": "go", "data": "1"})
    assert r.status_code == 303
    async with app.worker(queues=["default"]):
        for _ in range(600):
            if (await app.get_run("gs-1")).waiting_for == "signal stop":
                break
            await asyncio.sleep(0.05)
    box = _waits_box((await ui.get("/runs/gs-1")).text)
    assert re.findall(r'name="name" value="([^"]*)"', box) == ["stop"], box
    r = await ui.post("/ui/runs/gs-1/signal", data={"csrf": csrf, "name": "stop", "data": "2"})
    assert r.status_code == 303
    async with app.worker(queues=["default"]):
        assert await app.handle("gs-1").result(timeout=30) == [1, 2]
    await login(ui, READ)
    await app.start("go_and_stop", run_id="gs-2")
    await _until_waiting(ui, "gs-2")
    box = _waits_box((await ui.get("/runs/gs-2")).text)
    assert "<form" not in box and "may read, not send them" in box


async def test_a_run_waiting_for_a_signal_and_a_child_offers_the_signal(
        ui: httpx.AsyncClient) -> None:
    """A run waiting for the signal ``stop`` and a child at once ("signal stop or child
    ID"): the box names the child with its status and offers a form for ``stop``; the
    timeline has a row for each. The box offered "Send stop or child ID"."""
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("stop_or_child", run_id="sc-1")
    await _until_waiting(ui, "sc-1")
    async with app.worker(queues=["default"]):
        for _ in range(600):
            if "child" in ((await app.get_run("sc-1")).waiting_for or ""):
                break
            await asyncio.sleep(0.05)
    child = (await app.get_run("sc-1")).waiting_for.split("child ")[1]
    page = (await ui.get("/runs/sc-1")).text
    box = _waits_box(page)
    assert "<b>Waiting for 1 child run</b> and for signal stop" in box, box
    assert f'href="/runs/{child}"' in box and "for signal go" in box
    assert re.findall(r'name="name" value="([^"]*)"', box) == ["stop"], box
    assert "tether signal sc-1 stop --data JSON" in box
    assert re.search(r'<td class="mono" title="stop">stop</td>', page)
    assert '<td class="mono" title="1 child run">1 child run</td>' in page


async def test_a_run_over_its_budget_says_what_to_send(ui: httpx.AsyncClient) -> None:
    """The budget's wait publishes a message and a schema for a person: the box shows
    the message, the data's shape as the field's placeholder and the CLI to raise it;
    the raw live status is folded away."""
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("over_budget", "summarise the quarterly report", run_id="ob-1")
    await _until_waiting(ui, "ob-1")
    page = (await ui.get("/runs/ob-1")).text
    box = _waits_box(page)
    assert ">budget</span>" in box
    assert "The run&#39;s LLM budget is reached" in box
    assert 'placeholder="data as JSON: {&#34;usd&#34;: number &gt;= 0, ' \
           '&#34;tokens&#34;: integer &gt;= 0}"' in box
    assert "tether budget ob-1 --usd X --tokens N" in box
    assert '<details><summary>Live status</summary>' in page


async def test_a_sleeping_run_and_a_parent_say_what_they_wait_for(
        ui: httpx.AsyncClient) -> None:
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("nap", run_id="nap-1")
    await app.start("waiting_parent", run_id="wp-1")
    await _until_waiting(ui, "nap-1", "wp-1.0", "wp-1")
    box = _waits_box((await ui.get("/runs/nap-1")).text)
    assert "Sleeping" in box and "UTC" in box and "(in 3.0 h)" in box
    assert "<form" not in box
    # The runs list says how far ahead the timer wakes, not its ISO time.
    row = re.search(r'<tr>(?:(?!</tr>).)*nap-1(?:(?!</tr>).)*</tr>',
                    (await ui.get("/runs")).text, re.S)
    assert row is not None and "timer, wakes in 3.0 h" in row.group(0)
    box = _waits_box((await ui.get("/runs/wp-1")).text)
    assert "Waiting for its child run" in box
    assert 'href="/runs/wp-1.0"' in box
    assert "s-waiting" in box and "for signal go" in box


async def test_a_run_waiting_to_retry_a_step_says_which_and_when(
        ui: httpx.AsyncClient) -> None:
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("retrying_later", "t", run_id="rl-1")
    await _until_waiting(ui, "rl-1")
    box = _waits_box((await ui.get("/runs/rl-1")).text)
    assert "Waiting to retry" in box and ">sync_crm</span>" in box
    assert re.search(r"\(in (1\.0 h|[56]\d min)\)", box), box  # (the backoff's jitter)
    assert "attempt 1 failed: ConnectionError: CRM at crm.example is down (t)" in box


async def test_a_postponed_step_says_why_and_when(ui: httpx.AsyncClient) -> None:
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("postponed_later", "t", run_id="pp-1")
    await _until_waiting(ui, "pp-1")
    box = _waits_box((await ui.get("/runs/pp-1")).text)
    assert "<b>Postponed</b>: the step" in box and ">crm_quota</span>" in box
    assert "CRM quota used up for t: try in an hour" in box
    assert re.search(r"runs again at <time [^>]+>[^<]+ UTC</time> <span class=\"muted\">"
                     r"\(in (1\.0 h|[56]\d min)\)", box), box
    assert "failed:" not in box  # (a postponed step failed nothing)


# -- what the page says is true of the run (the review's words) ---------------------


def _head(page: str) -> str:
    head = re.search(r'<p class="meta">(.*?)</p>', page, re.S)
    assert head is not None
    return " ".join(head.group(1).split())


async def test_a_waiting_or_queued_run_is_not_running_for(ui: httpx.AsyncClient) -> None:
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("wait_go", run_id="wg-1")
    head = _head((await ui.get("/runs/wg-1")).text)  # queued: no worker yet
    # (not started: created, as `tether show` says; "started 9 min ago" beside "No
    # operations yet: the run waits in queue ... for a worker" read as a contradiction)
    assert "running for" not in head and "created <span" in head and "started" not in head
    await app.start("nap", run_id="nap-2")
    await _until_waiting(ui, "wg-1", "nap-2")
    # A timer's entry says since when it sleeps; a signal's wait with no timeout has no
    # entry, and says since when too: since the run's start, its first operation
    # (until 2026-12-06 it said nothing: _show.signal_wait_starts).
    since = (r"<span class=\"waited\" title=\""
             r"since [^\"]+ UTC\" data-at=\"[^\"]+Z\" data-say=\"since \">"
             r"\(<span data-ticking=\"[0-9.e-]+\">[0-9.]+ "
             r"(µs|ms|s)</span> so far\)</span>$")
    head = _head((await ui.get("/runs/wg-1")).text)
    assert "running for" not in head
    assert re.search(r"waiting for <b>signal <span class=\"id\">go</span></b> " + since,
                     head), head
    head = _head((await ui.get("/runs/nap-2")).text)
    assert "running for" not in head
    assert re.search(r"waiting for <b>timer until <time [^>]+>[^<]+ UTC</time></b> " + since,
                     head), head


async def test_a_run_waiting_for_an_approval_says_so_in_words(ui: httpx.AsyncClient) -> None:
    """The head of a run waiting for an approval said ``waiting for signal approval``
    (its ``waiting_for``, the signal that answers it): it says ``approval of TOOL``, as
    ``tether runs`` and ``tether show`` do; a plain wait for a signal keeps its words."""
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("purchase", "gpu", run_id="pa-1")
    await _until_waiting(ui, "pa-1")
    head = _head((await ui.get("/runs/pa-1")).text)
    assert "waiting for <b>approval of buy</b>" in head, head
    assert "signal approval" not in head, head


async def test_a_run_in_its_first_operation_says_so(ui: httpx.AsyncClient) -> None:
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("held_first", "h1", run_id="hf-1")
    page = (await ui.get("/runs/hf-1")).text
    assert "the run waits in queue <b>default</b> for a worker" in page
    try:
        async with app.worker(queues=["default"]):
            for _ in range(600):
                if (await app.get_run("hf-1")).status == "running":
                    break
                await asyncio.sleep(0.05)
            for _ in range(600):  # (its attempt is written within 50 ms of its start)
                if (await app.get_run("hf-1")).attempts:
                    break
                await asyncio.sleep(0.05)
            page = (await ui.get("/runs/hf-1")).text
            assert "No operations yet" not in page and "No operation" not in page
            # (its row, running: tests/web/test_in_flight.py)
            assert '<tr class="op k-step st-running inflight">' in page
            webapp.RELEASED.add("h1")
            assert await app.handle("hf-1").result(timeout=30) == "h1"
    finally:
        webapp.RELEASED.add("h1")
    page = (await ui.get("/runs/hf-1")).text
    assert "No operation" not in page and 'class="timeline"' in page


async def test_a_postponed_step_row_says_postponed_not_failed(ui: httpx.AsyncClient) -> None:
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("postponed_later", "t", run_id="pp-2")
    await _until_waiting(ui, "pp-2")
    page = (await ui.get("/runs/pp-2")).text
    row = re.search(r'<tr class="op k-step st-postponed.*?</tr>', page, re.S)
    assert row is not None, page
    assert "failed" not in row.group(0)
    assert re.search(r"postponed, runs again at <time [^>]+>[^:<]+:\d\d:\d\d UTC</time>: "
                     r"CRM quota used up for t: try in an hour", row.group(0)), row.group(0)
    assert '<span class="pill o-postponed">postponed</span>' in row.group(0)


async def test_a_wait_after_a_store_error_is_explained(ui: httpx.AsyncClient) -> None:
    """The worker's release after a failed store call (worker/_worker.py), made here by
    the store call it uses."""
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("greet", "ana", run_id="se-1")
    store = app.store
    now = app.clock.now()
    claimed = await store.run_claim(worker_id="w-test", queues=["default"], limit=1, now=now,
                                    lease_seconds=30)
    assert [c.run.run_id for c in claimed] == ["se-1"]
    await store.run_release(lease=claimed[0].lease, now=now, wait=Wait(
        now + 3600, "retry after a store error: connection to the database was lost"))
    box = _waits_box((await ui.get("/runs/se-1")).text)
    assert "<b>Waiting to replay</b> after a store error" in box
    assert "connection to the database was lost" in box
    assert "replays it from its journal by itself" in box


async def test_the_cancel_flash_says_what_is_true_when_the_page_renders(
        ui: httpx.AsyncClient) -> None:
    csrf = await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("wait_go", run_id="cx-1")
    await _until_waiting(ui, "cx-1")
    r = await ui.post("/ui/runs/cx-1/cancel", data={"csrf": csrf})
    assert r.status_code == 303  # asked: a waiting run stops when a worker takes it
    assert (await app.get_run("cx-1")).status == "waiting"
    async with app.worker(queues=["default"]):  # the worker delivers the cancel
        for _ in range(600):
            if (await app.get_run("cx-1")).status == "cancelled":
                break
            await asyncio.sleep(0.05)
    page = (await ui.get("/runs/cx-1")).text
    assert 'role="status">Run <span class="id">cx-1</span> is cancelled.</p>' in page
    assert "Asked run" not in page
    # Still waiting when the page renders: the flash says it was asked.
    await app.start("wait_go", run_id="cx-2")
    await _until_waiting(ui, "cx-2")
    await ui.post("/ui/runs/cx-2/cancel", data={"csrf": csrf})
    page = (await ui.get("/runs/cx-2")).text
    # (what was asked and when: true still once the run has moved on, app.js adding
    # where it is now: tests/web/test_browser.py)
    assert re.search(r'role="status">Asked run <span class="id">cx-2</span> to cancel at '
                     r'<time datetime="[^"]+Z" '
                     r'title="[^"]+ UTC" data-clock>\d\d:\d\d:\d\d UTC</time>: it stops at its '
                     r'next operation\.</p>', page), page


async def test_a_waiting_runs_page_says_its_cancel_is_pending(ui: httpx.AsyncClient) -> None:
    """A waiting run asked to cancel while no worker serves its queue stays ``waiting``
    until one replays it (its code may catch ``Cancelled`` and clean up); its page says
    so whenever it is opened, not only in the flash after the form. Before, a later
    visit showed a waiting run like any other, as if nobody had cancelled it."""
    csrf = await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("wait_go", run_id="cp-1")
    await _until_waiting(ui, "cp-1")
    pending = re.compile(r"cancel requested</b> <span[^>]* data-ago=\"[\d.]+\">\d+ s ago"
                         r"</span>: it ends cancelled when a worker serving queue")
    assert not pending.search((await ui.get("/runs/cp-1")).text)
    await ui.post("/ui/runs/cp-1/cancel", data={"csrf": csrf})
    await ui.get("/runs/cp-1")  # the page after the form, with its flash
    page = (await ui.get("/runs/cp-1")).text
    assert "Asked run" not in page  # (the flash is gone)
    # (since when: the head says how long ago the cancel was requested)
    assert pending.search(page) and "<b>default</b> replays it" in page, page
    async with app.worker(queues=["default"]):
        for _ in range(600):
            if (await app.get_run("cp-1")).status == "cancelled":
                break
            await asyncio.sleep(0.05)
    assert not pending.search((await ui.get("/runs/cp-1")).text)


async def test_a_run_whose_cancel_is_pending_offers_no_second_cancel(
        ui: httpx.AsyncClient) -> None:
    """The page of a waiting run asked to cancel (no worker serves its queue) still
    offered *Cancel run*, as if nobody had: the actions say the cancel is requested in
    its place (app.js swaps the two as the head is redrawn)."""
    csrf = await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("wait_go", run_id="cb-1")
    await _until_waiting(ui, "cb-1")

    def actions(page: str) -> tuple[str, str]:
        form = re.search(r'<form method="post" action="[^"]*/cancel" class="cancel"[^>]*>',
                         page)
        said = re.search(r'<p class="cancel-asked"[^>]*>(.*?)</p>', page, re.S)
        assert form is not None and said is not None, page
        return form[0], said[0]

    form, said = actions((await ui.get("/runs/cb-1")).text)
    assert " hidden>" not in form and " hidden>" in said, (form, said)
    await ui.post("/ui/runs/cb-1/cancel", data={"csrf": csrf})
    for page in ((await ui.get("/runs/cb-1")).text, (await ui.get("/runs/cb-1")).text):
        form, said = actions(page)
        assert form.endswith(" hidden>") and " hidden>" not in said, (form, said)
        # (since when: an age app.js counts on, its time in its title)
        assert re.fullmatch(r"Cancel requested \d+ s ago: it ends cancelled when a worker "
                            r"serving queue default replays it\.",
                            re.sub(r"<[^>]+>", "", said)), said
        assert re.search(r'<span title="[^"]+ UTC" data-at="[^"]+Z" data-ago="[\d.]+">', said)
        assert "data-cancel-asked" in page, page  # (what app.js reads in the head)


async def test_a_signal_not_yet_sent_is_a_row_of_the_timeline(ui: httpx.AsyncClient) -> None:
    """A signal wait with no timeout journals nothing until the signal comes: the page
    of a run waiting for a person's answer read "No operations yet." under "waiting for
    signal go". The wait is a row now, waiting, with no position, started when the run
    did (its first operation: _show.signal_wait_starts); once the signal is taken, the
    journaled entry (position 0) replaces it."""
    csrf = await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("wait_go", run_id="sw-1")
    await _until_waiting(ui, "sw-1")
    page = (await ui.get("/runs/sw-1")).text
    assert "No operations yet" not in page
    rows = re.findall(r'<tr class="op k-signal st-waiting wait">(.*?)</tr>', page, re.S)
    assert len(rows) == 1, page
    cells = re.findall(r"<td[^>]*>(.*?)</td>", rows[0], re.S)
    assert cells[0] == "" and "go" in cells[2] and ">waiting</span>" in cells[3]
    assert "not arrived yet" in rows[0] and "fork" not in cells[0]
    r = await ui.post("/ui/runs/sw-1/signal", data={"csrf": csrf, "name": "go",
                                                     "data": '"yes"'})
    assert r.status_code == 303
    async with app.worker(queues=["default"]):
        assert await app.handle("sw-1").result(timeout=30) == "yes"
    page = (await ui.get("/runs/sw-1")).text
    assert "not arrived yet" not in page and "st-waiting" not in page
    assert re.search(r'<tr class="op k-signal st-ok wait">\s*<td class="num mono">0', page)


async def test_a_running_runs_head_names_the_step_its_cancel_did_not_stop(
        sqlite_url: str) -> None:
    """A running run whose step catches ``CancelledError`` goes on after its cancel: its
    page's head says how long ago the cancel was requested and names the step that has
    not stopped, as ``tether show`` does (it said "cancel requested: it ends cancelled
    when a worker serving queue default replays it", the same a second or an hour
    after, of a run a worker held)."""
    from tests.web.helpers import served_app
    from tether import App
    from tether._show import run_document

    app = App(sqlite_url)
    release = asyncio.Event()

    @app.step
    async def deaf() -> int:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass  # (the cancel, ignored)
        return 1

    @app.workflow(name="stubborn")
    async def stubborn() -> int:
        got = await deaf()
        await tether.sleep(0.01)  # (its next operation: the cancel ends the run there)
        return got

    async with served_app(app) as (_, http), app.worker(poll_interval=0.1):
        try:
            await app.start("stubborn", run_id="st-1")
            while not (await run_document(app, "st-1"))["in_flight"]:
                await asyncio.sleep(0.05)
            await app.cancel("st-1")
            page = (await http.get("/runs/st-1", headers={"Authorization": f"Bearer {READ}"})).text
        finally:
            release.set()  # (the worker's drain would wait for the step for ever)
        with pytest.raises(tether.RunFailed):
            await app.handle("st-1").result(timeout=30)
    assert re.search(r"cancel requested</b> <span[^>]* data-ago=\"[\d.]+\">\d+ s ago</span>: "
                     r"the run has not stopped, its step <b>deaf</b> is still running \(a "
                     r"cancel interrupts a step at its next await", page), page
