"""The approver's forms (the inbox and a run page) in process, on both stores: an
answer goes to the approval the page showed, or to none, and the person who was late
is told what happened to theirs."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.web.helpers import ADMIN, ui_client
from tests.web.test_ui_and_cli import login


@pytest.fixture
async def ui(store_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with ui_client(store_url) as http:
        yield http


async def _waiting_for(app: object, run_id: str, approval_id: str) -> None:
    """Until the run waits for the approval ``approval_id``: its live status names the
    approval a moment before the run is stored as waiting (the approvals list, which
    reads waiting runs, shows it from then on)."""
    from tether.ai import pending_approval

    for _ in range(500):
        pending = await pending_approval(app, run_id)  # type: ignore[arg-type]
        if (pending is not None and pending.approval_id == approval_id
                and (await app.get_run(run_id)).status == "waiting"):  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{run_id} never waited for approval {approval_id}")


async def _form_of(ui: httpx.AsyncClient, path: str, run_id: str) -> dict[str, str]:
    """The hidden fields of the approval form of ``run_id`` on the page ``path`` (once
    it shows one: the inbox lists a run once its wait is stored, after its status)."""
    for _ in range(500):
        page = (await ui.get(path)).text
        form = re.search(
            r'<form method="post" action="/ui/runs/'
            + re.escape(run_id)
            + r'/approval"(.*?)</form>',
            page,
            re.S,
        )
        if form is not None:
            break
        await asyncio.sleep(0.02)
    assert form is not None, page
    return {
        k: html.unescape(v)
        for k, v in re.findall(
            r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(1)
        )
    }


@pytest.mark.parametrize("where", ["/approvals", "/runs/two"])
async def test_a_page_left_open_answers_the_approval_it_showed_or_none(
    ui: httpx.AsyncClient, where: str
) -> None:
    """Two approvers have the same approval open; the first approves it, and the agent
    asks for its next approval. The second's Reject, from the page still showing the
    first approval, must not answer the second one (which nobody has seen): it is
    refused with a 409 page that says the rejection and its note were not recorded and
    what the first answer was; the second approval still waits. Before the fix the
    form named no approval, and the late rejection answered the second one."""
    csrf = await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    async with app.worker(queues=["default"]):
        await app.start("two_purchases", "atlas", run_id="two")
        await _waiting_for(app, "two", "1")
        fields = await _form_of(ui, where, "two")  # the second approver's page
        r = await ui.post(
            "/ui/runs/two/approval",
            data={"csrf": csrf, "decision": "approve", "note": "fine by me", "next": "/approvals"},
        )
        assert r.status_code == 303, r.text  # the first approver
        await _waiting_for(app, "two", "2")
        r = await ui.post(
            "/ui/runs/two/approval",
            data={**fields, "csrf": csrf, "decision": "reject", "note": "NO: too dear"},
        )
        assert r.status_code == 409, r.text
        assert "<h1>Your answer was not sent</h1>" in r.text, r.text
        text = html.unescape(r.text)
        assert "Not sent: your rejection (note: NO: too dear) was not recorded." in text
        assert "It was approved first, with the note: fine by me. The first answer counts." in text
        assert 'href="/runs/two">Back to the run' in r.text
        from tether.ai import pending_approval

        pending = await pending_approval(app, "two")
        assert pending is not None and pending.approval_id == "2"  # not answered
        # The page drawn now shows the second approval, and answers it.
        fields = await _form_of(ui, where, "two")
        assert fields["approval_id"] == "2"
        r = await ui.post(
            "/ui/runs/two/approval",
            data={**fields, "csrf": csrf, "decision": "reject", "note": "too dear"},
        )
        assert r.status_code == 303, r.text
        assert await app.handle("two").result(timeout=30) == [
            {"approved": True, "note": "fine by me"},
            {"approved": False, "note": "too dear"},
        ]


def _buttons(form: str) -> list[tuple[str, str]]:
    return re.findall(r'<button name="(\w+)" value="([^"]*)"', form)


@pytest.mark.parametrize("where", ["/approvals", "/runs/enter"])
async def test_enter_in_the_note_answers_neither(ui: httpx.AsyncClient, where: str) -> None:
    """Enter in a text field submits its form as its first submit button would (HTML's
    implicit submission): that button was Approve, so a note typed for a rejection and
    ended with Enter approved the call. The first button now decides nothing, and its
    answer is a page that asks to choose, the note kept, nothing sent."""
    csrf = await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    async with app.worker(queues=["default"]):
        await app.start("purchase", "atlas", run_id="enter")
        fields = await _form_of(ui, where, "enter")
        page = (await ui.get(where)).text
        form = page[page.index('action="/ui/runs/enter/approval"') :]
        form = form[: form.index("</form>")]
        assert _buttons(form)[0] == ("decision", "")  # the default button
        assert [b for b in _buttons(form) if b[1]] == [
            ("decision", "approve"),
            ("decision", "reject"),
        ]
        r = await ui.post(
            "/ui/runs/enter/approval",
            data={**fields, "csrf": csrf, "decision": "", "note": "too <b>dear</b>"},
        )
        assert r.status_code == 200, r.text
        assert "Nothing was sent: Enter in the note answers neither." in r.text
        assert 'name="note" value="too &lt;b&gt;dear&lt;/b&gt;"' in r.text
        assert _form_of_text(r.text) == {**fields, "csrf": csrf}
        from tether.ai import pending_approval

        assert (await pending_approval(app, "enter")) is not None  # not answered
        r = await ui.post(
            "/ui/runs/enter/approval",
            data={**_form_of_text(r.text), "decision": "reject", "note": "too dear"},
        )
        assert r.status_code == 303, r.text
        assert await app.handle("enter").result(timeout=30) == {
            "approved": False,
            "note": "too dear",
        }


def _form_of_text(page: str) -> dict[str, str]:
    form = re.search(r'action="/ui/runs/[^"]+/approval"(.*?)</form>', page, re.S)
    assert form is not None, page
    return {
        k: html.unescape(v)
        for k, v in re.findall(
            r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(1)
        )
    }


async def test_a_form_sent_after_the_session_ended_gets_a_page_that_says_so(
    ui: httpx.AsyncClient,
) -> None:
    """A page left open while its session ended (it expired, the person logged out in
    another tab, or its token was removed): its Approve answered with the API's JSON,
    ``{"error": ... "send Authorization: Bearer TOKEN"}``, in the browser. It is a page
    now (401, the stylesheet, a link to log in) that says nothing was done; and nothing
    was."""
    from tether.ai import pending_approval
    from tether.serve._auth import SESSION_COOKIE, digest

    csrf = await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    async with app.worker(queues=["default"]):
        await app.start("purchase", "atlas", run_id="late")
        fields = await _form_of(ui, "/runs/late", "late")
        for session in (None, digest("a-token-since-removed-0123")):
            ui.cookies.delete(SESSION_COOKIE)
            if session is not None:
                ui.cookies.set(SESSION_COOKIE, session)
            r = await ui.post(
                "/ui/runs/late/approval",
                data={**fields, "csrf": csrf, "decision": "approve", "note": "ok"},
            )
            assert r.status_code == 401, r.text
            assert r.headers["content-type"].startswith("text/html")
            assert "Your session has ended" in r.text and "<b>nothing was done</b>" in r.text
            assert '<a href="/login">Log in again</a>' in r.text
            assert '<link rel="stylesheet" href="/static/app.css">' in r.text
            assert "default-src 'self'" in r.headers["content-security-policy"]
            assert (await pending_approval(app, "late")) is not None
    # (The API still answers JSON, with its WWW-Authenticate.)
    r = await ui.post("/api/v1/runs/late/cancel")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


async def test_log_in_again_leads_back_to_the_page_whose_session_ended(
    ui: httpx.AsyncClient,
) -> None:
    """The "Log in again" links of a page whose session ended (the 401 page of a form
    posted, the banner an open page shows when its redraw gets a 401) led to the login
    form without the page: once logged in, the person landed on the runs list and had
    to find the run again. They carry the page now (the form's ``Referer``, the page's
    own address), and only a page of this server."""
    from tether.serve._auth import SESSION_COOKIE

    csrf = await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    async with app.worker(queues=["default"]):
        await app.start("purchase", "atlas", run_id="late")
        fields = await _form_of(ui, "/runs/late?timeline=all", "late")
        page = (await ui.get("/runs/late?timeline=all")).text
        assert ('<a class="login" href="/login?next=%2Fruns%2Flate%3Ftimeline%3Dall" '
                "hidden>Log in again</a>") in page
        ui.cookies.delete(SESSION_COOKIE)
        for referer, link in (
                ("http://127.0.0.1/runs/late?timeline=all",
                 "/login?next=%2Fruns%2Flate%3Ftimeline%3Dall"),
                ("http://127.0.0.1/runs", "/login"),  # (a login leads there anyway)
                ("http://evil.example/runs/late", "/login"),
                ("http://127.0.0.1//evil.example/x", "/login"),
                (None, "/login")):
            headers = {} if referer is None else {"Referer": referer}
            for path, data in (("/ui/runs/late/approval",
                                {**fields, "csrf": csrf, "decision": "approve"}),
                               ("/ui/runs/late", None)):
                r = await (ui.post(path, data=data, headers=headers) if data is not None
                           else ui.get(path, headers=headers))
                assert r.status_code == 401, (path, r.text)
                assert f'<a href="{link}">Log in again</a>' in r.text, (referer, path)


async def test_a_token_removed_from_the_token_file_ends_its_sessions(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token file is followed: a token removed from it stops working, its browser
    sessions included, without restarting the server (it worked until a restart); one
    added works. A file changed into one that cannot be read as tokens is not taken."""
    from tests.web import webapp
    from tether import _tokens
    from tether.serve import Tokens, create_app

    monkeypatch.setattr(_tokens, "RELOAD_EVERY", 0.0)
    other = "other-admin-token-0123456789"
    token_file = tmp_path / "tokens.txt"
    token_file.write_text(f"admin:{ADMIN}\nadmin:{other}\n")
    app = webapp.make_app(sqlite_url)
    await app._open()
    asgi = create_app(app, tokens=Tokens.load(str(token_file), env=""), mcp=False)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=asgi), base_url="http://127.0.0.1"
        ) as ui:
            csrf = await login(ui, ADMIN)
            assert (await ui.get("/runs")).status_code == 200
            token_file.write_text(f"admin:{other}\n")  # ADMIN removed
            r = await ui.get("/runs")
            assert r.status_code == 303 and r.headers["location"] == "/login"
            r = await ui.post("/ui/runs/x/cancel", data={"csrf": csrf})
            assert r.status_code == 401 and "Your session has ended" in r.text
            bearer = {"Authorization": f"Bearer {ADMIN}"}
            assert (await ui.get("/api/v1/runs", headers=bearer)).status_code == 401
            assert (
                await ui.get("/api/v1/runs", headers={"Authorization": f"Bearer {other}"})
            ).status_code == 200
            token_file.write_text("admin:short\n")  # refused: the tokens stay
            assert (
                await ui.get("/api/v1/runs", headers={"Authorization": f"Bearer {other}"})
            ).status_code == 200
            token_file.write_text(f"read:{ADMIN}\n")  # back, as read
            await login(ui, ADMIN)
            page = (await ui.get("/runs")).text
            assert 'class="role role-read"' in page
    finally:
        await app.close()


async def test_a_parents_tree_counts_the_children_it_does_not_draw(
    ui: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run page draws a parent's newest ``TREE_SHOWN`` child runs; the others are one
    line that says how many, what they cost, and links to their list, and the roll-up
    (the tree's heading, the head's Cost and Tokens) counts them. Only the newest 100
    were read before: a parent of more drew 100, said nothing of the others, and its
    cost "rolled up" left theirs out."""
    from tether.serve import _ui

    monkeypatch.setattr(_ui, "TREE_SHOWN", 2, raising=False)
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    async with app.worker(queues=["default"], concurrency=4):
        assert await (await app.start("paid_family", 3, run_id="fam")).result(30) == [0, 1, 2]
    page = html.unescape((await ui.get("/runs/fam")).text)
    tree = page[page.index('<ul class="tree">') :]
    assert tree.count('<span class="pill s-completed">') == 2, tree
    assert "1 older child run not drawn here (100 tokens · $0.50 of their own" in tree
    assert '<a href="/runs?parent=fam">list them</a>' in tree
    assert "$1.50 rolled up" in page
    stats = page[page.index('<div class="stats">') : page.index("Saved by replay")]
    assert '<div class="v">$1.50</div>' in stats and '<div class="v">300</div>' in stats


async def test_a_parents_tree_reads_the_children_it_draws_and_counts_the_others_in_the_store(
    ui: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The children a run page's tree does not draw are counted (by status) and their
    cost and tokens summed in the store; the page reads out only the ``TREE_SHOWN``
    newest. It read every child at each redraw (the page polls), and the run's document
    its 1,000 newest besides: a parent of 10,000 children, 11,000 runs read and decoded
    each time. And the tree asks the store once per level for the children of all the
    runs it draws there (``run_children_many``), however many it draws: it asked once
    per run drawn (up to 100 round trips a redraw for a parent's children's children)."""
    import dataclasses

    from tether.serve import _ui

    monkeypatch.setattr(_ui, "TREE_SHOWN", 2, raising=False)
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    async with app.worker(queues=["default"], concurrency=4):
        assert await (await app.start("paid_family", 5, run_id="fam")).result(30) == [
            0, 1, 2, 3, 4]
    store = app.store
    family = await store.run_get("fam")
    for i, status in enumerate(("failed", "cancelled", "failed")):  # older, unpaid
        await store.run_insert(run=dataclasses.replace(
            family, run_id=f"fam.old{i}", workflow="paid_child", status=status,
            created_at=family.created_at - 10 + i, parent_run_id="fam", metrics={}))
    read: list[tuple[str, object]] = []
    for name in ("run_search", "run_children_many"):
        method = getattr(type(store), name)

        async def counted(self: object, *, _name: str = name, _method: object = method,
                          **kw: object) -> object:
            found = await _method(self, **kw)  # type: ignore[operator]
            read.append((_name, kw.get("parents", kw.get("parent"))))
            return found

        monkeypatch.setattr(type(store), name, counted)
    page = html.unescape((await ui.get("/runs/fam")).text)
    tree = page[page.index('<ul class="tree">') :]
    assert tree.count('<span class="pill s-completed">') == 2, tree
    assert ("6 older child runs not drawn here (300 tokens · $1.50 of their own, in the "
            "roll-up; 3 completed, 2 failed, 1 cancelled)") in tree, tree
    assert "$2.50 rolled up" in page
    stats = page[page.index('<div class="stats">') : page.index("Saved by replay")]
    assert '<div class="v">$2.50</div>' in stats and '<div class="v">500</div>' in stats
    # The parent's children, then the drawn children's (none), each level at once.
    drawn = re.findall(r'href="/runs/(fam\.\d+)"', tree)
    assert len(drawn) == 2 and [n for n, _ in read] == ["run_children_many"] * 2, read
    assert read[0][1] == ["fam"] and sorted(read[1][1]) == sorted(drawn), read  # type: ignore[arg-type]
    # Two grandchildren under each child: as many reads for 2 children drawn as for 8.
    kids = await store.run_search(parent="fam", limit=100)
    for kid in kids:
        for g in range(2):
            await store.run_insert(run=dataclasses.replace(
                kid, run_id=f"{kid.run_id}.g{g}", parent_run_id=kid.run_id, metrics={}))
    for shown in (2, 8):
        monkeypatch.setattr(_ui, "TREE_SHOWN", shown, raising=False)
        read.clear()
        page = html.unescape((await ui.get("/runs/fam")).text)
        tree = page[page.index('<ul class="tree">') :]
        drawn = re.findall(r'href="/runs/(fam\.\w+)"', tree)
        grand = re.findall(r'href="/runs/(fam\.\w+\.g\d)"', tree)
        assert len(drawn) == shown and len(grand) == 2 * shown, tree
        assert [n for n, _ in read] == ["run_children_many"] * 3, read
        assert sorted(read[1][1]) == sorted(drawn) and sorted(read[2][1]) == sorted(grand), read  # type: ignore[arg-type]
    assert len(kids) == 8 and "16 older" not in tree and "not drawn here" not in tree


async def test_a_fragment_asked_for_without_a_session_is_a_401(ui: httpx.AsyncClient) -> None:
    """The fragments an open page redraws itself with answer 401 once the session has
    ended (the page's script then says so in its banner); a redirect to /login drew the
    login page inside the page. A page itself still leads to the login form."""
    for path in ("/ui/approvals", "/ui/runs", "/ui/runs/x?part=head"):
        r = await ui.get(path, headers={"Accept": "text/html"})
        assert r.status_code == 401, (path, r.status_code)
        assert "Your session has ended" in r.text and "Log in again" in r.text
    r = await ui.get("/approvals")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fapprovals"
    script = (await ui.get("/static/app.js")).text
    assert 'r.status === 401) reachable(false, "session")' in script


async def test_an_approval_this_server_cannot_read_is_in_the_inbox_and_said_so(
    store_url: str,
) -> None:
    """A run waiting for an approval whose live status is encrypted with a key this
    server lacks: the inbox said "Nothing waits for a person right now", the runs page
    marked no "needs approval", and its page offered a raw ``approval`` signal form. The
    inbox and its page now say an approval waits that this server cannot read (nor
    answer: the answer would be encrypted too), where to answer it, and offer no form."""
    pytest.importorskip("cryptography")
    import tether
    from tether.ai import request_approval
    from tether.encryption import AesGcm
    from tether.serve import Tokens, create_app

    writer = tether.App(store_url, payload_hook=AesGcm({"k1": b"k" * 32}))

    @writer.workflow
    async def asks(item: str) -> bool:
        decision = await request_approval(
            "buy", {"item": item}, "a secret reason", approval_id="1", status={"agent": "x"}
        )
        return decision.approved

    async with writer, writer.worker(poll_interval=0.05):
        await writer.start("asks", "thing", run_id="sealed-1")
        await _waiting_for(writer, "sealed-1", "1")
    reader = tether.App(store_url)
    await reader._open()
    asgi = create_app(reader, tokens=Tokens({ADMIN: "admin"}), mcp=False)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=asgi), base_url="http://127.0.0.1"
        ) as ui:
            await login(ui, ADMIN)
            inbox = (await ui.get("/approvals")).text
            assert "Nothing waits" not in inbox
            assert "waits for an approval this server cannot read" in inbox
            assert "key <code>k1</code> is not loaded on this server" in inbox
            assert ('<a class="mono" href="/runs/sealed-1" title="sealed-1">sealed-1</a>'
                    in inbox)
            assert "/ui/runs/sealed-1/approval" not in inbox
            assert "secret" not in inbox
            page = (await ui.get("/runs/sealed-1")).text
            waits = page[page.index('id="waits"') :]
            waits = waits[: waits.index("</section>")]
            assert "Waiting for an approval</b> this server cannot read" in waits
            assert "<form" not in waits and "tether approve sealed-1" in waits
            runs = (await ui.get("/runs")).text
            assert "needs approval" in runs
    finally:
        await reader.close()


async def test_a_signal_is_no_answer_to_an_approval_this_server_cannot_read(
    store_url: str,
) -> None:
    """Two keys: the workers write with ``k2``, this server has ``k1`` alone, so it
    cannot read the run's live status (which approval it waits for). An ``approval``
    signal that answers nothing (no ``approved``), or that names an approval (maybe
    another one), made the run "answered": the inbox left it out, and the runs page
    marked no "needs approval". It is still shown as an
    approval this server cannot read; an answer that names no approval (it answers
    whatever waits) counts."""
    pytest.importorskip("cryptography")
    import tether
    from tether.ai import request_approval
    from tether.ai._approvals import waiting_answers
    from tether.encryption import AesGcm
    from tether.serve import Tokens, create_app

    k1, k2 = b"1" * 32, b"2" * 32
    writer = tether.App(store_url, payload_hook=AesGcm({"k1": k1, "k2": k2}, active="k2"))

    @writer.workflow
    async def asks(item: str) -> list[object]:
        decision = await request_approval("buy", {"item": item}, "a secret reason",
                                          approval_id="1", status={"agent": "x"})
        return [decision.approved, decision.note]

    async with writer:
        async with writer.worker(poll_interval=0.05):
            handle = await writer.start("asks", "thing", run_id="sealed-2")
            await _waiting_for(writer, "sealed-2", "1")
        reader = tether.App(store_url, payload_hook=AesGcm({"k1": k1}))
        await reader._open()
        asgi = create_app(reader, tokens=Tokens({ADMIN: "admin"}), mcp=False)
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=asgi), base_url="http://127.0.0.1"
            ) as ui:
                await login(ui, ADMIN)
                for stray in ({"approve": "yes"}, {"approved": True, "approval_id": "9"}):
                    await reader.signal("sealed-2", "approval", stray)
                    run = await reader.store.run_get("sealed-2")
                    assert run.available_at is not None  # (claimable: a worker takes it)
                    assert await waiting_answers(reader, [run]) == {}
                    inbox = (await ui.get("/approvals")).text
                    assert "waits for an approval this server cannot read" in inbox, stray
                    assert "key <code>k2</code> is not loaded on this server" in inbox
                    assert "needs approval" in (await ui.get("/runs")).text, stray
                await reader.signal("sealed-2", "approval", {"approved": False, "note": "no"})
                (answer,) = (await waiting_answers(
                    reader, [await reader.store.run_get("sealed-2")])).values()
                assert answer.decision is not None and not answer.decision.approved
                inbox = (await ui.get("/approvals")).text
                assert "cannot read" not in inbox and "Nothing waits" in inbox, inbox
        finally:
            await reader.close()
        async with writer.worker(poll_interval=0.05):
            assert await handle.result(timeout=20) == [False, "no"]


async def test_the_api_answers_the_approval_it_names(ui: httpx.AsyncClient) -> None:
    """``POST /api/v1/runs/{id}/approval`` with ``approval_id`` (as ``GET
    /api/v1/approvals`` gives it) answers that approval or none: a client that showed
    approval 1 and answers after the run went on to approval 2 gets a 409, and approval
    2 still waits (without it, whichever approval waits is answered, as before)."""
    from tether.ai import pending_approval

    app = ui.app  # type: ignore[attr-defined]
    api = {"Authorization": f"Bearer {ADMIN}"}
    async with app.worker(queues=["default"]):
        await app.start("two_purchases", "atlas", run_id="api-two")
        await _waiting_for(app, "api-two", "1")
        listed = (await ui.get("/api/v1/approvals", headers=api)).json()["approvals"]
        assert [a["approval_id"] for a in listed if a["run_id"] == "api-two"] == ["1"]
        r = await ui.post("/api/v1/runs/api-two/approval", headers=api, json={"approved": True})
        assert r.status_code == 200, r.text
        await _waiting_for(app, "api-two", "2")
        r = await ui.post(
            "/api/v1/runs/api-two/approval",
            headers=api,
            json={"approved": False, "note": "late", "approval_id": "1"},
        )
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "no_pending_approval"
        assert "approval 1 was answered already" in r.json()["error"]["message"]
        pending = await pending_approval(app, "api-two")
        assert pending is not None and pending.approval_id == "2"
        r = await ui.post(
            "/api/v1/runs/api-two/approval",
            headers=api,
            json={"approved": False, "approval_id": 7},
        )
        assert r.status_code == 400, r.text
        r = await ui.post(
            "/api/v1/runs/api-two/approval",
            headers=api,
            json={"approved": False, "note": "no", "approval_id": "2"},
        )
        assert r.status_code == 200, r.text
        assert await app.handle("api-two").result(timeout=30) == [
            {"approved": True, "note": None},
            {"approved": False, "note": "no"},
        ]


async def test_pages_are_not_kept_by_the_browser(ui: httpx.AsyncClient) -> None:
    """Every HTML answer (a page, a fragment, an error page, the login form) says
    ``Cache-Control: no-store``: without it, Back after logging out showed the last
    page, its approvals and payloads, from the browser's cache (and, without
    JavaScript, a stale page after a form). Static files stay cacheable."""
    for r in (await ui.get("/login"), await ui.get("/ui/runs")):
        assert r.headers["cache-control"] == "no-store", r.url
    await login(ui, ADMIN)
    for path in ("/runs", "/approvals", "/ui/runs", "/ui/approvals", "/runs/nope"):
        r = await ui.get(path)
        assert r.headers["content-type"].startswith("text/html"), path
        assert r.headers["cache-control"] == "no-store", path
    assert "no-store" not in (await ui.get("/static/app.css")).headers.get("cache-control", "")


@pytest.mark.parametrize("where", ["/approvals", "/runs/plain"])
async def test_a_workflows_own_approval_does_not_say_a_model_reads_the_note(
        ui: httpx.AsyncClient, where: str) -> None:
    """The note's placeholder said "the model reads it on reject" on every approval form,
    also for a workflow's own ``request_approval`` (no model's tool call: no
    ``call_id``), where the run gets the note with the answer."""
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    async with app.worker(queues=["default"]):
        await app.start("purchase", "atlas", run_id="plain")
        await _form_of(ui, where, "plain")
        page = (await ui.get(where)).text
    form = page[page.index('action="/ui/runs/plain/approval"') :]
    form = form[: form.index("</form>")]
    assert 'placeholder="note (optional: the run gets it with your answer)"' in form, form
    assert "the model reads it" not in form
