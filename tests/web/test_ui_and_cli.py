"""The UI in process (escaping, login cookie, CSRF) and ``tether serve``/worker flags."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.web.helpers import (
    ADMIN,
    READ,
    ROOT,
    TETHER,
    env,
    start_worker,
    ui_client,
    words,
)


@pytest.fixture
async def ui(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client (no bearer header) of a server with tokens."""
    async with ui_client(sqlite_url) as http:
        yield http


async def login(http: httpx.AsyncClient, token: str) -> str:
    """Log in through the form; returns the CSRF token the pages use."""
    page = await http.get("/login")
    csrf = http.cookies["tether_csrf"]
    assert f'value="{csrf}"' in page.text
    r = await http.post("/login", data={"token": token, "csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/runs"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and ADMIN not in cookie
    return csrf


async def test_pages_need_a_session_and_a_wrong_token_does_not_log_in(
        ui: httpx.AsyncClient) -> None:
    r = await ui.get("/runs")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    await ui.get("/login")
    r = await ui.post("/login", data={"token": "not-a-token-at-all", "csrf":
                                      ui.cookies["tether_csrf"]})
    assert r.status_code == 401 and "unknown token" in r.text
    r = await ui.post("/login", data={"token": ADMIN, "csrf": "forged-csrf-token-000"})
    assert r.status_code == 403
    assert (await ui.get("/runs")).status_code == 303


async def test_a_token_pasted_with_spaces_around_it_logs_in(ui: httpx.AsyncClient) -> None:
    """The token file's entries and a bearer header's token are taken stripped; the login
    form took the pasted text as it was, and a token copied with its line end or a space
    around it was an "unknown token"."""
    await ui.get("/login")
    r = await ui.post("/login", data={"token": f"  {ADMIN}\t\r\n", "csrf":
                                      ui.cookies["tether_csrf"]})
    assert r.status_code == 303 and r.headers["location"] == "/runs"
    assert (await ui.get("/runs")).status_code == 200
    await ui.get("/login")
    r = await ui.post("/login", data={"token": " \n ", "csrf": ui.cookies["tether_csrf"]})
    assert r.status_code == 401 and "unknown token" in r.text


async def test_a_login_leads_back_to_the_page_asked_for(ui: httpx.AsyncClient) -> None:
    """A link to a run's page (in a chat message, an alert) followed without a session
    leads to the login form and, once logged in, to that page, its query kept: the
    login led to the runs list, and the person had to find the run again. Only pages
    of this server are led to: never another site, nor the login page itself."""
    await ui.app.start("greet", "x", run_id="a/b")  # type: ignore[attr-defined]
    r = await ui.get("/runs/a%2Fb?timeline=all")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=%2Fruns%2Fa%252Fb%3Ftimeline%3Dall"
    form = await ui.get(r.headers["location"])
    assert '<input type="hidden" name="next" value="/runs/a%2Fb?timeline=all">' in form.text
    csrf = ui.cookies["tether_csrf"]
    r = await ui.post("/login", data={"token": READ, "csrf": csrf,
                                      "next": "/runs/a%2Fb?timeline=all"})
    assert r.status_code == 303 and r.headers["location"] == "/runs/a%2Fb?timeline=all"
    page = await ui.get(r.headers["location"])
    assert page.status_code == 200 and "greet" in page.text
    for elsewhere in ("//evil.example/runs", "https://evil.example/", "/\\evil.example",
                      "runs", "/login", "/logout", "/runs\r\nSet-Cookie: x=1", ""):
        form = await ui.get("/login", params={"next": elsewhere})
        assert 'name="next"' not in form.text, elsewhere
        r = await ui.post("/login", data={"token": READ, "csrf": csrf, "next": elsewhere})
        assert r.status_code == 303 and r.headers["location"] == "/runs", elsewhere
    ui.cookies.delete("tether_session")
    for landing in ("/runs", "/"):  # (where a login leads anyway: no next)
        r = await ui.get(landing)
        assert r.status_code == 303 and r.headers["location"] == "/login", landing


async def test_run_ids_names_and_payloads_are_escaped(ui: httpx.AsyncClient) -> None:
    """HTML in a run id, a workflow input or a signal shows as text, never as markup."""
    await login(ui, ADMIN)
    evil = '<script>alert("x")</script>'
    r = await ui.post("/api/v1/runs", json={"workflow": "greet", "input": [evil],
                                            "run_id": evil},
                      headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 201
    for path in ("/runs", "/ui/runs", "/runs/" + httpx.URL("/" + evil).raw_path.decode()[1:]):
        page = await ui.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text
        assert "&lt;script&gt;alert(" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


async def test_a_deeply_nested_payload_draws_a_page_of_its_own_size(
        ui: httpx.AsyncClient) -> None:
    """A payload's first levels are indented and deeper ones drawn on a line each: an
    input of 200 KB nested 800 deep drew a page of 160 MB (indentation times lines), in
    seconds, at every refresh."""
    await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    deep: object = [7] * 100_000
    for _ in range(800):
        deep = [deep]
    await app.start("greet", deep, run_id="deep-1")
    page = (await ui.get("/runs/deep-1")).text
    assert len(page) < 2_000_000, len(page)
    assert "[\n  [\n    [" in page  # (the outer levels are still indented)
    assert "[[[[[[7,7,7" in page.replace(" ", "")


async def test_every_answer_carries_the_security_headers(ui: httpx.AsyncClient) -> None:
    """``nosniff`` and a same-origin ``Referrer-Policy`` on every answer (they were on
    the pages only: not on JSON, the guard's refusals, redirects or static files), and
    on every HTML answer a CSP without ``<base>`` or plugins and ``X-Frame-Options``
    (against clickjacking of the approve button in browsers without
    ``frame-ancestors``)."""
    answers = [await ui.get("/api/v1/runs"), await ui.get("/runs"),
               await ui.get("/static/app.js"), await ui.get("/healthz"),
               await ui.get("/login")]
    await login(ui, ADMIN)
    answers += [await ui.get("/api/v1/runs"), await ui.get("/runs"),
                await ui.get("/nowhere", headers={"Accept": "text/html"}),
                await ui.get("/runs/nope")]
    assert [r.status_code for r in answers] == [401, 303, 200, 200, 200, 200, 200, 404, 404]
    for r in answers:
        assert r.headers["x-content-type-options"] == "nosniff", r.url
        assert r.headers["referrer-policy"] == "same-origin", r.url
        if r.headers.get("content-type", "").startswith("text/html"):
            csp = r.headers["content-security-policy"]
            for directive in ("script-src 'self'", "object-src 'none'", "base-uri 'none'",
                              "frame-ancestors 'none'", "form-action 'self'"):
                assert directive in csp, (r.url, directive)
            assert r.headers["x-frame-options"] == "DENY", r.url


async def test_forms_need_csrf_and_an_admin(ui: httpx.AsyncClient) -> None:
    """A form post without the page's CSRF token, or from a read session, changes
    nothing; with both it acts."""
    csrf = await login(ui, ADMIN)
    await ui.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w1"},
                  headers={"Authorization": f"Bearer {ADMIN}"})
    r = await ui.post("/ui/runs/w1/cancel", data={"csrf": "forged-csrf-token-000"})
    assert r.status_code == 403
    r = await ui.post("/ui/runs/w1/signal", data={"name": "go", "data": "{bad"})
    assert r.status_code == 403
    doc = (await ui.get("/api/v1/runs/w1")).json()
    assert doc["status"] == "queued" and doc["journal"] == []
    r = await ui.post("/ui/runs/w1/signal", data={"csrf": csrf, "name": "go", "data": "{bad"})
    assert r.status_code == 400 and "not valid JSON" in r.text
    # Nested too deeply for the parser: was a 500 (a RecursionError).
    for path, field in (("/ui/runs/w1/signal", "data"), ("/ui/runs/w1/fork", "input")):
        r = await ui.post(path, data={"csrf": csrf, "name": "go", "at": "0",
                                      field: "[" * 3000 + "]" * 3000})
        assert r.status_code == 400 and "nested too deeply" in r.text, path
    r = await ui.post("/ui/runs/w1/cancel", data={"csrf": csrf, "next": "//evil.example"})
    assert r.status_code == 303 and r.headers["location"] == "/runs/w1"
    run = await ui.app.store.run_get("w1")  # type: ignore[attr-defined]
    assert run is not None and run.cancel_requested
    read_csrf = await login(ui, READ)
    r = await ui.post("/ui/runs/w1/signal", data={"csrf": read_csrf, "name": "go"})
    assert r.status_code == 403 and "may read, not change" in r.text


async def test_a_fork_forms_long_position_is_echoed_cut(ui: httpx.AsyncClient) -> None:
    """A fork form's position that is no whole number is echoed cut to its first 100
    characters and its length, as every echoed value is (4,000 characters came back
    whole); nothing is forked."""
    csrf = await login(ui, ADMIN)
    await ui.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w1"},
                  headers={"Authorization": f"Bearer {ADMIN}"})
    r = await ui.post("/ui/runs/w1/fork", data={"csrf": csrf, "at": "x" * 4000})
    assert r.status_code == 422, r.text
    assert "the position must be a whole number, not &#39;" + "x" * 100 + \
        "&#39;… (4,000 characters)" in r.text, r.text[:2000]
    assert "x" * 101 not in r.text
    store = ui.app.store  # type: ignore[attr-defined]
    assert [r.run_id for r in await store.run_search(limit=10)] == ["w1"]


async def test_a_lone_surrogate_in_a_forms_json_is_named_by_its_field(
        ui: httpx.AsyncClient) -> None:
    """A signal's data or a fork's input holding a lone surrogate (``"\\ud800"``, valid
    JSON but no Unicode text) is a 400 naming where: the signal form's was a 409
    "payload of signal 'go': value of type dict is not JSON-serializable", the fork
    form's a 400 about the engine's "value of type dict". Nothing is sent or forked."""
    csrf = await login(ui, ADMIN)
    await ui.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w1"},
                  headers={"Authorization": f"Bearer {ADMIN}"})
    for path, field, text, where in (
            ("/ui/runs/w1/signal", "data", '{"by": ["ana", "\\udc00"]}', "data.by[1]"),
            ("/ui/runs/w1/signal", "data", '"\\ud800"', "data"),
            ("/ui/runs/w1/fork", "input", '[{"k\\ud800": 1}]',
             "the key &#39;k\\ud800&#39; of field input[0]")):
        r = await ui.post(path, data={"csrf": csrf, "name": "go", "at": "0", field: text})
        assert r.status_code == 400, (path, r.text)
        said = where if where.startswith("the key") else f"field {where}"
        assert f"{said} is not valid Unicode (lone surrogate" in r.text, (path, r.text)
    store = ui.app.store  # type: ignore[attr-defined]
    assert not await store.signal_pending(run_id="w1", name="go")
    assert [r.run_id for r in await store.run_search(limit=10)] == ["w1"]


async def test_a_form_says_what_it_did_once_and_a_refused_one_links_back(
        ui: httpx.AsyncClient) -> None:
    """After a form, the page it leads back to says what happened (once: a reload or
    the fragments a script refreshes do not repeat it); a refused form's error page
    links back to the run it came from."""
    csrf = await login(ui, ADMIN)
    await ui.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "fb/1"},
                  headers={"Authorization": f"Bearer {ADMIN}"})
    r = await ui.post("/ui/runs/fb/1/signal", data={"csrf": csrf, "name": "go", "data": "{"})
    assert r.status_code == 400 and 'href="/runs/fb%2F1">Back to the run</a>' in r.text
    r = await ui.post("/ui/runs/fb/1/signal", data={"csrf": csrf, "name": "go",
                                                      "data": '{"by": "ana"}'})
    assert r.status_code == 303 and r.headers["location"] == "/runs/fb%2F1"
    assert (await ui.get("/ui/runs/fb/1?part=head")).text.count('class="flash') == 0
    page = await ui.get("/runs/fb/1")
    # (the run id, with its full stop, is kept whole on a line: app.css's .id)
    assert ('<p class="flash ok" role="status">Sent signal &#39;go&#39; to run '
            '<span class="id">fb/1.</span></p>') in page.text
    again = (await ui.get("/runs/fb/1")).text
    assert 'class="flash' not in again
    # (Cancel asks first: static/app.js confirms a form with a data-confirm.)
    assert 'class="cancel" data-confirm="Cancel run fb/1? It stops' in again
    assert "dataset.confirm" in (await ui.get("/static/app.js")).text
    await ui.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "fb2"},
                  headers={"Authorization": f"Bearer {ADMIN}"})
    await ui.post("/ui/runs/fb2/cancel", data={"csrf": csrf})
    assert "Run fb2 is cancelled." in words((await ui.get("/runs/fb2")).text)


async def test_approval_buttons_name_the_call_and_an_erased_run_says_so(
        ui: httpx.AsyncClient) -> None:
    """Each Approve and Reject button tells a screen reader which call of which run it
    answers (an inbox holds many alike); an erased run's page says it was erased, and
    the inbox says when the agent asked, then which call a decision answered."""
    import asyncio

    csrf = await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    async with app.worker(queues=["default"]):
        await app.start("purchase", "atlas", run_id="buy-a")
        for _ in range(300):
            if (await app.store.run_get("buy-a")).status == "waiting":
                break
            await asyncio.sleep(0.02)
        for path in ("/approvals", "/runs/buy-a"):
            page = (await ui.get(path)).text
            assert 'aria-label="Approve buy for run buy-a"' in page, path
            assert 'aria-label="Reject buy for run buy-a"' in page
            assert "asked " in page and "waiting since" not in page
        r = await ui.post("/ui/runs/buy-a/approval", data={
            "csrf": csrf, "decision": "reject", "note": "too dear", "next": "/approvals"})
        assert r.status_code == 303 and r.headers["location"] == "/approvals"
        assert "Rejected buy for run buy-a: the model reads your note." in words(
            (await ui.get("/approvals")).text)
        assert (await app.handle("buy-a").result(timeout=30))["approved"] is False
    r = await ui.post("/api/v1/runs/buy-a/erase", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    assert "<b>erased</b>" in (await ui.get("/runs/buy-a")).text


async def _purchases_waiting(app: Any, ids: list[str]) -> None:
    """Start a ``purchase`` run of each id (each asks an approval) and wait until every
    one of them waits for its answer (a worker must be running)."""
    for run_id in ids:
        await app.start("purchase", run_id, run_id=run_id)
    for run_id in ids:
        for _ in range(500):
            if (await app.store.run_get(run_id)).status == "waiting":
                break
            await asyncio.sleep(0.02)


async def test_the_inbox_shows_the_oldest_approvals_and_links_to_more(
        ui: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The inbox shows ``APPROVALS_SHOWN`` approvals, the oldest runs' first, and a link
    to the next ones; that page (and its refresh) continues after the last one shown,
    and leads back to the oldest."""
    import html

    from tether.serve import _ui

    monkeypatch.setattr(_ui, "APPROVALS_SHOWN", 2)
    await login(ui, READ)
    app = ui.app  # type: ignore[attr-defined]
    ids = [f"buy-{i}" for i in range(3)]
    async with app.worker(queues=["default"], concurrency=4):
        await _purchases_waiting(app, ids)

        def shown(page: str) -> list[str]:
            return re.findall(r'<li class="card approval" data-run="([^"]+)"', page)

        first = (await ui.get("/approvals")).text
        assert shown(first) == ids[:2] and "Oldest approvals" not in first
        more = html.unescape(re.search(r'<a href="([^"]*)">More approvals', first).group(1))
        assert more.startswith("/approvals?cursor=")
        second = (await ui.get(more)).text
        assert shown(second) == ids[2:] and "More approvals" not in second
        assert '<a href="/approvals">← Oldest approvals</a>' in second
        refresh = html.unescape(re.search(r'data-refresh="([^"]*)"', second).group(1))
        assert refresh == "/ui/approvals?" + more.split("?", 1)[1]
        assert shown((await ui.get(refresh)).text) == ids[2:]
        assert (await ui.get("/approvals?cursor=nope")).status_code == 400
        for run_id in ids:
            await app.signal(run_id, "approval", {"approved": False})
        for run_id in ids:
            await app.handle(run_id).result(timeout=30)


async def test_an_answer_on_a_later_page_of_the_inbox_leads_back_to_that_page(
        ui: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """An approver working through the inbox's second page, answering one there, is led
    back to that page, which shows the next one; it led to the first page (the oldest
    approvals), the place lost at each answer. Answered to its end, the page says so and
    leads back to the first."""
    import html

    from tether.serve import _ui

    monkeypatch.setattr(_ui, "APPROVALS_SHOWN", 1)
    csrf = await login(ui, ADMIN)
    app = ui.app  # type: ignore[attr-defined]
    ids = [f"page-buy-{i}" for i in range(3)]
    async with app.worker(queues=["default"], concurrency=4):
        await _purchases_waiting(app, ids)
        first = (await ui.get("/approvals")).text
        more = html.unescape(re.search(r'<a href="([^"]*)">More approvals', first).group(1))
        second = (await ui.get(more)).text
        form = re.search(r'<form method="post" action="/ui/runs/page-buy-1/approval"(.*?)'
                         r"</form>", second, re.S)
        assert form is not None, second
        fields = {k: html.unescape(v) for k, v in re.findall(
            r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(1))}
        assert fields["next"] == more
        r = await ui.post("/ui/runs/page-buy-1/approval",
                          data={**fields, "csrf": csrf, "decision": "approve"})
        assert r.status_code == 303 and r.headers["location"] == more, r.headers
        await app.handle("page-buy-1").result(timeout=30)
        after = (await ui.get(r.headers["location"])).text
        assert "Approved buy for run page-buy-1" in words(after)
        assert re.findall(r'<li class="card approval" data-run="([^"]+)"', after) == [
            "page-buy-2"]
        # That page answered to its end: it says nothing more waits past the earlier
        # pages, and leads to them (it said "Nothing waits for a person right now",
        # page-buy-0 waiting on the first page).
        await app.signal("page-buy-2", "approval", {"approved": False})
        await app.handle("page-buy-2").result(timeout=30)
        empty = (await ui.get(more)).text
        assert "Nothing waits for a person right now" not in empty
        assert ('<p class="empty">Nothing more waits past the earlier pages now. '
                '<a href="/approvals">← Oldest approvals</a></p>') in empty
        for run_id in ("page-buy-0",):
            await app.signal(run_id, "approval", {"approved": False})
            await app.handle(run_id).result(timeout=30)


async def test_runs_pages_keep_their_size_and_lead_back_to_the_newest(
        ui: httpx.AsyncClient) -> None:
    import html
    import re

    await login(ui, READ)
    app = ui.app  # type: ignore[attr-defined]
    for i in range(5):
        await app.start("greet", str(i), run_id=f"page-{i}")
    first = (await ui.get("/runs?limit=2&workflow=greet")).text
    older = html.unescape(re.search(r'<a href="([^"]*)">Older runs', first).group(1))
    assert "limit=2" in older and "workflow=greet" in older and "Newest runs" not in first
    second = (await ui.get(older)).text
    assert second.count('<a href="/runs/page-') == 2
    assert '<a href="/runs?workflow=greet&amp;limit=2">← Newest runs</a>' in second


async def test_a_mistyped_page_address_is_a_page_and_the_api_still_answers_json(
        ui: httpx.AsyncClient) -> None:
    await login(ui, READ)
    html = {"Accept": "text/html,application/xhtml+xml"}
    r = await ui.get("/approval", headers=html)
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "There is no page at /approval." in r.text and 'href="/runs"' in r.text
    r = await ui.get("/approval")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await ui.get("/api/v1/nothing", headers=html)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_serve_refuses_a_public_bind_without_tokens(tmp_path: Path) -> None:
    r = subprocess.run([*TETHER, "serve", "--db", f"sqlite:///{tmp_path}/x.db", "--host",
                        "0.0.0.0"], cwd=ROOT, env=env(), capture_output=True, text=True,
                       timeout=60)
    # A configuration refused is bad input (exit 2, as a malformed token file): it
    # exited 1, as a store that cannot be reached does. One line, saying how to fix it.
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "tether: error: refusing to serve on 0.0.0.0 without API tokens: anyone who can "
        "reach it could start and cancel runs; give --token-file FILE or TETHER_API_TOKENS "
        "(entries admin:TOKEN or read:TOKEN), or bind to 127.0.0.1"]


def test_serve_names_an_ipv6_address_as_a_url(tmp_path: Path) -> None:
    """``--host ::1`` is named ``http://[::1]:PORT`` (a URL a browser takes), not
    ``http://::1:PORT``, in the error of a port in use (and in the start line, which a
    port in use no longer logs: ``test_serve_takes_an_ipv6_address_in_brackets``)."""
    with socket.socket(socket.AF_INET6) as taken:
        try:
            taken.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([*TETHER, "serve", "--db", f"sqlite:///{tmp_path}/x.db",
                            "--host", "::1", "--port", str(port)], cwd=ROOT, env=env(),
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "serving " not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(
        f"tether: error: could not serve on http://[::1]:{port} (exit ")



def test_serve_takes_an_ipv6_address_in_brackets(tmp_path: Path) -> None:
    """``--host [::1]``, the address as URLs write it, is ``::1``: served and named
    ``http://[::1]:PORT``. Until 2026-12-06 it passed the loopback check but was handed
    to the socket with its brackets: "could not serve on http://[[::1]]:PORT (exit 3)",
    uvicorn's "Name or service not known" above it."""
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        port = probe.getsockname()[1]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*TETHER, "serve", "--db", f"sqlite:///{tmp_path}/x.db",
                                 "--host", "[::1]", "--port", str(port)], cwd=ROOT,
                                env=env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                r = httpx.get(f"http://[::1]:{port}/healthz", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert f"on http://[::1]:{port} (open: loopback, no tokens;" in log.read_text()


def _serve_on_a_taken_port(db: str, *args: str) -> str:
    """The stderr of ``tether serve`` on a port in use: it opens the store and logs its
    warnings, then exits 1 (without its start line: it never served)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([*TETHER, "serve", "--db", db, "--port", str(port), *args],
                           cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "could not serve on" in r.stderr, r.stderr
    return r.stderr


def test_serve_warns_of_a_token_file_others_may_read(tmp_path: Path) -> None:
    """A token file its group or everyone may read (the umask's 0644) holds the admin
    token for every user of the machine: ``serve`` says so, naming the file and the
    fix (it said nothing). An owner-only file is not mentioned."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"admin:{ADMIN}\n")
    db = f"sqlite:///{tmp_path}/x.db"
    for mode, who in ((0o644, "everyone"), (0o640, "its group")):
        tokens.chmod(mode)
        err = _serve_on_a_taken_port(db, "--token-file", str(tokens))
        assert (f"WARNING tether.serve: token file {tokens} is readable by {who} "
                f"(mode {mode:04o})") in err, err
        assert f"chmod 600 {tokens}" in err and ADMIN not in err
    tokens.chmod(0o600)
    assert "readable by" not in _serve_on_a_taken_port(db, "--token-file", str(tokens))


def _serve_start_line(tmp_path: Path, db: str) -> str:
    """The log of ``tether serve`` on a free port until its start line, which comes once
    the port is bound (then it is stopped)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*TETHER, "serve", "--db", db, "--port", str(port)],
                                cwd=ROOT, env=env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "serving " not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return log.read_text()


@pytest.mark.postgres
def test_serve_logs_the_store_url_without_its_password(pg_url: str, tmp_path: Path) -> None:
    """The start line named the store's URL as given, password and all
    (``postgresql://u:PW@host/db``), in a log more people read than the database's
    owner; it now shows ``***`` in its place (and in a ``?password=``)."""
    secret = "pw-never-logged-0123"
    scheme, rest = pg_url.split("://", 1)
    user = rest.split("@", 1)[0] if "@" in rest else "postgres"
    where = rest.split("@", 1)[-1]
    err = _serve_start_line(tmp_path, f"{scheme}://{user}:{secret}@{where}")
    assert secret not in err and f"serving {scheme}://{user}:***@{where} on" in err, err
    err = _serve_start_line(tmp_path, f"{pg_url}?password={secret}")
    assert secret not in err and "password=***" in err, err


@pytest.mark.parametrize(("content", "message"), [
    ("admin:short\n", "line 1: the token is shorter than 16 characters"),
    ("# tokens\nroot:0123456789abcdefgh\n", "line 2: expected ROLE:TOKEN"),
    # Until 2026-12-06 a token given both roles got the last line's (read or admin by
    # the order of the lines), and a file with no token served everyone on loopback,
    # a reverse proxy in front included.
    ("admin:0123456789abcdefgh\nread:0123456789abcdefgh\n",
     "line 2: this token is also given as admin: give each token one role"),
    ("# filled in at deploy\n\n", "holds no token"),
    (None, "cannot read token file"),  # (no such file)
    ("", "cannot read token file"),  # (a folder)
])
def test_serve_names_a_bad_token_file_line(tmp_path: Path, content: str | None,
                                           message: str) -> None:
    """A token file that is missing, unreadable or malformed is bad input: one line,
    exit 2, as a bad --port (until 2026-12-06 exit 1, as a store that cannot be reached),
    before any store is opened."""
    tokens = tmp_path / "tokens"
    if content == "":
        tokens.mkdir()
    elif content is not None:
        tokens.write_text(content)
    r = subprocess.run([*TETHER, "serve", "--db", f"sqlite:///{tmp_path}/x.db",
                        "--token-file", str(tokens)], cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("tether: error: ") and message in line, line
    assert "0123456789abcdefgh" not in r.stderr
    assert not (tmp_path / "x.db").exists()


@pytest.mark.slow
def test_worker_json_logs_name_the_run_position_and_next_attempt(tmp_path: Path) -> None:
    """A failed attempt is logged as JSON with the run id, the position, the error and
    the next attempt's time."""
    db = f"sqlite:///{tmp_path}/logs.db"
    r = subprocess.run([*TETHER, "start", "retrying", "--id", "flaky-1", "--input", '["t"]',
                        "--db", db, "--app", "tests.web.webapp:app"], cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    worker = start_worker(db, tmp_path, args=("--log-format", "json", "--log-level", "info"))
    try:
        r = subprocess.run([*TETHER, "result", "flaky-1", "--wait", "30", "--db", db],
                           cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and json.loads(r.stdout) == "t"
    finally:
        worker.terminate()
        worker.wait(10)
    time.sleep(0.1)
    logs = sorted(tmp_path.glob("worker-*.log"))[-1].read_text().splitlines()
    lines = [json.loads(x) for x in logs if x.startswith("{")]
    assert lines and all({"ts", "level", "logger", "message"} <= set(x) for x in lines)
    failed = [x for x in lines if "attempt 1 failed" in x["message"]]
    assert len(failed) == 1
    assert failed[0]["run_id"] == "flaky-1" and failed[0]["position"] == 0
    assert "TimeoutError: provider timed out (t)" in failed[0]["message"]
    assert "next attempt at 20" in failed[0]["message"]


@pytest.mark.parametrize(("args", "message", "code"), [
    (["--port", "70000"], "--port must be between 1 and 65535, got 70000", 2),
    (["--max-body", "0"], "argument --max-body: must be at least 1, got 0", 2),
    (["--app", "no_such_module_xyz:app"], "cannot import 'no_such_module_xyz'", 2),
])
def test_serve_rejects_bad_flags_in_one_line(tmp_path: Path, args: list[str], message: str,
                                             code: int) -> None:
    r = subprocess.run([*TETHER, "serve", "--db", f"sqlite:///{tmp_path}/x.db", *args],
                       cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == code
    assert message in r.stderr.strip().splitlines()[-1]


async def test_long_run_ids_are_cut_in_the_middle_so_they_stay_apart(
        ui: httpx.AsyncClient) -> None:
    """Two runs whose long ids differ only at the end (a child's ``.N``, a schedule's
    ``@TICK``, an attempt number) looked the same in the runs list, the child tree and
    the timeline, which cut ids at the end; they are cut in the middle now, and the whole
    id is the link's title."""
    await login(ui, ADMIN)
    stem = "customer-onboarding/eu-west-1/tenant-" + "a7f3" * 30
    admin = {"Authorization": f"Bearer {ADMIN}"}
    for n in (1, 2):
        r = await ui.post("/api/v1/runs", json={"workflow": "greet", "input": ["x"],
                                                "run_id": f"{stem}/attempt-{n}"},
                          headers=admin)
        assert r.status_code == 201, r.text
    table = (await ui.get("/ui/runs")).text
    for n in (1, 2):
        assert f"…{stem[-3:]}/attempt-{n}</a>" in table
        assert f'title="{stem}/attempt-{n}"' in table
    app = ui.app  # type: ignore[attr-defined]
    async with app.worker(queues=["default"]):
        r = await ui.post("/api/v1/runs", json={"workflow": "parent", "input": ["x"],
                                                "run_id": stem}, headers=admin)
        assert r.status_code == 201
        for _ in range(500):
            if (await app.store.run_get(stem)).status == "completed":
                break
            await asyncio.sleep(0.02)
    body = (await ui.get("/ui/runs/" + stem + "?part=body")).text
    # The timeline's child_result row and the child tree name the child by its end.
    assert len(re.findall(r"…[0-9a-f]+\.0</a>", body)) == 2


async def test_the_runs_page_lists_a_parents_children_and_shows_the_filter(
        ui: httpx.AsyncClient) -> None:
    """``/runs?parent=ID`` lists that run's children, as ``GET /api/v1/runs?parent=``
    does, says so beside the filters (a link to the parent, one to drop the filter; the
    filter form keeps it), and keeps it in the refresh; a run page's child runs link
    there. Before, the page ignored ``parent`` and listed every run."""
    await login(ui, READ)
    app = ui.app  # type: ignore[attr-defined]
    async with app.worker(queues=["default"]):
        for p in ("mom", "dad"):
            await app.start("parent", p, run_id=p)
        for p in ("mom", "dad"):
            await app.handle(p).result(timeout=30)
    kids = {r.run_id for r in await app.store.run_search(parent="mom", limit=10)}
    assert kids and all(k.startswith("mom.") for k in kids)
    page = (await ui.get("/runs?parent=mom&limit=1")).text
    listed = set(re.findall(r'<a href="/runs/([^"?]+)" title=', page))
    assert listed and listed <= kids, listed  # mom's children only, not dad's nor mom
    assert 'children of <a class="mono" href="/runs/mom"' in page
    assert '<input type="hidden" name="parent" value="mom">' in page
    assert 'href="/runs?limit=1" title="show runs of any parent"' in page
    assert 'data-refresh="/ui/runs?parent=mom&amp;limit=1"' in page
    everything = (await ui.get("/runs")).text
    assert "children of" not in everything and 'href="/runs/dad"' in everything
    body = (await ui.get("/ui/runs/mom?part=body")).text
    assert '<a class="small" href="/runs?parent=mom">list them</a>' in body


def test_no_template_puts_a_name_into_a_path_with_urlencode() -> None:
    """A run id (or schedule name) inside a page's path goes through the ``seg`` filter:
    Jinja2's ``urlencode`` keeps ``/``, and a browser resolves the ``..`` of an id such as
    ``a/../victim`` into another run's address (its approve button answered the other
    run's approval). Query strings may use ``urlencode`` (a ``/`` there is data)."""
    templates = ROOT / "src" / "tether" / "serve" / "templates"
    in_path = re.compile(r"/\{\{[^}]*\|\s*urlencode\b")  # (a query value follows "=")
    found = [f"{page.name}:{n}: {line.strip()}"
             for page in sorted(templates.glob("*.html"))
             for n, line in enumerate(page.read_text().splitlines(), 1)
             if in_path.search(line)]
    assert not found, found


async def test_a_long_run_page_draws_its_newest_entries_and_pages_back(
        ui: httpx.AsyncClient) -> None:
    """A run of 250 operations: its page draws the newest 200 (drawing every entry of a
    5,000-entry journal took 1.4 s and 4 MB), says how many earlier ones it left out and
    links to them; a page asking for more keeps asking in its live refresh."""
    import tether

    app: tether.App = ui.app  # type: ignore[attr-defined]

    @app.workflow
    async def long_run(n: int) -> int:
        for _ in range(n):
            tether.now()
        return n

    await login(ui, ADMIN)
    async with app.worker():
        handle = await app.start(long_run, 250, run_id="long/1")
        assert await handle.result(timeout=30) == 250
    rows = re.compile(r'<tr class="op ')
    page = await ui.get("/runs/long%2F1")
    assert page.status_code == 200
    assert len(rows.findall(page.text)) == 200
    assert "50 earlier operations not shown" in page.text
    assert 'href="/runs/long%2F1?timeline=400"' in page.text
    assert 'href="/runs/long%2F1?timeline=all"' in page.text
    assert ">show all 250</a>" in page.text
    assert 'data-refresh="/ui/runs/long%2F1"' in page.text
    # The newest is drawn, the oldest is not (position 0's row and its fork link).
    assert "?fork_at=249#fork" in page.text and "?fork_at=0#fork" not in page.text
    # The head counts every operation.
    assert re.search(r'<div class="k">Operations</div><div class="v">250</div>', page.text)
    everything = await ui.get("/runs/long%2F1?timeline=all")
    assert len(rows.findall(everything.text)) == 250
    assert "earlier operations not shown" not in everything.text
    assert 'data-refresh="/ui/runs/long%2F1?timeline=all"' in everything.text
    body = await ui.get("/ui/runs/long%2F1?timeline=all&part=body")
    assert len(rows.findall(body.text)) == 250
    some = await ui.get("/ui/runs/long%2F1?timeline=220&part=body")
    assert len(rows.findall(some.text)) == 220
    assert "30 earlier operations not shown" in some.text
