"""Tether's own bookkeeping operations in a run's journal (a library's version marker
such as ``tether.ai.child-share``, the step deciding a child's budget share,
``tether.ai.child_share``, and the one rolling an ended child's spend up,
``<agent>.child_spend``) are labelled as such in ``tether show`` (``[bookkeeping:
...]``) and dimmed and labelled on the run page: an agent's timeline read them as
operations of its own code (until 2026-12-07). The journal and the run's document are
unchanged."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.web.helpers import ADMIN, READ
from tether import App
from tether.ai import Budget, call_child, set_budget

READ_HEADERS = {"Authorization": f"Bearer {READ}"}
BOOKKEEPING = {"tether.ai.child-share": "a library's version marker",
               "tether.ai.child_share": "a child's budget share",
               "tether.ai.child_spend": "a child's spend rolled up"}


@pytest.fixture
async def lead_run(store_url: str) -> AsyncIterator[App]:
    app = App(store_url)

    @app.workflow
    async def plain(task: str) -> str:
        return f"did {task}"

    @app.workflow
    async def lead() -> list[str]:
        set_budget(Budget(tokens=1000, on_exceed="fail"))
        return [await call_child(plain, [task]) for task in ("a", "b")]

    async with app:
        async with app.worker():
            handle = await app.start(lead, run_id="lead-1")
            assert await handle.result(timeout=30) == ["did a", "did b"]
        yield app


async def test_show_labels_the_bookkeeping_rows(lead_run: App) -> None:
    from tether.cli._runs import print_timeline
    from tether.cli._show_fit import print_fitted

    info = await lead_run.get_run("lead-1")
    names = [e["name"] for e in info.journal]
    assert set(BOOKKEEPING) <= set(names), names
    for draw in (lambda out: print_timeline(info, out),
                 lambda out: print_fitted(info, 200, out.write)):
        out = io.StringIO()
        draw(out)
        rows = [ln for ln in out.getvalue().splitlines() if re.match(r"\s*\d+\s+\w", ln)]
        assert len(rows) == len(info.journal), out.getvalue()
        for e, row in zip(info.journal, rows, strict=True):
            what = BOOKKEEPING.get(e["name"])
            if what is None:
                assert "[bookkeeping" not in row, row
            else:
                assert f"[bookkeeping: {what}]" in row, row


async def test_the_run_page_dims_and_labels_the_bookkeeping_rows(lead_run: App) -> None:
    from tether.serve import Tokens, create_app

    asgi = create_app(lead_run, tokens=Tokens({ADMIN: "admin", READ: "read"}), mcp=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                 base_url="http://127.0.0.1") as http:
        page = (await http.get("/runs/lead-1", headers=READ_HEADERS)).text
        doc = (await http.get("/api/v1/runs/lead-1", headers=READ_HEADERS)).json()
    rows = re.findall(r'<tr class="op ([^"]*)">(.*?)</tr>', page, re.S)
    assert len(rows) == len(doc["journal"])
    for e, (classes, row) in zip(doc["journal"], rows, strict=True):
        what = BOOKKEEPING.get(e["name"])
        assert ("bookkeeping" in classes.split()) is (what is not None), (e["name"], classes)
        assert ('class="bk-tag"' in row) is (what is not None), row
        if what is not None:
            assert f"Tether's own bookkeeping ({what.replace(chr(39), '&#39;')})" in row, row
    # The document is the journal as stored: no field added, no entry left out.
    assert all("bookkeeping" not in e for e in doc["journal"])
    assert [e["name"] for e in doc["journal"]] == [
        e["name"] for e in (await lead_run.get_run("lead-1")).journal]


def test_the_library_names_are_the_ones_the_faces_know() -> None:
    """The names ``_show.bookkeeping`` knows are the libraries' own: every marker they
    ask starts with one of its prefixes, and its step names are theirs."""
    from tether import _show
    from tether.ai import _agent, _budget
    from tether.integrations import openai_agents

    markers = [_budget.CHILD_SHARE_PATCH, _budget.ONE_RAISE_PATCH,
               _agent._LAST_TURN_RUNS_NO_TOOLS, _agent._CUT_REPLY_FAILS,
               _agent._REFUSAL_FAILS, openai_agents.CHILD_BUDGET_PATCH,
               openai_agents.AGENT_TOOL_PATCH, openai_agents.MCP_TOOL_PATCH]
    for marker in markers:
        assert _show.bookkeeping({"kind": "patch", "name": marker}), marker
    assert _show.CHILD_SHARE_STEP == _budget.CHILD_SHARE_STEP
    assert _show.bookkeeping({"kind": "step", "name": "researcher.child_spend"})
    assert _show.bookkeeping({"kind": "step", "name": "fetch"}) is None
    assert _show.bookkeeping({"kind": "patch", "name": "fetch-v2"}) is None
