"""The OpenAPI 3 document served at ``/openapi.json`` (written by hand: it is the
contract, and the fuzz test in ``tests/web`` checks the server against it)."""

from __future__ import annotations

from typing import Any

from tether._show import OUTCOMES, STATUSES
from tether._types import MAX_CANCEL_REASON

_ERROR = {"$ref": "#/components/schemas/Error"}
#: What a new id or name may hold (``tether._types.check_name``): not blank, and none of
#: the C0/C1 controls, line separators and bidirectional marks (a 400 otherwise).
NAME_PATTERN = (r"^(?=.*\S)[^\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029"
                r"\u202a-\u202e\u2066-\u2069]*$")
#: What an id or name in a path may hold (``_api.path_name``): not blank, no C0
#: control (a 400 otherwise; one that names nothing is a 404).
PATH_PATTERN = r"^(?=.*\S)[^\u0000-\u001f]*$"
#: A runs list's ``status``: a status, or a comma list of them (spaces around each).
_STATUS_WORD = "(" + "|".join(STATUSES) + ")"
_STATUS_LIST = rf"^ *{_STATUS_WORD} *(, *{_STATUS_WORD} *)*$"
_NAME = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NAME_PATTERN}
#: An optional name of a body: ``null`` is taken as its absence.
_OPTIONAL_NAME = {**_NAME, "nullable": True}
#: A body's optional positional arguments: ``null`` is taken as their absence.
_OPTIONAL_INPUT = {"type": "array", "nullable": True}
#: A start's, retry's or fork's answer, when it queued a run of a workflow no worker of
#: the store has registered (it waits until one does).
_WARNINGS = {"type": "array", "items": {"type": "string"},
             "description": "present when no worker of the store has registered the "
                            "run's workflow: the run waits until one does"}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


#: The guard's 403 of any operation, a read included (``forbidden``).
_REFUSED = ("another site's script sent it (an Origin not this server's) without an "
            "Authorization header, or, on a server without tokens, it was addressed to "
            "a Host that is not loopback")
_COMMON_ERRORS = {"401": _err("missing or unknown token"),
                  "403": _err(f"refused: {_REFUSED}"),
                  "408": _err("the request's headers or body came too slowly "
                              "(tether serve --client-timeout)"),
                  "413": _err("request body too large"),
                  "500": _err("a bug (internal_error): the server's log has the "
                              "traceback"),
                  "503": _err("the store is unavailable (store_unavailable), or this "
                              "server serves its limit of connections already "
                              "(too_many_connections, tether serve --max-connections); "
                              "Retry-After says when to try again")}
_CHANGE_ERRORS = {**_COMMON_ERRORS, "403": _err("a read token tried to change something, "
                                                 f"or {_REFUSED}"),
                  "400": _err("bad input"),
                  "415": _err("body is not JSON (application/json, or a +json type such "
                              "as application/merge-patch+json), declares a charset "
                              "other than UTF-8, or is under a Content-Encoding (not "
                              "decoded)")}
#: An id or name in a path: no length cap (the engine makes longer ids itself, such as
#: a child's, its parent's and ``.N``).
_PATH_NAME = {"type": "string", "minLength": 1, "pattern": PATH_PATTERN}
_RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": _PATH_NAME}
#: The 400 of a read of a run: an id that is blank or holds control characters, or a
#: query parameter (it takes none).
_BAD_PATH = {"400": _err("the run id is blank or holds control characters, or the "
                         "request has a query parameter (none is taken, but _)")}
#: What a read (GET) takes beside its own parameters, and ignores: a cache-buster.
_CACHE_BUSTER = {"name": "_", "in": "query", "allowEmptyValue": True,
                 "schema": {"type": "string"},
                 "description": "a cache-buster (jQuery's cache: false sends _=TIME): "
                                "taken and ignored; any other query parameter the "
                                "operation does not list is a 400"}
_SCHEDULE = {"name": "name", "in": "path", "required": True, "schema": _PATH_NAME}
#: W3C trace context of the caller (optional; an invalid value is ignored).
_TRACE = [{"name": "traceparent", "in": "header", "schema": {"type": "string"},
           "description": "W3C trace context: the run's spans join (start) or link to "
                          "(signal, approval) the caller's span"},
          {"name": "tracestate", "in": "header", "schema": {"type": "string"}}]
#: The body of an action that takes no fields: none, or ``{}``.
_NO_FIELDS = {"required": False, "content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": False, "properties": {}}}}}

_COUNT = {"type": "integer", "minimum": 0}
#: A time in seconds since the epoch, or null (not yet, or never).
_WHEN = {"type": "number", "nullable": True}
_OPTIONAL_TEXT = {"type": "string", "nullable": True}
#: The fields a run's summary (listRuns, a document's ``children``) and its document
#: share, beyond its id, workflow, queue and status (``tether._show.run_dict``).
_RUN_TIMES = {
    "created_at": {"type": "number"}, "updated_at": {"type": "number"},
    "finished_at": {**_WHEN, "description": "when it ended (null: it has not)"},
    "waiting_for": {**_OPTIONAL_TEXT, "description": "what a waiting run waits for "
                                                     "(null in any other status)"},
    "parent_run_id": {**_OPTIONAL_TEXT, "description": "a child run's parent"}}
#: What an erase erased (``PurgeReport``): the run and its family, summed.
_ERASE_REPORT = {
    "type": "object",
    "required": ["runs", "journal_entries", "archived_entries", "attempts", "signals",
                 "payloads", "blobs", "run_ids", "already_erased"],
    "properties": {
        "runs": {**_COUNT, "description": "runs erased: the run and its family"},
        "journal_entries": _COUNT, "archived_entries": _COUNT,
        "attempts": {**_COUNT, "description": "attempt errors"},
        "signals": {**_COUNT, "description": "signal payloads"},
        "payloads": _COUNT,
        "blobs": {**_COUNT, "description": "message texts no other run references"},
        "run_ids": {"type": "array", "items": {"type": "string"},
                    "description": "the runs erased, sorted: the run, its children and "
                                   "its forks, recursively"},
        "already_erased": {
            "type": "boolean",
            "description": "every one of them had been erased before (alone or with a "
                           "family): nothing new was erased, and their erased_at stays "
                           "the first erase's (as `tether erase --json`)"}}}


def _json_body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


#: A fork's answer's ``created``, as ``tether fork --json`` prints it.
_FORK_CREATED = {"type": "boolean",
                 "description": "false: the run `run_id` names was this fork already"}


def document(root_path: str = "") -> dict[str, Any]:
    """The OpenAPI document; its ``servers`` names ``root_path`` (``/tether`` behind a
    proxy that publishes the server there), a URL relative to the document's own."""
    run_ref = {"$ref": "#/components/schemas/Run"}
    # The answer of a start, as `tether start --json` prints it.
    started = {"allOf": [run_ref, {
        "type": "object", "required": ["created", "input_differs", "queue_differs"],
        "properties": {
            "created": {"type": "boolean",
                        "description": "false: a run with this run_id existed"},
            "input_differs": {"type": "boolean", "nullable": True,
                              "description": "the existing run's input differs from "
                                             "`input` (null: it cannot be read: erased, "
                                             "or encrypted with a key this server lacks)"},
            "queue_differs": {"type": "boolean",
                              "description": "the existing run's queue differs from "
                                             "`queue` (or the workflow's own without it)"},
            "warnings": _WARNINGS}}]}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Tether API", "version": "1",
                 "description": "Runs, journals, signals, approvals, live events and "
                                "schedules of a Tether store; retry, fork and erase runs. "
                                "Authenticate with `Authorization: Bearer TOKEN` unless "
                                "the server runs on loopback without tokens."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "object", "required": ["code", "message"],
                              "properties": {"code": {"type": "string"},
                                             "message": {"type": "string"}}}}},
                "RunSummary": {"type": "object", "required": ["run_id", "status"],
                               "properties": {
                                   "run_id": {"type": "string"},
                                   "workflow": {"type": "string"},
                                   "queue": {"type": "string"},
                                   "status": {"type": "string", "enum": list(STATUSES)},
                                   **_RUN_TIMES,
                                   "metrics": {"type": "object"},
                                   "cancel_requested": {
                                       "type": "boolean", "description": (
                                           "a cancel was asked and the run has not ended: "
                                           "it ends cancelled when a worker serving its "
                                           "queue replays it")},
                                   "forked_from": {
                                       "type": "string", "nullable": True,
                                       "description": "a fork's source run (listRuns)"},
                                   "forked_at": {
                                       "type": "integer", "nullable": True,
                                       "description": "the position the fork was cut "
                                                      "at (listRuns)"},
                                   "version": {
                                       **_OPTIONAL_TEXT, "description": (
                                           "the code version it runs under, null for "
                                           "none (listRuns)")}}},
                "UnreadablePayload": {
                    "type": "object", "required": ["unreadable_payload"],
                    "description": "In place of a payload this server cannot decrypt (its "
                                   "payload hook lacks the key, or it has none): run "
                                   "input, result, error, status_info; a journal entry's "
                                   "args, result, error; an attempt's error",
                    "properties": {"unreadable_payload": {"type": "boolean", "enum": [True]},
                                   "key_id": {"type": "string"}}},
                "JournalEntry": {"type": "object", "properties": {
                    "position": {"type": "integer"}, "kind": {"type": "string"},
                    "name": {"type": "string"},
                    "attempts": {"type": "integer"},
                    "started_at": {**_WHEN, "description": (
                        "when it began; a signal wait without a timeout journals none: "
                        "the end of the operation before it, or the run's start")},
                    "finished_at": _WHEN,
                    "duration": {"type": "number", "nullable": True,
                                 "description": "seconds from its start to its end"},
                    "next_attempt_at": {**_WHEN, "description": "when a failed attempt "
                                                                "is tried again"},
                    "args": {}, "result": {}, "error": {"nullable": True},
                    "status": {"type": "string", "enum": [
                        o for o in OUTCOMES if o != "timed_out"],
                        "description": "as stored (replay reads it)"},
                    "outcome": {"type": "string", "enum": list(OUTCOMES), "description": (
                        "the status as shown: timed_out for a signal wait whose timeout "
                        "passed (stored as error; not a failed operation)")}}},
                "Run": {"type": "object", "required": ["run_id", "status", "journal"],
                        "description": "A payload the server cannot decrypt is an "
                                       "UnreadablePayload, never its ciphertext",
                        "properties": {
                            "run_id": {"type": "string"}, "workflow": {"type": "string"},
                            "queue": {"type": "string"},
                            "status": {"type": "string", "enum": list(STATUSES)},
                            "input": {}, "result": {}, "error": {
                                "nullable": True, "description": (
                                    "a failed run's error as journaled: type, message, "
                                    "traceback (its lines name the workers' files and "
                                    "code), attempts; a read token sees it as an admin "
                                    "token does")},
                            "status_info": {}, **_RUN_TIMES,
                            "version": {**_OPTIONAL_TEXT,
                                        "description": "the code version it runs under"},
                            "forked_from": {**_OPTIONAL_TEXT,
                                            "description": "a fork's source run"},
                            "forked_at": {"type": "integer", "nullable": True,
                                          "description": "the position a fork was cut at"},
                            "generation": {"type": "integer", "description": (
                                "how many times it continued as new")},
                            "history": {"type": "array", "items": {"type": "object"},
                                        "description": "its earlier generations"},
                            "attempts": {"type": "array", "description": (
                                "every execution attempt of its steps"), "items": {
                                "type": "object", "properties": {
                                    "generation": {"type": "integer"},
                                    "position": {"type": "integer"},
                                    "name": {"type": "string"},
                                    "attempt": {"type": "integer"},
                                    "worker_id": {"type": "string", "nullable": True},
                                    "status": {"type": "string", "description": (
                                        "running, ok, error, postponed, cancelled or "
                                        "superseded (it succeeded but its result was "
                                        "refused: another worker took the run over and "
                                        "runs the step again); interrupted: running when "
                                        "its worker lost the run. A client shows one it "
                                        "does not know as it is")},
                                    "started_at": {"type": "number"},
                                    "finished_at": _WHEN,
                                    "error": {"nullable": True}}}},
                            "erased_at": {**_WHEN, "description": "when its payloads "
                                                                  "were erased"},
                            "journal": {"type": "array", "items": {
                                "$ref": "#/components/schemas/JournalEntry"}},
                            "failed_operations": {"type": "integer", "description": (
                                "journal entries that failed (status error), a "
                                "signal wait's timeout not counted")},
                            "in_flight": {"type": "array", "description": (
                                "the operations in flight now (steps whose attempt "
                                "runs), in position order; an attempt is known within "
                                "50 ms of its start"), "items": {
                                "type": "object",
                                "required": ["position", "kind", "name", "attempt",
                                             "worker_id", "started_at"],
                                "properties": {
                                    "position": {"type": "integer"},
                                    "kind": {"type": "string"},
                                    "name": {"type": "string"},
                                    "attempt": {"type": "integer"},
                                    "worker_id": {"type": "string"},
                                    "started_at": {"type": "number"}}}},
                            "waiting_since": {**_WHEN, "description": (
                                "since when a waiting run waits: its pending wait's "
                                "start (a signal wait without a timeout: the end of "
                                "the operation before it, or the run's start); null "
                                "when not waiting or not known")},
                            "metrics": {"type": "object"},
                            "budget": {"type": "object", "nullable": True, "description": (
                                "its LLM budget, waiting on it or not: the limits "
                                "(usd, tokens; null: no limit of that kind) its "
                                "workflow last entered (else its journal's latest LLM "
                                "call was decided under), or its status's while it "
                                "waits on them, and what it spent (spent_usd, "
                                "spent_tokens: its metrics' tree total, or its "
                                "status's figures while it waits); no_call_yet: true "
                                "while it has called no model (a run that ended so has "
                                "no_call: true instead); kept_raise: a raise "
                                "sent and not taken yet; null for a run with no "
                                "budget"),
                                "properties": {
                                    "usd": {"type": "number", "nullable": True},
                                    "tokens": {"type": "integer", "nullable": True},
                                    "spent_usd": {"type": "number"},
                                    "spent_tokens": {"type": "integer"},
                                    "no_call_yet": {"type": "boolean"},
                                    "no_call": {"type": "boolean"},
                                    "kept_raise": {"type": "object", "properties": {
                                        "usd": {"type": "number", "nullable": True},
                                        "tokens": {"type": "integer", "nullable": True},
                                        "more": {"type": "integer"}}},
                                    "limits_unknown": {"type": "string"}}},
                            "cancel_requested": {"type": "boolean", "description": (
                                "a cancel was asked and the run has not ended: it ends "
                                "cancelled when a worker serving its queue replays it "
                                "(a waiting run too: its code may catch Cancelled)")},
                            "cancel_requested_at": {
                                "type": "number", "nullable": True, "description": (
                                    "when the cancel was first requested (epoch "
                                    "seconds; a repeat keeps the first's time), for a "
                                    "run with one pending and for one that ended "
                                    "cancelled; null otherwise, and when a version that "
                                    "does not record it asked")},
                            "cancel_reason": {**_OPTIONAL_TEXT, "description": (
                                "why that cancel was asked (tether cancel --reason, "
                                "the cancel's {\"reason\"}, App.cancel's reason=; a "
                                "run cancelled with its parent has its parent's; a "
                                "repeat keeps the first's); null when "
                                "cancel_requested_at is, and when none was given")},
                            "cancelled_with": {**_OPTIONAL_TEXT, "description": (
                                "the id of the parent run whose cancel cascaded to "
                                "this one (its on_parent_cancel is cancel); null when "
                                "the cancel was the run's own request, and when "
                                "cancel_requested_at is null")},
                            "children": {"type": "array", "items": {
                                "$ref": "#/components/schemas/RunSummary"}}}},
                "Worker": {"type": "object", "required": [
                    "worker_id", "hostname", "pid", "queues", "version", "started_at",
                    "heartbeat_at", "runs_held", "live"], "properties": {
                        "worker_id": {"type": "string"}, "hostname": {"type": "string"},
                        "pid": {"type": "integer"},
                        "queues": {"type": "array", "items": {"type": "string"}},
                        "version": {"type": "string", "nullable": True,
                                    "description": "its app's code version; null: none"},
                        "started_at": {"type": "number", "description": "epoch seconds"},
                        "heartbeat_at": {"type": "number", "description": "epoch seconds"},
                        "runs_held": {"type": "integer", "description":
                                      "running runs whose lease it owns now"},
                        "live": {"type": "boolean", "description":
                                 "a heartbeat within the last 60 s"}}},
                "Queue": {"type": "object", "required": [
                    "queue", "limit", "paused", "limit_before_pause", "workflows", "queued",
                    "due", "running", "waiting", "workers"], "properties": {
                        "queue": {"type": "string"},
                        "limit": {"type": "integer", "nullable": True, "description":
                                  "most runs held at once across all workers; null: "
                                  "none; 0: paused"},
                        "paused": {"type": "boolean"},
                        "limit_before_pause": {"type": "integer", "nullable": True,
                                               "description": (
                            "of a paused queue, the limit a resume gives back (null: "
                            "none); null when not paused")},
                        "workflows": {"type": "array", "items": {"type": "string"},
                                      "description": "the registered workflows on it"},
                        "queued": {"type": "integer", "description": "runs not claimed"},
                        "due": {"type": "integer",
                                "description": "of the queued runs, those claimable now"},
                        "running": {"type": "integer"},
                        "waiting": {"type": "integer", "description": (
                            "released to wait (timer, signal, child): they hold no "
                            "place of the limit")},
                        "workers": {"type": "integer",
                                    "description": "live workers that serve it"}}},
                "Schedule": {"type": "object", "required": ["name", "workflow", "paused"],
                             "properties": {
                                 "name": {"type": "string"}, "workflow": {"type": "string"},
                                 "queue": {"type": "string"}, "cron": {"type": "string"},
                                 "timezone": {"type": "string"}, "paused": {"type": "boolean"},
                                 "overlap": {"type": "string"}, "catchup": {"type": "string"},
                                 "catchup_max": {"type": "integer"},
                                 "next_tick": {"type": "number", "nullable": True},
                                 "last_tick": {"type": "number", "nullable": True},
                                 "last_run_id": {"type": "string", "nullable": True},
                                 "version": {"type": "string", "nullable": True}}},
                "Approval": {"type": "object", "properties": {
                    "run_id": {"type": "string"}, "agent": {"type": "string"},
                    "tool": {"type": "string"}, "arguments": {"type": "object"},
                    "reason": {"type": "string"}, "since": {"type": "number"},
                    "approval_id": {"type": "string",
                                    "description": "unique within the run"},
                    "call_id": {"type": "string",
                                "description": "the model's id of the call (may be "
                                               "empty)"},
                    "awaiting_worker": {
                        "type": "boolean",
                        "description": "the run is claimable now: answered (see "
                                       "answered), or its wait's watch timeout passed; "
                                       "it stays waiting until a worker takes it up"},
                    "answered": {
                        "type": "boolean",
                        "description": "answered already: the run stays waiting until a "
                                       "worker takes the answer up, and a second answer "
                                       "is refused (409); the web inbox leaves it out. "
                                       "False for one whose watch timeout passed with "
                                       "no answer: it may still be answered"}}},
            },
        },
        "servers": [{"url": root_path or "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/runs": {
                "post": {
                    "summary": "Start a run (idempotent on run_id)",
                    "operationId": "startRun", "parameters": _TRACE,
                    "requestBody": _json_body({
                        "type": "object", "required": ["workflow"],
                        "additionalProperties": False,
                        "properties": {"workflow": _NAME, "input": _OPTIONAL_INPUT,
                                       "run_id": _OPTIONAL_NAME,
                                       "queue": _OPTIONAL_NAME,
                                       "check_args": {
                                           "type": "boolean", "default": True,
                                           "description": "false: the input is not "
                                           "checked against the workflow's function of "
                                           "`serve --app` (the workers' code differs)"}}}),
                    # (No 404: a workflow no worker has registered is queued, with
                    # `warnings`, with or without `serve --app`. The document listed a
                    # 404 workflow_not_found that no start answered until 2026-12-07.)
                    "responses": {"201": _ok("started; a workflow no worker of the store "
                                             "has registered is queued all the same, "
                                             "with `warnings` (never a 404)", started),
                                  "200": _ok("a run with this run_id existed (nothing "
                                             "started; its document)", started),
                                  "409": _err("run_id belongs to a run of another "
                                              "workflow"),
                                  **_CHANGE_ERRORS,
                                  "400": _err(
                                      "bad input (bad_request, malformed_json): a missing "
                                      "or blank workflow, an input that is no array, a "
                                      "name the patterns refuse, an unknown field, a "
                                      "query parameter (an action takes none: its fields "
                                      "are the body's); under `serve --app`, "
                                      "also an input the workflow's function cannot take"),
                                  "413": _err(
                                      "the body is over --max-body, or the encoded input "
                                      "over the store's payload limit "
                                      "(payload_too_large)")},
                },
                "get": {
                    "summary": "List runs, newest first",
                    "operationId": "listRuns",
                    "parameters": [
                        {"name": "status", "in": "query", "allowEmptyValue": True,
                         "schema": {"type": "string", "pattern": _STATUS_LIST},
                         "description": "a status, or a comma list of them (runs of "
                         "any): " + ", ".join(STATUSES)},
                        {"name": "workflow", "in": "query", "allowEmptyValue": True,
                         "schema": _NAME},
                        {"name": "queue", "in": "query", "allowEmptyValue": True,
                         "schema": _NAME},
                        {"name": "parent", "in": "query", "allowEmptyValue": True,
                         "schema": {"type": "string", "pattern": NAME_PATTERN},
                         "description": "a stored run's id, of any length: its children"},
                        {"name": "q", "in": "query", "schema": _NAME, "allowEmptyValue": True,
                         "description": "text in the run id"},
                        {"name": "limit", "in": "query", "allowEmptyValue": True,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                        {"name": "cursor", "in": "query", "allowEmptyValue": True,
                         "schema": {"type": "string"},
                         "description": "next_cursor of the page before (opaque: any other "
                                        "text is a 400)"},
                        _CACHE_BUSTER,
                    ],
                    "responses": {"200": _ok("a page of runs", {
                        "type": "object", "required": ["runs", "next_cursor"],
                        "properties": {
                            "runs": {"type": "array",
                                     "items": {"$ref": "#/components/schemas/RunSummary"}},
                            "next_cursor": {"type": "string", "nullable": True}}}),
                        "400": _err("bad filter or cursor, a query parameter this "
                                    "operation does not list, or one given twice"),
                        **_COMMON_ERRORS},
                },
            },
            "/api/v1/runs/{run_id}": {"get": {
                "summary": "A run: status, input, result or error, live status, metrics, "
                           "children (as `tether show RUN --json`)",
                "operationId": "getRun", "parameters": [_RUN_ID, _CACHE_BUSTER],
                "responses": {"200": _ok("the run", run_ref), "404": _err("no such run"),
                              **_BAD_PATH, **_COMMON_ERRORS}}},
            "/api/v1/runs/{run_id}/journal": {"get": {
                "summary": "The run's operations in position order",
                "operationId": "getJournal", "parameters": [_RUN_ID, _CACHE_BUSTER],
                "responses": {"200": _ok("the journal", {
                    "type": "object", "required": ["run_id", "journal"],
                    "properties": {"run_id": {"type": "string"},
                                   "journal": {"type": "array", "items": {
                                       "$ref": "#/components/schemas/JournalEntry"}}}}),
                    "404": _err("no such run"), **_BAD_PATH, **_COMMON_ERRORS}}},
            "/api/v1/runs/{run_id}/events": {"get": {
                "summary": "Server-Sent Events: operations, status, live status, cancel "
                           "requests, LLM chunks",
                "operationId": "runEvents", "parameters": [
                    _RUN_ID, {"name": "Last-Event-ID", "in": "header",
                              "schema": {"type": "string"}},
                    {"name": "after", "in": "query", "schema": {"type": "string"},
                     "description": "an event id: start right after it, as Last-Event-ID "
                                    "(which wins when both are sent)"},
                    _CACHE_BUSTER],
                "responses": {"200": {"description": "an event stream",
                                      "content": {"text/event-stream": {
                                          "schema": {"type": "string"}}}},
                              "400": _err("an event id that is not one of this run's "
                                          "events: another run's, or one this store "
                                          "never made (or no longer has: see the "
                                          "docs); a blank run id or one with control "
                                          "characters; a query parameter other than "
                                          "after (and _), or after given twice"),
                              "404": _err("no such run"), **_COMMON_ERRORS}}},
            "/api/v1/runs/{run_id}/signals/{name}": {"post": {
                "summary": "Send a signal to a run",
                "operationId": "sendSignal",
                "parameters": [_RUN_ID, {"name": "name", "in": "path", "required": True,
                                         "schema": {**_PATH_NAME, "pattern": NAME_PATTERN}},
                               *_TRACE],
                "requestBody": _json_body({
                    "type": "object", "additionalProperties": False,
                    "properties": {"data": {}, "idempotency_key": _OPTIONAL_NAME}},
                    required=False),
                "responses": {"202": _ok("sent (created false: the run had a signal with this "
                                        "key, of any name and data: nothing was stored; "
                                        "name_differs and data_differs say whether that "
                                        "signal is another than this send's)", {
                    "type": "object",
                    "required": ["run_id", "signal", "created", "name_differs",
                                 "data_differs"],
                    "properties": {"run_id": {"type": "string"},
                                   "signal": {"type": "string"},
                                   "created": {"type": "boolean"},
                                   "name_differs": {
                                       "type": "boolean",
                                       "description": "the signal stored under the key "
                                                      "has another name (false when "
                                                      "created)"},
                                   "data_differs": {
                                       "type": "boolean", "nullable": True,
                                       "description": "the signal stored under the key "
                                                      "has other data (false when "
                                                      "created; null: it cannot be read: "
                                                      "erased, or encrypted with a key "
                                                      "this server lacks)"},
                                   "warnings": {
                                       **_WARNINGS,
                                       "description": "present when the run waits for an "
                                                      "approval and this signal "
                                                      "(approval, without approved true "
                                                      "or false) is no answer to it"}}}),
                    "404": _err("no such run"), "409": _err("the run has ended"),
                    **_CHANGE_ERRORS}}},
            "/api/v1/runs/{run_id}/cancel": {"post": {
                "summary": "Cancel a run", "operationId": "cancelRun",
                "parameters": [_RUN_ID], "requestBody": _json_body({
                    "type": "object", "additionalProperties": False, "properties": {
                        "reason": {
                            "type": "string", "nullable": True, "minLength": 1,
                            "maxLength": MAX_CANCEL_REASON, "pattern": NAME_PATTERN,
                            "description": (
                                "why (one line): kept with the cancel, shown by the run "
                                "document's cancel_reason and given to the children "
                                "it cancels; a repeat keeps the first request's")}}},
                    required=False),
                "responses": {"202": _ok("cancel requested", {
                    "type": "object", "required": ["run_id", "status"],
                    "properties": {"run_id": {"type": "string"},
                                   "status": {"type": "string", "enum": list(STATUSES),
                                              "description": "the run's status when the "
                                                             "cancel was recorded"},
                                   "cancel_reason": {**_OPTIONAL_TEXT, "description": (
                                       "the reason the run's cancel keeps: the first "
                                       "request's (this one's, or an earlier one's "
                                       "that a repeat does not replace)")}}}),
                    "404": _err("no such run"), "409": _err("the run has ended"),
                    **_CHANGE_ERRORS}}},
            "/api/v1/runs/{run_id}/approval": {"post": {
                "summary": "Approve or reject the tool call a run waits on",
                "operationId": "answerApproval", "parameters": [_RUN_ID, *_TRACE],
                "requestBody": _json_body({
                    "type": "object", "required": ["approved"], "additionalProperties": False,
                    "properties": {"approved": {"type": "boolean"},
                                   "note": {"type": "string", "maxLength": 4000,
                                            "nullable": True},
                                   "approval_id": {
                                       "type": "string", "nullable": True,
                                       "description": "answer this approval only (the one "
                                                      "shown to the person): 409 if the run "
                                                      "waits for another one by then"}}}),
                "responses": {"200": _ok("answered", {
                    "type": "object", "required": ["run_id", "approved", "note", "approval"],
                    "properties": {"run_id": {"type": "string"},
                                   "approved": {"type": "boolean"},
                                   "note": {"type": "string", "nullable": True},
                                   "approval": {"$ref": "#/components/schemas/Approval"}}}),
                              "404": _err("no such run"),
                              "409": _err("the run waits for no approval"),
                              **_CHANGE_ERRORS}}},
            "/api/v1/runs/{run_id}/retry": {"post": {
                "summary": "Run a failed, blocked or cancelled run again (as `tether retry`): "
                           "recorded successful operations are kept",
                "operationId": "retryRun", "parameters": [_RUN_ID],
                "requestBody": _NO_FIELDS,
                "responses": {"200": _ok(
                                  "the run, queued again, and `retried_children`: the ids "
                                  "of the child runs retried with it",
                                  {"allOf": [run_ref, {"type": "object", "properties": {
                                      "retried_children": {
                                          "type": "array", "items": {"type": "string"}},
                                      "warnings": {
                                          **_WARNINGS, "description":
                                          "present when no worker of the store has "
                                          "registered the run's workflow (the run waits "
                                          "until one does), or when the retry took the "
                                          "run's code version away (a server of no "
                                          "version: workers of every version may claim "
                                          "it now)"}}}]}),
                              "404": _err("no such run"),
                              "409": _err("the run is not failed, blocked or cancelled"),
                              **_CHANGE_ERRORS}}},
            "/api/v1/runs/{run_id}/fork": {"post": {
                "summary": "A new run with this run's journal up to (not including) `at`, "
                           "continuing under the current code (as `tether fork`)",
                "operationId": "forkRun", "parameters": [_RUN_ID],
                "requestBody": _json_body({
                    "type": "object", "required": ["at"], "additionalProperties": False,
                    "properties": {"at": {"type": "integer", "minimum": 0},
                                   "input": _OPTIONAL_INPUT, "run_id": _OPTIONAL_NAME}}),
                "responses": {"201": _ok("the new run (`created` true)", {"allOf": [run_ref, {
                                  "type": "object", "required": ["created"],
                                  "properties": {"created": _FORK_CREATED,
                                                 "warnings": _WARNINGS}}]}),
                              "200": _ok("the run `run_id` names, which is this fork (of "
                                         "this run, at `at`, with the same input): "
                                         "nothing was started (`created` false)", {
                                             "allOf": [run_ref, {
                                                 "type": "object", "required": ["created"],
                                                 "properties": {
                                                     "created": _FORK_CREATED}}]}),
                              "404": _err("no such run"),
                              "409": _err("the new run id is held by another run (the "
                                          "message says which), or the run was erased "
                                          "(its input and results are gone)"),
                              "422": _err("at is missing or is not a position of the run "
                                          "(0 to its end)"),
                              **_CHANGE_ERRORS,
                              "400": _err(
                                  "bad input (bad_request, malformed_json): an input "
                                  "that is no array, a run_id the pattern refuses, an "
                                  "unknown field, a query parameter, a run whose "
                                  "payloads are encrypted with no payload hook here; "
                                  "under `serve --app`, also an input the "
                                  "workflow's function cannot take"),
                              "413": _err(
                                  "the body is over --max-body, or the encoded input "
                                  "over the store's payload limit (payload_too_large)")}}},
            "/api/v1/runs/{run_id}/erase": {"post": {
                "summary": "Erase an ended run's payloads, and its children's and forks' "
                           "(recursively), keeping their timelines' shape (as `tether "
                           "erase`; right to erasure)",
                "operationId": "eraseRun", "parameters": [_RUN_ID],
                "requestBody": _NO_FIELDS,
                "responses": {"200": _ok("what was erased", {
                    "type": "object", "required": ["run_id", "erased"],
                    "properties": {"run_id": {"type": "string"},
                                   "erased": _ERASE_REPORT}}),
                    "404": _err("no such run"),
                    "409": _err("the run, or a run of its family (its children and "
                                "forks, recursively), has not ended: the message names "
                                "them; nothing was erased"),
                    **_CHANGE_ERRORS}}},
            "/api/v1/schedules": {"get": {
                "summary": "Every schedule, by name (as `tether schedules`)",
                "operationId": "listSchedules", "parameters": [_CACHE_BUSTER],
                "responses": {"200": _ok("the schedules", {
                    "type": "object", "required": ["schedules"],
                    "properties": {"schedules": {
                        "type": "array", "items": {"$ref": "#/components/schemas/Schedule"}}}}),
                    "400": _err("an address that is not UTF-8, or a query parameter "
                                "(none is taken, but _)"), **_COMMON_ERRORS}}},
            "/api/v1/workers": {"get": {
                "summary": "The live workers, by host then start (as `tether workers`)",
                "operationId": "listWorkers",
                "parameters": [_CACHE_BUSTER, {
                    "name": "all", "in": "query",
                    "schema": {"type": "string", "enum": ["true", "false", "1", "0"]},
                    "description": "true: also the registrations of workers with no "
                                   "heartbeat for 60 s (killed, or cut off), live false"}],
                "responses": {"200": _ok("the workers", {
                    "type": "object", "required": ["workers"],
                    "properties": {"workers": {
                        "type": "array", "items": {"$ref": "#/components/schemas/Worker"}}}}),
                    "400": _err("an address that is not UTF-8, a query parameter other "
                                "than all (and _), or an all that is not true or false"),
                    **_COMMON_ERRORS}}},
            "/api/v1/queues": {"get": {
                "summary": "Every queue the store knows, by name: its limit, its pause, "
                           "its runs and live workers (as `tether queues --json`)",
                "operationId": "listQueues", "parameters": [_CACHE_BUSTER],
                "responses": {"200": _ok("the queues", {
                    "type": "object", "required": ["queues"],
                    "properties": {"queues": {
                        "type": "array", "items": {"$ref": "#/components/schemas/Queue"}}}}),
                    "400": _err("an address that is not UTF-8, or a query parameter "
                                "(none is taken, but _)"), **_COMMON_ERRORS}}},
            "/api/v1/queues/{name}/pause": {"post": {
                "summary": "Pause a queue: no worker claims its runs until it is resumed; "
                           "the limit it held is kept for the resume (as `tether "
                           "queue-pause`)",
                "operationId": "pauseQueue", "parameters": [_SCHEDULE],
                "requestBody": _NO_FIELDS,
                "responses": {"200": _ok("the queue, paused", {"allOf": [
                    {"$ref": "#/components/schemas/Queue"},
                    {"type": "object", "properties": {"warnings": {
                        "type": "array", "items": {"type": "string"}, "description": (
                            "a queue the store did not know (no registered workflow, "
                            "no limit, no unfinished run: a typo?) is paused all the "
                            "same, and said")}}}]}),
                    "400": _err("a queue name that is empty or over 200 characters"),
                    **_CHANGE_ERRORS}}},
            "/api/v1/queues/{name}/resume": {"post": {
                "summary": "Resume a paused queue, with the limit it held before the "
                           "pause (as `tether queue-resume`); a queue that is not paused "
                           "is left as it is",
                "operationId": "resumeQueue", "parameters": [_SCHEDULE],
                "requestBody": _NO_FIELDS,
                "responses": {"200": _ok("the queue after", {"allOf": [
                    {"$ref": "#/components/schemas/Queue"},
                    {"type": "object", "required": ["resumed"], "properties": {
                        "resumed": {"type": "boolean",
                                    "description": "false: it was not paused"}}}]}),
                    "400": _err("an empty queue name"), **_CHANGE_ERRORS}}},
            "/api/v1/schedules/{name}": {"delete": {
                "summary": "Forget a schedule (its runs stay)", "operationId": "deleteSchedule",
                "parameters": [_SCHEDULE],
                "responses": {"200": _ok("deleted", {
                    "type": "object", "required": ["schedule", "deleted"],
                    "properties": {"schedule": {"type": "string"},
                                   "deleted": {"type": "boolean", "enum": [True]}}}),
                              "404": _err("no such schedule"), **_CHANGE_ERRORS}}},
            **{f"/api/v1/schedules/{{name}}/{action}": {"post": {
                "summary": summary, "operationId": f"{action}Schedule",
                "parameters": [_SCHEDULE], "requestBody": _NO_FIELDS,
                "responses": {code: _ok(what, schema),
                              "404": _err("no such schedule"), **extra, **_CHANGE_ERRORS}}}
               for action, summary, code, what, schema, extra in (
                   ("pause", "Stop starting runs", "200", "the schedule, paused",
                    {"$ref": "#/components/schemas/Schedule"}, {}),
                   ("resume", "Start runs again from the next tick", "200",
                    "the schedule, active", {"$ref": "#/components/schemas/Schedule"},
                    {"409": _err("a schedule stored by another version of Tether whose "
                                 "cron or time zone this one refuses")}),
                   ("trigger", "Start a run now (the next tick is kept)", "201",
                    "the run started", {"type": "object", "required": ["run_id"],
                                        "properties": {"schedule": {"type": "string"},
                                                       "run_id": {"type": "string"}}},
                    {}))},
            "/api/v1/approvals": {"get": {
                "summary": "Tool calls waiting for a person: all of them by the time "
                           "they began waiting, or with limit/cursor one page, oldest run "
                           "first",
                "operationId": "listApprovals",
                "parameters": [
                    {"name": "limit", "in": "query", "allowEmptyValue": True,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                    {"name": "cursor", "in": "query", "allowEmptyValue": True,
                     "schema": {"type": "string"},
                     "description": "next_cursor of the page before (opaque: any other "
                                    "text is a 400)"},
                    _CACHE_BUSTER,
                ],
                "responses": {"200": _ok("pending approvals (a page with limit/cursor)", {
                    "type": "object", "required": ["approvals", "next_cursor"],
                    "properties": {
                        "approvals": {"type": "array",
                                      "items": {"$ref": "#/components/schemas/Approval"}},
                        "next_cursor": {"type": "string", "nullable": True}}}),
                    "400": _err("bad limit or cursor, a query parameter this operation "
                                "does not list, or one given twice"),
                    **_COMMON_ERRORS}}},
        },
    }
