"""A signal wait without a timeout journals no start (its entry is written when the
signal comes; a timed wait journals its deadline, and its start with it, when it
begins). Its start is the completion of the operation before it, or the run's
creation for a first operation (``tether._show.signal_wait_starts``): the run's page,
its HTTP document and ``tether show`` say when such a wait began, and once the signal
came how long it took, as they do for a timed wait. Until 2026-12-06 they showed no
start and no duration: "how long did the approval take" was not answerable."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import tether
from tests import forked
from tests.web.helpers import READ, served_app
from tether import App

READ_HEADERS = {"Authorization": f"Bearer {READ}"}


def make_app(url: str) -> App:
    app = App(url)

    @app.step
    async def prepare() -> str:
        return "draft"

    @app.workflow
    async def two_answers() -> list[Any]:
        await prepare()
        first = await tether.wait_for_signal("approve")
        second = await tether.wait_for_signal("approve")
        return [first, second]

    @app.workflow
    async def answer_and_nap() -> Any:
        await prepare()
        answer, _ = await asyncio.gather(tether.wait_for_signal("approve"),
                                         tether.sleep(0.3))
        return answer

    @app.workflow
    async def session(turn: int) -> Any:
        if turn == 0:
            await prepare()
            tether.continue_as_new(1)
        return await tether.wait_for_signal("go")

    @app.workflow
    async def first_thing() -> Any:
        return await tether.wait_for_signal("go")

    @app.workflow
    async def delegate() -> Any:
        await prepare()
        return await tether.call(first_thing)

    return app


@pytest.fixture
async def served(store_url: str) -> AsyncIterator[tuple[App, httpx.AsyncClient]]:
    async with served_app(make_app(store_url)) as pair:
        yield pair


async def _until(app: App, run_id: str, check: Any, **options: Any) -> None:
    """Run a worker (of ``options``) until ``check(info)`` holds for the run."""
    async with app.worker(**options):
        for _ in range(600):
            if check(await app.get_run(run_id)):
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{run_id} never got there")


def _waiting(info: Any) -> bool:
    return str(info.status) == "waiting"


def _show(run_id: str, url: str, *more: str) -> str:
    done = forked.run([sys.executable, "-m", "tether", "show", run_id, *more, "--db", url],
                      capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return str(done.stdout)


async def _document(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    r = await http.get(f"/api/v1/runs/{run_id}", headers=READ_HEADERS)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _signal_rows(page: str) -> list[list[str]]:
    """The cells of the page's timeline rows of signal waits."""
    rows = re.findall(r'<tr class="op k-signal [^"]*">(.*?)</tr>', page, re.S)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows]


async def test_an_untimed_signal_wait_shows_its_start_and_duration(
        served: tuple[App, httpx.AsyncClient], store_url: str) -> None:
    app, http = served
    handle = await app.start("two_answers", run_id="ap-1")
    await _until(app, "ap-1", _waiting)
    # Waiting: the wait began when the step before it ended; nothing is journaled for it.
    doc = await _document(http, "ap-1")
    step = doc["journal"][0]
    assert [e["kind"] for e in doc["journal"]] == ["step"]
    assert doc["waiting_since"] == step["finished_at"]
    page = (await http.get("/runs/ap-1", headers=READ_HEADERS)).text
    [row] = _signal_rows(page)
    assert "not arrived yet" in row[7] and row[5] != "\u2013" and "data-ticking" in row[6]
    assert "so far)" in page  # the head: "waiting for signal approve (... so far)"
    shown = _show("ap-1", store_url)
    assert re.search(r"waiting for: signal approve \(since \d{4}-\d\d-\d\d ", shown), shown

    await asyncio.sleep(0.05)  # (a person answering; no time is asserted)
    await app.signal("ap-1", "approve", "yes")
    await _until(app, "ap-1", lambda i: _waiting(i) and len(i.journal) == 2)
    await asyncio.sleep(0.05)
    await app.signal("ap-1", "approve", "again")
    async with app.worker():
        assert await handle.result(timeout=30) == ["yes", "again"]

    doc = await _document(http, "ap-1")
    assert doc["waiting_since"] is None
    entries = doc["journal"]
    assert [e["kind"] for e in entries] == ["step", "signal", "signal"]
    for before, wait in itertools.pairwise(entries):
        # Each wait began when the operation before it ended (the second: when the
        # first took its signal), and took until its own signal was taken.
        assert wait["started_at"] == before["finished_at"]
        assert wait["started_at"] <= wait["finished_at"]
        assert wait["duration"] == wait["finished_at"] - wait["started_at"]
    assert json.loads(_show("ap-1", store_url, "--json"))["journal"] == entries
    shown = _show("ap-1", store_url)
    signal_lines = [line for line in shown.splitlines() if " signal " in line]
    assert len(signal_lines) == 2 and not any(" - " in line for line in signal_lines), shown
    page = (await http.get("/runs/ap-1", headers=READ_HEADERS)).text
    rows = _signal_rows(page)
    assert len(rows) == 2
    for cells in rows:
        assert cells[5] != "\u2013" and cells[6] not in ("\u2013", ""), cells


async def test_a_first_operation_waits_from_the_runs_creation(
        served: tuple[App, httpx.AsyncClient]) -> None:
    """A wait that is the run's first operation has no operation before it: it began
    when the run did, at its creation at the earliest."""
    app, http = served
    handle = await app.start("first_thing", run_id="ff-1")
    await _until(app, "ff-1", _waiting)
    doc = await _document(http, "ff-1")
    assert doc["journal"] == [] and doc["waiting_since"] == doc["created_at"]
    await app.signal("ff-1", "go", 1)
    async with app.worker():
        assert await handle.result(timeout=30) == 1
    [wait] = (await _document(http, "ff-1"))["journal"]
    assert wait["started_at"] == doc["created_at"] <= wait["finished_at"]
    assert wait["duration"] == wait["finished_at"] - wait["started_at"]


async def test_a_wait_released_again_keeps_its_start(
        served: tuple[App, httpx.AsyncClient]) -> None:
    """Released on the signal and a timer together, the run is woken by the timer and
    released again on the signal alone: the wait's start is still the end of the step
    before it (not the second release), while it waits and once its signal came. Its
    entry takes the position between the step's and the timer's."""
    app, http = served
    handle = await app.start("answer_and_nap", run_id="an-1")
    await _until(app, "an-1", lambda i: _waiting(i) and len(i.journal) == 2
                 and i.journal[1]["status"] == "ok", sticky_wait=0.0)
    doc = await _document(http, "an-1")
    step, timer = doc["journal"]
    assert (step["position"], timer["position"], timer["status"]) == (0, 2, "ok")
    assert doc["waiting_since"] == step["finished_at"] < timer["finished_at"]
    await app.signal("an-1", "approve", "yes")
    async with app.worker():
        assert await handle.result(timeout=30) == "yes"
    wait = (await _document(http, "an-1"))["journal"][1]
    assert wait["kind"] == "signal" and wait["started_at"] == step["finished_at"]
    assert wait["duration"] == wait["finished_at"] - wait["started_at"] >= 0


async def test_a_generations_first_wait_starts_at_the_end_of_the_one_before(
        served: tuple[App, httpx.AsyncClient]) -> None:
    """Continued as new, a run's next generation starts after the last operation of
    the one before: a wait that is its first operation starts there, not at the run's
    creation."""
    app, http = served
    handle = await app.start("session", 0, run_id="cn-1")
    await _until(app, "cn-1", lambda i: _waiting(i) and i.generation == 1)
    doc = await _document(http, "cn-1")
    [step] = doc["history"][0]["journal"]
    assert doc["journal"] == [] and doc["waiting_since"] == step["finished_at"]
    assert step["finished_at"] > doc["created_at"]
    await app.signal("cn-1", "go", 2)
    async with app.worker():
        assert await handle.result(timeout=30) == 2
    [wait] = (await _document(http, "cn-1"))["journal"]
    assert wait["started_at"] == step["finished_at"] <= wait["finished_at"]


async def test_a_wait_for_a_child_shows_its_start_and_duration(
        served: tuple[App, httpx.AsyncClient], store_url: str) -> None:
    """A child's result is journaled when a replay finds the child ended, with that
    moment as both its start and end: until 2026-12-07 the wait for a child read 0 µs
    on the page and in ``tether show`` however long the run waited, and a run waiting
    for its child had no ``waiting_since``. Its start is derived as a signal wait's:
    the end of the operation before it (here the child's start)."""
    app, http = served
    handle = await app.start("delegate", run_id="dg-1")
    await _until(app, "dg-1", lambda i: _waiting(i) and len(i.journal) == 2)
    await _until(app, "dg-1.1", _waiting)
    doc = await _document(http, "dg-1")
    _step, start = doc["journal"]
    assert start["kind"] == "child_start" and doc["waiting_for"] == "child dg-1.1"
    assert doc["waiting_since"] == start["finished_at"]
    shown = _show("dg-1", store_url)
    assert re.search(r"waiting for: child dg-1\.1 \(since \d{4}-\d\d-\d\d ", shown), shown

    await app.signal("dg-1.1", "go", "done")
    async with app.worker():
        assert await handle.result(timeout=30) == "done"
    doc = await _document(http, "dg-1")
    _step, start, result = doc["journal"]
    assert result["kind"] == "child_result"
    # The child took its signal after the parent had begun waiting for it: the wait
    # lasted from the child's start until the parent took its result.
    child = await _document(http, "dg-1.1")
    [signal] = child["journal"]
    assert result["started_at"] == start["finished_at"] < signal["finished_at"]
    assert signal["finished_at"] <= result["finished_at"]
    assert result["duration"] == result["finished_at"] - result["started_at"]
    assert json.loads(_show("dg-1", store_url, "--json"))["journal"] == doc["journal"]
    page = (await http.get("/runs/dg-1", headers=READ_HEADERS)).text
    [row] = re.findall(r'<tr class="op k-child_result [^"]*">(.*?)</tr>', page, re.S)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    assert cells[6].strip() not in ("0 \u00b5s", "\u2013", ""), cells
