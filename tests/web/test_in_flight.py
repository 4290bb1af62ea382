"""The operations a run has in flight: each has a timeline row on its page (position,
kind, name, state ``running``, its attempt, its start, *running for*) and is listed in
the run's document (``in_flight``, ``GET /api/v1/runs/{id}`` and ``tether show --json``),
the run's first operation included, from the attempt history as soon as the worker has
written the attempt. Until 2026-12-06 a run in its first operation showed no row ("No
operation has ended yet"), and one in a later operation showed only the ended ones.

The steps are held by the test (``tests.web.webapp.RELEASED``), with a real worker
in-process, on both stores (the attempt history's reads differ: SQLite reads a first
attempt that succeeded from the journal, ``attempts_from_journal``)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.web import webapp
from tests.web.helpers import ADMIN, ui_client
from tests.web.test_ui_and_cli import login
from tether import _replay


@pytest.fixture
async def ui(store_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with ui_client(store_url) as http:
        yield http


async def _doc(ui: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    r = await ui.get(f"/api/v1/runs/{run_id}", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _until_in_flight(ui: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """The run's document once it lists an operation in flight (the worker writes an
    attempt within 50 ms of its start; this waits up to 30 s for it)."""
    for _ in range(600):
        doc = await _doc(ui, run_id)
        if doc["in_flight"]:
            return doc
        await asyncio.sleep(0.05)
    raise AssertionError(f"{run_id} never had an operation in flight: {doc}")


def _tag(name: str) -> str:
    """A tag of its own for each test's run (``RELEASED`` outlives a test)."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr class="op .*?</tr>', page, re.S)


def _running_row(page: str) -> str:
    running = [r for r in _rows(page) if "st-running" in r.split(">", 1)[0]]
    assert len(running) == 1, page
    return running[0]


async def test_a_run_in_its_first_step_shows_it_running(ui: httpx.AsyncClient) -> None:
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    tag = _tag("first")
    await app.start("held_first", tag, run_id="if/1")
    async with app.worker(queues=["default"]) as worker:
        try:
            doc = await _until_in_flight(ui, "if/1")
            assert doc["journal"] == []
            [op] = doc["in_flight"]
            assert op == {"position": 0, "kind": "step", "name": "held", "attempt": 1,
                          "worker_id": worker.worker_id, "started_at": op["started_at"]}
            assert isinstance(op["started_at"], float)
            for page in ((await ui.get("/runs/if/1")).text,
                         (await ui.get("/ui/runs/if/1?part=body")).text):
                assert "No operation" not in page and "data-unknown" not in page
                row = _running_row(page)
                assert 'class="op k-step st-running inflight"' in row
                assert '<td class="num mono">0<a class="forkhere"' in row
                assert '<span class="kind">step</span>' in row
                assert 'title="held">held</td>' in row
                assert '<span class="pill o-running">running</span>' in row
                assert '<td class="num">1</td>' in row
                assert re.search(r'<td class="small"><time datetime="[^"]+Z" title="[^"]+ UTC">'
                                 r'[^<]+ UTC</time></td>', row)
                assert re.search(r'<span class="muted" data-ticking="[0-9.e-]+">[0-9.]+ '
                                 r'(µs|ms|s|min|h)</span><span class="muted">…</span>', row)
                assert "attempt 1 in flight on worker" in row
                assert f'title="{worker.worker_id}"' in row
            # The head counts the journal's operations (none has ended), the attempt
            # history's attempts (the one running) and the one in flight.
            head = (await ui.get("/ui/runs/if/1?part=head")).text
            assert re.search(r'<div class="k">Operations</div><div class="v">0</div>', head)
            assert "0 failed · 1 attempt · 1 in flight</div>" in re.sub(
                r"<span[^>]*>|</span>", "", head), head
            webapp.RELEASED.add(tag)
            assert await app.handle("if/1").result(timeout=30) == tag
        finally:
            webapp.RELEASED.add(tag)
    doc = await _doc(ui, "if/1")
    assert doc["in_flight"] == []
    # (and the API's description says what it holds)
    spec = (await ui.get("/openapi.json")).json()["components"]["schemas"]["Run"]
    fields = spec["properties"]["in_flight"]["items"]["required"]
    assert fields == ["position", "kind", "name", "attempt", "worker_id", "started_at"]
    page = (await ui.get("/runs/if/1")).text
    [row] = _rows(page)
    assert "st-ok" in row and "inflight" not in row and "in flight" not in row


async def test_a_later_step_in_flight_has_its_row_after_the_ended_ones(
        ui: httpx.AsyncClient) -> None:
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    tag = _tag("later")
    await app.start("held_later", tag, run_id="if-2")
    async with app.worker(queues=["default"]):
        try:
            doc = await _until_in_flight(ui, "if-2")
            assert [(e["position"], e["name"], e["status"]) for e in doc["journal"]] == [
                (0, "hello", "ok")]
            assert [(o["position"], o["name"], o["attempt"]) for o in doc["in_flight"]] == [
                (1, "held", 1)]
            rows = _rows((await ui.get("/ui/runs/if-2?part=body")).text)
            assert len(rows) == 2
            assert "st-ok" in rows[0] and 'title="hello">hello</td>' in rows[0]
            assert "st-running" in rows[1] and 'title="held">held</td>' in rows[1]
            webapp.RELEASED.add(tag)
            assert await app.handle("if-2").result(timeout=30) == f"hello {tag} / {tag}"
        finally:
            webapp.RELEASED.add(tag)
    rows = _rows((await ui.get("/runs/if-2")).text)
    assert [("st-ok" in r, "in flight" in r) for r in rows] == [(True, False)] * 2


async def test_a_run_running_again_after_its_wait_says_no_wait(
        ui: httpx.AsyncClient) -> None:
    """Once a signal woke a run and a worker runs it again, no face says it waits: its
    document and the runs list give ``waiting_for`` ``null``, its page's head says
    *running for* and no *waiting for*, the runs table's last cell is empty. Before, the
    run's row kept its last wait's ``waiting_for`` (a claim does not clear it), and a
    running run read "running for 37.11 s · waiting for signal go" until it waited
    again or ended (``tether show``: "waiting for: signal go")."""
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    tag = _tag("woken")
    await app.start("held_after_signal", tag, run_id="if-woken")
    async with app.worker(queues=["default"]):
        try:
            for _ in range(600):
                doc = await _doc(ui, "if-woken")
                if doc["status"] == "waiting":
                    break
                await asyncio.sleep(0.05)
            assert doc["waiting_for"] == "signal go"
            await app.signal("if-woken", "go", "ok")
            doc = await _until_in_flight(ui, "if-woken")
            assert doc["status"] == "running" and doc["waiting_for"] is None
            listed = (await ui.get("/api/v1/runs?workflow=held_after_signal",
                                   headers={"Authorization": f"Bearer {ADMIN}"})).json()
            assert [(r["status"], r["waiting_for"]) for r in listed["runs"]] == [
                ("running", None)]
            assert (await app.get_run("if-woken")).waiting_for is None
            head = (await ui.get("/ui/runs/if-woken?part=head")).text
            assert "running for" in head and "waiting for" not in head
            table = (await ui.get("/runs?workflow=held_after_signal")).text
            assert "signal go" not in table
            webapp.RELEASED.add(tag)
            assert await app.handle("if-woken").result(timeout=30) == f"ok / {tag}"
        finally:
            webapp.RELEASED.add(tag)


@contextlib.asynccontextmanager
async def _shown_in_first_step(ui: httpx.AsyncClient, name: str) -> AsyncIterator[list[str]]:
    """A run of ``held_first`` held in its first step, and what ``tether show`` prints of
    it then: a pipe's lines and a terminal's of 80 columns. Released (and awaited) after
    the block."""
    from tether.cli._runs import print_timeline
    from tether.cli._show_fit import print_fitted

    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    tag, run_id = _tag(name), f"if-{name}"
    await app.start("held_first", tag, run_id=run_id)
    async with app.worker(queues=["default"]):
        try:
            await _until_in_flight(ui, run_id)
            info = await app.get_run(run_id)
            wide, fitted = io.StringIO(), io.StringIO()
            print_timeline(info, wide)
            print_fitted(info, 80, fitted.write)
            yield [wide.getvalue(), fitted.getvalue()]
            webapp.RELEASED.add(tag)
            await app.handle(run_id).result(timeout=30)
        finally:
            webapp.RELEASED.add(tag)


async def test_tether_show_gives_an_attempt_in_flight_its_time_so_far(
        ui: httpx.AsyncClient) -> None:
    """``tether show`` (a pipe's lines and a terminal's, 80 columns) prints the attempt
    in flight with how long it has run, then ``…``, as the run page's running row says
    *running for*; ended attempts keep their durations. Before, its duration was ``-``
    (with an empty table above it, for a run in its first step)."""
    async with _shown_in_first_step(ui, "cli") as texts:
        for text in texts:
            [line] = [ln for ln in text.splitlines() if " running " in ln]
            assert re.search(r" #?1 +running +[0-9.]+ (µs|ms|s|min)… ", line), text


async def test_tether_show_of_a_run_in_its_first_step_says_so_not_an_empty_table(
        ui: httpx.AsyncClient) -> None:
    """A run in its first step has recorded no operation: ``tether show`` (a pipe's
    lines and a terminal's) prints a note saying so where the journal table goes, and
    the attempts block under it still shows the step in flight. Before, it printed the
    table's header with no rows under it (the page says "No operations yet")."""
    async with _shown_in_first_step(ui, "empty") as texts:
        for text in texts:
            assert "RESULT / ERROR" not in text, text
            assert ("\nno operations recorded yet: its first step is in flight "
                    "(attempts, below)\n") in text, text
            journal, attempts = text.split("\nattempts:\n")
            assert "KIND" not in journal
            [line] = [ln for ln in attempts.splitlines() if " running " in ln]
            assert re.search(r" held +#?1 +running ", line), text


async def test_a_step_retried_in_flight_is_one_row_with_its_attempt(
        ui: httpx.AsyncClient) -> None:
    """Attempt 1 failed (the step's pending entry), attempt 2 runs: one row, running,
    attempt 2, with the first attempt's error."""
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    tag = _tag("again")
    await app.start("held_retry", tag, run_id="if-3")
    async with app.worker(queues=["default"]):
        try:
            doc = await _until_in_flight(ui, "if-3")
            [entry] = doc["journal"]
            assert (entry["status"], entry["attempts"]) == ("pending", 1)
            [op] = doc["in_flight"]
            assert (op["position"], op["name"], op["attempt"]) == (0, "held_again", 2)
            page = (await ui.get("/runs/if-3")).text
            [row] = _rows(page)
            assert "st-running" in row and '<td class="num">2</td>' in row
            assert "attempt 2 in flight on worker" in row
            assert f"previous attempt: TimeoutError: provider timed out ({tag})" in row
            assert "retrying" not in row and "next at" not in row
            webapp.RELEASED.add(tag)
            assert await app.handle("if-3").result(timeout=30) == tag
        finally:
            webapp.RELEASED.add(tag)
    [row] = _rows((await ui.get("/runs/if-3")).text)
    assert "st-ok" in row and '<td class="num">2</td>' in row and "in flight" not in row


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_a_step_not_yet_written_is_said_to_be_unknown(
        ui: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The attempt history is written in batches: a step younger than the write delay
    (50 ms; here held back for good) is not known to the store. The page says so (and
    marks itself, ``data-unknown``, for app.js to look again) rather than nothing."""
    monkeypatch.setattr(_replay, "ATTEMPT_WRITE_DELAY", 3600.0)
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    first, later = _tag("unwritten"), _tag("unwritten-later")
    await app.start("held_first", first, run_id="if-4")
    await app.start("held_later", later, run_id="if-5")
    async with app.worker(queues=["default"]):
        try:
            for _ in range(600):
                if {first, later} <= webapp.STARTED:
                    break
                await asyncio.sleep(0.05)
            assert (await _doc(ui, "if-4"))["in_flight"] == []
            page = (await ui.get("/ui/runs/if-4?part=body")).text
            assert "<p class=\"empty\" data-unknown>No operation of this run is known yet: " \
                   "it is in its first, or before it." in page
            assert "within about 50 ms of its start" in page
            page = (await ui.get("/ui/runs/if-5?part=body")).text
            assert len(_rows(page)) == 1
            assert re.search(r'<tr class="unknown" data-unknown><td colspan="8" '
                             r'class="muted small">No operation is known to be in flight',
                             page)
            webapp.RELEASED.update({first, later})
            assert await app.handle("if-4").result(timeout=30) == first
            await app.handle("if-5").result(timeout=30)
        finally:
            webapp.RELEASED.update({first, later})
    for run_id in ("if-4", "if-5"):
        assert "data-unknown" not in (await ui.get(f"/runs/{run_id}")).text


async def test_a_model_call_in_flight_is_a_running_row(ui: httpx.AsyncClient) -> None:
    """A durable LLM call is a step (``llm:MODEL``): while the model has not answered,
    its row is running (a scripted server holds the answer until the test lets it go)."""
    from tether.ai import LLM, user_message
    from tether.testing.llm_server import Reply, ScriptedLLMServer

    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    go = asyncio.Event()

    async def answer(_request: object) -> Reply:
        await go.wait()
        return Reply("Replay pays for no call twice.", input_tokens=9, output_tokens=7)

    async with ScriptedLLMServer(script=[answer]) as server, \
            LLM("openai:gpt-4.1-mini", base_url=server.base_url, api_key="k",
                breaker=None) as llm:

        @app.workflow
        async def ask(question: str) -> str:
            reply = await llm.stream([user_message(question)])
            return reply.text or ""

        await app.start("ask", "Why durable?", run_id="if-llm")
        async with app.worker(queues=["default"]):
            try:
                doc = await _until_in_flight(ui, "if-llm")
                [op] = doc["in_flight"]
                assert (op["position"], op["name"], op["attempt"]) == (
                    0, "llm:openai:gpt-4.1-mini", 1)
                row = _running_row((await ui.get("/runs/if-llm")).text)
                assert 'title="llm:openai:gpt-4.1-mini">llm:openai:gpt-4.1-mini</td>' in row
                go.set()
                assert await app.handle("if-llm").result(timeout=30) == \
                    "Replay pays for no call twice."
            finally:
                go.set()
    [row] = _rows((await ui.get("/runs/if-llm")).text)
    assert "st-ok" in row and "in flight" not in row
    assert "<b>gpt-4.1-mini</b> · 9 in / 7 out" in row
