"""Issue 11 over HTTP: retry, fork, erase and schedules, with the right 4xx for bad input
and the store unchanged after each rejection (in process, httpx over ASGI, real stores)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.web import webapp
from tests.web.helpers import ADMIN, READ
from tests.web.test_api import Api, _api, error_of, wait_status
from tether._lifecycle import make_spec, to_record
from tether.errors import RunErased
from tether.serve import Tokens

READ_HEADERS = {"Authorization": f"Bearer {READ}"}


@pytest.fixture
async def api(sqlite_url: str) -> AsyncIterator[Api]:
    """The API with an admin and a read token; requests carry the admin one."""
    async for a in _api(sqlite_url, Tokens({ADMIN: "admin", READ: "read"})):
        yield a


@pytest.fixture
async def api_any(store_url: str) -> AsyncIterator[Api]:
    """The API with tokens, on SQLite and PostgreSQL."""
    async for a in _api(store_url, Tokens({ADMIN: "admin", READ: "read"})):
        yield a


@pytest.fixture(autouse=True)
def _unfixed() -> None:
    webapp.FIXED.clear()


async def _finish(api: Api, workflow: str, args: list[Any], run_id: str,
                  status: str) -> dict[str, Any]:
    r = await api.http.post("/api/v1/runs", json={"workflow": workflow, "input": args,
                                                  "run_id": run_id})
    assert r.status_code == 201, r.text
    async with api.app.worker(queues=["default"]):
        return await wait_status(api, run_id, status)


async def _rejected(api: Api, method: str, path: str, body: Any, status: int, code: str,
                    headers: dict[str, str] | None = None) -> None:
    """The request gets ``status`` with error ``code`` and changes nothing."""
    before = await api.snapshot()
    schedules = await api.app.store.schedule_list()
    r = await api.http.request(method, path, json=body, headers=headers)
    assert r.status_code == status, (method, path, body, r.text)
    assert error_of(r) == code
    assert await api.snapshot() == before
    assert await api.app.store.schedule_list() == schedules


# -- retry --------------------------------------------------------------------------------


async def test_retry_runs_a_failed_run_again_keeping_its_recorded_steps(api_any: Api) -> None:
    """A failed run answers 409 until it is retried; after the fix, POST .../retry queues
    it, it completes, and the step before the failure ran once."""
    api = api_any
    failed = await _finish(api, "fixable", ["a"], "fx-1", "failed")
    assert "bug in fragile" in failed["error"]["message"]
    await _rejected(api, "POST", "/api/v1/runs/fx-1/retry", None, 403, "forbidden",
                    READ_HEADERS)
    await _rejected(api, "POST", "/api/v1/runs/fx-1/retry", {"now": True}, 400, "bad_request")
    await _rejected(api, "POST", "/api/v1/runs/nope/retry", None, 404, "run_not_found")

    webapp.FIXED.add("a")  # the code is fixed
    r = await api.http.post("/api/v1/runs/fx-1/retry")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "queued"
    async with api.app.worker(queues=["default"]):
        done = await wait_status(api, "fx-1", "completed")
    assert done["result"] == ["hello a", "fixed a"]
    hello = [a for a in done["attempts"] if a["position"] == 0]
    assert len(hello) == 1, "the recorded step before the failure ran again"
    fragile = [a for a in done["attempts"] if a["position"] == 1]
    assert [a["status"] for a in fragile][-1] == "ok" and len(fragile) == 2

    # A completed run is not in a retryable state.
    await _rejected(api, "POST", "/api/v1/runs/fx-1/retry", None, 409, "conflict")


async def test_retry_names_the_children_it_brings_back(api_any: Api) -> None:
    """A parent cancelled while it waits for its child cancels the child too; POST
    .../retry queues both again (the parent would fail at once on its cancelled child)
    and says which children came back with it: ``retried_children``."""
    api = api_any
    r = await api.http.post("/api/v1/runs", json={"workflow": "waiting_parent", "input": [],
                                                  "run_id": "wp-1"})
    assert r.status_code == 201, r.text
    async with api.app.worker(queues=["default"]):
        doc = await wait_status(api, "wp-1", "waiting")
        async with asyncio.timeout(15):
            while not doc["children"] or doc["children"][0]["status"] != "waiting":
                await asyncio.sleep(0.02)
                doc = (await api.http.get("/api/v1/runs/wp-1")).json()
        child = doc["children"][0]["run_id"]
        assert (await api.http.post("/api/v1/runs/wp-1/cancel")).status_code == 202
        await wait_status(api, "wp-1", "cancelled")
        await wait_status(api, child, "cancelled")
        r = await api.http.post("/api/v1/runs/wp-1/retry")
        assert r.status_code == 200, r.text
        assert r.json()["retried_children"] == [child]
        # (The worker may have taken it again by the time its document is read.)
        assert r.json()["status"] in ("queued", "running", "waiting"), r.json()["status"]
        await wait_status(api, child, "waiting")
        r = await api.http.post(f"/api/v1/runs/{child}/signals/go", json={"data": 7})
        assert r.status_code == 202, r.text
        assert (await wait_status(api, "wp-1", "completed"))["result"] == 7
    r = await api.http.post("/api/v1/runs/fx-none/retry")  # (no such run: still a 404)
    assert r.status_code == 404


async def test_retry_and_fork_of_an_unserved_workflow_warn(api: Api) -> None:
    """A retry or fork of a run whose workflow no worker of the store has registered
    (renamed in code, a typo'd start) queues a run that waits for ever: the answer says
    so in ``warnings``, as a start's does and ``tether retry``/``tether fork`` do. Before
    2026-12-06 the retry and fork answers had no ``warnings``."""
    r = await api.http.post("/api/v1/runs", json={"workflow": "renamed_flow",
                                                  "run_id": "rf-1"})
    assert r.status_code == 201 and r.json()["warnings"], r.text
    assert (await api.http.post("/api/v1/runs/rf-1/cancel")).status_code == 202
    await wait_status(api, "rf-1", "cancelled")
    r = await api.http.post("/api/v1/runs/rf-1/retry")
    assert r.status_code == 200 and r.json()["status"] == "queued", r.text
    assert r.json()["warnings"] == [
        "no worker has registered workflow 'renamed_flow' in this store yet; the run "
        "waits on queue 'default' until one does"]
    assert (await api.http.post("/api/v1/runs/rf-1/cancel")).status_code == 202
    await wait_status(api, "rf-1", "cancelled")
    r = await api.http.post("/api/v1/runs/rf-1/fork", json={"at": 0, "run_id": "rf-2"})
    assert r.status_code == 201, r.text
    assert "no worker has registered workflow 'renamed_flow'" in r.json()["warnings"][0]
    # A served workflow's retry and fork answer no warnings.
    await _finish(api, "fixable", ["b"], "fx-w", "failed")
    r = await api.http.post("/api/v1/runs/fx-w/retry")
    assert r.status_code == 200 and "warnings" not in r.json(), r.text
    r = await api.http.post("/api/v1/runs/fx-w/fork", json={"at": 0, "run_id": "fx-w2"})
    assert r.status_code == 201 and "warnings" not in r.json(), r.text


# -- fork ---------------------------------------------------------------------------------


async def test_fork_copies_the_journal_before_the_position(api_any: Api) -> None:
    """A fork at position 2 keeps positions 0-1 of the source, runs from 2, and says
    where it came from; with new input, it runs the workflow on that input."""
    api = api_any
    src = await _finish(api, "steps", [3], "src", "completed")
    assert src["result"] == [10, 20, 30]
    r = await api.http.post("/api/v1/runs/src/fork", json={"at": 2, "run_id": "fk"})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["run_id"] == "fk" and doc["forked_from"] == "src" and doc["forked_at"] == 2
    assert doc["status"] == "queued"
    assert [e["position"] for e in doc["journal"]] == [0, 1]
    r = await api.http.post("/api/v1/runs/src/fork", json={"at": 0, "input": [2]})
    assert r.status_code == 201, r.text
    other = r.json()["run_id"]
    async with api.app.worker(queues=["default"]):
        forked = await wait_status(api, "fk", "completed")
        again = await wait_status(api, other, "completed")
    assert forked["result"] == [10, 20, 30]
    assert {a["position"] for a in forked["attempts"]} == {2}, "copied steps ran again"
    assert again["result"] == [10, 20] and again["input"] == [2]


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    ("/api/v1/runs/src/fork", {"at": -1}, 422, "bad_position"),
    ("/api/v1/runs/src/fork", {"at": 3}, 422, "bad_position"),  # positions 0..1: at most 2
    ("/api/v1/runs/src/fork", {"at": "1"}, 422, "bad_position"),
    ("/api/v1/runs/src/fork", {"at": True}, 422, "bad_position"),
    ("/api/v1/runs/src/fork", {"at": 1.5}, 422, "bad_position"),
    ("/api/v1/runs/src/fork", {}, 422, "bad_position"),
    ("/api/v1/runs/src/fork", {"at": 1, "input": "x"}, 400, "bad_request"),
    # (an input the workflow cannot take: a fork that failed on the worker)
    ("/api/v1/runs/src/fork", {"at": 1, "input": []}, 400, "bad_request"),
    ("/api/v1/runs/src/fork", {"at": 1, "input": [1, 2]}, 400, "bad_request"),
    ("/api/v1/runs/src/fork", {"at": 1, "input": ["two"]}, 400, "bad_request"),  # (an int)
    ("/api/v1/runs/src/fork", {"at": 1, "run_id": ""}, 400, "bad_request"),
    ("/api/v1/runs/src/fork", {"at": 1, "run_id": "a\nb"}, 400, "bad_request"),
    ("/api/v1/runs/src/fork", {"at": 1, "colour": "red"}, 400, "bad_request"),
    ("/api/v1/runs/src/fork", {"at": 1, "run_id": "src"}, 409, "conflict"),
    ("/api/v1/runs/nope/fork", {"at": 0}, 404, "run_not_found"),
    ("/api/v1/runs/src/fork", None, 400, "bad_request"),
])
async def test_fork_rejects_bad_input(api: Api, path: str, body: Any, status: int,
                                      code: str) -> None:
    """A bad position is a 422, an unknown run a 404, an id in use a 409; nothing is
    created."""
    await _finish(api, "steps", [2], "src", "completed")
    await _rejected(api, "POST", path, body, status, code)


async def test_a_fork_asked_for_again_with_its_id_is_idempotent(api: Api) -> None:
    """As a start with ``run_id``: the same fork (source, ``at``, input) posted again
    answers 200 with the run it made, starting nothing (it was a 409); an id another
    run holds is a 409 whose message says which run that is, and changes nothing."""
    await _finish(api, "steps", [2], "src", "completed")
    body = {"at": 1, "run_id": "fk", "input": [2]}
    first = await api.http.post("/api/v1/runs/src/fork", json=body)
    assert first.status_code == 201, first.text
    assert first.json()["created"] is True, first.text  # (as `tether fork --json`)
    before = await api.snapshot()
    again = await api.http.post("/api/v1/runs/src/fork", json=body)
    assert again.status_code == 200, again.text
    assert (again.json()["run_id"], again.json()["forked_from"], again.json()["forked_at"],
            again.json()["created"]) == ("fk", "src", 1, False)
    assert await api.snapshot() == before
    for other, holder in (({"at": 0, "run_id": "fk", "input": [2]},
                           "a fork of run 'src' at position 1 (workflow 'steps')"),
                          ({"at": 1, "run_id": "fk"},  # (src's input: [2] as well)
                           None),
                          ({"at": 1, "run_id": "fk", "input": [1]},
                           "the fork of run 'src' at position 1 with another input"),
                          ({"at": 1, "run_id": "src"},
                           "a run of workflow 'steps' that is no fork")):
        r = await api.http.post("/api/v1/runs/src/fork", json=other)
        if holder is None:
            assert r.status_code == 200, r.text
            continue
        assert r.status_code == 409, r.text
        rid = other["run_id"]
        assert r.json()["error"] == {
            "code": "conflict",
            "message": f"run id {rid!r} is already used by {holder}; choose another id"}
    assert await api.snapshot() == before


async def test_fork_past_the_end_names_the_journals_length(api: Api) -> None:
    """A position past the journal's end is a 422 (never a 500) whose message says how
    long the journal is, as ``tether fork`` does (exit 2)."""
    await _finish(api, "steps", [2], "src", "completed")
    r = await api.http.post("/api/v1/runs/src/fork", json={"at": 5})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == {
        "code": "bad_position",
        "message": "run 'src' has a journal of 2 positions (0..1); at 5 is past its end "
                   "(at most 2)"}


@pytest.mark.parametrize(("at", "said"), [
    ("1", 'not a string: "1"'),
    (True, "not a boolean: true"),
    (None, "not null"),
    (1.5, "not a number: 1.5"),
    ({"p": None}, 'not an object: {"p": null}'),
    ("x" * 5000, 'not a string: "' + "x" * 99 + "… (5,002 characters)"),
])
async def test_a_fork_position_that_is_no_integer_is_said_in_json(api: Api, at: Any,
                                                                  said: str) -> None:
    """A fork's ``at`` that is no integer is echoed in JSON's words, as it was sent
    (it was Python's repr: True, None, {'p': None}), and cut as every echoed value is
    (a 5,000-character string came back whole)."""
    await _finish(api, "steps", [2], "src", "completed")
    r = await api.http.post("/api/v1/runs/src/fork", json={"at": at})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == {"code": "bad_position",
                                 "message": f"at must be an integer position, {said}"}


async def test_fork_with_a_read_token_is_forbidden(api: Api) -> None:
    await _finish(api, "steps", [2], "src", "completed")
    await _rejected(api, "POST", "/api/v1/runs/src/fork", {"at": 0}, 403, "forbidden",
                    READ_HEADERS)


# -- erase --------------------------------------------------------------------------------


async def test_erase_removes_an_ended_runs_payloads(api: Api) -> None:
    """An unfinished run is a 409, a read token a 403; an ended run's payloads are
    replaced and its timeline keeps its shape."""
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
    await _rejected(api, "POST", "/api/v1/runs/w/erase", None, 409, "conflict")
    await _finish(api, "greet", ["secret-name"], "g", "completed")
    await _rejected(api, "POST", "/api/v1/runs/g/erase", None, 403, "forbidden", READ_HEADERS)
    await _rejected(api, "POST", "/api/v1/runs/nope/erase", None, 404, "run_not_found")
    await _rejected(api, "POST", "/api/v1/runs/g/erase", {"x": 1}, 400, "bad_request")
    r = await api.http.post("/api/v1/runs/g/erase", json={"x": 1})
    # An action without fields says so, not "allowed: " followed by nothing.
    assert r.json()["error"]["message"] == ("unknown field(s): x; this action takes no "
                                            "fields: send no body or {}")

    r = await api.http.post("/api/v1/runs/g/erase")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["run_id"] == "g" and report["erased"]["journal_entries"] == 1
    doc = (await api.http.get("/api/v1/runs/g")).json()
    assert doc["erased_at"] is not None and doc["status"] == "completed"
    assert "secret-name" not in str(doc)
    assert [(e["position"], e["name"]) for e in doc["journal"]] == [(0, "hello")]


async def test_a_second_erase_says_already_erased_and_keeps_erased_at(api_any: Api) -> None:
    """The erase's answer says ``already_erased`` as ``tether erase --json`` does: false
    while something new was erased (a parent whose child was erased alone before),
    true when the run and its whole family had been, whose ``erased_at`` stays the first
    erase's. Until 2026-12-07 the HTTP answer had no such field, and a second erase
    answered as the first did."""
    await _finish(api_any, "parent", ["secret-name"], "mom", "completed")
    r = await api_any.http.post("/api/v1/runs/mom.0/erase")
    assert r.status_code == 200, r.text
    assert r.json()["erased"]["run_ids"] == ["mom.0"]
    assert r.json()["erased"]["already_erased"] is False
    child_at = (await api_any.http.get("/api/v1/runs/mom.0")).json()["erased_at"]
    r = await api_any.http.post("/api/v1/runs/mom/erase")
    assert r.status_code == 200, r.text
    assert r.json()["erased"]["run_ids"] == ["mom", "mom.0"]
    assert r.json()["erased"]["already_erased"] is False  # (the parent was not)
    first = {run_id: (await api_any.http.get(f"/api/v1/runs/{run_id}")).json()["erased_at"]
             for run_id in ("mom", "mom.0")}
    assert first["mom.0"] == child_at and first["mom"] is not None
    for path in ("/api/v1/runs/mom/erase", "/api/v1/runs/mom.0/erase"):
        r = await api_any.http.post(path)
        assert r.status_code == 200, r.text
        assert r.json()["erased"]["already_erased"] is True, r.text
    assert {run_id: (await api_any.http.get(f"/api/v1/runs/{run_id}")).json()["erased_at"]
            for run_id in ("mom", "mom.0")} == first


async def test_an_erased_run_is_not_retried_nor_forked(api_any: Api) -> None:
    """An erased run's input and results are ``{"erased": true}``: a retry would run on
    that input, a fork would replay those results as the steps' (a "completed" fork of
    wrong values). Both are a 409 that changes nothing, and the run page offers neither."""
    api = api_any
    await _finish(api, "fixable", ["t"], "f", "failed")
    await _finish(api, "steps", [3], "s", "completed")
    for run_id in ("f", "s"):
        assert (await api.http.post(f"/api/v1/runs/{run_id}/erase")).status_code == 200
    await _rejected(api, "POST", "/api/v1/runs/f/retry", None, 409, "conflict")
    r = await api.http.post("/api/v1/runs/f/retry")
    assert "was erased" in r.json()["error"]["message"], r.text
    await _rejected(api, "POST", "/api/v1/runs/s/fork", {"at": 2}, 409, "conflict")
    await _rejected(api, "POST", "/api/v1/runs/s/fork", {"at": 0, "input": [2]}, 409,
                    "conflict")
    page = (await api.http.get("/runs/f")).text
    assert "were erased: it cannot be retried or forked" in page
    assert 'id="retry"' not in page and 'class="forkhere"' not in page
    with pytest.raises(RunErased, match="was erased"):
        await api.app.retry("f")


# -- schedules ----------------------------------------------------------------------------


async def _schedule(api: Api, name: str = "nightly") -> None:
    spec = make_spec("greet", "default", "0 3 * * *", name=name, args=("cron",))
    await api.app.store.schedule_upsert(schedule=to_record(api.app, spec,
                                                           api.app.clock.now()))


async def test_schedules_list_pause_resume_trigger_delete(api_any: Api) -> None:
    """The schedules API does what `tether schedules` does, step by step."""
    api = api_any
    r = await api.http.get("/api/v1/schedules")
    assert r.status_code == 200 and r.json() == {"schedules": []}
    await _schedule(api)
    (row,) = (await api.http.get("/api/v1/schedules", headers=READ_HEADERS)).json()["schedules"]
    assert row["name"] == "nightly" and row["cron"] == "0 3 * * *" and not row["paused"]
    assert row["next_tick"] is not None

    r = await api.http.post("/api/v1/schedules/nightly/pause")
    assert r.status_code == 200, r.text
    assert r.json()["paused"] is True and r.json()["next_tick"] is None  # (none while paused)
    r = await api.http.post("/api/v1/schedules/nightly/resume")
    assert r.status_code == 200, r.text
    assert r.json()["paused"] is False and r.json()["next_tick"] > api.app.clock.now()

    r = await api.http.post("/api/v1/schedules/nightly/trigger")
    assert r.status_code == 201, r.text
    run_id = r.json()["run_id"]
    assert run_id.startswith("nightly@manual-")
    run = (await api.http.get(f"/api/v1/runs/{run_id}")).json()
    assert run["workflow"] == "greet" and run["input"] == ["cron"]
    (row,) = (await api.http.get("/api/v1/schedules")).json()["schedules"]
    assert row["last_run_id"] == run_id and not row["paused"]
    r = await api.http.post("/api/v1/schedules/nightly/pause")
    r = await api.http.post("/api/v1/schedules/nightly/trigger")  # paused: still recorded
    assert r.status_code == 201, r.text
    (row,) = (await api.http.get("/api/v1/schedules")).json()["schedules"]
    assert row["last_run_id"] == r.json()["run_id"] and row["paused"]

    r = await api.http.delete("/api/v1/schedules/nightly")
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert (await api.http.get("/api/v1/schedules")).json() == {"schedules": []}
    assert (await api.http.get(f"/api/v1/runs/{run_id}")).status_code == 200  # runs stay


@pytest.mark.parametrize("action", ["pause", "resume", "trigger", "delete"])
async def test_schedule_actions_reject_bad_requests(api: Api, action: str) -> None:
    """Unknown schedule: 404; read token: 403; a body with fields: 400; nothing changes."""
    await _schedule(api)
    method = "DELETE" if action == "delete" else "POST"
    suffix = "" if action == "delete" else f"/{action}"
    await _rejected(api, method, f"/api/v1/schedules/nope{suffix}", None, 404,
                    "schedule_not_found")
    await _rejected(api, method, f"/api/v1/schedules/nightly{suffix}", None, 403, "forbidden",
                    READ_HEADERS)
    if method == "POST":
        await _rejected(api, method, f"/api/v1/schedules/nightly{suffix}", {"at": 1}, 400,
                        "bad_request")


async def test_resuming_a_stored_schedule_whose_cron_is_refused_is_a_409(api_any: Api) -> None:
    """A schedule stored by another version of Tether, with a cron this one refuses (a
    weekday name in the month field), answered its resume with a 500; it is a 409 that
    says why, and the schedule is left as it was."""
    api = api_any
    spec = make_spec("greet", "default", "0 3 * * *", name="old", args=("cron",))
    record = dataclasses.replace(to_record(api.app, spec, api.app.clock.now()),
                                 cron="0 9 * mon *")
    await api.app.store.schedule_upsert(schedule=record)
    await _rejected(api, "POST", "/api/v1/schedules/old/resume", None, 409, "conflict")
    r = await api.http.post("/api/v1/schedules/old/resume")
    assert r.json()["error"]["message"].startswith(
        "schedule 'old' cannot resume: cron '0 9 * mon *': 'mon' is a weekday name")
    (row,) = (await api.http.get("/api/v1/schedules")).json()["schedules"]
    assert row["cron"] == "0 9 * mon *"


# -- cancel -------------------------------------------------------------------------------


async def test_a_cancel_takes_a_reason_and_refuses_a_bad_one(api_any: Api) -> None:
    """POST .../cancel takes one field, ``reason`` (as Temporal's cancel does): kept with
    the cancel, the run document gives it (``cancel_reason``, ``cancelled_with`` null:
    its own request), and a repeat keeps the first's, which its answer says. A body with
    another field, a reason that is not a string, empty, over 1,000 characters or over
    a line, and a body that is not JSON are 400s that cancel nothing. Until 2026-12-07
    the cancel took no field: ``{"reason": ...}`` was a 400."""
    api = api_any
    async with api.app.worker(queues=["default"]):
        await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "cw"})
        await wait_status(api, "cw", "waiting")
    path = "/api/v1/runs/cw/cancel"
    await _rejected(api, "POST", path, {"why": "duplicate order"}, 400, "bad_request")
    r = await api.http.post(path, json={"why": "x"})
    assert r.json()["error"]["message"] == "unknown field(s): why; allowed: reason"
    for bad, said in ((7, "a cancel's reason must be a string, not int"),
                      (["x"], "a cancel's reason must be a string, not list"),
                      (" ", "a cancel's reason is empty: give a reason, or none"),
                      ("x" * 1001, "a cancel's reason is 1,001 characters long; at most "
                                   "1,000 are allowed"),
                      ("two\nlines", "a cancel's reason holds control characters (a line "
                                     "break, a tab, an escape): it is one line of text")):
        await _rejected(api, "POST", path, {"reason": bad}, 400, "bad_request")
        r = await api.http.post(path, json={"reason": bad})
        assert r.json()["error"]["message"] == said, r.text
    before = await api.snapshot()
    r = await api.http.post(path, content=b'{"reason": "dup', headers={
        "Content-Type": "application/json"})
    assert (r.status_code, error_of(r)) == (400, "malformed_json"), r.text
    assert await api.snapshot() == before
    assert (await api.http.get("/api/v1/runs/cw")).json()["cancel_requested"] is False

    r = await api.http.post(path, json={"reason": "duplicate order " + "x" * 984})
    assert r.status_code == 202, r.text
    first = "duplicate order " + "x" * 984  # (1,000 characters: the most)
    assert r.json() == {"run_id": "cw", "status": "waiting", "cancel_reason": first}
    r = await api.http.post(path, json={"reason": "another"})  # (a repeat keeps the first)
    assert r.status_code == 202 and r.json()["cancel_reason"] == first, r.text
    doc = (await api.http.get("/api/v1/runs/cw")).json()
    assert (doc["cancel_requested"], doc["cancel_reason"], doc["cancelled_with"]) == (
        True, first, None)
