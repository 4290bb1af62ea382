"""A web page's form posted over the server's body limit (``tether serve --max-body``)
is answered with a 413 page that says why and leads back to the run, not the API's JSON
error, which the browser showed in the page's place (a person who pasted a large payload
into the signal form saw ``{"error": {"code": "payload_too_large", ...}}``); the API
keeps its JSON 413. Whether the body's size is announced (``Content-Length``) or only
counted as it comes, and nothing is done."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx

from tests.web.helpers import ADMIN, ui_client

LIMIT = 4096
BIG = json.dumps({"note": "x" * (LIMIT + 100)})


async def _login(http: httpx.AsyncClient) -> str:
    await http.get("/login")
    csrf = http.cookies["tether_csrf"]
    r = await http.post("/login", data={"token": ADMIN, "csrf": csrf})
    assert r.status_code == 303, r.text
    return csrf


def _page(r: httpx.Response, status: int) -> str:
    """The reason the error page ``r`` gives (its paragraph under its title, which is in
    words: "Too large to send", the status code small at the card's foot)."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("text/html"), r.text
    found = re.search(
        r'<section class="card error-card">\s*<h1>([^<]+)</h1>\s*<p>(.*?)</p>.*?'
        r'<p class="muted small status-code">HTTP (\d+)</p>', r.text, re.S
    )
    assert found is not None and int(found.group(3)) == status, r.text
    assert found.group(1) == "Too large to send", r.text
    assert f"<title>Too large to send ({status}) · Tether</title>" in r.text, r.text
    return html.unescape(found.group(2))


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(body), 1024):  # (no Content-Length: counted as it comes)
        yield body[i : i + 1024]


async def test_a_form_over_the_limit_is_answered_on_a_page(sqlite_url: str) -> None:
    async with ui_client(sqlite_url, max_body=LIMIT) as http:
        app = http.app  # type: ignore[attr-defined]
        await app.start("wait_go", run_id="w")
        csrf = await _login(http)
        form = {"csrf": csrf, "name": "go", "data": BIG}
        announced = await http.post("/ui/runs/w/signal", data=form)
        said = _page(announced, 413)
        assert f"over this server's limit of {LIMIT} bytes" in said
        assert "nothing was done" in said and "--max-body" in said
        assert 'href="/runs/w">Back to the run</a>' in announced.text
        encoded = urlencode(form).encode()
        streamed = await http.post(
            "/ui/runs/w/signal",
            content=_chunks(encoded),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert _page(streamed, 413) == said
        # Another form (fork), and the login form: a page too.
        fork = await http.post(
            "/ui/runs/w/fork", data={"csrf": csrf, "at": "0", "input": f"[{BIG}]"}
        )
        assert _page(fork, 413) == said
        assert _page(await http.post("/login", data={"token": BIG, "csrf": csrf}), 413) == said
        # The API keeps its JSON 413, announced or streamed.
        bearer = {"Authorization": f"Bearer {ADMIN}"}
        body = json.dumps({"data": BIG}).encode()
        for content in (body, _chunks(body)):
            api = await http.post(
                "/api/v1/runs/w/signals/go",
                content=content,
                headers={**bearer, "Content-Type": "application/json"},
            )
            assert api.status_code == 413, api.text
            assert api.json()["error"]["code"] == "payload_too_large"
        assert not await app.store.signal_pending(run_id="w", name="go")  # nothing sent
        # (the same form within the limit is sent)
        sent = await http.post("/ui/runs/w/signal", data={**form, "data": '{"ok": true}'})
        assert sent.status_code == 303, sent.text
        assert await app.store.signal_pending(run_id="w", name="go")


async def test_a_form_over_the_limit_without_a_session_says_the_session_ended(
    sqlite_url: str,
) -> None:
    """Its session is checked first: the page that says to log in again (a 413 page
    would have the form sent again, and refused again, for a reason it does not name)."""
    async with ui_client(sqlite_url, max_body=LIMIT) as http:
        r = await http.post("/ui/runs/w/signal", data={"csrf": "x", "name": "go", "data": BIG})
        assert r.status_code == 401, r.text
        assert r.headers["content-type"].startswith("text/html")
        assert "Your session has ended" in r.text
