"""The words of the operator pages: what replay saved, the inbox's count, a child wait
on a parent's timeline."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.web.helpers import ADMIN, ui_client
from tests.web.test_ui_and_cli import login
from tests.web.test_ui_waits import _until_waiting, _waits_box
from tether.serve import _ui


@pytest.fixture
async def ui(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with ui_client(sqlite_url) as http:
        yield http


def _row(page: str, run_id: str) -> str:
    """The runs table's row of ``run_id``."""
    row = re.search(rf'<tr>(?:(?!</tr>).)*href="/runs/{re.escape(run_id)}"(?:(?!</tr>).)*</tr>',
                    page, re.S)
    assert row is not None, f"no row of {run_id}"
    return html.unescape(row.group(0))


async def test_what_replay_saved_reads_as_saved_not_as_a_negative_cost(
        ui: httpx.AsyncClient) -> None:
    """A run whose paid call was answered from the journal on its next turn: its Cost
    cell says "$0.0006 saved by replay", not "\N{MINUS SIGN}$0.0006 saved" (a minus sign before a
    saving read as a refund, or as a cost below zero)."""
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("asked_then_wait", "q", run_id="sv-1")
    await _until_waiting(ui, "sv-1")
    await app.signal("sv-1", "go", 1)
    async with app.worker(queues=["default"]):
        assert await app.handle("sv-1").result(timeout=30) == ["answer to q", 1]
    cell = _row((await ui.get("/runs")).text, "sv-1")
    assert "$0.0006 saved by replay" in cell, cell
    assert "\N{MINUS SIGN}" not in cell and "-$" not in cell
    head = html.unescape((await ui.get("/runs/sv-1")).text)
    assert re.search(r"Saved by replay</div><div class=\"v\">\$0\.0006</div>", head), head


async def test_the_inbox_says_how_many_wait_and_which_a_page_shows(
        ui: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The inbox's heading counts the approvals waiting ("3 waiting"), and a page of
    several says which of them it shows ("Showing 1-2 of 3", "Showing 3 of 3"); an
    answered one leaves the count at once. It said "Approvals" alone: a page of 50
    said nothing of the others behind it."""
    from tests.web.test_ui_and_cli import _purchases_waiting
    from tether.serve import _ui

    monkeypatch.setattr(_ui, "APPROVALS_SHOWN", 2)
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    ids = [f"cnt-{i}" for i in range(3)]
    async with app.worker(queues=["default"], concurrency=4):
        await _purchases_waiting(app, ids)
        first = html.unescape((await ui.get("/approvals")).text)
        assert '<h1>Approvals <span class="h-count">3 waiting</span></h1>' in first
        assert "Showing 1\N{EN DASH}2 of 3" in first
        more = re.search(r'<a href="([^"]*)">More approvals', first)
        assert more is not None
        second = html.unescape((await ui.get(more.group(1))).text)
        assert "3 waiting" in second and "Showing 3 of 3" in second
        # (the fragment the page redraws itself with says the same)
        refresh = re.search(r'data-refresh="([^"]*)"', second)
        assert refresh is not None
        assert "Showing 3 of 3" in html.unescape((await ui.get(refresh.group(1))).text)
        await app.signal("cnt-0", "approval", {"approved": False})
        await app.handle("cnt-0").result(timeout=30)
        page = html.unescape((await ui.get("/approvals")).text)
        assert '<span class="h-count">2 waiting</span>' in page
        assert "Showing" not in page  # (all on one page: nothing to place)
        for run_id in ids[1:]:
            await app.signal(run_id, "approval", {"approved": False})
        for run_id in ids[1:]:
            await app.handle(run_id).result(timeout=30)
    page = (await ui.get("/approvals")).text
    assert "h-count" not in page and "Nothing waits for a person right now" in page


def test_the_inbox_count_past_its_bound_says_so() -> None:
    """Past ``APPROVALS_COUNTED`` the count says "10,000+" and a page past the counted
    ones says where it is without a number it does not know."""
    from tether.serve._ui import APPROVALS_COUNTED, inbox_count

    bound = APPROVALS_COUNTED
    assert inbox_count(bound, 0, 50, more=True) == {
        "waiting": f"{bound:,}+ waiting", "showing": f"Showing 1\N{EN DASH}50 of {bound:,}+"}
    assert inbox_count(bound, bound, 50, more=True)["showing"] == (
        f"Showing 50 past the oldest {bound:,}")
    # (an answer between the count and the page: the total is what the page shows)
    assert inbox_count(60, 50, 12, more=False)["showing"] == "Showing 51\N{EN DASH}62 of 62"


def _timeline_row(page: str, name: str) -> str:
    """The timeline's ``child_result`` row named ``name`` (a child's run id)."""
    rows = re.findall(r'<tr class="op k-child_result[^"]*">.*?</tr>', page, re.S)
    found = [r for r in rows if f">{name}</a>" in r]
    assert len(found) == 1, rows
    return html.unescape(found[0])


async def test_a_child_wait_is_a_row_of_the_parents_timeline(ui: httpx.AsyncClient) -> None:
    """A parent waiting for a child shows that wait on its timeline as other waits are
    drawn: the child's id linked, its workflow, how long the parent has waited so far
    (ticking) and what the child is at; once the child ended, the row says its workflow
    and how it ended (completed, failed). The timeline showed the ``child_start`` row
    and nothing of the wait until the child's result was journaled."""
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("waiting_parent", run_id="cw-1")
    await _until_waiting(ui, "cw-1", "cw-1.0")
    row = _timeline_row((await ui.get("/runs/cw-1")).text, "cw-1.0")
    assert 'href="/runs/cw-1.0"' in row and "o-waiting" in row
    assert "child run of <b>wait_go</b>, now waiting (for signal go)" in row
    assert "data-ticking=" in row  # (how long the parent has waited, going on)
    await app.signal("cw-1.0", "go", 1)
    async with app.worker(queues=["default"]):
        assert await app.handle("cw-1").result(timeout=30) == 1
    row = _timeline_row((await ui.get("/runs/cw-1")).text, "cw-1.0")
    assert "child run of <b>wait_go</b>: completed" in row and "data-ticking" not in row
    assert re.search(r'<td class="num">[0-9.]+ (ms|s)</td>', row), row
    await app.start("failing_parent", "x", run_id="cf-1")
    async with app.worker(queues=["default"]):
        for _ in range(600):
            if (await app.get_run("cf-1")).status == "failed":
                break
            await asyncio.sleep(0.05)
    row = _timeline_row((await ui.get("/runs/cf-1")).text, "cf-1.0")
    assert "child run of <b>fixable</b>: failed" in row, row


async def test_the_runs_list_says_an_approval_wait_as_tether_runs_does(
        ui: httpx.AsyncClient) -> None:
    """A run waiting for an approval: its Waiting-for cell says "approval of buy", as
    ``tether runs`` and the run page's head say it; it said the raw "signal approval"
    (the signal that answers it), the guide's "as `tether runs` says them" untrue."""
    from tests.web.test_ui_and_cli import _purchases_waiting

    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    async with app.worker(queues=["default"]):
        await _purchases_waiting(app, ["aw-1"])
    row = _row((await ui.get("/runs")).text, "aw-1")
    assert ">approval of buy</td>" in row and ">signal approval<" not in row, row
    assert "needs approval" in row


async def test_the_tokens_card_says_how_many_are_the_child_runs(ui: httpx.AsyncClient) -> None:
    """A parent whose child runs paid 300 tokens: its Tokens card reads 300 (rolled up,
    as Cost) and its line says they are the children's; it read "300" over "0 in · 0
    out", the 300 nowhere accounted for."""
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    async with app.worker(queues=["default"], concurrency=4):
        assert await (await app.start("paid_family", 3, run_id="tk")).result(30) == [0, 1, 2]
    page = html.unescape((await ui.get("/runs/tk")).text)
    stats = page[page.index('<div class="stats">'): page.index("Saved by replay")]
    assert '<div class="v">300</div>' in stats
    assert "0 in · 0 out · 300 in child runs" in stats, stats


async def _until_awaiting(ui: httpx.AsyncClient, run_id: str, n: int) -> list[str]:
    """Run a worker until ``run_id`` waits for ``n`` of its children at once; their ids."""
    app = ui.app  # type: ignore[attr-defined]
    async with app.worker(queues=["default"]):
        for _ in range(600):
            run = await app.get_run(run_id)
            awaited = re.findall(r"child (\S+)", run.waiting_for or "")
            if run.status == "waiting" and len(awaited) == n:
                return awaited
            await asyncio.sleep(0.05)
    raise AssertionError(f"{run_id} never waited for {n} children")


def _fan_out_row(page: str) -> str:
    """The timeline's row of a wait for several children at once."""
    rows = re.findall(r'<tr class="op k-child_result[^"]*">.*?</tr>', page, re.S)
    found = [r for r in rows if "child runs at once" in r]
    assert len(found) == 1, rows
    return html.unescape(re.sub(r"\s+", " ", found[0]))


async def test_a_wait_for_several_children_is_one_row_naming_each(
        ui: httpx.AsyncClient) -> None:
    """A parent awaiting three children together (``asyncio.gather``) has a timeline row
    for that wait: how many, how many ended, and each child linked with its workflow and
    status, ended first; the wait box says the same. The row and the body fragment the
    page redraws itself with follow the children as they end, and the last child
    awaited is still one of three; the runs table says "2 child runs". The page drew no
    row for the wait, and the wait box and a row named "fo.2 or child fo.4" as one run,
    "not found"."""
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    await app.start("fan_out_parent", run_id="fo")
    first, second = await _until_awaiting(ui, "fo", 2)
    page = (await ui.get("/runs/fo")).text
    row = _fan_out_row(page)
    assert "3 child runs" in row and "o-waiting" in row and "data-ticking=" in row
    assert "waits for 3 child runs at once: 1 ended, 2 not yet" in row, row
    links = re.findall(r'<li><a class="mono" href="/runs/([^"]+)".*?</li>', row)
    assert links == ["fo.0", first, second], row
    assert re.search(r'fo\.0</a> <b>greet</b> <span class="pill s-completed">completed', row)
    assert (f'{second}</a> <b>wait_go</b> <span class="pill s-waiting">waiting</span>'
            ' <span class="muted small">for signal go</span>') in row, row
    box = html.unescape(_waits_box(page))
    assert "not found" not in row + box and " or child " not in row + box
    assert "Waiting for 3 child runs at once" in box and "1 ended, 2 not yet" in box
    assert f'href="/runs/{second}"' in box and "answer a waiting child on its page" in box
    assert _head_wait(page)[0] == "3 child runs at once", _head_wait(page)
    cell = _row((await ui.get("/runs")).text, "fo")
    assert f'title="child {first} or child {second}">2 child runs</td>' in cell, cell
    await app.signal(first, "go", 1)
    await _until_awaiting(ui, "fo", 1)
    row = _fan_out_row((await ui.get("/runs/fo?part=body")).text)
    assert "waits for 3 child runs at once: 2 ended, 1 not yet" in row, row
    # (it began when the last child was started, not at the result journaled since)
    doc = await app.get_run("fo")
    last_start = max(e["finished_at"] for e in doc.journal if e["kind"] == "child_start")
    assert f'datetime="{_ui.iso_utc(last_start)}"' in row, row
    # (the head says so too: how many, since the last child started; it named the child
    # left as the run's one wait, "so far" from the result journaled since)
    said, since = _head_wait((await ui.get("/runs/fo")).text)
    assert said == "3 child runs at once" and since == _ui.iso_utc(last_start), said
    assert re.findall(r'<li><a class="mono" href="/runs/([^"]+)"', row) == ["fo.0", first, second]
    await app.signal(second, "go", 2)
    async with app.worker(queues=["default"]):
        assert await app.handle("fo").result(timeout=30) == ["hello a", 1, 2]
    page = (await ui.get("/runs/fo")).text
    assert "child runs at once" not in page
    assert "child run of <b>wait_go</b>: completed" in html.unescape(page)


def _head_wait(page: str) -> tuple[str, str | None]:
    """What a run page's head says the run waits for, and the ISO time of since when."""
    found = re.search(r'waiting for <b>(.*?)</b>(?: <span class="waited"[^>]*data-at="([^"]+)")?',
                      page)
    assert found is not None, page
    return html.unescape(found.group(1)), found.group(2)


def test_a_loop_of_child_calls_is_no_fan_out() -> None:
    """Children awaited one after another (a call in a loop) are no fan-out: the result
    of one taken before the next started is not counted with it; one taken after it
    started (a sibling of a gather) is."""
    from tether.serve._ui import awaited_children, fan_out_taken

    journal = [
        {"position": 0, "kind": "child_start", "name": "w", "result": "p.0",
         "status": "ok", "started_at": 1.0, "finished_at": 1.0},
        {"position": 1, "kind": "child_result", "name": "p.0", "status": "ok",
         "started_at": 2.0, "finished_at": 2.0},
        {"position": 2, "kind": "child_start", "name": "w", "result": "p.2",
         "status": "ok", "started_at": 2.0, "finished_at": 2.0},
    ]
    assert fan_out_taken(journal, ["p.2"]) == []
    journal[1] = {**journal[1], "started_at": 3.0, "finished_at": 3.0}
    assert [e["name"] for e in fan_out_taken(journal, ["p.2"])] == ["p.0"]
    known = {"p.0": "w", "a or child b": "w"}
    assert awaited_children("child a or child b", known) == (["a or child b"], [])
    assert awaited_children("child p.0 or child p.2", known) == (["p.0", "p.2"], [])
    assert awaited_children("child p.0 or signal go", known) == (["p.0"], ["signal go"])
    assert awaited_children("signal go", known) is None


async def test_a_broken_page_link_says_so_in_a_persons_words(ui: httpx.AsyncClient) -> None:
    """A runs or approvals page whose link holds a cursor this server did not give (cut
    short in a chat message, edited) says the link is broken and where to start again;
    it said "cursor is not one this API returned" under "Bad request", to a person who
    followed a link and called no API."""
    await login(ui, ADMIN)
    for path, start in (("/runs?status=failed&cursor=garbage", "the newest runs"),
                        ("/approvals?cursor=WzEsMl0", "the oldest approvals")):
        r = await ui.get(path)
        assert r.status_code == 400, r.text
        page = html.unescape(r.text)
        assert "<h1>This link is broken</h1>" in page, page
        assert ("This link's cursor, where the list goes on from, is not one this server "
                f"gave: the link was cut short or edited. Start again from {start}.") in page
        assert "API" not in page


async def test_a_fan_out_beside_a_child_start_it_cannot_read(ui: httpx.AsyncClient) -> None:
    """A journal whose ``child_start`` result this server cannot decrypt (the payload
    hook's marker, a dict, in place of the child's id) is drawn: that start is not
    counted, the awaited children are listed (not found here). Its dict was looked up
    in a set of ids: TypeError, unhashable, a 500 of the run's page."""
    app = ui.app  # type: ignore[attr-defined]
    sealed = {"unreadable_payload": True, "key_id": "k1"}
    doc = {"run_id": "sealed-parent", "waiting_since": 5.0, "journal": [
        {"position": 0, "kind": "child_start", "name": "w", "result": sealed,
         "status": "ok", "started_at": 1.0, "finished_at": 1.0},
        {"position": 1, "kind": "child_start", "name": "w", "result": "sealed-parent.1",
         "status": "ok", "started_at": 2.0, "finished_at": 2.0}]}
    view = await _ui._children_view(app, doc, ["sealed-parent.1", "sealed-parent.3"], [])
    assert [c["id"] for c in view["children"]] == ["sealed-parent.1", "sealed-parent.3"]
    assert view["since"] == 2.0 and view["count"] == 2 and view["ended"] == 0
