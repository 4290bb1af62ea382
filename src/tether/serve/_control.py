"""Runs over their whole life, over HTTP: retry, fork, erase, schedules and queues.

The same engine functions as ``tether retry``, ``tether fork``, ``tether erase``,
``tether schedules`` and ``tether queues`` (``App.retry``, ``App.fork``, the store's
``run_erase`` and ``schedule_*``, ``tether._lifecycle``'s cron and tick helpers,
``App.pause_queue`` and ``resume_queue``). Each action checks its
whole input first and raises :class:`~tether.serve._api.ApiError` before it writes, so a
rejected request changes nothing. The JSON API and the UI's forms share these
functions.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tether import App, RunNotFound
from tether._codec import json_kind
from tether._lifecycle import Cron, fork_past_end, worker_versions, zone_of
from tether._lifecycle import trigger_schedule as start_manual_run
from tether._show import (
    queues_document,
    run_document,
    schedule_dict,
    schedule_rows,
    workers_document,
)
from tether._types import did_you_mean
from tether.errors import (
    ConfigError,
    InvalidName,
    PayloadError,
    RunStateError,
    WorkflowArgumentError,
    shown,
    shown_json,
)
from tether.serve._api import (
    ApiError,
    check_input,
    field_name,
    json_body,
    json_response,
    known_keys,
    path_name,
    payload_error,
    query_fields,
    require_admin,
    run_not_found,
    tether_app,
    unserved_warning,
    workflow_known,
)
from tether.store._lifecycle import fork_version_dropped, version_dropped
from tether.store._values import check_queue_limit

SCHEDULE_ACTIONS = ("pause", "resume", "trigger")


# -- actions (shared by the API and the UI) --------------------------------------------


async def retry(app: App, run_id: str) -> dict[str, Any]:
    """Make a failed, blocked or cancelled run runnable again; its document after, with
    ``retried_children``: the ids of the child runs retried with it (``App.retry``)."""
    try:
        report = await app._retry(run_id)
    except RunNotFound:
        raise run_not_found(run_id) from None
    except RunStateError as exc:  # (its message says what retry takes)
        raise ApiError(409, "conflict", str(exc), title="This run cannot be retried") from None
    doc = {**await run_document(app, run_id), "retried_children": report.children}
    doc = await _warn_unserved(app, doc)
    unpinned = version_dropped(run_id, report.version_before, report.run.version)
    if unpinned is not None:
        doc["warnings"] = [*doc.get("warnings", []), unpinned]
    return doc


async def _warn_unserved(app: App, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (a run queued by a retry or fork) with a ``warnings`` list when no worker
    of the store has registered its workflow: it waits for ever, as a start's answer and
    ``tether retry``/``tether fork`` say."""
    if not await workflow_known(app, doc["workflow"]):
        doc["warnings"] = [unserved_warning(doc["workflow"], doc.get("queue"))]
    return doc


def fork_position(value: Any) -> int:
    """``at`` of a fork request: an integer position >= 0 (422 otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int):
        sent = shown_json(value)
        what = "null" if value is None else f"{json_kind(value)}: {sent}"
        raise ApiError(422, "bad_position", f"at must be an integer position, not {what}")
    if value < 0:
        raise ApiError(422, "bad_position", f"at must be a position >= 0, not {value}")
    return value


async def fork(app: App, run_id: str, at: int, values: list[Any] | None,
               new_id: str | None) -> tuple[dict[str, Any], int]:
    """A new run with ``run_id``'s journal up to (not including) ``at``; its document
    and the HTTP status: 201, or 200 when ``new_id`` is this very fork already (the
    same source, position and input: nothing is started, as for a start's id)."""
    store = app.store
    source = await store.run_get(run_id)
    if source is None:
        raise run_not_found(run_id)
    if values is not None:
        check_input(app, source.workflow, values)
    last = max((e.position for e in await store.journal_read(run_id)), default=-1)
    if at > last + 1:
        raise ApiError(422, "bad_position", fork_past_end(run_id, last, at))
    kwargs: dict[str, Any] = {"at": at, "new_run_id": new_id}
    if values is not None:
        kwargs["input"] = values
    try:
        handle = await app.fork(run_id, **kwargs)
    except RunNotFound:  # deleted meanwhile
        raise run_not_found(run_id) from None
    except RunStateError as exc:  # erased: its input and results are placeholders
        raise ApiError(409, "conflict", str(exc), title="This run cannot be forked") from None
    except (InvalidName, WorkflowArgumentError) as exc:  # (the latter: as check_input)
        raise ApiError(400, "bad_request", str(exc)) from None
    except PayloadError as exc:
        raise payload_error(exc) from None
    except ConfigError as exc:  # another run holds the new id (RunIdTaken)
        raise ApiError(409, "conflict", str(exc), title="This run id is taken") from None
    doc = await run_document(app, handle.run_id)
    # (created: as `tether fork --json` and a start's answer have it; the OpenAPI
    # document promised it and the answer lacked it)
    doc["created"] = handle.created is not False
    if not doc["created"]:  # this fork asked for again: nothing started (200)
        return doc, 200
    doc = await _warn_unserved(app, doc)
    unpinned = fork_version_dropped(run_id, handle.run_id, source.version, doc["version"])
    if unpinned is not None:
        doc["warnings"] = [*doc.get("warnings", []), unpinned]
    return doc, 201


async def erase(app: App, run_id: str) -> dict[str, Any]:
    """Replace an ended run's payloads, and its family's (children and forks), with
    ``{"erased": true}``; what was erased, and whether it all was already."""
    try:
        report = await app.store.run_erase(run_id=run_id, now=app.clock.now())
    except RunNotFound:
        raise run_not_found(run_id) from None
    except RunStateError as exc:
        raise ApiError(409, "conflict", str(exc), title="This run cannot be erased") from None
    # (already_erased: the run and its whole family had been erased before, nothing new
    # was, and their erased_at stays the first erase's, as `tether erase --json` says;
    # until 2026-12-07 a second erase answered as the first did.)
    return {"run_id": run_id,
            "erased": {**report.as_dict(), "already_erased": report.already_erased}}


async def schedules(app: App) -> list[dict[str, Any]]:
    return [schedule_dict(s) for s in await schedule_rows(app)]


async def schedule_action(app: App, name: str, action: str) -> tuple[dict[str, Any], int]:
    """Pause, resume, trigger or delete a schedule; the answer and its HTTP status."""
    store = app.store
    sched = await store.schedule_get(name)
    if sched is None:
        raise ApiError(404, "schedule_not_found", f"no schedule named {shown(name)}")
    now = app.clock.now()
    if action == "trigger":
        run_id = await start_manual_run(app, store, sched, now)
        return {"schedule": name, "run_id": run_id}, 201
    if action == "delete":
        await store.schedule_delete(name)
        return {"schedule": name, "deleted": True}, 200
    if action == "pause":
        found = await store.schedule_pause(name=name, paused=True, next_tick=None, now=now)
    else:
        try:
            nxt = Cron.parse(sched.cron).next_after(now, zone_of(sched.timezone))
        except ConfigError as exc:
            # (a schedule stored by another version of Tether, whose cron or time zone
            # this one refuses: a 500 before; its workers log the same and skip it)
            raise ApiError(409, "conflict", f"schedule {shown(name)} cannot resume: {exc}; "
                           "fix it in the code that declares it (its workers write it "
                           "again when they start)") from None
        found = await store.schedule_pause(name=name, paused=False, next_tick=nxt, now=now)
    after = await store.schedule_get(name) if found else None
    if after is None:  # deleted meanwhile
        raise ApiError(404, "schedule_not_found", f"no schedule named {shown(name)}")
    return schedule_dict((await schedule_rows(app, [after]))[0]), 200


# -- JSON API ----------------------------------------------------------------------------


async def _no_body(request: Request) -> None:
    """These actions take no fields: an empty body or ``{}``."""
    known_keys(await json_body(request, required=False), set())


async def retry_run(request: Request) -> Response:
    require_admin(request)
    run_id = path_name(request, "run_id")
    await _no_body(request)
    return json_response(await retry(tether_app(request), run_id))


async def fork_run(request: Request) -> Response:
    require_admin(request)
    run_id = path_name(request, "run_id")
    body = await json_body(request)
    known_keys(body, {"at", "input", "run_id"})
    if "at" not in body:
        raise ApiError(422, "bad_position", "at (the first position to run again) is required")
    at = fork_position(body["at"])
    values = body.get("input")
    if values is not None and not isinstance(values, list):
        raise ApiError(400, "bad_request", "input must be a JSON array of positional arguments")
    new_id = field_name(body.get("run_id"), "run_id", required=False)
    doc, status = await fork(tether_app(request), run_id, at, values, new_id)
    return json_response(doc, status)


async def erase_run(request: Request) -> Response:
    require_admin(request)
    run_id = path_name(request, "run_id")
    await _no_body(request)
    return json_response(await erase(tether_app(request), run_id))


async def list_schedules(request: Request) -> Response:
    query_fields(request, set())
    return json_response({"schedules": await schedules(tether_app(request))})


#: The values ``?all=`` takes on ``GET /api/v1/workers``.
_FLAG = {"true": True, "1": True, "false": False, "0": False}


async def list_workers(request: Request) -> Response:
    """The live workers (as ``tether workers --json``); ``?all=true`` also the stale
    registrations (``--all``)."""
    query_fields(request, {"all"})
    flag = request.query_params.get("all", "false")
    if flag.lower() not in _FLAG:
        raise ApiError(400, "bad_request",
                       f"all must be true or false (1 or 0), not {shown_json(flag)}")
    app = tether_app(request)
    rows = await workers_document(app, await worker_versions(app.store),
                                  include_stale=_FLAG[flag.lower()])
    return json_response({"workers": rows})


async def list_queues(request: Request) -> Response:
    """Every queue the store knows (as ``tether queues --json``)."""
    query_fields(request, set())
    return json_response({"queues": await queues_document(tether_app(request))})


async def queue_row(app: App, queue: str) -> dict[str, Any]:
    """``queue``'s row of ``queues_document`` (one the store no longer knows: no limit,
    no run, no workflow, no worker)."""
    for row in await queues_document(app):
        if row["queue"] == queue:
            return row
    return {"queue": queue, "limit": None, "paused": False, "limit_before_pause": None,
            "workflows": [], "queued": 0, "due": 0, "running": 0, "waiting": 0,
            "workers": 0}


async def queue_action(app: App, queue: str, action: str) -> dict[str, Any]:
    """Pause or resume a queue (``tether queue-pause``, ``queue-resume``); its row after.
    A pause of a queue the store did not know (a typo) is made, with ``warnings``, as
    ``tether queue-pause`` warns; a resume says ``resumed`` (false: it was not paused,
    and is left as it is)."""
    try:
        check_queue_limit(queue, 0 if action == "pause" else None)
    except (ConfigError, InvalidName) as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    if action == "resume":
        resumed, _ = await app.resume_queue(queue)
        return {**await queue_row(app, queue), "resumed": resumed}
    known = {r["queue"] for r in await queues_document(app)}
    await app.pause_queue(queue)
    doc = await queue_row(app, queue)
    if queue not in known:
        doc["warnings"] = [f"no workflow a worker registered is on queue {shown(queue)}, "
                           "no run is queued there and it had no limit: it is paused, "
                           f"for runs that come to it{did_you_mean(queue, known)}"]
    return doc


async def _queue(request: Request, action: str) -> Response:
    require_admin(request)
    name = path_name(request, "name")
    await _no_body(request)
    return json_response(await queue_action(tether_app(request), name, action))


async def pause_queue(request: Request) -> Response:
    return await _queue(request, "pause")


async def resume_queue(request: Request) -> Response:
    return await _queue(request, "resume")


async def _schedule(request: Request, action: str) -> Response:
    require_admin(request)
    name = path_name(request, "name")
    await _no_body(request)
    answer, status = await schedule_action(tether_app(request), name, action)
    return json_response(answer, status)


async def pause_schedule(request: Request) -> Response:
    return await _schedule(request, "pause")


async def resume_schedule(request: Request) -> Response:
    return await _schedule(request, "resume")


async def trigger_schedule(request: Request) -> Response:
    return await _schedule(request, "trigger")


async def delete_schedule(request: Request) -> Response:
    return await _schedule(request, "delete")


# Before the API's catch-all ``/api/v1/runs/{run_id:tether_id}``.
routes = [
    Route("/api/v1/runs/{run_id:tether_id}/retry", retry_run, methods=["POST"]),
    Route("/api/v1/runs/{run_id:tether_id}/fork", fork_run, methods=["POST"]),
    Route("/api/v1/runs/{run_id:tether_id}/erase", erase_run, methods=["POST"]),
    Route("/api/v1/schedules", list_schedules, methods=["GET"]),
    Route("/api/v1/workers", list_workers, methods=["GET"]),
    Route("/api/v1/queues", list_queues, methods=["GET"]),
    Route("/api/v1/queues/{name:tether_id}/pause", pause_queue, methods=["POST"]),
    Route("/api/v1/queues/{name:tether_id}/resume", resume_queue, methods=["POST"]),
    Route("/api/v1/schedules/{name:tether_id}/pause", pause_schedule, methods=["POST"]),
    Route("/api/v1/schedules/{name:tether_id}/resume", resume_schedule, methods=["POST"]),
    Route("/api/v1/schedules/{name:tether_id}/trigger", trigger_schedule, methods=["POST"]),
    Route("/api/v1/schedules/{name:tether_id}", delete_schedule, methods=["DELETE"]),
]
