"""An id that names nothing is echoed at most ``SHOWN_MAX`` characters long, with its
length, by every face of ``tether serve``: the API's 404 JSON, the web UI's 404 page
(a run, a form posted about one, a mistyped address), the schedules' 404s. Before, an
8,000-character id came back 8,000 characters long in each."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.web.helpers import ADMIN, ui_client, words
from tests.web.test_ui_and_cli import login
from tether import InvalidName, RunNotFound
from tether._types import check_name
from tether.errors import SHOWN_MAX, shown

LONG = "x" * 7990 + "0123456789"
#: What each message says of it.
SHOWN = f"{'x' * SHOWN_MAX!r}… (8,000 characters)"


def test_shown_cuts_a_long_value_and_keeps_a_short_one_as_it_was() -> None:
    assert shown("r-1") == "'r-1'"
    assert shown("r" * SHOWN_MAX) == repr("r" * SHOWN_MAX)
    assert shown(LONG) == SHOWN
    assert shown("/" + LONG, quoted=False) == f"/{'x' * (SHOWN_MAX - 1)}… (8,001 characters)"


@pytest.fixture
async def ui(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with ui_client(sqlite_url) as http:
        yield http


def _bounded(text: str) -> None:
    assert "0123456789" not in text and "x" * (SHOWN_MAX + 1) not in text
    assert "(8,000 characters)" in text or "(8,001 characters)" in text, text[:500]


@pytest.mark.parametrize("method,path,code", [
    ("GET", f"/api/v1/runs/{LONG}", "run_not_found"),
    ("GET", f"/api/v1/runs/{LONG}/journal", "run_not_found"),
    ("GET", f"/api/v1/runs/{LONG}/events", "run_not_found"),
    ("POST", f"/api/v1/runs/{LONG}/cancel", "run_not_found"),
    ("POST", f"/api/v1/runs/{LONG}/approval", "run_not_found"),
    ("POST", f"/api/v1/runs/{LONG}/signals/go", "run_not_found"),
    ("POST", f"/api/v1/runs/{LONG}/retry", "run_not_found"),
    ("POST", f"/api/v1/runs/{LONG}/fork", "run_not_found"),
    ("POST", f"/api/v1/runs/{LONG}/erase", "run_not_found"),
    ("POST", f"/api/v1/schedules/{LONG}/pause", "schedule_not_found"),
    ("DELETE", f"/api/v1/schedules/{LONG}", "schedule_not_found"),
])
async def test_the_api_404_echoes_a_long_id_cut(ui: httpx.AsyncClient, method: str,
                                                path: str, code: str) -> None:
    body = {"approved": True} if path.endswith("approval") else \
        {"at": 0} if path.endswith("fork") else {}
    r = await ui.request(method, path, json=body if method == "POST" else None,
                         headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 404, r.text[:300]
    error = r.json()["error"]
    assert error["code"] == code
    _bounded(error["message"])
    assert len(error["message"]) < 200


async def test_the_ui_404_pages_echo_a_long_id_or_address_cut(ui: httpx.AsyncClient) -> None:
    csrf = await login(ui, ADMIN)
    html = {"Accept": "text/html"}
    for path in (f"/runs/{LONG}", f"/{LONG}"):
        r = await ui.get(path, headers=html)
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
        _bounded(r.text)
    # A form about a run that does not exist: its page neither echoes the id nor links
    # back to it.
    r = await ui.post(f"/ui/runs/{LONG}/cancel", data={"csrf": csrf})
    assert r.status_code == 404
    _bounded(r.text)
    assert "Back to the run" not in r.text


@pytest.mark.parametrize("key", ["workflow", "queue", "q", "status"])
async def test_an_over_long_filter_is_refused_with_the_apis_reason(
        ui: httpx.AsyncClient, key: str) -> None:
    """The runs page (and its live fragment) refuses a filter the API refuses, with the
    API's reason, as it does an unknown status. It used to cut it to 200 characters
    and say "No runs match these filters". (A status that is none: the page said
    "unknown status 'x…'", whole, where the API named the statuses.)"""
    await login(ui, ADMIN)
    api = await ui.get("/api/v1/runs", params={key: LONG},
                       headers={"Authorization": f"Bearer {ADMIN}"})
    assert api.status_code == 400
    reason = api.json()["error"]["message"]
    for path in ("/runs", "/ui/runs"):
        r = await ui.get(path, params={key: LONG}, headers={"Accept": "text/html"})
        assert r.status_code == 400, r.text[:300]
        assert reason in html.unescape(r.text)
        assert "No runs match" not in r.text
        _bounded(html.unescape(r.text))


async def test_every_face_words_a_missing_run_alike(ui: httpx.AsyncClient) -> None:
    """The API and the web UI said "no run 'nope'" where the CLI (``RunNotFound``)
    said "no run with id 'nope'": one wording now, the API's ``code`` kept."""
    await login(ui, ADMIN)
    said = str(RunNotFound("nope"))
    assert said == "no run with id 'nope'"
    r = await ui.get("/api/v1/runs/nope", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 404
    assert r.json()["error"] == {"code": "run_not_found", "message": said}
    r = await ui.post("/api/v1/runs/nope/cancel", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.json()["error"] == {"code": "run_not_found", "message": said}
    page = await ui.get("/runs/nope", headers={"Accept": "text/html"})
    assert page.status_code == 404 and said in html.unescape(words(page.text))
    # (the id kept whole on a line: app.css's .id)
    assert '<span class="id">&#39;nope&#39;</span>' in page.text


def test_an_over_long_name_is_echoed_as_an_id_is() -> None:
    """``InvalidName`` cut a long name its own way ("'www…'... is 8000 characters
    long"); it uses ``shown``'s form, as a missing id's message does."""
    with pytest.raises(InvalidName) as caught:
        check_name("workflow", LONG)
    assert str(caught.value) == f"workflow {SHOWN} is too long; at most 200 are allowed"
    with pytest.raises(InvalidName) as caught:
        check_name("queue", "q\x1b")
    assert str(caught.value) == "queue 'q\\x1b' holds control characters"


async def test_the_children_of_a_run_with_an_id_past_200_characters_can_be_listed(
        ui: httpx.AsyncClient) -> None:
    """``parent=`` names a stored run, whose id the engine may have made longer than a
    new name's 200 characters (a child's is its parent's and ``.N``): the API lists its
    children (none here) as the web UI does, where it answered 400 "too long"."""
    child = "p" * 200 + ".3"
    auth = {"Authorization": f"Bearer {ADMIN}"}
    r = await ui.get("/api/v1/runs", params={"parent": child}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["runs"] == []
    await login(ui, ADMIN)
    page = await ui.get("/runs", params={"parent": child})
    assert page.status_code == 200
    # A workflow filter is a new name's: still held to 200 characters.
    r = await ui.get("/api/v1/runs", params={"workflow": "w" * 201}, headers=auth)
    assert r.status_code == 400 and "too long" in r.json()["error"]["message"]
