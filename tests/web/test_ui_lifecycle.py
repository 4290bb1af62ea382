"""The UI's retry and fork forms and the schedules page, in process: CSRF and role
checks, bad input with a clear page and nothing changed, and the actions themselves."""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import re
import subprocess
import time
from collections.abc import AsyncIterator
from urllib.parse import unquote

import httpx
import pytest

from tests.web import webapp
from tests.web.helpers import ADMIN, READ, TETHER, env, ui_client, words
from tests.web.test_api import Api
from tests.web.test_api_lifecycle import _schedule
from tests.web.test_ui_and_cli import login
from tether import App, RunFailed
from tether._clock import SystemClock
from tether._lifecycle import make_spec, to_record
from tether.serve import Tokens, create_app


@pytest.fixture
async def ui(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client (no bearer header) of a server with tokens."""
    async with ui_client(sqlite_url) as http:
        yield http


async def _failed_run(ui: httpx.AsyncClient, run_id: str) -> None:
    app = ui.app  # type: ignore[attr-defined]
    await app.start("fixable", "u", run_id=run_id)
    async with app.worker(queues=["default"]):
        with pytest.raises(RunFailed):
            await app.handle(run_id).result(timeout=30)


async def test_retry_button_on_a_failed_run_and_the_form_needs_csrf(
        ui: httpx.AsyncClient) -> None:
    """A failed run's page offers Retry; the form without CSRF or from a read session
    changes nothing; with both, the run is queued again and completes after the fix."""
    webapp.FIXED.clear()
    csrf = await login(ui, ADMIN)
    await _failed_run(ui, "f1")
    page = (await ui.get("/runs/f1")).text
    assert 'action="/ui/runs/f1/retry"' in page
    assert re.search(r'<form[^>]*id="retry"[^>]*>', page) is not None
    assert "hidden" not in re.search(r'<form[^>]*id="retry"[^>]*>', page).group(0)
    r = await ui.post("/ui/runs/f1/retry", data={"csrf": "forged-csrf-token-000"})
    assert r.status_code == 403
    store = ui.app.store  # type: ignore[attr-defined]
    assert (await store.run_get("f1")).status == "failed"
    r = await ui.post("/ui/runs/nope/retry", data={"csrf": csrf})
    assert r.status_code == 404 and "no run" in r.text
    assert "<h1>No such run</h1>" in r.text and "HTTP 404</p>" in r.text

    webapp.FIXED.add("u")
    r = await ui.post("/ui/runs/f1/retry", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/runs/f1"
    assert (await store.run_get("f1")).status == "queued"
    app = ui.app  # type: ignore[attr-defined]
    async with app.worker(queues=["default"]):
        assert await app.handle("f1").result(timeout=30) == ["hello u", "fixed u"]
    page = (await ui.get("/runs/f1")).text
    assert "hidden" in re.search(r'<form[^>]*id="retry"[^>]*>', page).group(0)
    r = await ui.post("/ui/runs/f1/retry", data={"csrf": csrf})
    assert r.status_code == 409 and "cannot retry" in r.text
    # (an error page is titled in words, its status code small under it: it was "409")
    assert "<h1>This run cannot be retried</h1>" in r.text, r.text
    assert '<p class="muted small status-code">HTTP 409</p>' in r.text
    assert "<title>This run cannot be retried (409) · Tether</title>" in r.text
    r = await ui.post("/ui/runs/f1/signal", data={"csrf": csrf, "name": "go", "data": ""})
    assert r.status_code == 409 and "has ended" in r.text, r.text
    assert "<h1>This run has already ended</h1>" in r.text, r.text

    read_csrf = await login(ui, READ)
    page = (await ui.get("/runs/f1")).text
    assert "/retry" not in page and "/fork" not in page
    r = await ui.post("/ui/runs/f1/retry", data={"csrf": read_csrf})
    assert r.status_code == 403


async def test_a_failed_run_shows_its_traceback_as_lines(ui: httpx.AsyncClient) -> None:
    """The failure and the failed step show the recorded traceback as the lines Python
    printed, not as a JSON string with its line breaks escaped."""
    webapp.FIXED.clear()
    await login(ui, ADMIN)
    await _failed_run(ui, "tb1")
    page = (await ui.get("/runs/tb1")).text
    head, body = page.split('id="live-body"', 1)
    for part in (head, body):
        block = re.search(r'<pre class="tb">(.*?)</pre>', part, re.S)
        assert block is not None
        assert block.group(1).startswith("Traceback (most recent call last):\n")
        assert "in fragile" in block.group(1)
    assert "NonRetryable: bug in fragile" in head
    assert '"traceback": "Traceback' not in page


async def test_fork_form_prefills_the_position_and_starts_a_fork(ui: httpx.AsyncClient) -> None:
    """Each timeline row links to the fork form with its position; posting it starts
    the fork and goes to its page; a bad position is a 422 page and creates nothing."""
    csrf = await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("steps", 3, run_id="s1")
    async with app.worker(queues=["default"]):
        await app.handle("s1").result(timeout=30)
    page = (await ui.get("/runs/s1")).text
    assert 'href="/runs/s1?fork_at=1#fork"' in page
    page = (await ui.get("/runs/s1?fork_at=1")).text
    assert 'name="at" min="0" max="3" value="1"' in page
    page = (await ui.get("/runs/s1?fork_at=99")).text  # out of range: not prefilled
    assert 'name="at" min="0" max="3" value=""' in page
    for odd in ("\u00b2", "\u0661", "99999999999999999999"):  # not prefilled, not a 500
        r = await ui.get("/runs/s1", params={"fork_at": odd})
        assert r.status_code == 200 and 'name="at" min="0" max="3" value=""' in r.text, odd

    before = len(await app.store.run_search(limit=100))
    for data, status in (({"at": "9"}, 422), ({"at": "-1"}, 422), ({"at": "x"}, 422),
                         ({"at": "1", "input": "{bad"}, 400),
                         ({"at": "1", "input": '{"a": 1}'}, 400),
                         ({"at": "1", "run_id": "s1"}, 409)):
        r = await ui.post("/ui/runs/s1/fork", data={"csrf": csrf, **data})
        assert r.status_code == status, (data, r.text)
        title = {422: "Not a position in this run", 400: "Bad request",
                 409: "This run id is taken"}[status]
        assert f"<h1>{title}</h1>" in r.text, (data, r.text)
    r = await ui.post("/ui/runs/s1/fork", data={"at": "1", "csrf": "forged-csrf-token-000"})
    assert r.status_code == 403
    assert len(await app.store.run_search(limit=100)) == before

    r = await ui.post("/ui/runs/s1/fork", data={"csrf": csrf, "at": "1", "input": "[2]",
                                                 "run_id": "s1/fork"})
    assert r.status_code == 303 and r.headers["location"] == "/runs/s1%2Ffork"
    page = (await ui.get("/runs/s1/fork")).text
    assert ('forked from <a class="mono" href="/runs/s1" title="s1">s1</a> at position 1'
            in page)
    async with app.worker(queues=["default"]):
        assert await app.handle("s1/fork").result(timeout=30) == [10, 20]



def _head_meta(page: str) -> str:
    """The run head's line under the id, as a person reads it (tags out, spaces one)."""
    found = re.search(r'<p class="meta">(.*?)</p>', page, re.S)
    assert found is not None
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", found.group(1))).strip()


async def test_the_run_heads_clauses_are_spaced(ui: httpx.AsyncClient) -> None:
    """Each clause of a run's head is set apart by " · ": "took 12.0 ms · forked from
    s1 at position 1", "child of p · ...". Before, every clause after the running time
    was glued to what came before it ("took 28.1 ms· forked from", "running for 37.11
    s· waiting for"): the template's line breaks, which spaced them, were eaten by its
    trim_blocks."""
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("steps", 2, run_id="h1")
    await app.start("parent", "ana", run_id="h-mom")
    async with app.worker(queues=["default"]):
        await app.handle("h1").result(timeout=30)
        await app.handle("h-mom").result(timeout=30)
    await app.fork("h1", at=1, new_run_id="h1-fork")
    async with app.worker(queues=["default"]):
        await app.handle("h1-fork").result(timeout=30)
    child = next(r.run_id for r in await app.store.run_search(limit=100)
                 if r.parent_run_id == "h-mom")
    for run_id, clause in (("h1-fork", "forked from h1 at position 1"),
                           (child, "child of h-mom")):
        meta = _head_meta((await ui.get(f"/runs/{run_id}")).text)
        assert f" · {clause}" in meta, meta
        assert re.search(r"\S·", meta) is None, meta



@pytest.fixture
async def ui_any(store_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """As ``ui``, on SQLite and PostgreSQL."""
    async with ui_client(store_url) as http:
        yield http


async def test_the_runs_list_marks_a_fork_and_the_api_lists_its_origin(
        ui_any: httpx.AsyncClient) -> None:
    """A fork's row in the runs list says "fork of X at N" (X a link to the source), as
    a child's says "child of X", under every listing the page makes (all runs, a status,
    text in the id); ``GET /api/v1/runs`` gives ``forked_from`` and ``forked_at``, as
    the run's document does (null for a run that is no fork). Before, the listing's
    query did not select them: the list could not tell a fork from any other run."""
    ui = ui_any
    app = ui.app  # type: ignore[attr-defined]
    await login(ui, READ)
    async with app.worker(queues=["default"]):
        await app.start("steps", 3, run_id="s/1")
        await app.start("parent", "ana", run_id="mom")
        for run_id in ("s/1", "mom"):
            await app.handle(run_id).result(timeout=30)
    await app.fork("s/1", at=2, new_run_id="s/1-again")  # (left queued)
    mark = ('<span class="muted small">fork of <a class="mono" href="/runs/s%2F1" '
            'title="s/1">s/1</a> at 2</span>')
    for page in ("/runs", "/ui/runs", "/runs?status=queued", "/runs?q=again",
                 "/runs?workflow=steps"):
        html = (await ui.get(page)).text
        row = re.search(r"<tr>(?:(?!</tr>).)*s/1-again(?:(?!</tr>).)*</tr>", html, re.S)
        assert row is not None, page
        assert mark in row.group(0), page
        assert html.count("fork of") == 1, page
    html = (await ui.get("/runs")).text
    assert "child of mom" in html and html.count("fork of") == 1

    runs = (await ui.get("/api/v1/runs", headers={"Authorization": f"Bearer {READ}"})
            ).json()["runs"]
    origins = {r["run_id"]: (r["forked_from"], r["forked_at"]) for r in runs}
    assert origins.pop("s/1-again") == ("s/1", 2)
    assert set(origins.values()) == {(None, None)} and {"s/1", "mom"} <= set(origins)
    doc = (await ui.get("/api/v1/runs/s%2F1-again",
                        headers={"Authorization": f"Bearer {READ}"})).json()
    assert (doc["forked_from"], doc["forked_at"]) == ("s/1", 2)
    schema = (await ui.get("/openapi.json", headers={"Authorization": f"Bearer {READ}"})
              ).json()["components"]["schemas"]["RunSummary"]["properties"]
    assert schema["forked_from"]["nullable"] and schema["forked_at"]["type"] == "integer"

async def _blocked_run(url: str, run_id: str) -> None:
    """A run blocked by a code change: recorded step ``a`` at position 0 under one App,
    replayed by another whose ``drifting`` asks for step ``b`` there."""
    import tether

    for first in ("a", "b"):
        app = tether.App(url)

        @app.step
        async def a() -> int:
            return 1

        @app.step
        async def b() -> int:
            return 2

        @app.workflow
        async def drifting(first: str = first) -> int:
            await (a() if first == "a" else b())
            return int(await tether.wait_for_signal("go"))

        async with app, app.worker(queues=["default"]):
            if first == "a":
                await app.start(drifting, run_id=run_id)
                status = "waiting"
            else:
                await app.signal(run_id, "go", 1)
                status = "blocked"
            async with asyncio.timeout(30):
                while (await app.store.run_get(run_id)).status != status:
                    await asyncio.sleep(0.02)


async def test_a_blocked_run_says_what_blocks_it_in_the_lists(
        ui: httpx.AsyncClient, sqlite_url: str) -> None:
    """A blocked run's WAITING FOR, in the runs page and in ``tether runs``, says it
    waits for an operator and why, as ``tether show`` and the run page say it: both
    left it empty until 2026-12-06."""
    await _blocked_run(sqlite_url, "drift-1")
    await login(ui, READ)
    for page in ("/runs", "/ui/runs"):
        html = (await ui.get(page)).text
        row = re.search(r"<tr>(?:(?!</tr>).)*drift-1(?:(?!</tr>).)*</tr>", html, re.S)
        assert row is not None, page
        assert ('<td class="muted" title="operator: non-determinism at position 0">'
                "operator: non-determinism at position 0</td>") in row.group(0), page
    out = subprocess.run([*TETHER, "runs", "--db", sqlite_url], env=env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    [line] = [ln for ln in out.stdout.splitlines() if ln.startswith("drift-1 ")]
    assert line.split()[3] == "blocked"
    assert line.endswith(" operator: non-determinism at position 0"), line
    out = subprocess.run([*TETHER, "show", "drift-1", "--db", sqlite_url], env=env(),
                         capture_output=True, text=True, timeout=60)
    assert "non-determinism in run 'drift-1' at position 0" in out.stdout, out.stdout


async def test_a_cancelled_run_is_drawn_neutral_not_as_a_failure(
        ui: httpx.AsyncClient) -> None:
    """A cancel is an operator's decision: the run page draws a cancelled run's end in a
    neutral box titled "Cancelled" (until 2026-12-06 the red failure box of a failed
    run), and still offers Retry; a failed run keeps the failure box."""
    app = ui.app  # type: ignore[attr-defined]
    await login(ui, ADMIN)
    await app.start("wait_go", run_id="cx-1")
    async with app.worker(queues=["default"]):
        async with asyncio.timeout(30):
            while (await app.store.run_get("cx-1")).status != "waiting":
                await asyncio.sleep(0.02)
        await app.cancel("cx-1")
        async with asyncio.timeout(30):
            while (await app.store.run_get("cx-1")).status != "cancelled":
                await asyncio.sleep(0.02)
    page = (await ui.get("/runs/cx-1")).text
    box = re.search(r'<section class="card ended-cancelled"><h2>Cancelled</h2>.*?</section>',
                    page, re.S)
    assert box is not None, page
    assert "Cancelled at " in box.group(0) and "on a cancel requested" in box.group(0)
    assert 'class="card failure"' not in page
    assert 'action="/ui/runs/cx-1/retry"' in page
    webapp.FIXED.clear()
    await _failed_run(ui, "f-x")
    page = (await ui.get("/runs/f-x")).text
    assert '<section class="card failure"><h2>Failed</h2>' in page
    assert "ended-cancelled" not in page


async def test_the_retry_note_counts_what_the_retry_keeps(ui: httpx.AsyncClient) -> None:
    """The Retry button's note says how many recorded operations a retry keeps, as the
    store's retry does: a cancelled run's ``cancel`` entry is not one of them (the note
    said "keeps the 2 recorded operations" of a run whose retry kept 1, counting every
    ``ok`` entry); the head carries the count for the page's live redraw."""
    app = ui.app  # type: ignore[attr-defined]
    csrf = await login(ui, ADMIN)
    await app.start("waiting_parent", run_id="keep-1")
    async with app.worker(queues=["default"]):
        async with asyncio.timeout(30):
            while (await app.store.run_get("keep-1")).status != "waiting":
                await asyncio.sleep(0.02)
        await app.cancel("keep-1")
        async with asyncio.timeout(30):
            while (await app.store.run_get("keep-1")).status != "cancelled":
                await asyncio.sleep(0.02)
    kinds = [e.kind for e in await app.store.journal_read("keep-1")]
    assert kinds == ["child_start", "cancel"], kinds
    page = (await ui.get("/runs/keep-1")).text
    note = "keeps the 1 recorded operation, runs the rest under the current code"
    assert f"<span class=\"muted small\" data-keeps>{note}</span>" in page, page
    assert f'<span id="retry-keeps" hidden>{note}</span>' in page
    assert note in (await ui.get("/ui/runs/keep-1?part=head")).text
    r = await ui.post("/ui/runs/keep-1/retry", data={"csrf": csrf})
    assert r.status_code == 303, r.text
    kept = [e for e in await app.store.journal_read("keep-1") if e.status != "pending"]
    assert [e.kind for e in kept] == ["child_start"]


async def test_a_retry_that_keeps_nothing_says_it_runs_from_the_start(
        ui: httpx.AsyncClient) -> None:
    """A cancelled run whose retry keeps none of its operations (its ``cancel`` entry
    is not kept): the Retry button's note says it runs from the start; it said "keeps
    the 0 recorded operations, runs the rest", a count of nothing and a rest that is
    all of it."""
    app = ui.app  # type: ignore[attr-defined]
    await login(ui, ADMIN)
    await app.start("wait_go", run_id="keep-0")
    async with app.worker(queues=["default"]):
        async with asyncio.timeout(30):
            while (await app.store.run_get("keep-0")).status != "waiting":
                await asyncio.sleep(0.02)
        await app.cancel("keep-0")
        async with asyncio.timeout(30):
            while (await app.store.run_get("keep-0")).status != "cancelled":
                await asyncio.sleep(0.02)
    page = (await ui.get("/runs/keep-0")).text
    note = "keeps no recorded operation: runs it from the start under the current code"
    assert f"<span class=\"muted small\" data-keeps>{note}</span>" in page, page
    assert "keeps the 0" not in page


async def test_schedules_page_lists_and_acts(ui: httpx.AsyncClient) -> None:
    """The page lists schedules; pause, resume and run-now work from it (admin, CSRF);
    a read session sees the list without buttons."""
    csrf = await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    assert "No schedules" in (await ui.get("/schedules")).text
    await _schedule(Api(app, ui))
    page = (await ui.get("/schedules")).text
    assert "nightly" in page and "0 3 * * *" in page
    assert 'action="/ui/schedules/nightly/pause"' in page
    r = await ui.post("/ui/schedules/nightly/pause", data={"csrf": "forged-csrf-token-000"})
    assert r.status_code == 403 and not (await app.store.schedule_get("nightly")).paused
    r = await ui.post("/ui/schedules/nightly/pause", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/schedules"
    assert (await app.store.schedule_get("nightly")).paused
    assert 'action="/ui/schedules/nightly/resume"' in (await ui.get("/schedules")).text
    r = await ui.post("/ui/schedules/nightly/resume", data={"csrf": csrf})
    assert r.status_code == 303 and not (await app.store.schedule_get("nightly")).paused
    r = await ui.post("/ui/schedules/nightly/trigger", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"].startswith("/runs/nightly%40manual-")
    # The new run's page says once what Run now did (it said nothing: a page of a run
    # named NAME@manual-..., its head naming no schedule).
    run_id = unquote(r.headers["location"].removeprefix("/runs/"))
    page = (await ui.get(r.headers["location"])).text
    assert (f'<p class="flash ok" role="status">Started run <span class="id">{run_id}'
            '</span> now, for schedule <span class="id">nightly;</span> the '
            "schedule&#39;s next tick is kept.</p>") in page, page
    assert 'class="flash' not in (await ui.get(r.headers["location"])).text
    r = await ui.post("/ui/schedules/nightly/explode", data={"csrf": csrf})
    assert r.status_code == 404
    r = await ui.post("/ui/schedules/nope/pause", data={"csrf": csrf})
    assert r.status_code == 404 and "no schedule named" in r.text
    read_csrf = await login(ui, READ)
    page = (await ui.get("/schedules")).text
    assert "nightly" in page and "/ui/schedules/" not in page
    r = await ui.post("/ui/schedules/nightly/pause", data={"csrf": read_csrf})
    assert r.status_code == 403 and not (await app.store.schedule_get("nightly")).paused


class _OffsetClock(SystemClock):
    """The host's clock ``offset`` seconds off, as a ``SyncedClock`` reads the
    PostgreSQL server's on a host whose own clock is not the server's."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset


def _seconds_ahead(text: str) -> float:
    """ "in 12 s", "in 5 min", "in 3.4 h", "in 2 d" or "due" as seconds."""
    if text == "due":
        return 0.0
    m = re.fullmatch(r"in ([\d.]+) (s|min|h|d)", text)
    assert m is not None, text
    return float(m[1]) * {"s": 1, "min": 60, "h": 3600, "d": 86400}[m[2]]


async def test_pages_say_times_by_the_apps_clock_not_the_hosts(sqlite_url: str) -> None:
    """The stored times were written by the App's clock (on PostgreSQL synced with the
    server's), which the host's own clock may be off from: "5 s ago", a running run's
    age and a schedule's "in 3 h" are read off the App's clock. Before, off the host's:
    with a host an hour ahead of its PostgreSQL server (real processes, libfaketime
    +1h), a run started seconds before showed "started 1.0 h ago · running for
    60.1 min" and the next tick "in 2.4 h" for 3.4; an hour behind, "running for
    -3595470038 µs" and "in 4.4 h"."""
    app = webapp.make_app(sqlite_url)
    app.clock = _OffsetClock(-3600.0)  # the host an hour ahead of the store's clock
    await app._open()
    asgi = create_app(app, tokens=Tokens({ADMIN: "admin"}), mcp=False)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                     base_url="http://127.0.0.1") as ui:
            await login(ui, ADMIN)
            # A run a worker holds in its first step: its head says "running for".
            await app.start("held_first", "skewed", run_id="skewed")
            try:
                async with app.worker(queues=["default"]):
                    for _ in range(600):
                        if (await app.get_run("skewed")).status == "running":
                            break
                        await asyncio.sleep(0.05)
                    page = (await ui.get("/runs/skewed")).text
                    webapp.RELEASED.add("skewed")
                    await app.handle("skewed").result(timeout=30)
            finally:
                webapp.RELEASED.add("skewed")
            started = re.search(r"started <span[^>]*>([^<]*)<", page)
            assert started is not None and started[1].endswith(" s ago"), started
            age = re.search(r"running for (?:<span[^>]*>)?([^\n<]*)", page)
            assert age is not None and age[1].strip().endswith(("ms", " s")), age
            created = re.search(r'class="created"[^>]*>([^<]*)<', (await ui.get("/runs")).text)
            assert created is not None and created[1].endswith(" s ago"), created
            # A tick 1 to 2 h ahead by the App's clock: 0 to 1 h by the host's.
            hour = (dt.datetime.fromtimestamp(app.clock.now(), dt.UTC).hour + 2) % 24
            spec = make_spec("greet", "default", f"0 {hour} * * *", name="soon")
            await app.store.schedule_upsert(schedule=to_record(app, spec, app.clock.now()))
            s = await app.store.schedule_get("soon")
            assert s is not None and s.next_tick is not None
            ahead = re.search(r'<td class="nowrap">([^<]*)<', (await ui.get("/schedules")).text)
            assert ahead is not None
            # (the page rounds "in 1.4 h" to 0.05 h)
            assert abs(_seconds_ahead(ahead[1]) - (s.next_tick - app.clock.now())) < 200, ahead
    finally:
        await app.close()


async def test_schedules_page_says_its_decorator_without_parentheses_around_it(
        ui: httpx.AsyncClient) -> None:
    """The page's description read "declared in code ( @app.schedule )": the code's
    padding and background, inside parentheses, looked like spaces. It says "declared in
    code with @app.schedule"."""
    await login(ui, READ)
    await _schedule(Api(ui.app, ui))  # type: ignore[attr-defined]
    page = (await ui.get("/schedules")).text
    head = re.search(r'<div class="page-head"><h1>Schedules</h1>(.*?)</div>', page, re.S)
    assert head is not None, page
    assert "(<code>" not in head[1] and "</code>)" not in head[1], head[1]
    assert ("declared in code with <span class=\"nowrap\"><code>@app.schedule</code>;"
            "</span>") in head[1], head[1]


#: ``code`` directly inside parentheses in a template, Jinja tags between them allowed:
#: "(<code>admin</code>" or "<code>tether.patched()</code>)".
CODE_IN_PARENTHESES = re.compile(
    r"\(\s*(?:\{[{%][^}]*[}%]\}\s*)*<code[ >]|</code>(?:\s*\{[{%][^}]*[}%]\})*\s*\)")


async def test_no_page_puts_code_right_inside_parentheses(ui: httpx.AsyncClient) -> None:
    """A code element's padding and background, right after "(" or before ")", read as
    spaces: the login page said "Paste an API token ( admin or read )", the run page
    "not shown ( tether show ID lists them)", "(history)", "( tether queue-limit )" and
    "(or guard the change with tether.patched() )". No template puts code there (the
    words say it another way), and the login page says "an admin or a read one"."""
    from pathlib import Path

    import tether.serve

    templates = Path(tether.serve.__file__).parent / "templates"
    found = {f"{path.name}: {m[0]}" for path in sorted(templates.glob("*.html"))
             for m in CODE_IN_PARENTHESES.finditer(path.read_text())}
    assert not found, found
    page = (await ui.get("/login")).text
    assert "Paste an API token, an <code>admin</code> or a <code>read</code> one." in page, page


async def test_schedules_page_says_an_overdue_tick_and_a_paused_schedule(
        ui: httpx.AsyncClient) -> None:
    """A tick past by more than a minute (no worker of its workflow runs) reads
    "overdue", with how long ago it was due, not a bare "due"; a paused schedule says so
    in its Next tick cell; a tick ahead reads "in ..."."""
    app = ui.app  # type: ignore[attr-defined]
    now = app.clock.now()
    for name, cron, at in (("late", "*/5 * * * *", now - 4 * 3600), ("ontime", "0 3 * * *", now),
                           ("held", "0 * * * *", now)):
        spec = make_spec("greet", "default", cron, name=name, args=("cron",))
        await app.store.schedule_upsert(schedule=to_record(app, spec, at))
    await app.store.schedule_pause(name="held", paused=True, next_tick=None, now=now)
    await login(ui, READ)
    html = (await ui.get("/schedules")).text
    rows = {m.group(1): m.group(0) for m in re.finditer(
        r'<tr>(?:(?!</tr>).)*?<td class="mono name"><b>(\w+)</b>(?:(?!</tr>).)*</tr>',
        html, re.S)}
    assert re.search(r'<b class="overdue" title="no worker serving workflow greet[^"]*">'
                     r'overdue</b> <span class="muted small">due [0-9.]+ h ago</span>',
                     rows["late"]), rows["late"]
    assert '<span class="muted">\u2013 paused</span>' in rows["held"]
    # (its next tick, 03:00 UTC, is under an hour away between 02:00 and 03:00)
    assert "overdue" not in rows["ontime"] and re.search(r">in [0-9.]+ (s|min|h)<",
                                                          rows["ontime"]), rows["ontime"]


async def test_a_blocked_run_names_the_same_command_on_its_page_and_in_show(
        ui: httpx.AsyncClient, sqlite_url: str) -> None:
    """What an operator runs for a blocked run is ``tether resume`` (docs/concepts.md,
    docs/lifecycle.md), and both faces say so: until 2026-12-07 the page said "retry it
    (`tether retry RUN`)" where ``tether show`` said ``tether resume RUN``. The page's
    Retry button, which does the same for a blocked run, is named as well."""
    await _blocked_run(sqlite_url, "drift-r")
    out = subprocess.run([*TETHER, "show", "drift-r", "--db", sqlite_url], env=env(),
                         capture_output=True, text=True, timeout=60)
    assert "tether resume drift-r" in out.stdout, out.stdout
    assert "tether retry" not in out.stdout
    for token, button in ((READ, False), (ADMIN, True)):
        await login(ui, token)
        page = (await ui.get("/runs/drift-r")).text
        note = re.search(r"<p class=\"small\">The run waits for an operator.*?</p>", page,
                         re.S)
        assert note is not None, page
        assert "<code>tether resume drift-r</code>" in note.group(0)
        assert "tether retry" not in note.group(0)
        assert ("<b>Retry</b> below" in note.group(0)) is button


async def test_the_runs_page_takes_a_comma_list_of_statuses_as_the_api_does(
        ui_any: httpx.AsyncClient) -> None:
    """``/runs?status=queued,cancelled`` lists the runs of either, newest first, as
    ``GET /api/v1/runs?status=`` does (the page took one status, and a list was refused
    with a reason that was not the API's); a word that is no status is refused with the
    API's reason."""
    ui = ui_any
    app = ui.app  # type: ignore[attr-defined]
    await login(ui, READ)
    for run_id in ("c-1", "c-2", "c-3"):
        await app.start("steps", 1, run_id=run_id)
    await app.cancel("c-2")
    html = (await ui.get("/runs", params={"status": "queued,cancelled"})).text
    assert list(dict.fromkeys(re.findall(r"\bc-[0-9]\b", html))) == ["c-3", "c-2", "c-1"]
    html = (await ui.get("/runs", params={"status": "cancelled"})).text
    assert "c-2" in html and "c-1" not in html and "c-3" not in html
    r = await ui.get("/runs", params={"status": "cancelled,done"})
    assert r.status_code == 400 and "or a comma list of them, got" in r.text
    # The status menu says the statuses listed, and its form sends them again (Filter
    # with another field kept them): it said "any status" over a list of two, and
    # Filter dropped them. Written any way the list reads, it is said the one way.
    for said in ("cancelled,queued", " queued , cancelled,queued", "queued,cancelled"):
        html = (await ui.get("/runs", params={"status": said})).text
        menu = re.search(r'<select name="status".*?</select>', html, re.S)
        assert menu is not None, html
        assert re.findall(r"<option [^>]*selected[^>]*>[^<]*", menu[0]) == [
            '<option value="queued,cancelled" selected>queued or cancelled'], menu[0]
    html = (await ui.get("/runs", params={"status": " cancelled"})).text
    menu = re.search(r'<select name="status".*?</select>', html, re.S)
    assert menu is not None and re.findall(r"<option [^>]*selected[^>]*>[^<]*", menu[0]) \
        == ['<option value="cancelled" selected>cancelled'], html


async def test_schedules_page_prints_a_schedules_version_as_it_is_named(
        ui: httpx.AsyncClient) -> None:
    """A schedule's code version is an arbitrary name (``App(version="v2")``,
    ``"2026-12-02"``), printed as the run page prints a run's: "version v2". The page
    printed "v" before it, so a schedule of version ``v2`` read "vv2"."""
    app = ui.app  # type: ignore[attr-defined]
    spec = make_spec("greet", "default", "0 3 * * *", name="pinned", args=("cron",))
    record = to_record(app, spec, app.clock.now())
    record.version = "v2"
    await app.store.schedule_upsert(schedule=record)
    await login(ui, READ)
    html = (await ui.get("/schedules")).text
    assert "· version v2<" in html, html
    assert "vv2" not in html


async def test_the_retry_note_says_when_the_retry_took_the_runs_version_away(
        ui: httpx.AsyncClient, sqlite_url: str) -> None:
    """A server of no version (``serve`` without ``--app``) retries a run under none, so
    a run pinned to v1 is claimed by workers of every version afterwards. The Retry
    button's note says so, as the API's ``warnings`` do; it said only "it was queued"."""
    pinned = App(sqlite_url, version="v1")

    @pinned.workflow(name="pinned_job")
    async def pinned_job() -> str:
        raise RuntimeError("bug in v1")

    async with pinned, pinned.worker(queues=["default"]):
        with pytest.raises(RunFailed):
            await (await pinned.start(pinned_job, run_id="pv")).result(timeout=30)
    csrf = await login(ui, ADMIN)
    r = await ui.post("/ui/runs/pv/retry", data={"csrf": csrf})
    assert r.status_code == 303, r.text
    page = (await ui.get("/runs/pv")).text
    note = re.search(r'<p class="flash[^"]*"[^>]*>(.*?)</p>', page, re.S)
    assert note is not None, page
    assert "it was queued" in note[1], note[1]
    assert "ran under code version &#39;v1&#39;" in note[1], note[1]


async def test_the_fork_note_says_when_the_fork_left_the_runs_version_behind(
        ui: httpx.AsyncClient, sqlite_url: str) -> None:
    """A server of no version forks a run under none, so the fork of a run pinned to v1
    is claimed by workers of every version. The Fork form went on to the new run's page
    in silence; the page now has a note saying so, as the API's ``warnings`` do."""
    pinned = App(sqlite_url, version="v1")

    @pinned.workflow(name="pinned_done")
    async def pinned_done() -> str:
        return "done"

    async with pinned, pinned.worker(queues=["default"]):
        await (await pinned.start(pinned_done, run_id="pf")).result(timeout=30)
    csrf = await login(ui, ADMIN)
    r = await ui.post("/ui/runs/pf/fork", data={"csrf": csrf, "at": "0", "run_id": "pf.1"})
    assert r.status_code == 303 and r.headers["location"].endswith("/runs/pf.1"), r.text
    page = (await ui.get("/runs/pf.1")).text
    note = re.search(r'<p class="flash[^"]*"[^>]*>(.*?)</p>', page, re.S)
    assert note is not None, page
    assert "Forked pf at position 0 as pf.1." in words(note[1]), note[1]
    assert ("run &#39;pf&#39; ran under code version &#39;v1&#39;; its fork &#39;pf.1&#39;, "
            "made by an app of no version, has none") in words(note[1]), note[1]


async def test_the_run_page_says_when_no_live_worker_has_a_queued_runs_version(
        ui: httpx.AsyncClient, sqlite_url: str) -> None:
    """A run pinned to v1 with no v1 worker live stays queued while other workers serve
    its queue; its page said only "the run waits in queue default for a worker". It now
    says what ``tether show`` says: no live worker has its version, and how to go on."""
    pinned = App(sqlite_url, version="v1")

    @pinned.workflow(name="pinned_wait", queue="nobody-serves-it")
    async def pinned_wait() -> None:
        return None

    await login(ui, READ)
    async with pinned:
        await pinned.start(pinned_wait, run_id="pw")
        page = (await ui.get("/runs/pw")).text
        assert ("no live worker of version &#39;v1&#39;: only one of that version claims "
                "this run; start one, or move the run to another version with tether "
                "migrate-runs --from v1 --to VERSION") in page, page
        async with pinned.worker(queues=["idle"]):
            assert "no live worker" not in (await ui.get("/runs/pw")).text


async def test_the_run_page_says_it_cannot_tell_when_the_live_workers_are_unreadable(
        ui: httpx.AsyncClient, sqlite_url: str) -> None:
    """The page of a run pinned to v1 whose server's read of the live workers failed
    (the store's workers table renamed away under it) failed with it: it says, as
    ``tether show`` does, that it could not tell whether a v1 worker is live, and why,
    not that none is."""
    from tests.life.test_cli_lifecycle import pinned_with_the_live_workers_unreadable

    await login(ui, READ)
    await pinned_with_the_live_workers_unreadable(sqlite_url)
    r = await ui.get("/runs/pinned-1")
    assert r.status_code == 200, r.text
    assert "no live worker" not in r.text, r.text
    assert ("could not tell whether a live worker of version &#39;v1&#39; runs: reading "
            "the live workers failed (StoreError: ") in r.text, r.text
    assert "); only one of that version claims this run" in r.text, r.text


async def test_the_runs_list_says_it_cannot_tell_when_the_live_workers_are_unreadable(
        ui: httpx.AsyncClient, sqlite_url: str) -> None:
    """The runs list failed with its read of the live workers (a page holding a run
    pinned to a version): its *Waiting for* says, as ``tether runs`` does, that it
    cannot tell ("version 'v1': live workers unreadable")."""
    from tests.life.test_cli_lifecycle import pinned_with_the_live_workers_unreadable
    from tests.web.test_ui_stuck_and_retried import _waits

    await login(ui, READ)
    await pinned_with_the_live_workers_unreadable(sqlite_url)
    for path in ("/runs", "/ui/runs"):
        r = await ui.get(path)
        assert r.status_code == 200, r.text
        assert _waits(r.text, "pinned-1") == "version 'v1': live workers unreadable", r.text
        assert _waits(r.text, "plain-1") != "version 'v1': live workers unreadable", r.text


async def test_the_signal_forms_note_says_a_send_that_answers_nothing(
        ui: httpx.AsyncClient) -> None:
    """The signal form's note says what ``tether signal`` warns of: an ``approval``
    without ``"approved"`` to a run waiting for an approval (no answer: it waits on),
    and a signal of another name than the one the run waits for (a typo). It said "Sent
    signal 'approval' to run R." alone, and the person believed the run answered."""
    app = ui.app  # type: ignore[attr-defined]
    csrf = await login(ui, ADMIN)
    await app.start("purchase", "globe", run_id="sig-appr")
    await app.start("wait_go", run_id="sig-go")
    async with app.worker(queues=["default"]):
        async with asyncio.timeout(30):
            while {(await app.store.run_get(r)).status for r in ("sig-appr", "sig-go")} \
                    != {"waiting"}:
                await asyncio.sleep(0.02)

        async def send(run_id: str, name: str, data: str) -> str:
            r = await ui.post(f"/ui/runs/{run_id}/signal",
                              data={"csrf": csrf, "name": name, "data": data})
            assert r.status_code == 303, r.text
            page = (await ui.get(r.headers["location"])).text
            note = re.search(r'<p class="flash (ok|warn)" role="status">(.*?)</p>', page,
                             re.S)
            assert note is not None, page
            # (a note that warns is drawn as a warning, not in the green of all's well)
            assert (note.group(1) == "warn") == (" Note: " in note.group(2)), note.group(0)
            return html.unescape(words(note.group(2)))

        note = await send("sig-appr", "approval", '{"ok": 1}')
        assert note == (
            "Sent signal 'approval' to run sig-appr. Note: run 'sig-appr' waits for an "
            "approval of buy: a signal 'approval' without \"approved\": true or false in "
            "its data is no answer, and the run waits on; answer it with Approve or "
            "Reject on this page."), note
        note = await send("sig-go", "og", "")
        assert note == (
            "Sent signal 'og' to run sig-go. Note: run 'sig-go' waits for signal 'go', "
            "not 'og': this signal is kept until a wait of its name takes it (a "
            "typo?)."), note
        assert await send("sig-go", "go", "1") == "Sent signal 'go' to run sig-go."
        assert await app.handle("sig-go").result(timeout=30) == 1
        assert (await app.store.run_get("sig-appr")).status == "waiting"
        await app.signal("sig-appr", "approval", {"approved": False})
        await app.handle("sig-appr").result(timeout=30)


async def test_an_approval_whose_watch_timed_out_stays_in_the_inbox_until_answered(
        ui_any: httpx.AsyncClient) -> None:
    """A watched approval wait (``tether.ai.mcp``'s) timed out while no worker runs:
    its run is claimable, but nobody answered it. The inbox, the runs list's "needs
    approval" badge and its page's buttons offer it (the inbox and the badge left it
    out, as if answered, until a worker took the run), the API lists it
    ``"awaiting_worker": true, "answered": false``; the inbox's answer is taken."""
    ui = ui_any
    app = ui.app  # type: ignore[attr-defined]
    csrf = await login(ui, ADMIN)
    await app.start("watched_purchase", "wt", run_id="wt-1")
    async with app.worker(queues=["default"]):
        async with asyncio.timeout(30):
            while (await app.store.run_get("wt-1")).status != "waiting":
                await asyncio.sleep(0.02)
    async with asyncio.timeout(30):  # (its watch's timeout passes: claimable)
        while not ((run := await app.store.run_get("wt-1")).status == "waiting"
                   and run.available_at <= app.clock.now()):
            await asyncio.sleep(0.05)

    page = (await ui.get("/approvals")).text
    assert re.findall(r'<li class="card approval" data-run="([^"]+)"', page) == ["wt-1"]
    runs = (await ui.get("/runs")).text
    assert re.search(r'<span class="pill s-waiting">waiting</span>\s*<a class="pill '
                     r's-approval"[^>]*>needs approval</a>', runs), runs
    bearer = {"Authorization": f"Bearer {READ}"}
    listed = (await ui.get("/api/v1/approvals", headers=bearer)).json()["approvals"]
    assert [(a["run_id"], a["awaiting_worker"], a["answered"]) for a in listed] == [
        ("wt-1", True, False)], listed
    head = (await ui.get("/ui/runs/wt-1?part=head")).text
    assert " · waiting for <b>approval of buy</b>" in head, head
    form = re.search(r'action="/ui/runs/wt-1/approval"(.*?)</form>', page, re.S)
    assert form is not None and 'action="/ui/runs/wt-1/approval"' in head
    fields = {k: html.unescape(v) for k, v in re.findall(
        r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(1))}
    r = await ui.post("/ui/runs/wt-1/approval",
                      data={**fields, "csrf": csrf, "decision": "approve"})
    assert r.status_code == 303, r.text
    assert "Approved buy for run wt-1" in words((await ui.get("/approvals")).text)
    listed = (await ui.get("/api/v1/approvals", headers=bearer)).json()["approvals"]
    assert [(a["awaiting_worker"], a["answered"]) for a in listed] == [(True, True)]
    assert "data-run=" not in (await ui.get("/ui/approvals")).text
    async with app.worker(queues=["default"]):
        assert (await app.handle("wt-1").result(timeout=30))["approved"] is True


async def test_the_inbox_drops_an_approval_once_answered_before_a_worker_takes_it(
        ui_any: httpx.AsyncClient) -> None:
    """An answered approval leaves the inbox at once: its run stays ``waiting`` (its
    status naming the approval) until a worker claims it, which may take a while (no
    worker running, all busy), and the inbox the answer led back to showed it still,
    with its buttons (pressed again: "it was approved first"). The runs list's "needs
    approval" badge leaves it too, and ``GET /api/v1/approvals`` lists it marked
    ``"awaiting_worker": true`` and ``"answered": true`` (before, both listed it as any
    other). Its page's head says it was answered and waits for a worker, and its card
    has no buttons (it said "waiting for approval of buy", the buttons under it)."""
    ui = ui_any
    app = ui.app  # type: ignore[attr-defined]
    csrf = await login(ui, ADMIN)
    for run_id in ("ans-1", "ans-2"):
        await app.start("purchase", run_id, run_id=run_id)
    async with app.worker(queues=["default"]):
        async with asyncio.timeout(30):
            while {(await app.store.run_get(r)).status for r in ("ans-1", "ans-2")} \
                    != {"waiting"}:
                await asyncio.sleep(0.02)

    def shown(page: str) -> list[str]:
        return re.findall(r'<li class="card approval" data-run="([^"]+)"', page)

    page = (await ui.get("/approvals")).text
    assert shown(page) == ["ans-1", "ans-2"]
    form = re.search(r'action="/ui/runs/ans-1/approval"(.*?)</form>', page, re.S)
    assert form is not None
    fields = {k: html.unescape(v) for k, v in re.findall(
        r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(1))}
    r = await ui.post("/ui/runs/ans-1/approval",
                      data={**fields, "csrf": csrf, "decision": "approve"})
    assert r.status_code == 303 and r.headers["location"] == "/approvals"
    assert (await app.store.run_get("ans-1")).status == "waiting"  # (no worker yet)
    page = (await ui.get("/approvals")).text
    assert "Approved buy for run ans-1" in words(page)
    assert shown(page) == ["ans-2"], shown(page)
    assert shown((await ui.get("/ui/approvals")).text) == ["ans-2"]
    runs = (await ui.get("/runs")).text
    badged = [m for m in re.findall(
        r'<tr>\s*<td><span class="pill s-waiting">waiting</span>\s*'
        r'(<a class="pill s-approval"[^>]*>needs approval</a>)?\s*</td>\s*'
        r'<td class="mono"><a href="/runs/([^"]+)"', runs) if m[0]]
    assert [run for _, run in badged] == ["ans-2"], badged
    for part in ("/runs/ans-1", "/ui/runs/ans-1?part=head"):
        head = (await ui.get(part)).text
        assert (" · waiting for <b>approval of buy answered (approved), waiting for a "
                "worker</b>") in head, head
        assert 'action="/ui/runs/ans-1/approval"' not in head, head
        assert "<b>Answered: approved</b>; waiting for a worker" in head, head
    head = (await ui.get("/ui/runs/ans-2?part=head")).text
    assert " · waiting for <b>approval of buy</b>" in head, head
    assert 'action="/ui/runs/ans-2/approval"' in head, head
    bearer = {"Authorization": f"Bearer {READ}"}
    for query in ("", "?limit=10"):
        listed = (await ui.get(f"/api/v1/approvals{query}", headers=bearer)).json()
        assert {a["run_id"]: (a["awaiting_worker"], a["answered"])
                for a in listed["approvals"]} == {
            "ans-1": (True, True), "ans-2": (False, False)}, listed
    await app.signal("ans-2", "approval", {"approved": False})
    async with app.worker(queues=["default"]):
        assert (await app.handle("ans-1").result(timeout=30))["approved"] is True
        assert (await app.handle("ans-2").result(timeout=30))["approved"] is False
