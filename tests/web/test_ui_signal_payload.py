"""The web UI's signal form answers a payload the engine refuses as the API does for the
same data, status and message, on a page: 413 over the app's payload limit, 400 for
data for a run whose payloads are encrypted, sent from a server without a payload hook.
Both were a 409 ``conflict`` from the form (and the fork form's 413 was JSON). Against
a real ``tether serve`` process."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import httpx
import pytest

from tests.web.helpers import ADMIN, serving, words
from tests.web.small_payload_app import MAX_PAYLOAD, build

APP = "tests.web.small_payload_app:app"
BEARER = {"Authorization": f"Bearer {ADMIN}"}


def _login(ui: httpx.Client) -> str:
    ui.get("/login")
    csrf = ui.cookies["tether_csrf"]
    r = ui.post("/login", data={"token": ADMIN, "csrf": csrf})
    assert r.status_code == 303, r.text
    return csrf


#: An error page's title (words, by the status: ``_ui.ERROR_TITLES``), its reason, and
#: its status code, small at the card's foot.
ERROR_CARD = (r'<section class="card error-card">\s*<h1>([^<]+)</h1>\s*<p>(.*?)</p>.*?'
              r'<p class="muted small status-code">HTTP (\d+)</p>')


def _page_message(page: httpx.Response) -> str:
    """The reason an error page gives a person (its one paragraph under its title)."""
    assert page.headers["content-type"].startswith("text/html"), page.text
    found = re.search(ERROR_CARD, page.text, re.S)
    assert found is not None, page.text
    assert int(found.group(3)) == page.status_code
    assert found.group(1) == {400: "Bad request", 413: "Too large to send"}[
        page.status_code], page.text
    return html.unescape(words(found.group(2)))


def _both(url: str, ui: httpx.Client, csrf: str, run_id: str, data: object
          ) -> tuple[httpx.Response, httpx.Response]:
    api = httpx.post(f"{url}/api/v1/runs/{run_id}/signals/go", json={"data": data},
                     headers=BEARER, timeout=30)
    form = ui.post(f"/ui/runs/{run_id}/signal",
                   data={"csrf": csrf, "name": "go", "data": json.dumps(data)})
    return api, form


async def test_the_signal_form_refuses_a_payload_as_the_api_does(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from tether.encryption import AesGcm

    db = f"sqlite:///{tmp_path}/ui.db"
    async with build(db) as app:
        await app.start("waiter", "plain", run_id="plain")
    async with build(db, AesGcm({"k1": bytes(range(32))})) as sealed:
        await sealed.start("waiter", "sealed", run_id="sealed")
    big = {"note": "x" * (MAX_PAYLOAD + 10)}
    with serving(db, tmp_path, tokens=f"admin:{ADMIN}\n", app=APP) as served, \
            httpx.Client(base_url=served.url, timeout=30) as ui:
        csrf = _login(ui)
        for run_id, data, status, code in (("plain", big, 413, "payload_too_large"),
                                           ("sealed", {"ok": True}, 400, "bad_request")):
            api, form = _both(served.url, ui, csrf, run_id, data)
            error = api.json()["error"]
            assert (api.status_code, error["code"]) == (status, code), api.text
            assert form.status_code == status, form.text
            assert _page_message(form) == error["message"]
            assert "Back to the run" in form.text
        said = _page_message(_both(served.url, ui, csrf, "plain", big)[1])
        assert f"exceeds the limit of {MAX_PAYLOAD} bytes" in said
        # The fork form's input over the limit: the API's 413 too, on a page.
        api = httpx.post(f"{served.url}/api/v1/runs/plain/fork",
                         json={"at": 0, "input": [big["note"]]}, headers=BEARER, timeout=30)
        assert api.status_code == 413, api.text
        form = ui.post("/ui/runs/plain/fork", data={
            "csrf": csrf, "at": "0", "input": json.dumps([big["note"]])})
        assert form.status_code == 413, form.text
        assert _page_message(form) == api.json()["error"]["message"]
        async with build(db) as app:
            for run_id in ("plain", "sealed"):  # (nothing refused was stored)
                assert not await app.store.signal_pending(run_id=run_id, name="go")
            # (data within the limit is sent: the form itself works)
            sent = ui.post("/ui/runs/plain/signal",
                           data={"csrf": csrf, "name": "go", "data": '{"ok": true}'})
            assert sent.status_code == 303, sent.text
            assert await app.store.signal_pending(run_id="plain", name="go")
