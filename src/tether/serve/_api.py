"""The JSON API under ``/api/v1`` (paths fixed by issue 9; schema in ``_openapi``).

Every handler validates its whole input before it touches the store, so a rejected
request changes nothing. Errors are ``{"error": {"code", "message"}}`` with a 4xx.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from tether import App, RunNotFound
from tether._answers import refusal
from tether._codec import json_kind
from tether._ids import new_run_id
from tether._observe import add_trace_link, adopt_trace_context, trace_carrier
from tether._show import (
    STATUSES,
    cancel_pending,
    journal_entries,
    paused_queue_warning,
    run_document,
    run_info,
    search_statuses,
    signal_report,
    split_statuses,
    start_report,
)
from tether._types import ENDED_VALUES, check_cancel_reason, check_name
from tether.errors import (
    ConfigError,
    InvalidName,
    PayloadError,
    PayloadTooLarge,
    SignalError,
    StoreUnavailable,
    WorkflowArgumentError,
    shown,
)
from tether.serve._auth import Principal
from tether.serve._events import sse_response

MAX_LIMIT = 500
#: Seconds ``/healthz`` waits for the store. A store that went away holds an operation
#: for the pool's timeout (PostgreSQL: 10 s by default); a load balancer's or
#: Kubernetes' probe must get its 503 before its own timeout instead.
HEALTH_TIMEOUT = 2.0
#: Seconds a 503 ``store_unavailable`` asks the client to wait (``Retry-After``).
STORE_RETRY_AFTER = 1


class ApiError(Exception):
    """A 4xx (or 503) answer: ``{"error": {"code", "message"}}``. ``title``: what the
    web UI's error page is headed with when the cause is known in plain words ("This run
    has already ended"); otherwise the page's title follows the code, then the status
    (``_ui.error_title``). The API's answer does not carry it."""

    def __init__(self, status: int, code: str, message: str, *,
                 title: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.title = title


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def store_unavailable(message: str) -> JSONResponse:
    """503 ``store_unavailable``, with ``Retry-After`` (the store probes a server that is
    down about once a second, so a retry a second later may find it back)."""
    response = error_response(503, "store_unavailable", message)
    response.headers["Retry-After"] = str(STORE_RETRY_AFTER)
    return response


def run_not_found(run_id: str) -> ApiError:
    """The 404 of an id no run has, worded as ``RunNotFound`` (the CLI's line, the
    MCP face's error): the API said "no run 'x'" where the CLI said "no run with id
    'x'"."""
    return ApiError(404, "run_not_found", str(RunNotFound(run_id)))


def json_response(value: Any, status: int = 200) -> Response:
    body = json.dumps(value, default=str, ensure_ascii=False, allow_nan=False)
    return Response(body, status_code=status, media_type="application/json")


def tether_app(request: Request) -> App:
    app: App = request.app.state.tether
    return app


def principal(request: Request) -> Principal:
    who: Principal = request.state.principal
    return who


def require_admin(request: Request) -> None:
    if not principal(request).can_change:
        raise ApiError(403, "forbidden", "this token may read, not change: use an admin token")


async def json_body(request: Request, *, required: bool = True) -> dict[str, Any]:
    """The request's JSON object (``{}`` for an empty optional body). An action (every
    route that reads a body) takes no query parameter: its fields are the body's."""
    if request.query_params:
        # (`POST /api/v1/runs?run_id=r-1` was taken without its run_id, and so started a
        # new run at every retry of the client, until 2026-12-07)
        names = sorted(set(request.query_params))
        raise ApiError(400, "bad_request",
                       f"unknown query parameter(s): {', '.join(n[:40] for n in names[:10])}"
                       "; this action takes none: send its fields in the JSON body")
    raw = await request.body()
    if not raw.strip():
        if required:
            raise ApiError(400, "bad_request", "the request needs a JSON object body")
        return {}
    check_json_type(request.headers.get("content-type", ""))
    coding = request.headers.get("content-encoding", "").strip().lower()
    if coding not in ("", "identity"):
        # (RFC 9110 8.4.1: a coding the server does not decode is a 415. A gzipped
        # body was read as JSON text: a 400 "'utf-8' codec can't decode byte 0x8b",
        # and a body that said gzip but was not was taken as it was, until 2026-12-06.)
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Encoding {coding[:40]!r} is not decoded here: send the JSON "
                       "body as it is, without Content-Encoding")
    try:
        value = parse_json(raw)
    except ValueError as exc:  # (UnicodeDecodeError is one)
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request",
                       f"the body must be a JSON object, not {json_kind(value)}")
    if _SURROGATE_ESCAPE.search(raw):
        refuse_lone_surrogates(value)
    return value


#: The charsets a JSON body may declare: UTF-8 (RFC 8259 8.1), and ASCII, a part of it.
_UTF8_NAMES = frozenset({"utf-8", "utf8", "us-ascii"})


def check_json_type(header: str) -> None:
    """A 415 unless the ``Content-Type`` ``header`` names JSON: ``application/json``,
    or a type with the ``+json`` suffix (RFC 6839: ``application/merge-patch+json``,
    ``application/vnd.api+json``), and no charset or a UTF-8 one."""
    kind, _, parameters = header.partition(";")
    kind = kind.strip().lower()
    top, _, sub = kind.partition("/")
    if top != "application" or not (sub == "json" or (sub.endswith("+json") and
                                                      len(sub) > len("+json"))):
        got = f"not {shown(kind)}" if kind else "the request has none"
        raise ApiError(415, "unsupported_media_type",
                       "send the body as JSON with Content-Type: application/json (or an "
                       f"application/...+json type): {got}")
    for parameter in parameters.split(";"):
        name, _, text = parameter.partition("=")
        charset = text.strip().strip('"').strip()
        if name.strip().lower() == "charset" and charset.lower() not in _UTF8_NAMES:
            # (it was not read: a body in Latin-1 was read as UTF-8, a 400 "'utf-8'
            # codec can't decode byte 0xe9", or taken misread if its bytes decoded)
            raise ApiError(415, "unsupported_media_type",
                           f"charset {shown(charset)} is not read here: send the JSON body "
                           "in UTF-8 (charset=utf-8, or no charset)")


#: A JSON escape of a UTF-16 surrogate (``\ud800``), paired or not: only such an escape
#: puts a lone surrogate in a parsed document (the bytes of one are no UTF-8).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def refuse_lone_surrogates(value: Any, field: str = "") -> None:
    """A 400 naming the first string of ``value`` (or key of an object in it) that holds
    a lone surrogate (an unpaired ``\\uD800``-``\\uDFFF`` escape): valid JSON, but no
    Unicode text, which nothing can store or send back (a key holding one was a 500).
    ``value`` is a request's body (its keys are its field names), or the JSON of the
    form field ``field``."""
    if _all_unicode(value):
        return
    todo: list[tuple[str, Any]] = [(field, value)]
    while todo:
        where, item = todo.pop()
        if isinstance(item, str):
            _check_unicode(item, f"field {where}")
        elif isinstance(item, dict):
            members = list(item.items())
            for key, _ in members:
                _check_unicode(key, f"the key {shown(key)} of field {where}" if where
                               else f"the field name {shown(key)}")
            todo += reversed([(_member(where, key), one) for key, one in members])
        elif isinstance(item, list):
            todo += reversed([(f"{where}[{i}]", one) for i, one in enumerate(item)])


def _all_unicode(value: Any) -> bool:
    """Whether every string of ``value`` is Unicode text: a pass in C, several times
    quicker than the walk that finds where one is not (a body's emoji sent as escaped
    pairs, as Python's ``json.dumps`` sends them, costs this pass alone)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):  # (the walk is iterative)
        return False
    return True


def _member(where: str, key: str) -> str:
    """The path of ``key`` of the object at ``where`` (``input[0].name``)."""
    if not where:
        return shown(key, quoted=False) if key.isidentifier() else shown(key)
    return f"{where}.{key}" if key.isidentifier() and len(key) <= 40 else \
        f"{where}[{shown(key)}]"


def _check_unicode(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        raise ApiError(400, "bad_request",
                       f"{where[:200]} is not valid Unicode (lone surrogate \\u{code:04x}): "
                       "a \\uD800-\\uDFFF escape must be half of a pair, as in "
                       "\\ud83d\\ude00") from None


def parse_json(text: str | bytes) -> Any:
    """A JSON document as the API takes it, or ``ValueError`` saying why not: beyond
    ``json.loads``, ``NaN``, ``Infinity`` and numbers past a double's range are refused
    (they are not JSON, and could not be stored or sent back), as is an object that
    names a key twice (which of its values is meant?), and nesting too deep for the
    parser is a ``ValueError``, not a ``RecursionError`` (a 500)."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite,
                          object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"an object names the key {key[:40]!r} twice")
            seen.add(key)
    return value


def _finite(text: str) -> float:
    """A JSON number as a float, refused past a double's range (``1e999``), which would
    be ``inf``: nothing can store or send it back as JSON."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (Python's parser takes them)."""
    raise ValueError(f"{name} is not a JSON value")


def known_keys(body: dict[str, Any], allowed: set[str]) -> None:
    """A 400 naming the fields of ``body`` that are not ``allowed``."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        takes = (f"allowed: {', '.join(sorted(allowed))}" if allowed
                 else "this action takes no fields: send no body or {}")
        raise ApiError(400, "bad_request", f"unknown field(s): {', '.join(unknown)}; {takes}")


#: The query parameter every read of the API takes, and ignores: a cache-buster
#: (``?_=1733...``, as jQuery's ``cache: false`` and others add to each GET).
CACHE_BUSTER = "_"


def query_fields(request: Request, allowed: set[str]) -> None:
    """A 400 for a query parameter the route does not take (``?stauts=failed`` would list
    every run, the filter misspelt), naming it and those the route takes, or for one
    given twice: which of its values would be meant? (``?status=waiting&status=failed``
    listed the failed runs only, as if the first were not there.) ``CACHE_BUSTER`` is
    taken by every route, as often as it comes."""
    q = request.query_params
    names = set(q) - {CACHE_BUSTER}
    unknown = sorted(names - allowed)
    if unknown:
        takes = (f"allowed: {', '.join(sorted(allowed))}" if allowed
                 else f"this address takes none (but {CACHE_BUSTER}, a cache-buster)")
        raise ApiError(400, "bad_request", "unknown query parameter(s): "
                       f"{', '.join(n[:40] for n in unknown[:10])}; {takes}")
    twice = sorted({key for key in names if len(q.getlist(key)) > 1})
    if twice:
        raise ApiError(400, "bad_request",
                       f"query parameter(s) given more than once: {', '.join(twice)}; "
                       "each filter takes one value")


def field_name(value: Any, field: str, *, required: bool, new: bool = True) -> str | None:
    """``value`` if it is a usable ``field``, else a 400 saying why. ``new=False`` for an
    id that may already be stored (``check_name``): not held to ``MAX_NAME``."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "bad_request", f"{field} must be a non-empty string")
    try:
        # (the engine's rule: a new name at most MAX_NAME characters)
        return check_name(field, value, new=new)
    except InvalidName as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


#: The API's paths of runs, where a run id (and a signal name) may hold ``/``.
RUNS_PREFIX = "/api/v1/runs/"
#: What an encoded slash (``%2F``) of a run's API path is routed as: a character no run
#: id or name may hold, so that ``x%2Fjournal`` is the run ``x/journal``, not the
#: journal of ``x``; ``path_name`` turns it back into ``/``.
_ENCODED_SLASH = "\x00"
#: The scope key that says its path keeps encoded slashes as ``_ENCODED_SLASH``.
_SLASHES_KEPT = "tether.encoded_slashes"


def keep_encoded_slashes(scope: Scope) -> Scope:
    """``scope`` with its path decoded but for its encoded slashes (the server decoded
    them, so a client could not tell ``x/journal``'s document from ``x``'s journal, nor
    name a signal ``a/b``)."""
    raw: bytes | None = scope.get("raw_path")
    if not raw or b"%2f" not in raw.lower() or b"%00" in raw:
        return scope  # (a NUL, the marker's own character, is refused as it comes)
    text = raw.decode("latin-1")
    parts = re.split("%2[fF]", text)
    path = _ENCODED_SLASH.join(unquote(part) for part in parts)
    return {**scope, "path": path, _SLASHES_KEPT: True}


def path_name(request: Request, key: str) -> str:
    """A run id or name from the path. Not capped at ``MAX_NAME`` as new names are:
    the engine makes longer ids itself (a child's is its parent's plus ``.N``, a
    schedule's run ``NAME@...``), and each must stay readable and actionable. (A
    signal's name is new: ``App.signal`` holds it to ``MAX_NAME``, a 400.)"""
    value: str = request.path_params[key]
    if request.scope.get(_SLASHES_KEPT):
        value = value.replace(_ENCODED_SLASH, "/")
    if not value.strip() or any(ord(c) < 32 for c in value):
        raise ApiError(400, "bad_request", f"{key} must be a non-empty string of "
                       "printable characters")
    return value


def payload_error(exc: PayloadError) -> ApiError:
    if isinstance(exc, PayloadTooLarge):
        return ApiError(413, "payload_too_large", str(exc))
    return ApiError(400, "bad_request", str(exc))


async def _document(app: App, run_id: str) -> dict[str, Any]:
    try:
        return await run_document(app, run_id)
    except RunNotFound:
        raise run_not_found(run_id) from None


# -- runs --------------------------------------------------------------------------------


def check_input(app: App, workflow: str, values: list[Any]) -> None:
    """A 400 for ``values`` that the workflow's function cannot take, when the server's
    app has its code (``serve --app``), as ``tether start --app`` refuses them (exit 2):
    such a run was started, and failed on the worker with a ``TypeError``."""
    wdef = app.workflows().get(workflow)
    misfit = wdef.misfit(values) if wdef is not None else None
    if misfit is not None:
        raise ApiError(400, "bad_request",
                       f"input {shown(json.dumps(values), quoted=False)} does not fit {misfit}")


async def start_run(request: Request) -> Response:
    require_admin(request)
    body = await json_body(request)
    known_keys(body, {"workflow", "input", "run_id", "queue", "check_args"})
    workflow = field_name(body.get("workflow"), "workflow", required=True)
    assert workflow is not None
    values = body.get("input", [])
    if values is None:
        values = []
    if not isinstance(values, list):
        raise ApiError(400, "bad_request", "input must be a JSON array of positional arguments")
    run_id = field_name(body.get("run_id"), "run_id", required=False)
    queue = field_name(body.get("queue"), "queue", required=False)
    check_args = body.get("check_args", True)
    if not isinstance(check_args, bool):
        raise ApiError(400, "bad_request", "check_args must be true or false")
    app = tether_app(request)
    if check_args:
        check_input(app, workflow, values)
    existed = run_id is not None and await app.store.run_get(run_id) is not None
    carrier = trace_carrier(request.headers.get("traceparent"),
                            request.headers.get("tracestate"))
    if carrier is not None and not existed:
        # The caller's trace becomes the run's parent before any worker can claim the
        # run; the input is checked first so that a rejected start writes nothing.
        try:
            app.codec.encode({"args": values}, f"input of workflow {workflow!r}")
            for what, value in (("run id", run_id), ("queue", queue)):
                if value is not None:
                    check_name(what, value)
        except PayloadError as exc:
            raise payload_error(exc) from None
        except InvalidName as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        run_id = run_id or new_run_id()
        await adopt_trace_context(app.store, run_id, carrier, app.clock.now())
    # A name no worker has registered yet is queued, not refused (scripts start runs
    # before workers are up), with or without `serve --app`: the answer says so, as
    # `tether start` does. (App.start raises no WorkflowNotFound for a name: the 404
    # workflow_not_found the OpenAPI document listed was never answered.)
    known = await workflow_known(app, workflow)
    try:
        # (_start: the input is positional, so run_id and queue are the start's,
        # whatever the workflow's parameters are named)
        handle = await app._start(workflow, values, {}, run_id=run_id, queue=queue,
                                  check_args=check_args)
    except (InvalidName, WorkflowArgumentError) as exc:  # (InvalidName: e.g. a
        # bidirectional override the check above lets by; WorkflowArgumentError: as
        # check_input refuses, which comes first)
        raise ApiError(400, "bad_request", str(exc)) from None
    except ConfigError as exc:  # the id belongs to a run of another workflow
        raise ApiError(409, "conflict", str(exc), title="This run id is taken") from None
    except PayloadError as exc:
        raise payload_error(exc) from None
    # (Decided by the insert: of concurrent starts of one id, one creates the run.)
    existed = handle.created is False
    report = await start_report(app, handle, values, queue)
    doc = await _document(app, handle.run_id)
    doc.update(report.fields())  # as `tether start --json` prints it
    warnings = []
    if not known and not existed:
        warnings.append(unserved_warning(workflow, doc.get("queue", queue)))
    run_queue = str(doc.get("queue", queue))
    if not existed and (await app.queue_limits()).get(run_queue) == 0:
        warnings.append(paused_queue_warning(run_queue))
    if warnings:
        doc["warnings"] = warnings
    return json_response(doc, 200 if existed else 201)


async def workflow_known(app: App, workflow: str) -> bool:
    """Whether this app or a worker of its store has registered ``workflow``."""
    return workflow in app.workflows() or workflow in await app.store.workflow_list()


def unserved_warning(workflow: str, queue: Any) -> str:
    """The ``warnings`` line of an answer that queued a run no worker serves (a start,
    retry or fork of a workflow no worker of the store has registered)."""
    return (f"no worker has registered workflow {workflow!r} in this store yet; the run "
            f"waits on queue {queue!r} until one does")


def _query_name(request: Request, key: str) -> str | None:
    value = request.query_params.get(key)
    if value is None or value == "":
        return None
    # A parent is a stored run's id, which may be longer than a new name (a child's is
    # its parent's and ``.N``): held to MAX_NAME, the children of a child of a run with
    # a 200-character id could not be listed (400), where the web UI listed them.
    return field_name(value, key, required=True, new=key != "parent")


def encode_cursor(created_at: float, run_id: str) -> str:
    raw = json.dumps([created_at, run_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        created_at, run_id = parse_json(raw)
        if not isinstance(run_id, str) or isinstance(created_at, bool) \
                or not isinstance(created_at, int | float) or not math.isfinite(created_at):
            raise ValueError
        return float(created_at), run_id
    # (OverflowError: an integer past a double's range, [1000...0, "x"], which
    # math.isfinite cannot convert: a 500 until 2026-12-06.)
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "cursor is not one this API returned") from None


def parse_limit(text: str | None, default: int = 50) -> int:
    if text is None or text == "":
        return default
    # (Not int() alone: it takes "+5", "5_0" and other scripts' digits.)
    if not (text.isascii() and text.isdigit()):
        raise ApiError(400, "bad_request", f"limit must be an integer between 1 and "
                       f"{MAX_LIMIT}, got {text[:40]!r}")
    # (Its length first: int() refuses more than 4,300 digits with a ValueError, which
    # was a 500 and a traceback until 2026-12-06.)
    digits = text.lstrip("0")
    if len(digits) > len(str(MAX_LIMIT)) or not 1 <= int(digits or "0") <= MAX_LIMIT:
        raise ApiError(400, "bad_request", f"limit must be an integer between 1 and "
                       f"{MAX_LIMIT}, got {text[:40]!r}")
    return int(digits)


def run_summary(r: Any) -> dict[str, Any]:
    return {
        "run_id": r.run_id, "workflow": r.workflow, "queue": r.queue, "status": r.status,
        "created_at": r.created_at, "updated_at": r.updated_at, "finished_at": r.finished_at,
        "waiting_for": r.waiting_for, "parent_run_id": r.parent_run_id, "metrics": r.metrics,
        "cancel_requested": cancel_pending(r),
        # (a fork's origin, as the run's document has it: null for a run that is no fork)
        "forked_from": r.forked_from, "forked_at": r.forked_at,
        # (the code version it runs under, null for none: which runs keep a version's
        # workers up, where `tether versions` only counts them)
        "version": r.version,
    }


def run_statuses(text: str | None) -> tuple[str, ...] | None:
    """The list's ``status`` filter: a status or a comma list of them
    (``status=failed,blocked``), or a 400 naming the statuses."""
    if not text:
        return None
    statuses, bad = split_statuses([text])
    if bad or not statuses:
        raise ApiError(400, "bad_request", f"status must be one of {', '.join(STATUSES)} "
                       f"or a comma list of them, got {shown(text)}")
    return statuses


async def list_runs(request: Request) -> Response:
    q = request.query_params
    query_fields(request, {"status", "workflow", "queue", "parent", "limit", "cursor", "q"})
    statuses = run_statuses(q.get("status") or None)
    limit = parse_limit(q.get("limit"))
    cursor = q.get("cursor")
    before = decode_cursor(cursor) if cursor else None
    # (several statuses: one indexed search each, merged; the cursor pages them alike)
    found = await search_statuses(
        tether_app(request), statuses, workflow=_query_name(request, "workflow"),
        queue=_query_name(request, "queue"), parent=_query_name(request, "parent"),
        text=_query_name(request, "q"), limit=limit + 1, before=before)
    page = found[:limit]
    nxt = encode_cursor(page[-1].created_at, page[-1].run_id) if len(found) > limit else None
    return json_response({"runs": [run_summary(r) for r in page], "next_cursor": nxt})


#: The words ending a run's address that take POST (an action): a GET of such an
#: address reads the run of that whole id, as any GET of ``/api/v1/runs/{id}`` does.
_ACTION_SUFFIX = re.compile(r"^(?P<run>.+)/(?P<action>cancel|approval|retry|fork|erase"
                            r"|signals/[^/]+)$", re.S)

_ACTION_WORDS = {"cancel": "the cancel of", "approval": "the answer to an approval of",
                 "retry": "the retry of", "fork": "a fork of", "erase": "the erase of",
                 "signals": "a signal to"}


async def get_run(request: Request) -> Response:
    run_id = path_name(request, "run_id")
    query_fields(request, set())
    try:
        return json_response(await _document(tether_app(request), run_id))
    except ApiError as exc:
        action = _ACTION_SUFFIX.match(run_id)
        if exc.status != 404 or action is None or request.scope.get(_SLASHES_KEPT):
            raise
        # (`curl .../runs/r-1/cancel` without -X POST said "no run with id 'r-1/cancel'"
        # alone, until 2026-12-07)
        what = _ACTION_WORDS[action["action"].split("/")[0]]
        raise ApiError(404, exc.code, f"{exc.message}; {what} run "
                       f"{shown(action['run'])} is a POST to this address, not a GET"
                       ) from None


async def get_journal(request: Request) -> Response:
    run_id = path_name(request, "run_id")
    query_fields(request, set())
    try:
        info = await run_info(tether_app(request), run_id)
    except RunNotFound:
        raise run_not_found(run_id) from None
    return json_response({"run_id": run_id, "journal": journal_entries(info.journal)})


async def send_signal(request: Request) -> Response:
    require_admin(request)
    run_id = path_name(request, "run_id")
    name = path_name(request, "name")
    body = await json_body(request, required=False)
    known_keys(body, {"data", "idempotency_key"})
    key = field_name(body.get("idempotency_key"), "idempotency_key", required=False)
    app = tether_app(request)
    carrier = trace_carrier(request.headers.get("traceparent"),
                            request.headers.get("tracestate"))
    if carrier is not None:
        try:
            app.codec.encode(body.get("data"), f"payload of signal {name!r}")
        except PayloadError as exc:
            raise payload_error(exc) from None
        await App._check_signal_name(app.store, run_id, name)  # (a refused one links nothing)
        run = await app.store.run_get(run_id)
        # Nor does a send under a key the run has had, which stores nothing (it linked
        # the run's next execution to that caller until 2026-12-06).
        if run is not None and run.status not in ENDED_VALUES and (
                key is None or await app.store.signal_find(
                    run_id=run_id, idempotency_key=key) is None):
            await add_trace_link(app.store, run_id, carrier, app.clock.now())
    from tether.ai._approvals import no_answer_warning, unanswered_by
    from tether.ai._budget import falls_short, no_raise_warning, raises_nothing

    # (read before the send: the signal wakes the run, which then waits no more)
    unanswered = await unanswered_by(app, run_id, name, body.get("data"))
    unraised = await raises_nothing(app, run_id, name, body.get("data"))
    short = await falls_short(app, run_id, name, body.get("data"))
    try:
        sent = await app._signal(run_id, name, body.get("data"), idempotency_key=key)
    except RunNotFound:
        raise run_not_found(run_id) from None
    except SignalError as exc:  # (the run has ended)
        raise ApiError(409, "conflict", str(exc), title="This run has already ended") from None
    except PayloadError as exc:
        raise payload_error(exc) from None
    report = await signal_report(app, run_id, name, body.get("data"), sent)
    answer: dict[str, Any] = {"run_id": run_id, "signal": name, **report.fields()}
    if report.created and unanswered is not None:
        answer["warnings"] = [no_answer_warning(
            run_id, unanswered, name, f"POST /api/v1/runs/{run_id}/approval "
            '{"approved": true} (or false), or the approvals page')]
    if report.created and unraised:
        answer["warnings"] = [no_raise_warning(
            run_id, name, f'data {{"usd": X, "tokens": N}} (either or both), or '
            f"`tether budget {run_id} --usd X --tokens N`")]
    if report.created and short is not None:
        answer["warnings"] = [f"run {shown(run_id)} takes these limits and waits on: {short}"]
    return json_response(answer, 202)


async def cancel_run(request: Request) -> Response:
    require_admin(request)
    run_id = path_name(request, "run_id")
    # Only "reason": another field was dropped without a word and the run cancelled,
    # the caller believing it recorded (as retry, erase and the schedules' actions).
    body = await json_body(request, required=False)
    known_keys(body, {"reason"})
    try:
        reason = check_cancel_reason(body.get("reason"))
    except ConfigError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    app = tether_app(request)
    run = await app.store.run_get(run_id)
    if run is None:
        raise run_not_found(run_id)
    if run.status in ("completed", "failed"):
        raise ApiError(409, "conflict", f"run {run_id!r} has already ended ({run.status})",
                       title="This run has already ended")
    status = await app.cancel(run_id, reason=reason)
    # (the reason kept: a repeat keeps the first request's, which a caller that gave
    # another one reads here)
    kept = await app.store.run_get(run_id)
    return json_response({"run_id": run_id, "status": status.value,
                          "cancel_reason": kept.cancel_reason if kept else reason}, 202)


# -- approvals ---------------------------------------------------------------------------


async def list_approvals(request: Request) -> Response:
    from tether.ai import pending_approvals, pending_approvals_page

    q = request.query_params
    query_fields(request, {"limit", "cursor"})
    if "limit" not in q and "cursor" not in q:
        # Every pending approval, longest waiting first, as before paging was added:
        # a client that does not page is not cut off at a first page.
        everything = await pending_approvals(tether_app(request))
        return json_response({"approvals": [p.to_dict() for p in everything],
                              "next_cursor": None})
    limit = parse_limit(q.get("limit"))
    cursor = q.get("cursor")
    found, nxt = await pending_approvals_page(
        tether_app(request), limit=limit, after=decode_cursor(cursor) if cursor else None)
    return json_response({"approvals": [p.to_dict() for p in found],
                          "next_cursor": encode_cursor(*nxt) if nxt else None})


async def answer_approval(request: Request) -> Response:
    require_admin(request)
    run_id = path_name(request, "run_id")
    body = await json_body(request)
    known_keys(body, {"approved", "note", "approval_id"})
    approved = body.get("approved")
    if not isinstance(approved, bool):
        raise ApiError(400, "bad_request", "approved must be true or false")
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 4000):
        raise ApiError(400, "bad_request", "note must be a string of at most 4000 characters")
    approval_id = body.get("approval_id")
    if approval_id is not None and not isinstance(approval_id, str):
        raise ApiError(400, "bad_request", "approval_id must be a string")
    app = tether_app(request)
    carrier = trace_carrier(request.headers.get("traceparent"),
                            request.headers.get("tracestate"))
    if carrier is not None:
        from tether.ai import pending_approval

        try:
            waiting = await pending_approval(app, run_id)
        except RunNotFound:
            raise run_not_found(run_id) from None
        # Not for an approval_id the run does not wait for, whose answer is refused
        # (409): it linked the run's next execution to this caller until 2026-12-06.
        if waiting is not None and approval_id in (None, waiting.approval_id):
            await add_trace_link(app.store, run_id, carrier, app.clock.now())
    return json_response(await answer(app, run_id, approved, note or None, approval_id))


async def answer(app: App, run_id: str, approved: bool, note: str | None,
                 approval_id: str | None = None) -> dict[str, Any]:
    """Answer the approval ``run_id`` waits for (the API and the inbox form); with
    ``approval_id``, only that one (``tether.ai.approve``)."""
    from tether.ai import NoPendingApproval
    from tether.ai import approve as send

    try:
        pending = await send(app, run_id, approved=approved, note=note,
                             approval_id=approval_id)
    except RunNotFound:
        raise run_not_found(run_id) from None
    except NoPendingApproval as exc:
        raise ApiError(409, "no_pending_approval",
                       await refusal(app, run_id, approval_id, exc)) from None
    return {"run_id": run_id, "approved": approved, "note": note,
            "approval": pending.to_dict()}


async def run_events(request: Request) -> Response:
    run_id = path_name(request, "run_id")
    # `?after=` alone, once: `?after=A&after=B` streamed from B, and a misspelt cursor
    # (`?last_event_id=`) from the run's first event, every event sent again, until
    # 2026-12-06.
    query_fields(request, {"after"})
    app = tether_app(request)
    if await app.store.run_get(run_id) is None:
        raise run_not_found(run_id)
    after = request.headers.get("last-event-id") or request.query_params.get("after")
    if after:
        # The cursor must be one of this run's events: the store would take another
        # run's (or one never made, in its form) for a point of this run's events, and
        # answer nothing or from a wrong place. (One lookup, as the check of its form
        # that it replaces; a stale cursor of a run since purged is refused too.)
        try:
            known = await app.store.run_event_exists(run_id=run_id, event_id=after)
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        if not known:
            raise ApiError(400, "bad_request",
                           f"{after!r} is not the id of an event of run {run_id!r}")
    return sse_response(app, run_id, after or None, head=request.method == "HEAD",
                        closing=getattr(request.app.state, "closing", None),
                        allowed=_still_allowed(request))


def _still_allowed(request: Request) -> Callable[[], bool] | None:
    """Whether the token a request was let in with still counts (None: open mode, no
    token): a long answer (an event stream) asks it as it goes, and ends once the token
    was removed from the token file (``Tokens`` follows it)."""
    who = getattr(request.state, "principal", None)
    tokens = getattr(request.app.state, "tokens", None)
    known = getattr(who, "digest", "")
    if not known or tokens is None:
        return None
    return lambda: tokens.by_digest(known) is not None


async def health(request: Request) -> Response:
    # Not asyncio.wait_for: it waits for the cancelled query to end, and psycopg cancels
    # by connecting to the server, which a hung server lets wait for the connect timeout
    # (/healthz answered after 12 s). The query is cancelled without waiting for it.
    probe = asyncio.ensure_future(tether_app(request).store.run_search(limit=1))
    try:
        done, _ = await asyncio.wait({probe}, timeout=HEALTH_TIMEOUT)
    finally:
        if not probe.done():
            probe.cancel()
            probe.add_done_callback(_ignore_outcome)
    if not done:
        return store_unavailable(f"the store did not answer within {HEALTH_TIMEOUT:g} s")
    try:
        probe.result()
    except StoreUnavailable as exc:
        return store_unavailable(str(exc))
    return json_response({"ok": True})


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned task's outcome (asyncio would log it as never retrieved)."""
    if not task.cancelled():
        task.exception()


class _AnyText(Convertor[str]):
    """A path parameter of any characters, ``/`` and line feeds included: Starlette's
    ``path`` (``.*``) stops at a line feed, so a run id or name holding one (``a%0Ab``)
    matched no route and was a 404 ``not_found`` ("there is nothing at ...") where the
    document and ``path_name`` say 400 ``bad_request``, as for every other control
    character (until 2026-12-07)."""

    regex = r"(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


#: ``{run_id:tether_id}``: a run id or schedule name in an API path.
register_url_convertor("tether_id", _AnyText())

# ``{run_id:tether_id}``: run ids may contain "/"; the routes with a suffix come first.
routes = [
    Route("/api/v1/runs", start_run, methods=["POST"]),
    Route("/api/v1/runs", list_runs, methods=["GET"]),
    Route("/api/v1/runs/{run_id:tether_id}/journal", get_journal, methods=["GET"]),
    Route("/api/v1/runs/{run_id:tether_id}/events", run_events, methods=["GET"]),
    Route("/api/v1/runs/{run_id:tether_id}/signals/{name}", send_signal, methods=["POST"]),
    Route("/api/v1/runs/{run_id:tether_id}/cancel", cancel_run, methods=["POST"]),
    Route("/api/v1/runs/{run_id:tether_id}/approval", answer_approval, methods=["POST"]),
    Route("/api/v1/runs/{run_id:tether_id}", get_run, methods=["GET"]),
    Route("/api/v1/approvals", list_approvals, methods=["GET"]),
]
