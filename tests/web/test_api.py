"""The HTTP API, route by route, in process (httpx over ASGI) on a real store: every
route, bad input with the right 4xx, and the store unchanged after each rejection."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest

import tether
from tests.store.blackhole import BlackHoleProxy
from tests.store.rtproxy import RoundTripProxy
from tests.web import webapp
from tests.web.helpers import ADMIN, READ, add_paid_rounds
from tether import App
from tether._clock import SystemClock
from tether.serve import Tokens, create_app
from tether.store.postgres import PostgresStore


@dataclass
class Api:
    app: App
    http: httpx.AsyncClient

    async def snapshot(self) -> list[Any]:
        """Everything a request could change: runs, journals, signals, events."""
        store = self.app.store
        runs = await store.run_search(limit=500)
        out: list[Any] = []
        for r in runs:
            out.append((r.run_id, r.status, r.cancel_requested, r.updated_at))
            out.append([(e.position, e.status) for e in await store.journal_read(r.run_id)])
            out.append(await _stored_events(store, r.run_id))
        return out


async def _stored_events(store: Any, run_id: str) -> int:
    """How many events of the run are stored (on PostgreSQL too, each is readable once
    its transaction committed: migration 0013)."""
    return len(await store.run_events_read(run_id=run_id, after=None, limit=100000))


async def _api(url: str, tokens: Tokens | None, max_body: int = 1 << 20
               ) -> AsyncIterator[Api]:
    app = webapp.make_app(url)
    await app._open()
    # /metrics computed in each scrape (metrics_interval 0): these tests read the store's
    # figures right after changing it; the background computation has tests of its own.
    asgi = create_app(app, tokens=tokens, max_body=max_body, mcp=False, metrics_interval=0)
    headers = {"Authorization": f"Bearer {ADMIN}"} if tokens else {}
    transport = httpx.ASGITransport(app=asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                 headers=headers) as http:
        try:
            yield Api(app, http)
        finally:
            await app.close()


@pytest.fixture
async def api(sqlite_url: str) -> AsyncIterator[Api]:
    """The API with an admin and a read token; requests carry the admin one."""
    tokens = Tokens({ADMIN: "admin", READ: "read"})
    async for a in _api(sqlite_url, tokens, max_body=64 * 1024):
        yield a


@pytest.fixture
async def api_open(sqlite_url: str) -> AsyncIterator[Api]:
    """The API without tokens (loopback mode), SQLite."""
    async for a in _api(sqlite_url, None):
        yield a


@pytest.fixture
async def api_any(store_url: str) -> AsyncIterator[Api]:
    """The API without tokens (loopback mode), on SQLite and PostgreSQL."""
    async for a in _api(store_url, None):
        yield a


async def wait_status(api: Api, run_id: str, status: str, timeout: float = 15) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            doc = (await api.http.get(f"/api/v1/runs/{run_id}")).json()
            if doc["status"] == status:
                return doc
            await asyncio.sleep(0.02)


def error_of(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    return str(body["error"]["code"])


# -- POST /api/v1/runs ------------------------------------------------------------------


async def test_start_run_is_created_then_idempotent(api: Api) -> None:
    """A new run answers 201 with its document; the same run_id again answers 200."""
    r = await api.http.post("/api/v1/runs", json={"workflow": "greet", "input": ["ana"],
                                                  "run_id": "r-1"})
    assert r.status_code == 201
    doc = r.json()
    assert doc["run_id"] == "r-1" and doc["status"] == "queued"
    assert doc["input"] == ["ana"] and doc["workflow"] == "greet"
    again = await api.http.post("/api/v1/runs", json={"workflow": "greet", "input": ["bob"],
                                                      "run_id": "r-1"})
    assert again.status_code == 200
    assert again.json()["input"] == ["ana"]
    async with api.app.worker(queues=["default"]):
        done = await wait_status(api, "r-1", "completed")
    assert done["result"] == "hello ana"


async def test_start_answer_says_created_and_what_differs_as_tether_start_json(
        api: Api) -> None:
    """The answer of ``POST /api/v1/runs`` carried "created or already existed" only in
    its status code: its body now has the fields ``tether start --json`` prints,
    ``created``, ``input_differs`` and ``queue_differs`` (the existing run's queue
    against the one named, or the workflow's own queue when none is)."""
    r = await api.http.post("/api/v1/runs", json={"workflow": "greet", "input": ["ana"],
                                                  "run_id": "q-1", "queue": "side"})
    assert r.status_code == 201
    fields = ("created", "input_differs", "queue_differs")
    assert [r.json()[k] for k in fields] == [True, False, False]
    for body, differs in (
            ({"input": ["ana"], "queue": "side"}, [False, False, False]),
            ({"input": ["bob"], "queue": "side"}, [False, True, False]),
            ({"input": ["ana"], "queue": "other"}, [False, False, True]),
            ({"input": ["ana"]}, [False, False, True]),  # greet's own queue: default
    ):
        again = await api.http.post("/api/v1/runs", json={"workflow": "greet",
                                                          "run_id": "q-1", **body})
        assert again.status_code == 200, again.text
        doc = again.json()
        assert [doc[k] for k in fields] == differs, body
        assert (doc["queue"], doc["input"]) == ("side", ["ana"])  # the existing run's
    # Started on the workflow's own queue, an id again without "queue" is the same.
    q2 = {"workflow": "greet", "input": ["ana"], "run_id": "q-2"}
    await api.http.post("/api/v1/runs", json=q2)
    same = (await api.http.post("/api/v1/runs", json=q2)).json()
    assert [same[k] for k in fields] == [False, False, False]


async def test_of_concurrent_starts_of_one_id_exactly_one_is_created(api_any: Api) -> None:
    """Eight clients start the same run id at once: one 201 (the insert that created the
    run decides, not a read before it, which all eight passed on PostgreSQL), seven 200."""
    answers = await asyncio.gather(*[
        api_any.http.post("/api/v1/runs", json={"workflow": "greet", "input": [f"c{i}"],
                                                "run_id": "dup"}) for i in range(8)])
    assert sorted(r.status_code for r in answers) == [200] * 7 + [201], \
        [r.text for r in answers]
    first = next(r for r in answers if r.status_code == 201).json()
    assert all(r.json()["input"] == first["input"] for r in answers)


@pytest.mark.parametrize(("body", "status", "code"), [
    (b"{not json", 400, "malformed_json"),
    (b'{"workflow": "greet", "input": [NaN]}', 400, "malformed_json"),
    (b'{"workflow": "greet", "input": [1e999]}', 400, "malformed_json"),
    (b"[1, 2]", 400, "bad_request"),
    (b"", 400, "bad_request"),
    (json.dumps({"input": []}).encode(), 400, "bad_request"),
    (json.dumps({"workflow": ""}).encode(), 400, "bad_request"),
    (json.dumps({"workflow": "greet", "input": "ana"}).encode(), 400, "bad_request"),
    (json.dumps({"workflow": "greet", "colour": "red"}).encode(), 400, "bad_request"),
    (json.dumps({"workflow": "greet", "run_id": 7}).encode(), 400, "bad_request"),
    (json.dumps({"workflow": "greet", "run_id": "a\nb"}).encode(), 400, "bad_request"),
])
async def test_start_run_rejects_bad_input(api: Api, body: bytes, status: int,
                                           code: str) -> None:
    """Malformed or invalid bodies get a 4xx JSON error and start nothing."""
    before = await api.snapshot()
    r = await api.http.post("/api/v1/runs", content=body,
                            headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert error_of(r) == code
    assert await api.snapshot() == before


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(("path", "body"), [
    ("/api/v1/runs", b'{"workflow": "greet", "input": [' + _nested(3000) + b"]}"),
    ("/api/v1/runs", b'{"workflow": "greet", "input": [' + _nested(990) + b"]}"),
    ("/api/v1/runs/w/signals/go", b'{"data": ' + _nested(3000) + b"}"),
    ("/api/v1/runs/w/fork", b'{"at": 0, "input": [' + _nested(3000) + b"]}"),
    ("/api/v1/runs", b'{"workflow": "greet", "workflow": "wait_go", "run_id": "dk"}'),
    ("/api/v1/runs/w/approval", b'{"approved": true, "approved": false}'),
    ("/api/v1/runs/w/signals/go", b'{"data": {"amount": 1, "amount": 1000}}'),
])
async def test_bodies_nested_too_deeply_or_with_a_key_twice_are_malformed(
        api: Api, path: str, body: bytes) -> None:
    """A body nested deeper than the parser goes (a few kB of brackets) was a 500 with
    a RecursionError (at about 990 levels the parser's own limit is not reached, but
    the request's stack is deeper); an object naming a key twice was read as its last
    value (which one the client meant is a guess). Both are a 400 malformed_json now,
    and change nothing."""
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
    before = await api.snapshot()
    r = await api.http.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert error_of(r) == "malformed_json"
    assert "nested too deeply" in r.text or "twice" in r.text
    assert await api.snapshot() == before


async def test_a_wrong_method_is_a_405_that_names_every_method_of_the_path(api: Api) -> None:
    """A 405 says which methods the path takes (``Allow``, RFC 9110): it had none, and
    with it Starlette's named only the first route of the path (``PUT /api/v1/runs``:
    ``POST``, where ``GET`` is one too)."""
    for method, path, allowed in [("PUT", "/api/v1/runs", "GET, HEAD, POST"),
                                  ("DELETE", "/api/v1/runs/x", "GET, HEAD"),
                                  ("POST", "/api/v1/approvals", "GET, HEAD"),
                                  ("GET", "/api/v1/schedules/s/pause", "DELETE, POST")]:
        r = await api.http.request(method, path)
        assert r.status_code == 405 and error_of(r) == "method_not_allowed", (method, path)
        assert r.headers["allow"] == allowed, (method, path)
        # The message says it too (it was "Method Not Allowed" until 2026-12-06).
        assert r.json()["error"]["message"] == (
            f"{method} is not allowed here: this path takes {allowed}"), r.text


async def test_an_address_with_no_route_is_a_404_that_says_where_routes_are(api: Api) -> None:
    """``not_found`` said "Not Found" (Starlette's reason phrase): now the address, cut
    as an unknown id is, and where the API's addresses are listed."""
    for method, path in (("GET", "/api/v1/nope"), ("POST", "/api/v2/runs")):
        r = await api.http.request(method, path)
        assert r.status_code == 404 and error_of(r) == "not_found", (method, path)
        assert r.json()["error"]["message"] == (
            f"there is nothing at {path}: the API's addresses are in /openapi.json")
    r = await api.http.get("/api/v1/" + "x" * 300)
    assert "… (308 characters)" in r.json()["error"]["message"]


async def test_start_of_an_unregistered_workflow_is_queued_with_a_warning(api: Api) -> None:
    """A name no worker has registered is queued (201) and the answer warns about it."""
    r = await api.http.post("/api/v1/runs", json={"workflow": "nope", "run_id": "n1"})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["status"] == "queued" and doc["workflow"] == "nope"
    assert "no worker has registered workflow 'nope'" in doc["warnings"][0]
    again = await api.http.post("/api/v1/runs", json={"workflow": "nope", "run_id": "n1"})
    assert again.status_code == 200 and "warnings" not in again.json()


async def test_start_on_a_paused_queue_warns(api_any: Api) -> None:
    """A run queued on a paused queue (``tether queue-limit Q 0``) is started (201) with
    a ``warnings`` line saying so, as ``tether start`` warns (until 2026-12-07, none);
    a start on a queue that is not paused has none."""
    await api_any.app.set_queue_limit("held", 0)
    await api_any.app.store.workflow_register(workflows={"known": "default"},
                                              now=api_any.app.clock.now())
    r = await api_any.http.post("/api/v1/runs", json={"workflow": "known", "run_id": "h1",
                                                      "queue": "held"})
    assert r.status_code == 201, r.text
    assert r.json()["warnings"] == [
        "queue 'held' is paused (limit 0): the run waits until `tether queue-resume held` "
        "lifts it"], r.text
    r = await api_any.http.post("/api/v1/runs", json={"workflow": "known", "run_id": "h2"})
    assert r.status_code == 201 and "warnings" not in r.json(), r.text


async def test_queues_are_listed_paused_and_resumed_with_their_limit(api_any: Api) -> None:
    """``GET /api/v1/queues`` answers ``tether queues --json``'s rows; ``POST
    /api/v1/queues/{name}/pause`` pauses a queue and keeps its limit, which ``.../resume``
    gives back (``tether queue-pause`` and ``queue-resume``): there was no queue route,
    and the only way out of a pause (a limit of none) lost the limit. A pause of a queue
    the store does not know warns; a resume of a queue that is not paused changes
    nothing and says so."""
    app = api_any.app
    await app.set_queue_limit("llm", 5)
    await app.store.workflow_register(workflows={"known": "default"}, now=app.clock.now())
    r = await api_any.http.get("/api/v1/queues")
    assert r.status_code == 200, r.text
    rows = {q["queue"]: q for q in r.json()["queues"]}
    assert rows["llm"] == {"queue": "llm", "limit": 5, "paused": False,
                           "limit_before_pause": None, "workflows": [], "queued": 0,
                           "due": 0, "running": 0, "waiting": 0, "workers": 0}, rows
    assert rows["default"]["workflows"] == ["known"], rows
    r = await api_any.http.post("/api/v1/queues/llm/pause")
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("queue", "limit", "paused", "limit_before_pause")} == {
        "queue": "llm", "limit": 0, "paused": True, "limit_before_pause": 5}, r.text
    assert "warnings" not in r.json(), r.text
    assert await app.queue_pauses() == {"llm": 5}
    r = await api_any.http.post("/api/v1/queues/llm/resume")
    assert r.status_code == 200, r.text
    assert (r.json()["limit"], r.json()["paused"], r.json()["resumed"]) == (5, False, True)
    assert (await app.queue_limits()) == {"llm": 5}
    r = await api_any.http.post("/api/v1/queues/llm/resume")
    assert (r.status_code, r.json()["limit"], r.json()["resumed"]) == (200, 5, False), r.text
    # (a typo: paused all the same, as a queue may be paused before its workers come)
    r = await api_any.http.post("/api/v1/queues/defualt/pause")
    assert r.status_code == 200 and r.json()["paused"] is True, r.text
    assert r.json()["warnings"] == [
        "no workflow a worker registered is on queue 'defualt', no run is queued there "
        "and it had no limit: it is paused, for runs that come to it (did you mean "
        "'default'?)"], r.text
    r = await api_any.http.post("/api/v1/queues/defualt/resume")
    assert (r.json()["limit"], r.json()["resumed"]) == (None, True), r.text
    r = await api_any.http.post("/api/v1/queues/" + "q" * 201 + "/pause")
    assert r.status_code == 400 and error_of(r) == "bad_request", r.text
    assert "defualt" not in await app.queue_limits()


async def test_a_read_token_may_list_queues_not_pause_them(api: Api) -> None:
    read = {"Authorization": f"Bearer {READ}"}
    assert (await api.http.get("/api/v1/queues", headers=read)).status_code == 200
    for action in ("pause", "resume"):
        r = await api.http.post(f"/api/v1/queues/llm/{action}", headers=read)
        assert r.status_code == 403 and error_of(r) == "forbidden", r.text
    assert await api.app.queue_limits() == {}


async def test_a_start_whose_input_the_workflow_cannot_take_is_a_bad_request(
        api: Api) -> None:
    """With the workflow's code at hand (``serve --app``), an input its signature cannot
    take is a 400 that says why, as ``tether start --app`` exits 2, and nothing is
    stored: the run was created (201) and failed on the worker with a ``TypeError``."""
    for values, says in (([], "greet(name: str): missing a required argument: 'name'"),
                         (["a", "b"], "greet(name: str): too many positional arguments"),
                         # (a type the annotation refuses: it was started)
                         ([5], "greet(name: str): argument 'name' takes str, not a "
                               "number: 5")):
        r = await api.http.post("/api/v1/runs", json={"workflow": "greet", "input": values,
                                                      "run_id": "g"})
        assert r.status_code == 400 and error_of(r) == "bad_request", r.text
        assert r.json()["error"]["message"] == (
            f"input {json.dumps(values)} does not fit {says}")
    assert await api.snapshot() == []
    r = await api.http.post("/api/v1/runs", json={"workflow": "greet", "input": ["ana"]})
    assert r.status_code == 201, r.text
    # A workflow the server's app does not know is queued for a worker to come, as before.
    r = await api.http.post("/api/v1/runs", json={"workflow": "later", "input": [1, 2]})
    assert r.status_code == 201 and r.json()["warnings"], r.text


async def test_a_start_with_check_args_false_is_not_judged_by_the_servers_code(
        api: Api) -> None:
    """``"check_args": false``: the input goes to the workers as it is, for a server
    whose code is not theirs (another deploy, where the signature changed), as
    ``App.start(check_args=False)`` and ``tether start --no-check-args`` do. A value
    other than true or false is a 400."""
    r = await api.http.post("/api/v1/runs", json={"workflow": "greet", "input": ["a", "b"],
                                                  "run_id": "g2", "check_args": False})
    assert r.status_code == 201 and r.json()["input"] == ["a", "b"], r.text
    r = await api.http.post("/api/v1/runs", json={"workflow": "greet", "input": ["a", "b"],
                                                  "check_args": "no"})
    assert r.status_code == 400 and error_of(r) == "bad_request", r.text
    assert r.json()["error"]["message"] == "check_args must be true or false"


async def test_start_run_conflicting_id_and_wrong_media_type(api: Api) -> None:
    """A run id used by another workflow is a 409; a non-JSON body a 415."""
    assert (await api.http.post("/api/v1/runs", json={"workflow": "greet", "input": ["a"],
                                                      "run_id": "x"})).status_code == 201
    before = await api.snapshot()
    r = await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "x"})
    assert r.status_code == 409 and error_of(r) == "conflict"
    r = await api.http.post("/api/v1/runs", content=b"workflow=greet",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and error_of(r) == "unsupported_media_type"
    assert await api.snapshot() == before


async def test_a_body_with_a_content_encoding_is_refused_and_its_kind_named_in_json(
        api: Api) -> None:
    """A body under a ``Content-Encoding`` the server does not decode (RFC 9110: 415):
    a gzipped start was read as JSON text ("'utf-8' codec can't decode byte 0x8b", a
    400 malformed_json), and one that said gzip but was plain JSON started a run. And a
    body that is JSON but no object is named in JSON's words ("not list", "not
    NoneType" before 2026-12-06)."""
    import gzip

    before = await api.snapshot()
    start = json.dumps({"workflow": "greet", "input": ["x"], "run_id": "gz"}).encode()
    for body in (gzip.compress(start), start):
        for coding in ("gzip", "br", "deflate, gzip"):
            r = await api.http.post("/api/v1/runs", content=body, headers={
                "Content-Type": "application/json", "Content-Encoding": coding})
            assert r.status_code == 415 and error_of(r) == "unsupported_media_type", r.text
            assert "Content-Encoding" in r.json()["error"]["message"]
    assert await api.snapshot() == before
    r = await api.http.post("/api/v1/runs", content=start, headers={
        "Content-Type": "application/json", "Content-Encoding": "identity"})
    assert r.status_code == 201, r.text
    for body, kind in ((b"[1]", "an array"), (b"null", "null"), (b'"go"', "a string"),
                       (b"7", "a number"), (b"true", "a boolean")):
        r = await api.http.post("/api/v1/runs", content=body,
                                headers={"Content-Type": "application/json"})
        assert r.json()["error"]["message"] == f"the body must be a JSON object, not {kind}"


async def test_a_json_type_with_the_json_suffix_is_json_and_a_charset_must_be_utf8(
        api: Api) -> None:
    """A body sent as ``application/merge-patch+json`` or ``application/vnd.api+json``
    (RFC 6839: a ``+json`` type is JSON) was a 415; a ``charset`` was not read, so a
    Latin-1 body was a 400 "'utf-8' codec can't decode byte 0xe9" (or taken misread).
    Any other type is still a 415 that names it, and changes nothing."""
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
    for i, ctype in enumerate(("application/merge-patch+json", "application/vnd.api+json",
                               "application/json; charset=utf-8",
                               'Application/JSON; Charset="UTF-8"',
                               "application/problem+json;charset=us-ascii")):
        body = json.dumps({"workflow": "greet", "input": ["é"], "run_id": f"t{i}"})
        r = await api.http.post("/api/v1/runs", content=body.encode(),
                                headers={"Content-Type": ctype})
        assert r.status_code == 201 and r.json()["input"] == ["é"], (ctype, r.text)
    r = await api.http.post("/api/v1/runs/w/signals/go", content=b'{"data": 1}',
                            headers={"Content-Type": "application/vnd.api+json"})
    assert r.status_code == 202, r.text
    before = await api.snapshot()
    latin = '{"workflow": "greet", "input": ["été"], "run_id": "l"}'.encode("latin-1")
    for ctype, charset in (("application/json; charset=iso-8859-1", "iso-8859-1"),
                           ("application/vnd.api+json; charset=UTF-16", "UTF-16")):
        r = await api.http.post("/api/v1/runs", content=latin, headers={"Content-Type": ctype})
        assert r.status_code == 415 and error_of(r) == "unsupported_media_type", r.text
        assert r.json()["error"]["message"] == (
            f"charset {charset!r} is not read here: send the JSON body in UTF-8 "
            "(charset=utf-8, or no charset)")
    start = b'{"workflow": "greet", "input": ["x"], "run_id": "n"}'
    for ctype in ("text/plain", "application/jsonx", "application/+json", "text/x+json",
                  "application/x-www-form-urlencoded", None):
        r = await api.http.post("/api/v1/runs", content=start,
                                headers={"Content-Type": ctype} if ctype else {})
        assert r.status_code == 415 and error_of(r) == "unsupported_media_type", r.text
        said = f"not {ctype!r}" if ctype else "the request has none"
        assert r.json()["error"]["message"] == (
            "send the body as JSON with Content-Type: application/json (or an "
            f"application/...+json type): {said}"), r.text
    assert await api.snapshot() == before


@pytest.mark.parametrize(("path", "body", "where", "code"), [
    ("/api/v1/runs", b'{"workflow": "greet", "input": ["\\ud800"]}', "field input[0]",
     "d800"),
    ("/api/v1/runs", b'{"workflow": "gr\\udfffeet"}', "field workflow", "dfff"),
    # A key holding one was a 500 (the answer naming it could not be encoded).
    ("/api/v1/runs", b'{"workflow": "greet", "input": [{"k\\udc00": 1}]}',
     "the key 'k\\udc00' of field input[0]", "dc00"),
    ("/api/v1/runs", b'{"workflow": "greet", "\\ud800x": 1}',
     "the field name '\\ud800x'", "d800"),
    ("/api/v1/runs/w/signals/go", b'{"data": {"a": ["ok", "\\ude00"]}}',
     "field data.a[1]", "de00"),
    ("/api/v1/runs/w/signals/go", b'{"data": {"b c": "\\ud83d"}}',
     "field data['b c']", "d83d"),
    ("/api/v1/runs/w/approval", b'{"approved": true, "note": "\\ud800"}', "field note",
     "d800"),
    ("/api/v1/runs/w/fork", b'{"at": 0, "input": ["ok", "\\ud800"]}', "field input[1]",
     "d800"),
])
async def test_a_lone_surrogate_in_a_body_is_named_by_its_field(
        api: Api, path: str, body: bytes, where: str, code: str) -> None:
    """A ``\\ud800`` escape with no partner is valid JSON but no Unicode text: the 400
    said "input of workflow 'greet': value of type dict is not JSON-serializable"
    (the engine's wrapper of the input, not the client's field), and a key holding one
    was a 500. The answer names the field of the request, and nothing changes."""
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
    before = await api.snapshot()
    r = await api.http.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and error_of(r) == "bad_request", r.text
    assert r.json()["error"]["message"] == (
        f"{where} is not valid Unicode (lone surrogate \\u{code}): a \\uD800-\\uDFFF "
        "escape must be half of a pair, as in \\ud83d\\ude00")
    assert await api.snapshot() == before


async def test_a_pair_of_surrogate_escapes_and_an_escaped_backslash_are_taken(
        api: Api) -> None:
    """What is no lone surrogate is taken as before: a pair (an emoji), and the text
    ``\\ud800`` written with an escaped backslash."""
    r = await api.http.post("/api/v1/runs", content=(
        b'{"workflow": "greet", "input": ["\\ud83d\\ude00 \\\\ud800"], "run_id": "e"}'),
        headers={"Content-Type": "application/json"})
    assert r.status_code == 201 and r.json()["input"] == ["\U0001f600 \\ud800"], r.text


async def test_oversized_body_is_refused(api: Api) -> None:
    """A body over the limit is a 413, whether announced or streamed, and changes nothing."""
    before = await api.snapshot()
    big = json.dumps({"workflow": "greet", "input": ["x" * 70_000]}).encode()
    r = await api.http.post("/api/v1/runs", content=big,
                            headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and error_of(r) == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    r = await api.http.post("/api/v1/runs", content=chunks(),
                            headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and error_of(r) == "payload_too_large"
    assert await api.snapshot() == before


# -- auth ---------------------------------------------------------------------------------


async def test_missing_or_wrong_token_is_401_and_read_token_cannot_change(api: Api) -> None:
    """No token or an unknown one: 401 on every route; a read token reads but gets 403
    on every change, and the store stays as it was."""
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
    before = await api.snapshot()
    routes = [("GET", "/api/v1/runs", None), ("GET", "/api/v1/runs/w", None),
              ("GET", "/api/v1/runs/w/journal", None), ("GET", "/api/v1/approvals", None),
              ("GET", "/api/v1/runs/w/events", None), ("GET", "/metrics", None),
              ("GET", "/openapi.json", None),
              ("POST", "/api/v1/runs", {"workflow": "greet"}),
              ("POST", "/api/v1/runs/w/signals/go", {"data": 1}),
              ("POST", "/api/v1/runs/w/cancel", None),
              ("POST", "/api/v1/runs/w/approval", {"approved": True}),
              ("POST", "/api/v1/runs/w/retry", None),
              ("POST", "/api/v1/runs/w/fork", {"at": 0}),
              ("POST", "/api/v1/runs/w/erase", None),
              ("GET", "/api/v1/schedules", None),
              ("POST", "/api/v1/schedules/s/pause", None),
              ("POST", "/api/v1/schedules/s/resume", None),
              ("POST", "/api/v1/schedules/s/trigger", None),
              ("DELETE", "/api/v1/schedules/s", None)]
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong-token-123456789"},
                    {"Authorization": f"Basic {ADMIN}"}):
        for method, path, body in routes:
            r = await api.http.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (method, path, headers)
            assert error_of(r) == "unauthorized"
    read = {"Authorization": f"Bearer {READ}"}
    for method, path, body in routes:
        if path.endswith("/events"):
            continue  # a stream that stays open (read over HTTP in test_sse.py)
        r = await api.http.request(method, path, json=body, headers=read)
        if method in ("POST", "DELETE"):
            assert r.status_code == 403, (method, path)
            assert error_of(r) == "forbidden"
        else:
            assert r.status_code == 200, (method, path)
    assert await api.snapshot() == before
    assert (await api.http.get("/healthz", headers={"Authorization": ""})).status_code == 200


async def test_a_read_token_is_refused_by_every_route_that_changes(api: Api) -> None:
    """Every route of the router (not a list kept by hand: a route added later is
    covered) whose method is not GET or HEAD refuses a read principal with 403 and
    changes nothing: the API with a read bearer token, the UI's forms with a read
    session and its valid CSRF token. Only /login and /logout are open to it."""
    from starlette.routing import Route

    from tether.serve._server import Guard

    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
    before = await api.snapshot()
    guard = create_app(api.app, tokens=Tokens({ADMIN: "admin", READ: "read"}), mcp=False)
    assert isinstance(guard, Guard)
    values = {"run_id": "w", "name": "s", "action": "pause"}
    changing = []
    for route in guard.app.routes:
        if not isinstance(route, Route):
            continue
        for method in sorted((route.methods or set()) - {"GET", "HEAD"}):
            path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values[m.group(1)], route.path)
            changing.append((method, path))
    transport = httpx.ASGITransport(app=guard)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        await http.get("/login")
        csrf = http.cookies["tether_csrf"]
        r = await http.post("/login", data={"token": READ, "csrf": csrf})
        assert r.status_code == 303
        checked = set()
        for method, path in changing:
            if path in ("/login", "/logout"):
                continue
            if path.startswith("/ui/"):
                r = await http.request(method, path, data={
                    "csrf": csrf, "decision": "approve", "name": "go", "at": "0"})
            else:
                r = await http.request(method, path, json={},
                                       headers={"Authorization": f"Bearer {READ}"})
            assert r.status_code == 403, (method, path, r.status_code, r.text[:200])
            checked.add(path.split("/")[1])
    assert checked == {"api", "ui"} and len(changing) >= 18, changing
    assert await api.snapshot() == before


@pytest.mark.postgres
async def test_with_the_database_gone_every_request_answers_503_at_once(
        pg_url: str) -> None:
    """The PostgreSQL server goes away under ``tether serve`` (a proxy in front of it
    stops listening). Every request answers at once, not after the pool's timeout
    (10 s): the API and ``/healthz`` with 503 ``store_unavailable`` naming the server
    and ``Retry-After``, a web page with the error page that reloads itself. When the
    server is back, the next requests after a probe succeed."""
    proxy = await RoundTripProxy().start()
    app = App(proxy.url(pg_url))
    try:
        await app._open()
        asgi = create_app(app, tokens=None, mcp=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                     base_url="http://127.0.0.1", timeout=60) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/api/v1/runs")).status_code == 200
            port = proxy.port
            await proxy.close()
            t0 = time.monotonic()
            for path in ("/api/v1/runs", "/api/v1/runs/r1", "/healthz", "/metrics") * 3:
                r = await http.get(path)
                assert r.status_code == 503 and error_of(r) == "store_unavailable", \
                    (path, r.text)
                assert "127.0.0.1" in r.json()["error"]["message"]
                assert r.headers["retry-after"] == "1"
            r = await http.post("/api/v1/runs", json={"workflow": "greet", "input": ["x"]})
            assert r.status_code == 503 and error_of(r) == "store_unavailable", r.text
            page = await http.get("/runs")
            assert page.status_code == 503 and "text/html" in page.headers["content-type"]
            assert "The store is unavailable" in page.text
            assert '<meta http-equiv="refresh" content="5">' in page.text
            took = time.monotonic() - t0
            assert took < 5, took  # 15 requests; each waiting for the pool: 10 s
            await RoundTripProxy.start(proxy, port)
            back = time.monotonic()
            while (await http.get("/api/v1/runs")).status_code != 200:
                assert time.monotonic() - back < 5, "serve did not find the store back"
                await asyncio.sleep(0.1)
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/runs")).status_code == 200
    finally:
        await app.close()
        await proxy.close()


@pytest.mark.postgres
async def test_healthz_answers_within_its_bound_when_the_server_hangs(pg_url: str) -> None:
    """``/healthz`` waits for the store at most 2 s, so that a probe gets its 503 rather
    than a timeout of its own. With a server that accepts connections and never answers,
    it answered after 12 s: giving up the query cancels it, and psycopg's cancel opens a
    connection to the server to send a cancel request, which waited for the connect
    timeout. The answer no longer waits for the cancel. (The black-hole proxy accepts
    the cancel's connection and holds it, as the hung server does.)"""
    proxy = await BlackHoleProxy().start()
    app = App(proxy.url(pg_url))
    try:
        await app._open()
        asgi = create_app(app, tokens=None, mcp=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                     base_url="http://127.0.0.1", timeout=60) as http:
            assert (await http.get("/healthz")).status_code == 200
            proxy.silence()
            t0 = time.monotonic()
            r = await http.get("/healthz")
            took = time.monotonic() - t0
            assert r.status_code == 503 and error_of(r) == "store_unavailable", r.text
            assert took < 3, took
    finally:
        await proxy.close()
        await app.close()


@pytest.mark.postgres
async def test_serve_answers_503_quickly_while_the_server_never_answers(
        pg_url: str) -> None:
    """The server goes silent under ``tether serve`` (accepts connections, answers
    nothing; the connections held through it never answer again). The request that
    meets a silent pooled connection gets its 503 once the store's deadline has passed
    (the API had none: it waited for ever), the next ones at once, ``/healthz`` within
    its bound; once the network is back the store is served again on new connections."""
    proxy = await BlackHoleProxy().start()
    app = App(store=PostgresStore(proxy.url(pg_url), query_timeout=1.0,
                                  connect_timeout=1.0))
    try:
        await app._open()
        asgi = create_app(app, tokens=None, mcp=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                     base_url="http://127.0.0.1", timeout=60) as http:
            assert (await http.get("/healthz")).status_code == 200
            await asyncio.gather(*(http.get("/api/v1/runs") for _ in range(3)))
            proxy.silence()
            t0 = time.monotonic()
            for path in ("/api/v1/runs", "/api/v1/runs/r1", "/healthz", "/metrics") * 2:
                t1 = time.monotonic()
                r = await asyncio.wait_for(http.get(path), 10)
                assert r.status_code == 503 and error_of(r) == "store_unavailable", \
                    (path, r.text)
                assert time.monotonic() - t1 < 3.0, path  # (the deadline: 1 s)
            r = await asyncio.wait_for(http.post(
                "/api/v1/runs", json={"workflow": "greet", "input": ["x"]}), 10)
            assert r.status_code == 503 and error_of(r) == "store_unavailable", r.text
            assert time.monotonic() - t0 < 6.0
            proxy.heal()
            back = time.monotonic()
            while (await asyncio.wait_for(http.get("/api/v1/runs"), 10)).status_code != 200:
                assert time.monotonic() - back < 15, "serve did not find the store back"
                await asyncio.sleep(0.1)
            assert (await http.get("/healthz")).status_code == 200
    finally:
        await app.close()
        await proxy.close()


@pytest.mark.postgres
@pytest.mark.parametrize("first", ["GET /api/v1/runs", "GET /runs/r1", "POST /api/v1/runs"])
async def test_the_first_request_to_meet_a_hung_server_waits_the_request_timeout(
        pg_url: str, first: str) -> None:
    """With the store's own deadline (``query_timeout``, 30 s), the request that met a
    silent connection first waited 30 s for its 503. A request's store operations have
    a deadline of their own (``request_timeout``, 5 s by default; 1 s here): that
    request gets its 503 within it (a start too, though it is written by the group
    commit, whose batch takes the shortest deadline of its callers), the next ones at
    once, and the server is served normally again after the network heals. A worker's
    operations on the same store keep the 30 s."""
    from tether.store import REQUEST_TIMEOUT

    proxy = await BlackHoleProxy().start()
    store = PostgresStore(proxy.url(pg_url), connect_timeout=2.0)
    app = App(store=store)
    try:
        await app._open()
        assert store.query_timeout == 30.0 and store._deadline() == 30.0
        token = REQUEST_TIMEOUT.set(1.0)
        assert store._deadline() == 1.0 and store._deadline(10) == 10.0
        REQUEST_TIMEOUT.reset(token)
        asgi = create_app(app, tokens=None, mcp=False, request_timeout=1.0)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                     base_url="http://127.0.0.1", timeout=60) as http:
            await asyncio.gather(*(http.get("/api/v1/runs") for _ in range(3)))
            method, path = first.split()

            async def ask() -> httpx.Response:
                if method == "POST":
                    return await http.post(path, json={"workflow": "greet", "input": ["x"]})
                return await http.get(path)

            proxy.silence()
            t0 = time.monotonic()
            r = await asyncio.wait_for(ask(), 25)
            took = time.monotonic() - t0
            assert r.status_code == 503, (r.status_code, r.text)
            assert took < 10, took  # (1 s and a generous margin; the store's own: 30 s)
            t1 = time.monotonic()
            assert (await asyncio.wait_for(http.get("/api/v1/runs"), 25)).status_code == 503
            assert time.monotonic() - t1 < 5
            proxy.heal()
            back = time.monotonic()
            while (await asyncio.wait_for(http.get("/api/v1/runs"), 25)).status_code != 200:
                assert time.monotonic() - back < 15, "serve did not find the store back"
                await asyncio.sleep(0.1)
            r = await http.post("/api/v1/runs", json={"workflow": "greet", "input": ["y"]})
            assert r.status_code == 201, r.text
            assert (await http.get("/healthz")).status_code == 200
    finally:
        await app.close()
        await proxy.close()


async def test_a_request_waits_for_another_processs_sqlite_lock_only_its_timeout(
        tmp_path: Path) -> None:
    """Another process holds the SQLite store's write lock (a long purge, an operator's
    transaction): a request that writes answers 503 once ``request_timeout`` has passed,
    having written nothing, where it waited for the store's ``busy_timeout`` (30 s by
    default; 600 s here, so that the test's bound fails without the fix). A worker's
    write (no request timeout) waits on and is done once the lock is released. (A
    request's write queued behind a worker's that waits for the lock waits with it:
    the writer thread runs one transaction at a time.)"""
    path = tmp_path / "locked.db"
    app = App(f"sqlite:///{path}", busy_timeout=600)
    await app._open()
    try:
        asgi = create_app(app, tokens=None, mcp=False, request_timeout=0.5)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                     base_url="http://127.0.0.1") as http:
            assert (await http.post("/api/v1/runs", json={"workflow": "wait_go",
                                                          "run_id": "w"})).status_code == 201
            other = apsw.Connection(str(path))
            other.execute("BEGIN IMMEDIATE")
            try:
                async with asyncio.timeout(60):
                    started = await http.post("/api/v1/runs", json={"workflow": "greet",
                                                                    "run_id": "s"})
                    signal = await http.post("/api/v1/runs/w/signals/go", json={"data": 2})
                for r in (started, signal):
                    assert r.status_code == 503, r.text
                    assert error_of(r) == "store_unavailable" and "locked" in r.text
                    assert r.headers["retry-after"] == "1"
                worker_write = asyncio.create_task(app.signal("w", "by-worker", 1))
                await asyncio.sleep(1)  # (more than the requests' timeout)
                assert not worker_write.done()
            finally:
                other.execute("ROLLBACK")
                other.close()
            async with asyncio.timeout(60):
                assert await worker_write is True
            assert (await http.get("/api/v1/runs/s")).status_code == 404
            reader = apsw.Connection(str(path))
            sent = [n for (n,) in reader.execute("SELECT name FROM tether_signals")]
            reader.close()
            assert sent == ["by-worker"]
            assert (await http.post("/api/v1/runs", json={"workflow": "greet",
                                                          "run_id": "s"})).status_code == 201
    finally:
        await app.close()


# -- GET /api/v1/runs ---------------------------------------------------------------------


async def test_list_filters_and_pages_newest_first(api_any: Api) -> None:
    """Filters by status, workflow, queue, parent and id text; pages with a cursor,
    newest first, every run once."""
    api = api_any
    ids = []
    for i in range(7):
        r = await api.http.post("/api/v1/runs", json={
            "workflow": "greet" if i % 2 else "wait_go", "input": ["x"] if i % 2 else [],
            "run_id": f"run-{i:02d}", "queue": "q2" if i == 3 else None})
        assert r.status_code == 201, r.text
        ids.append(f"run-{i:02d}")
        await asyncio.sleep(0.002)  # distinct creation times
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = (await api.http.get("/api/v1/runs", params=params)).json()
        seen += [r["run_id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    got = (await api.http.get("/api/v1/runs", params={"workflow": "greet"})).json()
    assert [r["run_id"] for r in got["runs"]] == ["run-05", "run-03", "run-01"]
    got = (await api.http.get("/api/v1/runs", params={"queue": "q2"})).json()
    assert [r["run_id"] for r in got["runs"]] == ["run-03"]
    got = (await api.http.get("/api/v1/runs", params={"q": "n-0", "status": "queued",
                                                       "limit": "2"})).json()
    assert len(got["runs"]) == 2 and got["next_cursor"]
    async with api.app.worker(queues=["default", "q2"]):
        await api.http.post("/api/v1/runs", json={"workflow": "parent", "input": ["kid"],
                                                  "run_id": "mom"})
        await wait_status(api, "mom", "completed")
    kids = (await api.http.get("/api/v1/runs", params={"parent": "mom"})).json()["runs"]
    assert [k["run_id"] for k in kids] == ["mom.0"]
    done = (await api.http.get("/api/v1/runs", params={"status": "completed"})).json()
    assert {r["run_id"] for r in done["runs"]} >= {"mom", "mom.0", "run-01", "run-05"}


@pytest.mark.parametrize("query", [
    "status=done", "limit=0", "limit=501", "limit=ten", "cursor=%%%", "cursor=WzEsMl0",
    "colour=red",
    # int() took these: "+5" and "5_0" (= 50) and other scripts' digits (a fullwidth 5).
    "limit=%2B5", "limit=5_0", "limit=%EF%BC%95",
    # A cursor nested too deeply for the parser was a 500 (a RecursionError).
    "cursor=" + base64.urlsafe_b64encode(b"[" * 3000).decode(),
    # One whose time is an integer past a double's range was a 500 (an OverflowError).
    "cursor=" + base64.urlsafe_b64encode(b'[1' + b"0" * 400 + b', "x"]').decode(),
    # A filter given twice: the last value alone was used, the first one dropped.
    "status=waiting&status=failed", "workflow=greet&workflow=wait_go", "limit=1&limit=2",
])
async def test_list_rejects_bad_query(api: Api, query: str) -> None:
    r = await api.http.get(f"/api/v1/runs?{query}")
    assert r.status_code == 400 and error_of(r) == "bad_request"


async def test_list_takes_a_comma_list_of_statuses_and_pages_it(api_any: Api) -> None:
    """``?status=queued,cancelled`` was a 400 (one status only; ``tether purge
    --status`` takes a comma list): it lists the runs of either, newest first, and its
    cursor pages them with no run left out or given twice."""
    for run_id in ("s-1", "s-2", "s-3", "s-4", "s-5"):
        await api_any.app.start("wf_none", run_id=run_id)
    for run_id in ("s-2", "s-5"):
        await api_any.app.cancel(run_id)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"status": "queued, cancelled", "limit": "2"}
        if cursor:
            params["cursor"] = cursor
        r = await api_any.http.get("/api/v1/runs", params=params)
        assert r.status_code == 200, r.text
        seen += [x["run_id"] for x in r.json()["runs"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == ["s-5", "s-4", "s-3", "s-2", "s-1"]
    r = await api_any.http.get("/api/v1/runs", params={"status": "cancelled,failed"})
    assert [x["run_id"] for x in r.json()["runs"]] == ["s-5", "s-2"]
    for bad in ("cancelled,done", ","):
        r = await api_any.http.get("/api/v1/runs", params={"status": bad})
        assert r.status_code == 400 and error_of(r) == "bad_request"
        assert "comma list" in r.json()["error"]["message"]


async def test_a_limit_out_of_range_is_named_as_a_malformed_one_is(api: Api) -> None:
    """Every refused ``limit`` says what was sent: ``limit=0`` and ``limit=600`` said
    only the range, where ``limit=ten`` said "got 'ten'"."""
    for path in ("/api/v1/runs", "/api/v1/approvals"):
        for limit in ("0", "600", "ten"):
            r = await api.http.get(path, params={"limit": limit})
            assert r.json()["error"]["message"] == (
                f"limit must be an integer between 1 and 500, got {limit!r}"), path


async def test_a_number_past_ints_digit_limit_is_a_bad_request_not_a_500(api: Api) -> None:
    """A ``limit`` of more than 4,300 digits (and a run page's ``fork_at``): ``int()``
    refuses such a string with a ValueError, which was a 500 and a traceback in the log
    (the API, the approvals and the runs page), until 2026-12-06."""
    await api.http.post("/api/v1/runs", json={"workflow": "greet", "input": ["x"],
                                              "run_id": "g"})
    huge = "9" * 5000
    for path in ("/api/v1/runs", "/api/v1/approvals"):
        for value in (huge, "1000"):
            r = await api.http.get(f"{path}?limit={value}")
            assert r.status_code == 400 and error_of(r) == "bad_request", (path, r.text)
            assert "between 1 and 500" in r.json()["error"]["message"]
        r = await api.http.get(f"{path}?limit=-1")
        assert "an integer between 1 and 500, got '-1'" in r.json()["error"]["message"]
        # Leading zeros are still the number they write, however many.
        for value in ("0001", "0" * 5000 + "7"):
            assert (await api.http.get(f"{path}?limit={value}")).status_code == 200
    r = await api.http.get(f"/runs?limit={huge}")
    assert r.status_code == 400 and "between 1 and 500" in r.text
    r = await api.http.get(f"/runs/g?fork_at={huge}")
    assert r.status_code == 200 and "<h1" in r.text


async def test_a_cursor_past_a_doubles_range_is_a_bad_request_not_a_500(api: Api) -> None:
    """A cursor whose time is an integer too large for a float (``[1000...0, "x"]``, 401
    digits): ``math.isfinite`` raised an OverflowError, a 500 on the lists and both
    pages, until 2026-12-06."""
    cursor = base64.urlsafe_b64encode(b'[1' + b"0" * 400 + b', "x"]').decode()
    for path in ("/api/v1/runs", "/api/v1/approvals"):
        r = await api.http.get(f"{path}?cursor={cursor}")
        assert r.status_code == 400 and error_of(r) == "bad_request", (path, r.text)
    for path in ("/runs", "/approvals"):
        r = await api.http.get(f"{path}?cursor={cursor}")
        assert r.status_code == 400 and "is not one this server gave" in r.text, (path, r.text)


async def test_an_unexpected_error_is_a_500_in_the_apis_error_shape(sqlite_url: str) -> None:
    """An exception no handler answers (here the store's ``StoreError`` of a store
    closed under the server; a bug anywhere would do): Starlette's text ``Internal
    Server Error`` was every machine face's answer, which a client reading the API's
    JSON errors could not parse; a page is the UI's error page."""
    app = webapp.make_app(sqlite_url)
    await app._open()
    asgi = create_app(app, mcp=False, metrics_interval=0)
    transport = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        await app.store.close()
        for path in ("/api/v1/runs", "/api/v1/runs/x", "/metrics", "/healthz"):
            r = await http.get(path)
            assert r.status_code == 500 and error_of(r) == "internal_error", (path, r.text)
            assert "StoreError" in r.json()["error"]["message"]
        r = await http.get("/runs", headers={"Accept": "text/html"})
        assert r.status_code == 500 and r.headers["content-type"].startswith("text/html")
        assert "its log has the traceback" in r.text
    await app.close()


async def test_an_action_with_a_query_parameter_is_a_bad_request(api: Api) -> None:
    """An action's fields go in its JSON body: a query parameter is a 400 that changes
    nothing. ``POST /api/v1/runs?run_id=r-1`` started a run with a new id, its run_id
    dropped without a word, so that each retry of the client started one more run
    (until 2026-12-07)."""
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
    before = await api.snapshot()
    for method, path, body in (
            ("POST", "/api/v1/runs?run_id=r-1", {"workflow": "wait_go"}),
            ("POST", "/api/v1/runs/w/signals/go?idempotency_key=k", {"data": 1}),
            ("POST", "/api/v1/runs/w/cancel?reason=x", None),
            ("POST", "/api/v1/runs/w/approval?approved=true", {"approved": True}),
            ("POST", "/api/v1/runs/w/fork?at=0", {"at": 0}),
            ("POST", "/api/v1/runs/w/retry?x=1", None),
            ("POST", "/api/v1/runs/w/erase?x=1", None),
            ("POST", "/api/v1/schedules/s/pause?x=1", None),
            ("DELETE", "/api/v1/schedules/s?x=1", None)):
        r = await api.http.request(method, path, json=body)
        assert r.status_code == 400 and error_of(r) == "bad_request", (path, r.text)
        name = path.split("?")[1].split("=")[0]
        assert r.json()["error"]["message"] == (
            f"unknown query parameter(s): {name}; this action takes none: send its "
            "fields in the JSON body"), r.text
    assert await api.snapshot() == before


async def test_a_query_parameter_given_twice_is_a_bad_request(api: Api) -> None:
    """``?status=waiting&status=completed`` listed the completed runs only (the last
    value won, the first was dropped without a word), and the approvals' ``limit`` and
    ``cursor`` alike: a client that meant both got half and could not tell."""
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
    r = await api.http.get("/api/v1/runs?status=queued&status=completed")
    assert r.status_code == 400 and error_of(r) == "bad_request"
    assert "status" in r.json()["error"]["message"]
    r = await api.http.get("/api/v1/approvals?limit=1&limit=5")
    assert r.status_code == 400 and error_of(r) == "bad_request"
    # The event stream's cursor too (it streamed from the last one given), and one it
    # does not take (a misspelt cursor streamed every event from the first one again).
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "c"})
    await api.http.post("/api/v1/runs/c/cancel")  # (an event: its status changed)
    events = (await api.app.store.run_events_read(run_id="c", after=None, limit=10))
    first = events[0].event_id
    for query in (f"after={first}&after={first}", f"last_event_id={first}"):
        for method in ("GET", "HEAD"):
            r = await api.http.request(method, f"/api/v1/runs/c/events?{query}")
            assert r.status_code == 400, (query, method, r.text)
            if method == "GET":
                assert error_of(r) == "bad_request"
    # A parameter a route does not take is named as one, not as a body's field.
    r = await api.http.get(f"/api/v1/runs/c/events?last_event_id={first}")
    assert r.json()["error"]["message"] == (
        "unknown query parameter(s): last_event_id; allowed: after")
    # One value each, as before.
    r = await api.http.get("/api/v1/runs?status=queued&workflow=wait_go")
    assert [x["run_id"] for x in r.json()["runs"]] == ["w"]


async def test_every_read_refuses_a_query_parameter_it_does_not_take(api: Api) -> None:
    """Every GET of the API, and ``/openapi.json``, answers a query parameter it does
    not take (a misspelt filter) with a 400 naming it and what the read takes: a run's
    document, its journal, the schedules and the document answered as if it were not
    there. ``_``, a cache-buster (jQuery's ``cache: false``), is taken by each and
    ignored (the lists and the event stream refused it). ``/healthz`` and ``/metrics``
    take any (probes and scrapers add their own), and the pages keep taking what their
    links and a browser add."""
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
    await api.http.post("/api/v1/runs/w/cancel")  # (ended: its event stream closes)
    doc = (await api.http.get("/openapi.json")).json()
    reads = [path.replace("{run_id}", "w") for path, ops in doc["paths"].items()
             if "get" in ops]
    assert len(reads) == 8
    async with asyncio.timeout(30):
        for path in [*reads, "/openapi.json"]:
            for method in ("GET", "HEAD"):
                r = await api.http.request(method, path, params={"stauts": "failed"})
                assert r.status_code == 400, (method, path, r.text)
                if method == "GET":
                    assert error_of(r) == "bad_request"
                    assert r.json()["error"]["message"].startswith(
                        "unknown query parameter(s): stauts; "), r.text
                for busted in ("_=1733000000000", "_=1&_=2"):
                    r = await api.http.request(method, f"{path}?{busted}")
                    assert r.status_code == 200, (method, path, busted, r.text)
    for path in ("/api/v1/runs/w", "/api/v1/runs/w/journal", "/api/v1/schedules",
                 "/openapi.json"):
        r = await api.http.get(path, params={"x": "1", "_": "2"})
        assert r.json()["error"]["message"] == (
            "unknown query parameter(s): x; this address takes none (but _, a "
            "cache-buster)"), (path, r.text)
    r = await api.http.get("/api/v1/runs", params={"stauts": "failed", "_": "1"})
    assert r.json()["error"]["message"] == (
        "unknown query parameter(s): stauts; allowed: cursor, limit, parent, q, queue, "
        "status, workflow")
    r = await api.http.get("/api/v1/workers", params={"x": "1", "_": "2"})
    assert r.json()["error"]["message"] == "unknown query parameter(s): x; allowed: all"
    for path in ("/healthz", "/metrics", "/runs", "/runs/w", "/approvals", "/schedules"):
        r = await api.http.get(path, params={"x": "1", "_": "2"})
        assert r.status_code == 200, (path, r.text)


# -- one run --------------------------------------------------------------------------------


async def test_run_document_and_journal(api: Api) -> None:
    """GET a run: the `tether show --json` document with children and metrics; its
    journal in position order; an unknown run is a 404."""
    async with api.app.worker(queues=["default"]):
        await api.http.post("/api/v1/runs", json={"workflow": "parent", "input": ["zoe"],
                                                  "run_id": "p"})
        doc = await wait_status(api, "p", "completed")
    assert doc["result"] == "hello zoe" and doc["error"] is None
    assert [c["run_id"] for c in doc["children"]] == ["p.0"]
    assert doc["children"][0]["status"] == "completed"
    assert {"metrics", "status_info", "parent_run_id", "input"} <= set(doc)
    journal = (await api.http.get("/api/v1/runs/p/journal")).json()["journal"]
    assert [e["position"] for e in journal] == sorted(e["position"] for e in journal)
    assert [e["kind"] for e in journal] == ["child_start", "child_result"]
    for path in ("/api/v1/runs/nope", "/api/v1/runs/nope/journal", "/api/v1/runs/nope/events"):
        r = await api.http.get(path)
        assert r.status_code == 404 and error_of(r) == "run_not_found"


async def test_a_get_of_an_actions_address_says_the_action_takes_post(api: Api) -> None:
    """``GET /api/v1/runs/r/cancel`` (curl without ``-X POST``) reads the run of id
    ``r/cancel``, which may exist; when none does, the 404 says that the cancel of run
    ``r`` is a POST (it said "no run with id 'r/cancel'" alone: run r existed)."""
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "r"})
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "s/retry"})
    for path, what in (("cancel", "the cancel of"), ("erase", "the erase of"),
                       ("signals/go", "a signal to"), ("fork", "a fork of")):
        r = await api.http.get(f"/api/v1/runs/r/{path}")
        assert r.status_code == 404 and error_of(r) == "run_not_found", r.text
        assert r.json()["error"]["message"] == (
            f"no run with id 'r/{path}'; {what} run 'r' is a POST to this address, "
            "not a GET")
    r = await api.http.get("/api/v1/runs/s/retry")  # (a run of that id is read)
    assert r.status_code == 200 and r.json()["run_id"] == "s/retry"
    r = await api.http.get("/api/v1/runs/r%2Fcancel")  # (an id written as one)
    assert r.json()["error"]["message"] == "no run with id 'r/cancel'"


async def test_a_read_token_reads_the_document_an_admin_token_reads(api: Api) -> None:
    """A read token may only look, and sees what an admin token sees (docs/serve.md,
    "What each role sees"): a failed run's document, its error's traceback and the
    journal's and attempts' errors included, is the same for both."""
    webapp.FIXED.discard("rt")
    await api.http.post("/api/v1/runs", json={"workflow": "fixable", "input": ["rt"],
                                              "run_id": "f"})
    async with api.app.worker(queues=["default"]):
        admin = await wait_status(api, "f", "failed")
    read = {"Authorization": f"Bearer {READ}"}
    r = await api.http.get("/api/v1/runs/f", headers=read)
    assert r.status_code == 200, r.text
    assert "bug in fragile('rt')" in admin["error"]["traceback"]
    assert r.json() == admin
    r = await api.http.get("/api/v1/runs/f/journal", headers=read)
    assert r.json()["journal"] == admin["journal"]


async def test_run_events_rejects_foreign_event_id(api: Api) -> None:
    await api.http.post("/api/v1/runs", json={"workflow": "greet", "input": ["ana"],
                                              "run_id": "e"})
    r = await api.http.get("/api/v1/runs/e/events", headers={"Last-Event-ID": "x-y-z"})
    assert r.status_code == 400 and error_of(r) == "bad_request"


async def test_run_events_refuse_an_event_id_of_another_run(api_any: Api) -> None:
    """A cursor (``Last-Event-ID`` or ``?after=``) that is an event id of another run,
    or one of this store's form it never made, was taken for a point of this run's
    events: on SQLite (ids counted per run from its creation time) the stream of an
    older run after a newer run's id sent nothing but its end, on PostgreSQL (one
    sequence) it started wherever that id fell. It is a 400 now, on both stores; the
    run's own ids resume right after themselves."""
    api = api_any
    store = api.app.store
    for run_id in ("older", "newer"):
        await api.http.post("/api/v1/runs", json={"workflow": "greet", "input": [run_id],
                                                  "run_id": run_id})
    for run_id in ("older", "newer"):  # events of each: chunks, then its end
        for text in ("a", "b"):
            await store.run_publish(run_id=run_id, data=json.dumps(
                {"type": "llm.chunk", "text": text}))
        r = await api.http.post(f"/api/v1/runs/{run_id}/cancel")
        assert r.status_code == 202
        await wait_status(api, run_id, "cancelled")
    ids = {r: [e.event_id for e in await store.run_events_read(run_id=r, after=None)]
           for r in ("older", "newer")}
    assert all(len(v) >= 2 for v in ids.values()), ids
    assert not set(ids["older"]) & set(ids["newer"])

    def sent_ids(text: str) -> list[str]:
        return re.findall(r"^id: (.*)$", text, re.M)

    for run_id, other in (("older", "newer"), ("newer", "older")):
        path = f"/api/v1/runs/{run_id}/events"
        mine = ids[run_id]
        r = await api.http.get(path, params={"after": mine[0]})
        assert r.status_code == 200 and sent_ids(r.text) == mine[1:]
        r = await api.http.get(path, headers={"Last-Event-ID": mine[-1]})
        assert r.status_code == 200 and sent_ids(r.text) == [] and "event: end" in r.text
        for foreign in (ids[other][0], ids[other][-1]):
            r = await api.http.get(path, headers={"Last-Event-ID": foreign})
            assert r.status_code == 400 and error_of(r) == "bad_request", (run_id, foreign)
            assert "not the id of an event of run" in r.json()["error"]["message"]
            r = await api.http.get(path, params={"after": foreign})
            assert r.status_code == 400 and error_of(r) == "bad_request"
        never = str(max(int(i) for v in ids.values() for i in v) + 10**9)
        r = await api.http.get(path, params={"after": never})
        assert r.status_code == 400 and error_of(r) == "bad_request"
        r = await api.http.head(path, params={"after": ids[other][0]})
        assert r.status_code == 400


@pytest.mark.parametrize("after", ["99999999999999999999", "9223372036854775808", "\u00b2"])
async def test_run_events_rejects_an_event_id_out_of_range(api: Api, after: str) -> None:
    """An event id past SQLite's 64-bit integers, or of non-ASCII digits, is a 400 like
    any other id this store never gave (both were a 500)."""
    await api.http.post("/api/v1/runs", json={"workflow": "greet", "input": ["ana"],
                                              "run_id": "e"})
    r = await api.http.get("/api/v1/runs/e/events", params={"after": after})
    assert r.status_code == 400 and error_of(r) == "bad_request"


async def test_head_of_the_event_stream_of_a_waiting_run_ends(api: Api) -> None:
    """HEAD of a run's events answers the stream's headers and ends, as the run goes
    on (a stream started for it never ended: the client's next request on that
    connection waited behind it)."""
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "h"})
    async with asyncio.timeout(5):
        r = await api.http.head("/api/v1/runs/h/events")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.content == b""
    async with asyncio.timeout(5):
        assert (await api.http.head("/api/v1/runs/nope/events")).status_code == 404


async def test_a_child_run_with_an_id_over_200_characters_can_be_read(api: Api) -> None:
    """A child's id is its parent's and ``.N``: the child of a run whose id is 199
    characters long (accepted by POST /api/v1/runs) is readable and cancellable by id,
    not a 400 "at most 200 characters"."""
    parent = "p" * 199
    r = await api.http.post("/api/v1/runs", json={"workflow": "parent", "input": ["ana"],
                                                  "run_id": parent})
    assert r.status_code == 201
    async with api.app.worker(queues=["default"]):
        doc = await wait_status(api, parent, "completed")
    kid = doc["children"][0]["run_id"]
    assert len(kid) == 201
    for path in ("", "/journal"):
        r = await api.http.get(f"/api/v1/runs/{kid}{path}")
        assert r.status_code == 200 and r.json()["run_id"] == kid, path
    r = await api.http.get(f"/api/v1/runs/{kid}/events")
    assert r.status_code == 200 and '"completed"' in r.text
    r = await api.http.post(f"/api/v1/runs/{kid}/cancel")
    assert r.status_code == 409 and error_of(r) == "conflict"  # it ended: not a 400
    r = await api.http.get("/api/v1/runs/" + "x" * 300)
    assert r.status_code == 404 and error_of(r) == "run_not_found"


# -- signals and cancel ------------------------------------------------------------------


async def test_signal_resumes_a_waiting_run_once_per_key(api: Api) -> None:
    async with api.app.worker(queues=["default"]):
        await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "s"})
        await wait_status(api, "s", "waiting")
        path = "/api/v1/runs/s/signals/go"
        r = await api.http.post(path, json={"data": {"by": "ana"}, "idempotency_key": "k"})
        assert r.status_code == 202 and r.json()["created"] is True
        r = await api.http.post(path, json={"data": {"by": "bob"}, "idempotency_key": "k"})
        assert r.status_code == 202 and r.json()["created"] is False
        doc = await wait_status(api, "s", "completed")
    assert doc["result"] == {"by": "ana"}
    before = await api.snapshot()
    r = await api.http.post(path, json={"data": 1})
    assert r.status_code == 409 and error_of(r) == "conflict"  # the run has ended
    r = await api.http.post("/api/v1/runs/none/signals/go", json={})
    assert r.status_code == 404
    r = await api.http.post(path, content=b'{"data": ', headers={"Content-Type":
                                                                   "application/json"})
    assert r.status_code == 400 and error_of(r) == "malformed_json"
    r = await api.http.post(path, json={"data": 1, "extra": 2})
    assert r.status_code == 400
    assert await api.snapshot() == before


async def test_a_resend_under_a_used_key_says_whether_it_was_another_signal(
        api_any: Api) -> None:
    """A key is the run's: a send under a key the run has had stores nothing, whatever
    its name or data. The answer said only ``created: false``, so a client could not
    tell that its "resend" was another signal, dropped; it now says ``name_differs``
    and ``data_differs`` (null once the stored data cannot be read: erased), as a
    start's ``input_differs`` does, on both stores."""
    api = api_any
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "s"})

    async def send(name: str, data: Any) -> dict[str, Any]:
        r = await api.http.post(f"/api/v1/runs/s/signals/{name}",
                                json={"data": data, "idempotency_key": "k"})
        assert r.status_code == 202, r.text
        body: dict[str, Any] = r.json()
        assert (body["run_id"], body["signal"]) == ("s", name)
        return {f: body[f] for f in ("created", "name_differs", "data_differs")}

    first = {"by": "ana", "n": [1, 2]}
    assert await send("go", first) == {"created": True, "name_differs": False,
                                       "data_differs": False}
    same = {"n": [1, 2], "by": "ana"}  # the same JSON, its keys in another order
    assert await send("go", same) == {"created": False, "name_differs": False,
                                      "data_differs": False}
    assert await send("go", {"by": "bob"}) == {"created": False, "name_differs": False,
                                               "data_differs": True}
    assert await send("stop", first) == {"created": False, "name_differs": True,
                                         "data_differs": False}
    assert await send("stop", None) == {"created": False, "name_differs": True,
                                        "data_differs": True}
    store = api.app.store
    assert await store.signal_pending(run_id="s", name="go")  # the first send, once:
    assert not await store.signal_pending(run_id="s", name="stop")
    r = await api.http.post("/api/v1/runs/s/cancel")
    assert r.status_code == 202 and (await wait_status(api, "s", "cancelled"))
    assert await send("go", {"by": "bob"}) == {"created": False, "name_differs": False,
                                               "data_differs": True}  # ended: still said
    await api.app.store.run_erase(run_id="s", now=time.time())
    assert await send("go", first) == {"created": False, "name_differs": False,
                                       "data_differs": None}
    assert await send("stop", first) == {"created": False, "name_differs": True,
                                         "data_differs": None}


async def test_an_encoded_slash_in_a_path_is_part_of_the_id_or_name(api: Api) -> None:
    """``x%2Fjournal`` is the run ``x/journal`` (the server decodes paths before routing,
    so it was the journal of ``x``), and ``a%2Fb`` the signal ``a/b`` (it was a 405);
    unencoded slashes route as before."""
    for run_id in ("x", "x/journal"):
        r = await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": run_id})
        assert r.status_code == 201, r.text
    r = await api.http.get("/api/v1/runs/x%2Fjournal")
    assert r.status_code == 200 and r.json()["run_id"] == "x/journal", r.text
    r = await api.http.get("/api/v1/runs/x/journal")  # x's journal, as before
    assert r.status_code == 200 and r.json() == {"run_id": "x", "journal": []}, r.text
    r = await api.http.get("/api/v1/runs/x%2Fjournal/journal")
    assert r.status_code == 200, r.text
    r = await api.http.post("/api/v1/runs/x%2Fjournal/signals/a%2Fb", json={"data": 1})
    assert r.status_code == 202 and r.json()["created"] is True, r.text
    r = await api.http.post("/api/v1/runs/x%2Fjournal/signals/a/b", json={"data": 1})
    assert r.status_code == 405, r.text  # (an unencoded slash is a path's, as before)
    r = await api.http.get("/api/v1/runs/x%00journal%2Fa")  # (NUL: the marker's character)
    assert r.status_code == 400 and error_of(r) == "bad_request", r.text


async def test_cancel(api: Api) -> None:
    async with api.app.worker(queues=["default"]):
        await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "c"})
        await wait_status(api, "c", "waiting")
        r = await api.http.post("/api/v1/runs/c/cancel")
        assert r.status_code == 202
        await wait_status(api, "c", "cancelled")
        await api.http.post("/api/v1/runs", json={"workflow": "greet", "input": ["a"],
                                                  "run_id": "g"})
        await wait_status(api, "g", "completed")
    before = await api.snapshot()
    r = await api.http.post("/api/v1/runs/g/cancel")
    assert r.status_code == 409 and error_of(r) == "conflict"
    r = await api.http.post("/api/v1/runs/zzz/cancel")
    assert r.status_code == 404 and error_of(r) == "run_not_found"
    assert await api.snapshot() == before


# -- approvals ------------------------------------------------------------------------------


async def test_a_signal_that_is_no_answer_to_an_approval_warns(api: Api) -> None:
    """``POST .../signals/approval`` with data that is no answer (no ``approved``
    boolean) to a run that waits for an approval was a bare 202, and the run took it,
    skipped it and waited on: the answer has a ``warnings`` line naming the approval's
    route. An answer sent as a signal has none, and is taken."""
    async with api.app.worker(queues=["default"]):
        await api.http.post("/api/v1/runs", json={"workflow": "purchase", "input": ["atlas"],
                                                  "run_id": "buy-2"})
        async with asyncio.timeout(15):
            while not (await api.http.get("/api/v1/approvals")).json()["approvals"]:
                await asyncio.sleep(0.02)
        r = await api.http.post("/api/v1/runs/buy-2/signals/approval",
                                json={"data": {"ok": True}})
        assert r.status_code == 202 and r.json()["created"] is True, r.text
        assert r.json()["warnings"] == [
            "run 'buy-2' waits for an approval of buy: a signal 'approval' without "
            '"approved": true or false in its data is no answer, and the run waits on; '
            'answer it with POST /api/v1/runs/buy-2/approval {"approved": true} (or '
            "false), or the approvals page"], r.text
        r = await api.http.post("/api/v1/runs/buy-2/signals/approval",
                                json={"data": {"approved": True}})
        assert r.status_code == 202 and "warnings" not in r.json(), r.text
        doc = await wait_status(api, "buy-2", "completed")
        assert doc["result"] == {"approved": True, "note": None}


async def test_a_budget_signal_that_gives_no_limit_warns(api: Api) -> None:
    """``POST .../signals/budget`` whose data gives no new limit (``{"tokens": "5000"}``,
    text) to a run that waits on its budget was a bare 202, and the run took it,
    changed nothing and waited on: the answer has a ``warnings`` line saying what data
    raises it. Data that gives a limit has none of that, and the run takes the new limit
    (too few tokens for its next call's estimate: a warning says the limit that lets it
    go on)."""
    async def waiting_on_budget(run_id: str, after: int) -> None:
        async with asyncio.timeout(15):
            while True:
                doc = (await api.http.get(f"/api/v1/runs/{run_id}")).json()
                taken = [e for e in doc["journal"] if e["name"] == "budget"]
                if doc["waiting_for"] == "signal budget" and len(taken) == after:
                    return
                await asyncio.sleep(0.02)

    async with api.app.worker(queues=["default"]):
        await api.http.post("/api/v1/runs", json={"workflow": "over_budget",
                                                  "input": ["q"], "run_id": "ob-w"})
        await waiting_on_budget("ob-w", 0)
        r = await api.http.post("/api/v1/runs/ob-w/signals/budget",
                                json={"data": {"tokens": "5000"}})
        assert r.status_code == 202 and r.json()["created"] is True, r.text
        assert r.json()["warnings"] == [
            "run 'ob-w' waits for a raise of its LLM budget: a signal 'budget' whose data "
            'gives no limit ("usd": a number >= 0 and/or "tokens": a number >= 0) changes '
            'nothing, and the run waits on; raise it with data {"usd": X, "tokens": N} '
            "(either or both), or `tether budget ob-w --usd X --tokens N`"], r.text
        await waiting_on_budget("ob-w", 1)  # (it took the signal, and waits again)
        r = await api.http.post("/api/v1/runs/ob-w/signals/budget",
                                json={"data": {"tokens": 6}})
        assert r.status_code == 202 and r.json()["warnings"] == [
            "run 'ob-w' takes these limits and waits on: the new token limit, 6 tokens, is "
            "under the 0 tokens it has spent + ~8 tokens for its next call; a token limit "
            "of at least 8 tokens lets it go on"], r.text
        await waiting_on_budget("ob-w", 2)  # (6 tokens are still too few for the call)
        doc = (await api.http.get("/api/v1/runs/ob-w")).json()
        assert doc["status_info"]["budget_tokens"] == 6, doc["status_info"]
        # Limits that leave the one it stopped at (its only one: tokens) say so too.
        r = await api.http.post("/api/v1/runs/ob-w/signals/budget",
                                json={"data": {"usd": 1}})
        assert r.status_code == 202 and r.json()["warnings"] == [
            "run 'ob-w' takes these limits and waits on: it stopped at its token limit (0 "
            "tokens spent of 6 tokens), which this raise leaves as it was; a token limit "
            "of at least 8 tokens (0 tokens spent + ~8 tokens for its next call) lets it "
            "go on"], r.text
        await waiting_on_budget("ob-w", 3)
        # A signal of another name to it is not judged.
        r = await api.http.post("/api/v1/runs/ob-w/signals/other", json={"data": {}})
        assert r.status_code == 202 and "warnings" not in r.json(), r.text


async def test_a_budget_signal_that_leaves_the_limit_an_estimate_went_over_warns(
        api: Api) -> None:
    """A run under a budget of both kinds (5 tokens, $10) whose first call's estimate
    goes over the token limit, none spent, waits on its budget; ``POST
    .../signals/budget`` raising only its USD limit was a bare 202 (the wait did not say
    which limit refused the call), and the run took it and waited on. Its status names
    the limit (``blocked_by``) and the answer's ``warnings`` say why it waits on."""
    from tether.ai import LLM, Budget, set_budget, user_message

    llm = LLM("openai:gpt-4.1-mini", base_url="http://127.0.0.1:9/v1", api_key="k")

    @api.app.workflow(name="over_tokens_of_two")
    async def over_tokens_of_two(question: str) -> str:
        set_budget(Budget(tokens=5, usd=10.0))  # the first call is refused: no request
        reply = await llm.chat([user_message(question)])
        return reply.text or ""

    async def waiting_on_budget(after: int) -> dict[str, Any]:
        async with asyncio.timeout(15):
            while True:
                doc = (await api.http.get("/api/v1/runs/ot-1")).json()
                taken = [e for e in doc["journal"] if e["name"] == "budget"]
                if doc["waiting_for"] == "signal budget" and len(taken) == after:
                    return dict(doc["status_info"])
                await asyncio.sleep(0.02)

    async with api.app.worker(queues=["default"]):
        await api.http.post("/api/v1/runs", json={"workflow": "over_tokens_of_two",
                                                  "input": ["q"], "run_id": "ot-1"})
        status = await waiting_on_budget(0)
        assert status["blocked_by"] == ["tokens"], status
        r = await api.http.post("/api/v1/runs/ot-1/signals/budget",
                                json={"data": {"usd": 20}})
        assert r.status_code == 202 and r.json()["warnings"] == [
            "run 'ot-1' takes these limits and waits on: it stopped at its token limit (0 "
            "tokens spent of 5 tokens), which this raise leaves as it was; a token limit "
            "of at least 8 tokens (0 tokens spent + ~8 tokens for its next call) lets it "
            "go on"], r.text
        await waiting_on_budget(1)
        r = await api.http.post("/api/v1/runs/ot-1/signals/budget",
                                json={"data": {"tokens": 6}})
        assert r.status_code == 202 and r.json()["warnings"] == [
            "run 'ot-1' takes these limits and waits on: the new token limit, 6 tokens, is "
            "under the 0 tokens it has spent + ~8 tokens for its next call; a token limit "
            "of at least 8 tokens lets it go on"], r.text
        await waiting_on_budget(2)
        await api.app.cancel("ot-1")


async def test_approvals_list_and_answer(api: Api) -> None:
    """A waiting approval is listed with its tool, arguments and reason; bad answers
    change nothing; approving resumes the run; a second answer is a 409."""
    async with api.app.worker(queues=["default"]):
        await api.http.post("/api/v1/runs", json={"workflow": "purchase", "input": ["atlas"],
                                                  "run_id": "buy-1"})
        await wait_status(api, "buy-1", "waiting")
        listed = (await api.http.get("/api/v1/approvals")).json()["approvals"]
        assert [(a["run_id"], a["tool"], a["arguments"]["item"]) for a in listed] == [
            ("buy-1", "buy", "atlas")]
        assert listed[0]["reason"] == "atlas is needed for the report"
        before = await api.snapshot()
        for body in ({"approved": "yes"}, {}, {"approved": True, "note": 5},
                     {"approved": True, "why": "x"}):
            r = await api.http.post("/api/v1/runs/buy-1/approval", json=body)
            assert r.status_code == 400, body
        r = await api.http.post("/api/v1/runs/greet-none/approval", json={"approved": True})
        assert r.status_code == 404
        assert await api.snapshot() == before
        r = await api.http.post("/api/v1/runs/buy-1/approval",
                                json={"approved": False, "note": "too dear"})
        assert r.status_code == 200 and r.json()["approval"]["tool"] == "buy"
        doc = await wait_status(api, "buy-1", "completed")
        assert doc["result"] == {"approved": False, "note": "too dear"}
    r = await api.http.post("/api/v1/runs/buy-1/approval", json={"approved": True})
    assert r.status_code == 409 and error_of(r) == "no_pending_approval"
    assert (await api.http.get("/api/v1/approvals")).json() == {
        "approvals": [], "next_cursor": None}


async def test_an_answer_to_an_approval_the_run_never_had_says_so(api: Api) -> None:
    """An ``approval_id`` the run never had is a 409 ``no_pending_approval`` that says no
    such approval is pending and names the one the run waits for (it said "approval
    other was answered already" until 2026-12-06); a second answer to the approval the
    run waits for, not yet taken, is still "answered already"."""
    async with api.app.worker(queues=["default"]):
        await api.http.post("/api/v1/runs", json={"workflow": "purchase", "input": ["atlas"],
                                                  "run_id": "buy-x"})
        await wait_status(api, "buy-x", "waiting")
    (pending,) = (await api.http.get("/api/v1/approvals")).json()["approvals"]
    waiting = pending["approval_id"]
    before = await api.snapshot()
    r = await api.http.post("/api/v1/runs/buy-x/approval",
                            json={"approved": True, "approval_id": "other"})
    assert r.status_code == 409 and error_of(r) == "no_pending_approval", r.text
    assert r.json()["error"]["message"] == (
        "run 'buy-x' has no pending approval 'other': it never asked for one with that "
        f"id; it waits for approval {waiting} (buy), which this answer was not meant "
        "for; nothing was sent")
    assert await api.snapshot() == before
    r = await api.http.post("/api/v1/runs/buy-x/approval",
                            json={"approved": True, "approval_id": waiting})
    assert r.status_code == 200, r.text
    r = await api.http.post("/api/v1/runs/buy-x/approval",
                            json={"approved": True, "approval_id": waiting})
    assert r.status_code == 409 and error_of(r) == "no_pending_approval", r.text
    assert "was answered already" in r.json()["error"]["message"]


async def test_approvals_page_by_a_cursor_that_continues_exactly(api_any: Api) -> None:
    """``GET /api/v1/approvals`` pages, oldest run first, by ``limit`` and the
    ``next_cursor`` it returns: the next page starts right after the last approval
    shown, each approval once, though approvals on both sides of the cursor were
    answered meanwhile; a cursor or a limit it never made is a 400."""
    api = api_any
    ids = [f"buy-{i}" for i in range(7)]
    async with api.app.worker(queues=["default"], concurrency=8):
        for run_id in ids:
            await api.http.post("/api/v1/runs", json={
                "workflow": "purchase", "input": [run_id], "run_id": run_id})
        for run_id in ids:
            await wait_status(api, run_id, "waiting")
        whole = (await api.http.get("/api/v1/approvals", params={"limit": 500})).json()
        assert [a["run_id"] for a in whole["approvals"]] == ids
        assert whole["next_cursor"] is None
        first = (await api.http.get("/api/v1/approvals", params={"limit": 3})).json()
        assert [a["run_id"] for a in first["approvals"]] == ids[:3]
        assert first["approvals"][0]["arguments"]["item"] == "buy-0"
        assert isinstance(first["next_cursor"], str)
        # One approval shown and one not yet shown are answered between the pages.
        for run_id in ("buy-1", "buy-4"):
            r = await api.http.post(f"/api/v1/runs/{run_id}/approval", json={"approved": True})
            assert r.status_code == 200
        for run_id in ("buy-1", "buy-4"):  # (listed until a worker takes the answer)
            await wait_status(api, run_id, "completed")
        second = (await api.http.get("/api/v1/approvals", params={
            "limit": 3, "cursor": first["next_cursor"]})).json()
        assert [a["run_id"] for a in second["approvals"]] == ["buy-3", "buy-5", "buy-6"]
        assert second["next_cursor"] is None
        # Two at a time from the start: every one still pending, once, in order.
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await api.http.get("/api/v1/approvals", params=params)).json()
            seen += [a["run_id"] for a in page["approvals"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ["buy-0", "buy-2", "buy-3", "buy-5", "buy-6"]
        for params in ({"limit": 0}, {"limit": 501}, {"limit": "x"}, {"cursor": "nope"},
                       {"after": "1"}):
            r = await api.http.get("/api/v1/approvals", params=params)
            assert r.status_code == 400 and error_of(r) == "bad_request", params
        for run_id in seen:
            await api.http.post(f"/api/v1/runs/{run_id}/approval", json={"approved": False})
        for run_id in ids:
            await wait_status(api, run_id, "completed")


# -- documents --------------------------------------------------------------------------------


async def test_openapi_document_names_every_route(api: Api) -> None:
    doc = (await api.http.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/api/v1/runs", "/api/v1/runs/{run_id}", "/api/v1/runs/{run_id}/journal",
        "/api/v1/runs/{run_id}/events", "/api/v1/runs/{run_id}/signals/{name}",
        "/api/v1/runs/{run_id}/cancel", "/api/v1/runs/{run_id}/approval", "/api/v1/approvals",
        "/api/v1/runs/{run_id}/retry", "/api/v1/runs/{run_id}/fork",
        "/api/v1/runs/{run_id}/erase", "/api/v1/schedules", "/api/v1/schedules/{name}",
        "/api/v1/schedules/{name}/pause", "/api/v1/schedules/{name}/resume",
        "/api/v1/schedules/{name}/trigger", "/api/v1/workers", "/api/v1/queues",
        "/api/v1/queues/{name}/pause", "/api/v1/queues/{name}/resume"}
    # ... and every (path, method) the server routes is in the document, and back.
    from tether.serve import _api, _control

    served = {(re.sub(r":\w+}", "}", r.path), m.lower()) for r in [*_api.routes,
                                                                  *_control.routes]
              for m in (r.methods or ()) if m != "HEAD"}
    documented = {(path, m) for path, ops in doc["paths"].items() for m in ops}
    assert served == documented


async def test_every_answer_to_a_bad_or_missing_id_is_in_the_document(api: Api) -> None:
    """Whatever run id or name a path holds (none such, blank, with a control
    character), each route answers a status its OpenAPI operation lists: GET of a run
    and of its journal answered an undocumented 400 for a blank id or one with a
    control character (schemathesis' status_code_conformance)."""
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
    doc = (await api.http.get("/openapi.json")).json()
    bodies = {"answerApproval": {"approved": True}, "forkRun": {"at": 0}}
    checked = 0
    for path, ops in doc["paths"].items():
        if "{" not in path:
            continue
        for method, op in ops.items():
            if op["operationId"] == "runEvents":
                continue  # (its 200 is a stream: it has a test of its own below)
            for bad in ("nope", "%20", "a%01b"):
                url = path.replace("{run_id}", bad).replace("{name}", bad)
                r = await api.http.request(method.upper(), url,
                                           json=bodies.get(op["operationId"]))
                assert str(r.status_code) in op["responses"], (method, url, r.text)
                if op["operationId"] in ("pauseQueue", "resumeQueue") and bad == "nope":
                    # (a queue is any name: one may be paused before its runs come)
                    assert r.status_code == 200, (method, url, r.text)
                else:
                    assert r.status_code >= 400 and error_of(r)
                checked += 1
    assert checked == 14 * 3  # (every operation with an id in its path but the events)
    for bad, status in (("%20", "400"), ("a%01b", "400"), ("nope", "404")):
        r = await api.http.get(f"/api/v1/runs/{bad}/events")
        assert str(r.status_code) == status
        assert status in doc["paths"]["/api/v1/runs/{run_id}/events"]["get"]["responses"]


async def test_every_operations_refusals_of_origin_and_host_are_in_the_document(
        api_open: Api) -> None:
    """Every operation answers 403 to another site's script (an ``Origin`` not this
    server's, no Authorization) and, without tokens, to a ``Host`` that is not
    loopback (DNS rebinding), the reads included: the document listed a 403 only for
    the changes, as "a read token tried to change something"."""
    doc = (await api_open.http.get("/openapi.json")).json()
    bodies = {"startRun": {"workflow": "wait_go"}, "answerApproval": {"approved": True},
              "forkRun": {"at": 0}}
    refusals = ({"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
                {"Host": "evil.example"})
    checked = 0
    for path, ops in doc["paths"].items():
        url = path.replace("{run_id}", "nope").replace("{name}", "nope")
        for method, op in ops.items():
            for headers in refusals:
                r = await api_open.http.request(method.upper(), url, headers=headers,
                                                json=bodies.get(op["operationId"]))
                assert r.status_code == 403 and error_of(r) == "forbidden", (url, r.text)
                assert "403" in op["responses"], (method, path)
                checked += 1
    assert checked == 21 * 2
    assert await api_open.snapshot() == []  # (nothing refused changed anything)


async def test_what_the_api_takes_is_in_the_document(api: Api) -> None:
    """The document says what the server takes: ``null`` for an optional field of a
    body (taken as its absence: a start's ``run_id``, ``queue`` and ``input``, a
    signal's ``idempotency_key``, an approval's ``note``, a fork's ``input`` and
    ``run_id``), which it called a schema violation; and the event stream's ``after``
    query parameter (Last-Event-ID for a client that cannot set headers), which it did
    not name."""
    doc = (await api.http.get("/openapi.json")).json()
    paths = doc["paths"]

    def body_schema(path: str) -> dict[str, Any]:
        props: dict[str, Any] = paths[path]["post"]["requestBody"]["content"][
            "application/json"]["schema"]["properties"]
        return props

    async with api.app.worker():
        r = await api.http.post("/api/v1/runs", json={
            "workflow": "two_signals", "input": None, "run_id": None, "queue": None})
        assert r.status_code == 201, r.text
        for field in ("input", "run_id", "queue"):
            assert body_schema("/api/v1/runs")[field].get("nullable") is True, field
        r = await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
        assert r.status_code == 201
        r = await api.http.post("/api/v1/runs/w/signals/go", json={"idempotency_key": None})
        assert r.status_code == 202, r.text
        assert body_schema("/api/v1/runs/{run_id}/signals/{name}")["idempotency_key"].get(
            "nullable") is True
        await wait_status(api, "w", "completed")
        r = await api.http.post("/api/v1/runs/w/fork", json={"at": 0, "input": None,
                                                             "run_id": None})
        assert r.status_code == 201, r.text
        for field in ("input", "run_id"):
            assert body_schema("/api/v1/runs/{run_id}/fork")[field].get("nullable") is True
        await api.http.post("/api/v1/runs", json={"workflow": "purchase", "input": ["x"],
                                                  "run_id": "p"})
        async with asyncio.timeout(15):
            while not (await api.http.get("/api/v1/approvals")).json()["approvals"]:
                await asyncio.sleep(0.02)
        r = await api.http.post("/api/v1/runs/p/approval", json={"approved": True,
                                                                 "note": None})
        assert r.status_code == 200, r.text
        assert body_schema("/api/v1/runs/{run_id}/approval")["note"].get("nullable") is True
    events = paths["/api/v1/runs/{run_id}/events"]["get"]["parameters"]
    assert {p["name"] for p in events if p["in"] == "query"} == {"after", "_"}


@pytest.mark.parametrize("value", [
    "ok", "été 😀", " ", "\u00a0", "a\x01b", "a\x7fb", "a\u0085b", "a\u202eb", "a\u2028b",
    "a\u2066b", "a\u200fb"])
async def test_the_documents_name_patterns_are_the_servers_rules(api: Api,
                                                                 value: str) -> None:
    """An id or name the server refuses with a 400 is one its schema's ``pattern`` does
    not match, and the other way round: in a body (a start's ``run_id``), a query
    (``workflow``) and a path (a run's, a signal's name). The document said any string
    of 1 to 200 characters, and a client generated from it sent names the server
    refused (schemathesis: "schema-valid request rejected")."""
    from urllib.parse import quote

    doc = (await api.http.get("/openapi.json")).json()
    paths = doc["paths"]
    start = paths["/api/v1/runs"]["post"]["requestBody"]["content"]["application/json"][
        "schema"]["properties"]["run_id"]
    workflow = next(p for p in paths["/api/v1/runs"]["get"]["parameters"]
                    if p["name"] == "workflow")["schema"]
    run_path = paths["/api/v1/runs/{run_id}"]["get"]["parameters"][0]["schema"]
    signal = next(p for p in paths["/api/v1/runs/{run_id}/signals/{name}"]["post"][
        "parameters"] if p["name"] == "name")["schema"]
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
    cases = [
        (start, await api.http.post("/api/v1/runs",
                                    json={"workflow": "wait_go", "run_id": value})),
        (workflow, await api.http.get("/api/v1/runs", params={"workflow": value})),
        (run_path, await api.http.get(f"/api/v1/runs/{quote(value)}")),
        (signal, await api.http.post(f"/api/v1/runs/w/signals/{quote(value)}", json={})),
    ]
    for schema, r in cases:
        matches = re.search(schema["pattern"], value) is not None
        assert (r.status_code != 400) == matches, (schema, r.request.url, r.text)


def _closed(schema: Any, defs: dict[str, Any] | None = None,
            components: dict[str, Any] | None = None) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema (``nullable`` as a null type), with every
    object that lists properties closed to others: what the document names, and
    nothing else (the objects of an ``allOf``, from ``components``, merged first)."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "allOf" in schema and components is not None:
        merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
        for part in schema["allOf"]:
            if "$ref" in part:
                part = components[part["$ref"].rsplit("/", 1)[1]]
            merged["properties"].update(part.get("properties", {}))
            merged["required"] += part.get("required", [])
        schema = merged
    out = {k: _closed(v) for k, v in schema.items() if k != "nullable"}
    if "$ref" in out:
        out["$ref"] = out["$ref"].replace("#/components/schemas/", "#/$defs/")
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if schema.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    if defs is not None:
        out["$defs"] = defs
    return out


async def test_the_document_names_every_field_the_server_answers(api: Api) -> None:
    """Each answer of each route, for runs in every state (completed with a child,
    failed, waiting for an approval, cancelled, forked, erased), is valid against its
    operation's response schema with no field the schema does not name: a client
    generated from the document missed ``updated_at``, ``finished_at``, ``waiting_for``
    and ``parent_run_id`` of every listed run, a run's ``attempts``, ``generation``,
    ``version``..., a journal entry's ``args``, ``result``, ``error`` and times, an
    approval's ``approval_id``, and the fields of the signal, cancel, approval and
    schedule answers."""
    import jsonschema

    doc = (await api.http.get("/openapi.json")).json()
    defs = {name: _closed(s) for name, s in doc["components"]["schemas"].items()}
    checked: set[str] = set()

    def valid(path: str, method: str, r: httpx.Response) -> None:
        op = doc["paths"][path][method]
        schema = op["responses"][str(r.status_code)]["content"]["application/json"][
            "schema"]
        jsonschema.validate(r.json(), _closed(schema, defs, doc["components"]["schemas"]))
        checked.add(op["operationId"])

    http = api.http
    async with api.app.worker():
        valid("/api/v1/runs", "post", await http.post("/api/v1/runs", json={
            "workflow": "parent", "input": ["kid"], "run_id": "mom"}))
        valid("/api/v1/runs", "post", await http.post("/api/v1/runs", json={
            "workflow": "parent", "input": ["kid"], "run_id": "mom"}))
        await http.post("/api/v1/runs", json={"workflow": "fixable", "input": ["t"],
                                              "run_id": "bad"})
        await http.post("/api/v1/runs", json={"workflow": "purchase", "input": ["x"],
                                              "run_id": "buy"})
        await http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
        await wait_status(api, "mom", "completed")
        await wait_status(api, "bad", "failed")
        async with asyncio.timeout(15):
            while not (await http.get("/api/v1/approvals")).json()["approvals"]:
                await asyncio.sleep(0.02)
        valid("/api/v1/approvals", "get", await http.get("/api/v1/approvals"))
        valid("/api/v1/approvals", "get", await http.get("/api/v1/approvals?limit=1"))
        valid("/api/v1/runs/{run_id}/approval", "post", await http.post(
            "/api/v1/runs/buy/approval", json={"approved": True, "note": "ok"}))
        valid("/api/v1/runs/{run_id}/signals/{name}", "post",
              await http.post("/api/v1/runs/w/signals/nope", json={"data": 1}))
        valid("/api/v1/runs/{run_id}/cancel", "post",
              await http.post("/api/v1/runs/w/cancel"))
        await wait_status(api, "w", "cancelled")
        valid("/api/v1/runs/{run_id}/fork", "post", await http.post(
            "/api/v1/runs/mom/fork", json={"at": 0, "run_id": "mom2"}))
        await wait_status(api, "mom2", "completed")
        valid("/api/v1/runs/{run_id}/retry", "post", await http.post("/api/v1/runs/bad/retry"))
        await wait_status(api, "bad", "failed")
        await wait_status(api, "buy", "completed")
    for run_id in ("mom", "mom.0", "bad", "buy", "w", "mom2"):
        valid("/api/v1/runs/{run_id}", "get", await http.get(f"/api/v1/runs/{run_id}"))
        valid("/api/v1/runs/{run_id}/journal", "get",
              await http.get(f"/api/v1/runs/{run_id}/journal"))
    valid("/api/v1/runs", "get", await http.get("/api/v1/runs?limit=3"))
    valid("/api/v1/runs/{run_id}/erase", "post", await http.post("/api/v1/runs/bad/erase"))
    valid("/api/v1/runs/{run_id}", "get", await http.get("/api/v1/runs/bad"))
    valid("/api/v1/schedules", "get", await http.get("/api/v1/schedules"))
    r = await http.post("/api/v1/runs/nope/cancel")
    valid("/api/v1/runs/{run_id}/cancel", "post", r)
    assert len(checked) == 12  # (all but the schedule actions, as no schedule is declared)


async def test_an_address_that_is_no_utf8_is_a_bad_request(api: Api) -> None:
    """``%FF`` and ``%FE`` in an API address are no UTF-8: the server decoded both as
    U+FFFD, so that ``/signals/%FF`` sent the run a signal named "\ufffd" (and
    ``/signals/%FE`` was the same one), and ``?workflow=%FF`` listed the runs of a
    workflow of that name; now each is a 400 and nothing is stored."""
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
    before = await api.snapshot()
    doc = (await api.http.get("/openapi.json")).json()["paths"]
    for method, url, path in (
            ("POST", "/api/v1/runs/w/signals/%FF", "/api/v1/runs/{run_id}/signals/{name}"),
            ("POST", "/api/v1/runs/w%FE/cancel", "/api/v1/runs/{run_id}/cancel"),
            ("GET", "/api/v1/runs/%FF", "/api/v1/runs/{run_id}"),
            ("GET", "/api/v1/runs?workflow=%FF%FE", "/api/v1/runs"),
            ("GET", "/api/v1/approvals?cursor=%C3", "/api/v1/approvals"),
            ("GET", "/api/v1/schedules?x=%FF", "/api/v1/schedules")):
        r = await api.http.request(method, url, json={} if method == "POST" else None)
        assert r.status_code == 400 and error_of(r) == "bad_request", (url, r.text)
        assert "400" in doc[path][method.lower()]["responses"]
    assert await api.snapshot() == before
    assert not await api.app.store.signal_pending(run_id="w", name="\ufffd")
    # UTF-8, escaped or not, is served as before.
    r = await api.http.post("/api/v1/runs/w/signals/%C3%A9t%C3%A9", json={})
    assert r.status_code == 202 and r.json()["signal"] == "été"
    r = await api.http.get("/api/v1/runs?workflow=%C3%A9")
    assert r.status_code == 200 and r.json()["runs"] == []


async def test_metrics_in_prometheus_format(api_any: Api) -> None:
    """Runs by status, queue depth and age, the step histogram and worker count come
    from the store."""
    api = api_any
    async with api.app.worker(queues=["default"]):
        await api.http.post("/api/v1/runs", json={"workflow": "greet", "input": ["a"],
                                                  "run_id": "m1"})
        await wait_status(api, "m1", "completed")
        text = (await api.http.get("/metrics")).text
        assert "tether_workers 1" in text.splitlines()
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "m2",
                                              "queue": 'odd"queue'})
    r = await api.http.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = r.text.splitlines()
    assert 'tether_runs{status="completed"} 1' in lines
    assert 'tether_runs{status="queued"} 1' in lines
    assert 'tether_queue_depth{queue="odd\\"queue"} 1' in lines
    assert any(x.startswith('tether_queue_oldest_age_seconds{queue="odd\\"queue"} ')
               for x in lines)
    assert "tether_step_duration_seconds_count 1" in lines
    assert 'tether_step_duration_seconds_bucket{le="+Inf"} 1' in lines
    assert 'tether_llm_tokens_total{type="input",outcome="spent"} 0' in lines
    assert "# TYPE tether_step_duration_seconds histogram" in lines


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/v1/runs/w/signals/%7F", {"data": 1}),
    # A line feed in an id (Starlette's path parameters stopped at one: no route
    # matched, a 404 not_found, until 2026-12-07).
    ("GET", "/api/v1/runs/a%0Ab", None),
    ("GET", "/api/v1/runs/a%0Ab/journal", None),
    ("GET", "/api/v1/runs/a%0A/events", None),
    ("POST", "/api/v1/runs/w%0A/cancel", None),
    ("POST", "/api/v1/runs/%0Aw/erase", None),
    ("POST", "/api/v1/runs/w/signals/a%0Ab", None),
    ("DELETE", "/api/v1/schedules/a%0Ab", None),
    ("POST", "/api/v1/schedules/a%0Ab/pause", None),
    ("POST", "/api/v1/runs", {"workflow": "greet", "run_id": "a\u202eb"}),
    ("POST", "/api/v1/runs", {"workflow": "greet", "queue": "q\u0085"}),
])
async def test_names_with_control_characters_are_bad_requests(api: Api, method: str, path: str,
                                                              body: dict[str, Any]) -> None:
    """Names the engine refuses (control characters: terminal injection) are a 400 and
    change nothing (found by the fuzz test: it was a 500)."""
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
    before = await api.snapshot()
    r = await api.http.request(method, path, json=body)
    assert r.status_code == 400 and error_of(r) == "bad_request"
    assert await api.snapshot() == before


async def test_without_tokens_only_loopback_host_names_are_served(api_open: Api) -> None:
    """DNS rebinding: a page of attacker.example whose name now resolves to 127.0.0.1
    is same-origin with itself, so its requests carry Host (and Origin)
    attacker.example. A server without tokens answers only loopback names; they were
    served (the runs listed, a run started)."""
    api = api_open
    before = await api.snapshot()
    rebound = {"Host": "attacker.example:8233", "Origin": "http://attacker.example:8233",
               "Sec-Fetch-Site": "same-origin"}
    r = await api.http.post("/api/v1/runs", json={"workflow": "greet", "run_id": "x"},
                            headers=rebound)
    assert r.status_code == 403 and error_of(r) == "forbidden"
    for path in ("/api/v1/runs", "/runs", "/metrics"):
        r = await api.http.get(path, headers={"Host": "attacker.example:8233"})
        assert r.status_code == 403 and error_of(r) == "forbidden", path
    assert await api.snapshot() == before
    for host in ("localhost:8233", "127.0.0.1:8233", "[::1]:8233", "127.0.0.1", "LOCALHOST",
                 "tether.localhost:8233"):
        r = await api.http.get("/api/v1/runs", headers={"Host": host})
        assert r.status_code == 200, host


async def test_with_tokens_any_host_name_is_served(api: Api) -> None:
    r = await api.http.get("/api/v1/runs", headers={"Host": "tether.example.com"})
    assert r.status_code == 200


async def test_cross_site_posts_are_refused_without_a_token(api_open: Api) -> None:
    """A page of another site cannot make a browser change anything, even on a loopback
    server without tokens; a same-origin or non-browser client can."""
    api = api_open
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
    before = await api.snapshot()
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null"}):
        r = await api.http.post("/api/v1/runs/w/cancel", headers=headers)
        assert r.status_code == 403 and error_of(r) == "forbidden", headers
    assert await api.snapshot() == before
    r = await api.http.post("/api/v1/runs/w/cancel", headers={
        "Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 202


async def test_scripts_of_another_origin_cannot_read_the_api(api_open: Api) -> None:
    """A script of another origin (a fetch, an EventSource) names its ``Origin``: the
    API, ``/metrics`` and ``/openapi.json`` refuse it with 403 whatever the method
    (they were served; only changes were refused). A link followed from another site
    (no ``Origin``) and this server's own pages are served."""
    api = api_open
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
    paths = ("/api/v1/runs", "/api/v1/runs/w", "/api/v1/runs/w/events", "/metrics",
             "/openapi.json")
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Origin": "http://127.0.0.1:9999"},
                    {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
                    {"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"}):
        for path in paths:
            r = await api.http.get(path, headers=headers)
            assert r.status_code == 403 and error_of(r) == "forbidden", (headers, path)
    for path in paths[:2] + paths[3:]:
        for headers in ({"Origin": "http://127.0.0.1"},
                        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},
                        # (a page of its own behind a proxy that rewrites Host)
                        {"Origin": "https://tether.example.com",
                         "Sec-Fetch-Site": "same-origin"}):
            r = await api.http.get(path, headers=headers)
            assert r.status_code == 200, (path, headers)


def _metric(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.rsplit(" ", 1)[1])


async def test_metrics_counters_never_go_down_when_runs_are_purged_or_continued(
        api_any: Api) -> None:
    """/metrics' counters and step histogram are sums over the runs the store keeps: a
    purge took the purged runs' tokens, cost, calls and steps out of them (2 -> 0), and
    continue_as_new its journal's steps, which Prometheus reads as counter resets. They
    now count the archived journals, and what purges remove is kept aside."""
    app = api_any.app

    rounds = add_paid_rounds(app)

    names = ("tether_llm_calls_total", 'tether_llm_tokens_total{type="input",outcome="spent"}',
             'tether_llm_cost_usd_total{outcome="spent"}', "tether_step_duration_seconds_count",
             'tether_step_duration_seconds_bucket{le="+Inf"}')
    async with app.worker():
        for i in range(2):
            assert await (await app.start(rounds, 0, run_id=f"c{i}")).result(timeout=20) == 2
    text = (await api_any.http.get("/metrics")).text
    before = [_metric(text, n) for n in names]
    assert before == [6, 600, 3.0, 6, 6], before  # three generations of each run
    report = await app.store.run_purge(finished_before=app.clock.now() + 1,
                                       statuses=["completed"], limit=100)
    assert report.runs == 2
    text = (await api_any.http.get("/metrics")).text
    assert [_metric(text, n) for n in names] == before
    async with app.worker():
        assert await (await app.start(rounds, 2, run_id="c9")).result(timeout=20) == 2
    text = (await api_any.http.get("/metrics")).text
    assert [_metric(text, n) for n in names] == [7, 700, 3.5, 7, 7]


async def test_metrics_step_histogram_does_not_go_down_when_a_run_is_retried(
        api_any: Api) -> None:
    """``tether retry`` resets a failed run's failed step entry (and a cancelled run
    forgets what followed its cancel): those finished steps had been counted, and the
    histogram went down by them."""
    app = api_any.app
    fail = [True]

    @app.step(retry=tether.RetryPolicy(max_attempts=1))
    async def shaky(i: int) -> int:
        if fail[0]:
            raise RuntimeError("down")
        return i

    @app.step
    async def fine(i: int) -> int:
        return i

    @app.workflow
    async def two(n: int) -> int:
        return await fine(n) + await shaky(n)

    names = ("tether_step_duration_seconds_count",
             'tether_step_duration_seconds_bucket{le="+Inf"}')
    async with app.worker():
        with pytest.raises(tether.RunFailed):
            await (await app.start(two, 1, run_id="rt")).result(timeout=20)
    text = (await api_any.http.get("/metrics")).text
    before = [_metric(text, n) for n in names]
    assert before == [2, 2], before
    await app.retry("rt")
    text = (await api_any.http.get("/metrics")).text
    assert [_metric(text, n) for n in names] == before  # it was [1, 1]
    fail[0] = False
    async with app.worker():
        assert await app.handle("rt").result(timeout=20) == 2
    text = (await api_any.http.get("/metrics")).text
    entries = await app.store.journal_read("rt")
    assert all(e.started_at is not None for e in entries)  # the retried step's was None
    assert [_metric(text, n) for n in names] == [3, 3]


class _SteppedClock(SystemClock):
    """The system clock, set back by ``back`` seconds (as an operator or NTP may)."""

    def __init__(self) -> None:
        self.back = 0.0

    def now(self) -> float:
        return time.time() - self.back


async def test_metrics_step_histogram_sum_never_goes_down_when_the_clock_steps_back(
        store_url: str) -> None:
    """A step's duration is the difference of two wall-clock times: the clock set back
    by 30 s while a step ran gave it -30 s, and the histogram's sum went down by that
    (and again when a purge took the run's figures into the totals). It counts as 0."""
    clock = _SteppedClock()
    app = App(store_url, clock=clock)

    @app.step
    async def slow(i: int) -> int:
        clock.back += 30.0  # (the clock steps back while the step runs)
        return i

    @app.workflow
    async def once(i: int) -> int:
        return await slow(i)

    names = ("tether_step_duration_seconds_sum", "tether_step_duration_seconds_count",
             'tether_step_duration_seconds_bucket{le="0.005"}')
    transport = httpx.ASGITransport(app=create_app(app, mcp=False, metrics_interval=0))
    async with app, httpx.AsyncClient(transport=transport,
                                      base_url="http://127.0.0.1") as http:
        async with app.worker():
            assert await (await app.start(once, 7, run_id="back")).result(timeout=20) == 7
        entry = (await app.store.journal_read("back"))[0]
        assert entry.finished_at is not None and entry.started_at is not None
        assert entry.finished_at - entry.started_at < -29  # (what the journal says)
        ran = [_metric((await http.get("/metrics")).text, n) for n in names]
        assert ran == [0, 1, 1], ran  # the sum was -30
        report = await app.store.run_purge(finished_before=app.clock.now() + 1,
                                           statuses=["completed"], limit=10)
        assert report.runs == 1
        purged = [_metric((await http.get("/metrics")).text, n) for n in names]
        assert purged == ran  # the purge added -30 to the totals


async def test_metrics_step_histogram_counts_a_forks_copied_steps_once(
        api_any: Api) -> None:
    """A fork copies its source's journal before a position: those steps ran once, for
    the source, and the histogram counted them again for the fork (2 + 2 + 1 for a fork
    that ran one step); and again when the fork was purged, retried or continued as new."""
    app = api_any.app
    fail = [True]

    @app.step(retry=tether.RetryPolicy(max_attempts=1))
    async def shaky(i: int) -> int:
        if fail[0]:
            raise RuntimeError("down")
        return i

    @app.step
    async def fine(i: int) -> int:
        return i

    @app.workflow
    async def three(n: int) -> int:
        total = await fine(n) + await fine(n + 1)
        if n < 10:
            tether.continue_as_new(n + 10)
        return total + await shaky(n)

    names = ("tether_step_duration_seconds_count",
             'tether_step_duration_seconds_bucket{le="+Inf"}')

    async def steps() -> list[float]:
        text = (await api_any.http.get("/metrics")).text
        return [_metric(text, n) for n in names]

    fail[0] = False
    async with app.worker():
        assert await (await app.start(three, 20, run_id="src")).result(timeout=20) == 61
        assert await steps() == [3, 3]
        # Copies fine, fine; runs flaky: one step more.
        fork = await app.fork("src", at=2, new_run_id="f1")
        assert await fork.result(timeout=20) == 61
        assert await steps() == [4, 4]  # it was [6, 6]
        # Copies a flaky that failed, which a retry of the fork runs again.
        fail[0] = True
        with pytest.raises(tether.RunFailed):
            await (await app.start(three, 30, run_id="bad")).result(timeout=20)
        assert await steps() == [7, 7]
        with pytest.raises(tether.RunFailed):
            await (await app.fork("bad", at=3, new_run_id="f2")).result(timeout=20)
        assert await steps() == [7, 7]
    await app.retry("f2")
    assert await steps() == [7, 7]  # the retry took the copied failure into the totals
    fail[0] = False
    async with app.worker():
        assert await app.handle("f2").result(timeout=20) == 91
        assert await steps() == [8, 8]
        # A fork that continues as new: its copied steps are archived, still not its own.
        assert await (await app.start(three, 1, run_id="gen")).result(timeout=20) == 34
        assert await steps() == [13, 13]  # 2 steps, then 3 in the next generation
        fork = await app.fork("gen", at=2, input=[1], new_run_id="f3")
        assert await fork.result(timeout=20) == 34
        assert await steps() == [16, 16]  # only the next generation's 3
    report = await app.store.run_purge(finished_before=app.clock.now() + 1,
                                       statuses=["completed"], limit=100)
    assert report.runs == 5
    assert await steps() == [16, 16]  # the purge counted the forks' copies


async def test_a_signal_name_over_the_limit_is_a_bad_request(api: Api) -> None:
    """The API took a signal name of 5,000 characters (202); the engine's rule holds it
    to 200, as the web UI did: a 400 that changes nothing. 200 characters are taken."""
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
    before = await api.snapshot()
    for name in ("x" * 5000, "x" * 201):
        r = await api.http.post(f"/api/v1/runs/w/signals/{name}", json={"data": 1},
                                headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"})
        assert r.status_code == 400 and error_of(r) == "bad_request", r.text
        assert "at most 200 are allowed" in r.json()["error"]["message"]
    assert await api.snapshot() == before
    r = await api.http.post("/api/v1/runs/w/signals/" + "x" * 200, json={"data": 1})
    assert r.status_code == 202
