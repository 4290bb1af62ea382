"""A run as a JSON document: what ``tether show RUN --json`` prints and
``GET /api/v1/runs/{run_id}`` answers.

Both front-ends (``tether.cli`` and ``tether.serve``) build their run documents here, so
the two stay one contract and neither front-end imports the other (an import-linter
contract checks it).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
from collections.abc import AsyncIterator, Container
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether._budgets import calling_a_model, run_budget
from tether._codec import SLOT_ERROR, SLOT_INPUT, SLOT_SIGNAL, Codec
from tether._types import EntryStatus, RunInfo, RunStatus, did_you_mean
from tether.encryption import _sealed_key_id
from tether.errors import PayloadError

if TYPE_CHECKING:
    from tether._app import App, RunHandle
    from tether.store import SignalSent

__all__ = ["HELD_NOTE", "OUTCOMES", "STATUSES", "TIMED_OUT", "WAIT_KINDS", "SignalReport",
           "StartReport", "awaited_signal_since", "blocked_reason", "bookkeeping",
           "cancel_unheeded", "counted", "entry_failed", "entry_outcome", "error_origin", "held",
           "in_flight", "info_dict", "journal_entries", "lifecycle_dict", "pinned_to_wait",
           "run_dict", "run_document", "run_info", "schedule_dict", "schedule_rows",
           "search_statuses", "signal_report", "signal_wait_starts", "split_statuses",
           "start_report", "timed_out", "unattempted", "unreadable_payload", "untimed",
           "versions_idle", "versions_unreadable", "waiting_since", "workers_document"]

#: Every run status, in the order of :class:`RunStatus` (filters, OpenAPI enums).
STATUSES: tuple[str, ...] = tuple(s.value for s in RunStatus)


#: The outcome of a signal wait whose timeout passed (``wait_for_signal(..., timeout=)``,
#: an interruptible agent's "is an interrupt waiting?" check with ``timeout=0``): an
#: expected answer, "nothing came", not a failed operation. Its journal entry keeps its
#: stored status ``error`` (replay raises ``SignalTimeout`` from it); the faces show it
#: as this instead (the page's row, ``tether show``, a document's ``outcome``).
TIMED_OUT = "timed_out"


#: Every journal entry ``outcome`` in a run's document (the OpenAPI enum): its stored
#: status, or ``TIMED_OUT``.
OUTCOMES: tuple[str, ...] = (*(s.value for s in EntryStatus), TIMED_OUT)


def split_statuses(texts: list[str] | tuple[str, ...]) -> tuple[tuple[str, ...], list[str]]:
    """The statuses of comma lists (``failed,blocked``; each text one list), in
    :data:`STATUSES`' order, each once; and the words that are no status (an empty
    list is none: ``,`` is no status)."""
    found = [w.strip() for text in texts for w in text.split(",") if w.strip()]
    bad = [w for w in found if w not in STATUSES]
    return tuple(s for s in STATUSES if s in found), bad


async def search_statuses(app: App, statuses: tuple[str, ...] | None, *, limit: int,
                          before: tuple[float, str] | None = None,
                          **filters: Any) -> list[Any]:
    """``run_search`` for runs of any of ``statuses`` (None or empty: any status), newest
    first, at most ``limit``: one indexed search per status (each its newest ``limit``
    after ``before``), merged, so a page holds the newest runs of them all and the next
    page (``before`` its last run) follows on from it."""
    if not statuses or len(statuses) == len(STATUSES):
        return await app.store.run_search(limit=limit, before=before, **filters)
    if len(statuses) == 1:
        return await app.store.run_search(status=statuses[0], limit=limit, before=before,
                                          **filters)
    found = [r for status in statuses
             for r in await app.store.run_search(status=status, limit=limit, before=before,
                                                 **filters)]
    found.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
    return found[:limit]


def timed_out(e: dict[str, Any]) -> bool:
    """Whether journal entry ``e`` is a signal wait that timed out. A signal entry ends
    in ``error`` only so (the store records no other error for it), which holds for an
    error this process cannot decrypt too; a readable error of another type is not."""
    if e.get("kind") != "signal" or e["status"] != "error":
        return False
    err = e.get("error")
    return not isinstance(err, dict) or "type" not in err or str(
        err["type"]).endswith(".SignalTimeout")


#: A frame of a stored traceback: its file, line, function, and the code line under it.
_FRAME = re.compile(r'^  File "(?P<file>[^"\n]+)", line (?P<line>\d+), in (?P<fn>[^\n]+)\n'
                    r'(?:    (?P<code>[^\n]*)\n)?', re.M)
_OWN = str(Path(__file__).resolve().parent) + os.sep


def _own_frame(filename: str) -> bool:
    """Whether a traceback's file is Tether's own (this package, or an installed one)."""
    name = filename.replace("\\", "/")
    return filename.startswith(_OWN) or "/site-packages/tether/" in name


def error_origin(err: Any) -> str | None:
    """Where the code went wrong, from a recorded error's traceback: the innermost
    frame outside Tether's own code of its first exception that has one (of a chain,
    the root cause: a step's line that raised, else the workflow's line that called
    it), as ``FILE, line N, in FUNCTION: CODE``; None when it has none. A failed run's
    one line (``failed: AttributeError: ...``) did not say where, and the whole
    traceback was only in ``--json`` and the web UI (``tether show`` and the worker's
    log line of a failed run say it now)."""
    if isinstance(err, dict) and isinstance(err.get("code_at"), str):
        return str(err["code_at"])  # (a blocked run's: the line that asked, no traceback)
    tb = err.get("traceback") if isinstance(err, dict) else None
    if not isinstance(tb, str):
        return None
    for block in tb.split("Traceback (most recent call last):"):
        frames = [m for m in _FRAME.finditer(block) if not _own_frame(m["file"])]
        if frames:
            break
    else:
        return None
    f = frames[-1]
    code = (f["code"] or "").strip()
    # (the frame's text comes from the store: made safe to print by the caller)
    return f"{f['file']}, line {f['line']}, in {f['fn'].strip()}" + (f": {code}" if code else "")


def unattempted(e: dict[str, Any]) -> bool:
    """Whether journal entry ``e`` ran no attempt (a recorded ``now``, ``random`` or
    ``uuid``, a patch, a child's start, a timer: only a step runs attempts): the faces
    draw a dash in its attempts cell, not 0, as if an attempt were still to come."""
    return not e.get("attempts")


def untimed(e: dict[str, Any]) -> bool:
    """Whether journal entry ``e`` took no time of its own (a recorded ``now``,
    ``random`` or ``uuid``, a patch, a child's start: its start and end are one
    instant): the faces draw a dash in its duration cell, not "0 µs", as if it had been
    timed. A step's duration, however short, and a wait's are drawn."""
    return e.get("kind") != "step" and not e.get("duration")


def entry_outcome(e: dict[str, Any]) -> str:
    """Journal entry ``e``'s status as the faces show it: its stored status (``ok``,
    ``error``, ``pending``), or ``TIMED_OUT`` for a signal wait that timed out."""
    return TIMED_OUT if timed_out(e) else str(e["status"])


#: What the faces say of a pending entry of a blocked run (``held``): its timer's or its
#: retry's time is kept, but nothing waits for it until an operator resumes the run.
HELD_NOTE = "on hold while the run is blocked"


def held(e: dict[str, Any], run_status: str) -> bool:
    """Whether journal entry ``e`` of a run in ``run_status`` is a pending operation
    (a timed wait, a step between attempts) that waits for nothing now: the run is
    blocked, and no worker takes it, whatever its deadline, until an operator resumes
    it (docs/concepts.md); then it goes on from this entry (a timer whose deadline
    passed meanwhile ends at once). Until 2026-12-07 ``tether show`` and the run page
    drew such an entry as waiting (the page's duration ticking)."""
    return run_status == RunStatus.BLOCKED.value and e.get("status") == "pending"


#: The journal's markers (``tether.patched``) that Tether's own libraries ask, by the
#: start of their names: ``tether.ai.child-share``, ``tether.ai.agent:...``,
#: ``openai_agents.agent-tool-durable`` ... (``tests/web/test_ui_bookkeeping.py`` checks
#: that every library marker starts so).
LIBRARY_PATCH_PREFIXES = ("tether.ai.", "openai_agents.")

#: Tether's own steps that keep a budget's books: the share a child run gets
#: (``tether.ai._budget.CHILD_SHARE_STEP``), and the roll-up of an ended child's spend
#: (``<agent>.child_spend``, ``tether.ai._agent.roll_up_child``).
CHILD_SHARE_STEP = "tether.ai.child_share"
CHILD_SPEND_SUFFIX = ".child_spend"


def bookkeeping(e: dict[str, Any]) -> str | None:
    """What journal entry ``e`` keeps, when it is one of Tether's own bookkeeping
    operations rather than one the workflow's code asked for: a library's version
    marker (a patch), a child's budget share, a child's spend rolled up; None for any
    other. The faces label such a row (``tether show``'s ``[bookkeeping: ...]``, the
    run page's dimmed row): an agent's timeline read ``tether.ai.child-share`` and
    ``tether.ai.child_spend`` as operations of its own (until 2026-12-07). The journal
    and the documents are unchanged."""
    kind, name = e.get("kind"), str(e.get("name") or "")
    if kind == "patch" and name.startswith(LIBRARY_PATCH_PREFIXES):
        return "a library's version marker"
    if kind == "step" and name == CHILD_SHARE_STEP:
        return "a child's budget share"
    if kind == "step" and name.endswith(CHILD_SPEND_SUFFIX):
        return "a child's spend rolled up"
    return None


def entry_failed(e: dict[str, Any]) -> bool:
    """Whether ``e`` counts as a failed operation (a signal's timeout does not)."""
    return entry_outcome(e) == "error"


def journal_entries(journal: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's journal as its documents give it (``GET /api/v1/runs/{id}`` and its
    ``/journal``, ``tether show --json``): each entry with its ``outcome``."""
    return [{**e, "outcome": entry_outcome(e)} for e in journal]


#: The kinds of journal entries that stand for a wait while pending (a timer, a signal
#: with a timeout, a child's result): their entry holds the wait's start.
WAIT_KINDS = ("sleep", "signal", "child_result")


def _latest(entries: list[dict[str, Any]], since: float | None) -> float | None:
    """The latest completion time (``finished_at``) of ``entries``, or ``since`` if
    later or none has one."""
    for e in entries:
        done = e.get("finished_at")
        if done is not None and (since is None or done > since):
            since = done
    return since


def signal_wait_starts(entries: list[dict[str, Any]], floor: float | None) -> float | None:
    """Give each signal wait without a timeout in ``entries`` (one generation's journal
    entries as ``App.get_run`` shows them) its ``started_at`` and ``duration``; returns
    the latest completion time among them (``floor`` if none is later). A child's result
    (``child_result``) gets its start the same way: it is journaled when a replay finds
    the child ended, with that moment as both its start and its end, so its duration
    read 0 however long the run waited for the child (until 2026-12-07).

    Such a wait journals nothing until its signal comes (a timed one journals its
    deadline, and its start with it, when it begins), so its entry has no stored start;
    and nothing else stored keeps one (the run's ``updated_at`` moves with the signal's
    arrival and the next claim; run events have no time). Storing one would cost each
    waiting run a journal row or a column. It is derived instead from what the journal
    holds: the wait began when the workflow's code, going on from its previous
    operation, reached it, i.e. at the completion (``finished_at``) of the latest
    operation journaled before it (the code between two operations runs in memory, not
    for long: anything slow or with effects belongs in a step), or, for the first
    operation of a generation, at ``floor``: the run's creation, or the end of the
    generation before it (a run continued as new).

    The operations before the wait are final and never rewritten, so the start is the
    same whichever execution reached the wait or took the signal: after a worker died
    in the wait or the run was released on it again (woken for something else: a
    cancel it caught, a sibling's timer), the start stays the first arrival's. Of
    several sequential waits, each starts when the one before it took its signal. In a
    run whose branches wait at once (``asyncio.gather``), the latest operation before
    it by position may have completed after the wait began: the start shown is then
    later than the real one (never later than the signal's arrival: clamped)."""
    last = floor
    for e in sorted(entries, key=lambda e: e["position"]):
        done = e.get("finished_at")
        # (A child's result is journaled when a replay finds the child ended, its start
        # and end both that moment: the wait for the child began as a signal's does.)
        derived = ((e["kind"] == "signal" and e.get("started_at") is None)
                   or (e["kind"] == "child_result" and e.get("started_at") == done))
        if derived and done is not None and last is not None:
            e["started_at"] = min(last, done)
            e["duration"] = done - e["started_at"]
        if done is not None and (last is None or done > last):
            last = done
    return last


def awaited_signal_since(doc: dict[str, Any]) -> float | None:
    """When the signal wait without a timeout that a waiting run is in began, as
    ``signal_wait_starts`` will give it once its entry is written: the latest completion
    among the entries before it, else the start of its generation. ``doc``:
    ``info_dict``'s fields. The wait's position is the first one the journal lacks (a
    run's operations take positions in turn, and every other operation of a waiting run
    is journaled): the end of the journal, or, in a run whose branches went on while it
    waited (``asyncio.gather``), a gap before their entries."""
    floor: float | None = doc["created_at"]
    for generation in doc.get("history") or ():
        floor = _latest(generation["journal"], floor)
    taken = {e["position"] for e in doc["journal"]}
    awaited = next(p for p in range(len(taken) + 1) if p not in taken)
    return _latest([e for e in doc["journal"] if e["position"] < awaited], floor)


def waiting_since(doc: dict[str, Any]) -> float | None:
    """Since when a waiting run (``info_dict``'s fields) waits: the start of its pending
    wait's entry (the latest such), or for a signal wait without a timeout, which has
    none, ``awaited_signal_since``; None when it is not waiting, or waits for something
    else whose start is not known (a retry's back-off, a store error)."""
    if doc["status"] != RunStatus.WAITING.value:
        return None
    started = next((e["started_at"] for e in reversed(doc["journal"])
                    if e["status"] == "pending" and e["kind"] in WAIT_KINDS
                    and e.get("started_at")), None)
    if started is not None:
        return float(started)
    if str(doc.get("waiting_for") or "").startswith(("signal ", "child ")):
        # (a child's result, like an untimed signal, journals nothing while awaited)
        return awaited_signal_since(doc)
    return None


def cancel_pending(r: Any) -> bool:
    """Whether a run record has a cancel asked and not yet delivered: its run has not
    ended (a run's flag stays set once it ended cancelled)."""
    return bool(r.cancel_requested) and not RunStatus(r.status).is_ended


def cancel_unheeded(doc: dict[str, Any]) -> list[str]:
    """The names of the steps still running in a ``running`` run whose cancel is pending
    (``in_flight``, of ``info_dict``'s fields): a cancel interrupts a step at its next
    ``await``, and one that blocks its worker's event loop or catches
    ``CancelledError`` runs on, the run with it. ``tether show`` and the run page say
    so."""
    if doc["status"] != RunStatus.RUNNING.value or not doc["cancel_requested"]:
        return []
    return [op["name"] for op in in_flight(doc)]


def counted(n: int, noun: str, nouns: str | None = None) -> str:
    """``n`` and ``noun`` in the number it takes: "1 run", "2 runs", "0 runs";
    ``nouns`` where the plural is not ``noun`` + "s" ("1 journal entry", "3 journal
    entries"). The purge and erase lines said "purged 1 runs" until 2026-12-06."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"


def blocked_reason(app: App, r: Any) -> str:
    """What a ``blocked`` run (a stored record) waits for, in a line of the run lists
    (``tether runs``' WAITING FOR, the runs page): an operator, and why, from its error
    as ``tether show`` and the run page say it, without the run's id: "operator:
    non-determinism at position 3" (until 2026-12-06 the cell was empty)."""
    try:
        err = app.codec.for_run(r.run_id).decode(r.error, None, SLOT_ERROR)
    except Exception:  # (encrypted with a key this process lacks, or not JSON)
        return "operator (its error cannot be read here: tether show)"
    if not isinstance(err, dict) or not isinstance(err.get("message"), str):
        return "operator"
    position = err.get("position")
    if (str(err.get("type", "")).endswith("NonDeterminismError")
            and isinstance(position, int) and not isinstance(position, bool)
            and position >= 0):
        return f"operator: non-determinism at position {position}"
    message = err["message"].replace(f" in run {r.run_id!r}", "", 1)
    kind = str(err.get("type", "")).rpartition(".")[2]
    return f"operator: {message}" if message.startswith("non-determinism") or not kind \
        else f"operator: {kind}: {message}"


def run_dict(r: Any) -> dict[str, Any]:
    """A run record's summary fields (``tether runs --json``, a document's children)."""
    return {
        "run_id": r.run_id, "workflow": r.workflow, "queue": r.queue, "status": r.status,
        "created_at": r.created_at, "updated_at": r.updated_at, "finished_at": r.finished_at,
        "waiting_for": r.waiting_for, "parent_run_id": r.parent_run_id,
        "cancel_requested": cancel_pending(r),
    }


def lifecycle_dict(info: RunInfo) -> dict[str, Any]:
    """The fields of a run's life: version, fork origin, generations, attempts, erasure."""
    return {"version": info.version, "forked_from": info.forked_from,
            "forked_at": info.forked_at, "generation": info.generation,
            "history": info.history, "attempts": info.attempts, "erased_at": info.erased_at}


def info_dict(info: RunInfo) -> dict[str, Any]:
    """The run's own fields: status, input, outcome, live status, journal, metrics."""
    return {
        "run_id": info.run_id, "workflow": info.workflow, "queue": info.queue,
        "status": info.status.value, "input": info.input, "result": info.result,
        "error": info.error, "created_at": info.created_at, "updated_at": info.updated_at,
        "finished_at": info.finished_at, "waiting_for": info.waiting_for,
        "status_info": info.status_info, "parent_run_id": info.parent_run_id,
        "journal": info.journal, "metrics": info.metrics,
        "cancel_requested": info.cancel_requested,
        "cancel_requested_at": info.cancel_requested_at,
        "cancel_reason": info.cancel_reason, "cancelled_with": info.cancelled_with,
        **lifecycle_dict(info),
    }


async def opened_events(codec: Codec, events: AsyncIterator[str]) -> AsyncIterator[str]:
    """A run's live events as JSON texts: each decoded by ``codec`` (``decode_event``),
    or, where it cannot be, ``unreadable_payload``'s marker in its place."""
    async for text in events:
        yield opened_event(codec, text)


def opened_event(codec: Codec, text: str) -> str:
    """One live event's JSON text (see ``opened_events``)."""
    try:
        opened = codec.decode_event(text)
    except Exception as exc:
        return json.dumps(unreadable_payload(text, exc))
    key_id = None if codec.hook is not None else _sealed_key_id(opened)
    if key_id is not None:  # encrypted, and this process has no hook at all
        return json.dumps({"unreadable_payload": True, "key_id": key_id})
    return opened


def unreadable_payload(text: str, error: Exception) -> Any:
    """What a document shows for a stored payload this process cannot decode:
    ``{"unreadable_payload": true, "key_id": "k1"}`` for one its payload hook cannot
    decrypt (a key it lacks, a payload moved from another run) or one encrypted while
    this process has no hook at all (``key_id`` when the payload names one), instead of
    the ciphertext. Other text that does not decode (not JSON, or no longer of the
    workflow's result type) is shown as it is stored, as before."""
    key_id = getattr(error, "key_id", None) or _sealed_key_id(text)
    if not isinstance(error, PayloadError) and key_id is None:
        return text
    marker: dict[str, Any] = {"unreadable_payload": True}
    if key_id is not None:
        marker["key_id"] = key_id
    return marker


async def run_info(app: App, run_id: str) -> RunInfo:
    """``app.get_run(run_id)`` with every payload it cannot decode as
    ``unreadable_payload``'s marker (the documents' view; ``get_run`` keeps the text).

    Raises:
        RunNotFound: no run has this id.
    """
    return await app._run_info(run_id, unreadable_payload)


async def run_document(app: App, run_id: str, *, children: bool = True) -> dict[str, Any]:
    """The run, its journal and metrics, and its children (newest first, at most 1,000;
    ``children=False``: none read, ``[]``, for the run page, which reads its tree
    itself).

    Raises:
        RunNotFound: no run has this id.
    """
    info = await run_info(app, run_id)
    doc = info_dict(info)
    # Each entry's ``outcome`` (its status, or ``timed_out``) and the failed count the
    # page's head shows: a signal's timeout is not a failure (``timed_out``).
    doc["journal"] = journal_entries(doc["journal"])
    doc["failed_operations"] = sum(entry_failed(e) for e in doc["journal"])
    doc["in_flight"] = in_flight(doc)
    doc["waiting_since"] = waiting_since(doc)
    doc["budget"] = _budget(doc, info)
    kids = await app.store.run_search(parent=run_id, limit=1000) if children else []
    doc["children"] = [{**run_dict(k), "metrics": k.metrics} for k in kids]
    return doc


async def budget_of(app: App, run_id: str) -> dict[str, Any] | None:
    """The run's ``budget`` as its document gives it (``run_document``'s, by the same
    rule), read without what the budget does not need: its earlier generations'
    journals, its children. (The MCP face's budget request read the whole document
    for it, on every ``tasks/get`` of a task waiting on its budget.)

    Raises:
        RunNotFound: no run has this id.
    """
    info = await app._run_info(run_id, unreadable_payload, earlier=False)
    doc = info_dict(info)
    doc["journal"] = journal_entries(doc["journal"])
    doc["in_flight"] = in_flight(doc)
    return _budget(doc, info)


def _budget(doc: dict[str, Any], info: RunInfo) -> dict[str, Any] | None:
    """A run document's ``budget`` (``run_budget``) from its journal entries, metrics,
    live status, input and operations in flight, and what ``info`` read of its limits."""
    return run_budget(doc["journal"], doc["metrics"], doc["status_info"],
                      input=doc["input"], calling=calling_a_model(doc["in_flight"]),
                      entered=info.budget_limits, kept=info.kept_budget_raise,
                      ended=info.status.is_ended)


def in_flight(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The operations of a run in flight now, as its attempt history tells: each step of
    its generation whose newest attempt is ``running`` (its worker holds the run) and
    that its journal does not record as ended, nor as failed at that attempt (an
    attempt's end is written to the history up to 50 ms after the journal's entry):
    ``position``, ``kind`` (``step``: the only operations with attempts), ``name``,
    ``attempt``, ``worker_id``, ``started_at``, in position order.

    An attempt is written to the history within 50 ms of its start (the worker writes
    them in batches, docs/lifecycle.md), so a step younger than that may be missing."""
    journal = {e["position"]: e for e in doc["journal"]}
    newest: dict[int, dict[str, Any]] = {}
    for a in doc["attempts"]:
        if a["generation"] != doc["generation"]:
            continue
        last = newest.get(a["position"])
        if last is None or (a["attempt"], a["started_at"]) >= (last["attempt"],
                                                               last["started_at"]):
            newest[a["position"]] = a
    found = []
    for position, a in sorted(newest.items()):
        entry = journal.get(position)
        if a["status"] != "running" or (entry is not None and (
                entry["status"] != "pending" or entry["attempts"] >= a["attempt"])):
            continue
        found.append({"position": position, "kind": "step", "name": a["name"],
                      "attempt": a["attempt"], "worker_id": a["worker_id"],
                      "started_at": a["started_at"]})
    return found


@dataclass(frozen=True)
class StartReport:
    """How a start by name (``tether start``, ``POST /api/v1/runs``) compares with the
    run it found, for an id that existed: ``created`` False, and whether that run's
    input and queue differ from this start's. Its ``fields()`` are what both add to the
    run's document (one contract: the CLI's ``--json`` and the HTTP answer)."""

    created: bool
    #: The existing run's input is other than this start's; None: it cannot be read
    #: (erased, or encrypted with a payload hook this process lacks).
    input_differs: bool | None
    #: The existing run's queue is other than the one this start would have put it on
    #: (its ``queue``, else the workflow's own).
    queue_differs: bool
    queue: str | None  # the existing run's queue (None for a run created)
    wanted_queue: str | None  # the queue this start names or would use

    def fields(self) -> dict[str, Any]:
        return {"created": self.created, "input_differs": self.input_differs,
                "queue_differs": self.queue_differs}


async def start_report(app: App, handle: RunHandle[Any], values: list[Any],
                       queue: str | None) -> StartReport:
    """``handle`` (from ``app.start(name, *values, run_id=..., queue=queue)``) compared
    with the run it names. (A run of another workflow is not found here: ``app.start``
    refuses that id with ``ConfigError``.)"""
    if handle.created:
        return StartReport(True, False, False, None, None)
    run = await app.store.run_get(handle.run_id)
    if run is None:  # purged since: nothing to compare with
        return StartReport(False, None, False, None, queue)
    wanted = queue
    if wanted is None:
        _, wanted, _ = await app._start_target(handle.workflow or run.workflow)
    differs: bool | None = None
    if run.erased_at is None:
        try:
            stored = app.codec.for_run(run.run_id).decode(run.input, None, SLOT_INPUT)
        except Exception:  # ciphertext without the hook, a key it lacks: not JSON to us
            pass
        else:
            canonical = functools.partial(json.dumps, sort_keys=True, ensure_ascii=False)
            differs = canonical(stored) != canonical({"args": values})
    return StartReport(False, differs, run.queue != wanted, run.queue, wanted)


async def queued_why(app: App, status: str, workflow: str, queue: str,
                     journal: list[Any]) -> tuple[str | None, int | None]:
    """What a queued run that has recorded no operation waits for, beyond a worker (the
    faces' "no operations yet" note: ``tether show``, the run page): the closest
    registered name's hint (maybe ``""``) when no worker of the store, nor ``app``, has
    registered its workflow (a typo'd start), else None; and its queue's limit
    (``tether queue-limit``: 0 is paused), else None. ``(None, None)`` for any other
    run: "waits ... for a worker" read as if none was up, while the queue's workers
    served, none of them with this workflow, or the queue was paused."""
    if status != RunStatus.QUEUED.value or journal:
        return None, None
    known = await app.store.workflow_list()
    unregistered = (did_you_mean(workflow, known)
                    if workflow not in known and workflow not in app.workflows() else None)
    return unregistered, (await app.store.queue_limits()).get(queue)


async def child_waits(app: App, status: str, waiting_for: str | None) -> str | None:
    """What the child run a waiting run waits for is doing (``tether show``'s line under
    *waiting for*, as the run page says what that child waits for): ``queued in queue
    crawl, which no live worker serves``, ``waiting for signal approval``, its status;
    None for a run that waits for no child (or a child purged meanwhile). A tool run
    queued where no worker looks (its worker killed and not restarted, a queue of
    ``workflow_tool(queue=)`` no worker was started with) held its parent as silently as
    a child that was working."""
    kind, _, child_id = (waiting_for or "").partition(" ")
    if status != RunStatus.WAITING.value or kind != "child" or not child_id:
        return None
    child = await app.store.run_get(child_id)
    if child is None:
        return None
    if child.status == RunStatus.QUEUED.value:
        return await queued_in(app, child.queue)
    if child.status == RunStatus.WAITING.value and child.waiting_for:
        return f"waiting for {child.waiting_for}"
    return str(child.status)


async def queued_in(app: App, queue: str) -> str:
    """What a queued run waits for, in the words of ``child_waits``: ``queued in queue
    crawl, which no live worker serves (tether worker MODULE:APP --queue crawl)``, ``...,
    which is paused``, or ``queued in queue crawl`` (a worker will take it)."""
    from tether.store._port import WORKER_STALE

    if (await app.store.queue_limits()).get(queue) == 0:
        return f"queued in queue {queue}, which is paused"
    now = app.clock.now()
    served = {q for w in await app.store.worker_list()
              if now - w.heartbeat_at <= WORKER_STALE for q in w.queues.split(",")}
    if queue not in served:
        return (f"queued in queue {queue}, which no live worker serves (tether worker "
                f"MODULE:APP --queue {shlex.quote(queue)})")
    return f"queued in queue {queue}"


def paused_queue_warning(queue: str) -> str:
    """The warning of a start (``tether start``, ``POST /api/v1/runs``) that queued its
    run on a paused queue (``tether queue-limit Q 0``): it waits, however many workers
    serve the queue, until the pause is lifted."""
    return (f"queue {queue!r} is paused (limit 0): the run waits until "
            f"`tether queue-resume {shlex.quote(queue)}` lifts it")


@dataclass(frozen=True)
class SignalReport:
    """How a signal send (``POST /api/v1/runs/{run_id}/signals/{name}``, ``tether
    signal``) compares with the signal its idempotency key found: ``created`` False, and
    whether that signal's name and data differ from this send's (the key is the run's,
    whatever the name: a send that differs was not stored, not delivered)."""

    created: bool
    #: The stored signal has another name than this send's.
    name_differs: bool
    #: The stored signal's data is other than this send's; None: it cannot be read
    #: (erased, or encrypted with a payload hook this process lacks).
    data_differs: bool | None

    def fields(self) -> dict[str, Any]:
        return {"created": self.created, "name_differs": self.name_differs,
                "data_differs": self.data_differs}


async def signal_report(app: App, run_id: str, name: str, payload: Any,
                        sent: SignalSent) -> SignalReport:
    """``sent`` (from ``app._signal(run_id, name, payload, ...)``) compared with this
    send. Reads the run only for a send that stored nothing (to see an erased one)."""
    if sent.created:
        return SignalReport(True, False, False)
    differs: bool | None = None
    run = await app.store.run_get(run_id)
    if run is not None and run.erased_at is None:
        try:
            stored = app.codec.for_run(run_id).decode(sent.payload, None, SLOT_SIGNAL)
        except Exception:  # ciphertext without the hook, a key it lacks: not JSON to us
            pass
        else:
            canonical = functools.partial(json.dumps, sort_keys=True, ensure_ascii=False)
            differs = canonical(stored) != canonical(payload)
    return SignalReport(False, sent.name != name, differs)


#: How many of a workflow's newest runs whose id holds ``NAME@`` ``schedule_rows`` reads
#: to find a re-created schedule's last run.
LAST_RUN_SEARCH = 50


async def schedule_rows(app: App, found: list[Any] | None = None) -> list[Any]:
    """The store's schedules (or ``found``) as ``tether schedules``, ``GET
    /api/v1/schedules`` and the schedules page show them: a schedule whose row has no
    last run (deleted, then created again by a worker, and not ticked since) has the
    newest run a schedule of its name started (``NAME@TICK``, ``NAME@manual-...``; not a
    child's). Its row was new, so they said "none yet" beside its runs."""
    if found is None:
        found = await app.store.schedule_list()
    return [s if s.last_run_id is not None else replace(
        s, last_run_id=await _newest_run_of(app, s.name, s.workflow)) for s in found]


async def _newest_run_of(app: App, name: str, workflow: str) -> str | None:
    """The newest top-level run of ``workflow`` whose id is ``NAME@...`` (a tick's, a
    manual trigger's), among its ``LAST_RUN_SEARCH`` newest runs whose id holds it."""
    prefix = f"{name}@"
    for r in await app.store.run_search(workflow=workflow, text=prefix,
                                        limit=LAST_RUN_SEARCH):
        if r.run_id.startswith(prefix) and r.parent_run_id is None:
            return str(r.run_id)
    return None


def schedule_dict(s: Any) -> dict[str, Any]:
    """A schedule's row (``tether schedules --json``, ``GET /api/v1/schedules``)."""
    return {"name": s.name, "workflow": s.workflow, "queue": s.queue, "cron": s.cron,
            "timezone": s.timezone, "paused": s.paused, "overlap": s.overlap,
            "catchup": s.catchup, "catchup_max": s.catchup_max,
            "next_tick": None if s.paused else s.next_tick,  # (stale while paused)
            "last_tick": s.last_tick, "last_run_id": s.last_run_id, "version": s.version}


async def queues_document(app: App) -> list[dict[str, Any]]:
    """Every queue the store knows, by name (``tether queues --json``, ``GET
    /api/v1/queues``): those of the workflow registry and of the limits, and any other
    with an unfinished run or a live worker (a queue only a typo of ``tether start
    --queue`` used, say). Each with its limit (None: none; 0: paused), ``paused``,
    ``limit_before_pause`` (what a resume gives back: None for none, and for a queue
    that is not paused), its registered workflows, its unfinished runs (``queued``, of
    which ``due`` claimable now, ``running``, ``waiting``) and its live ``workers``."""
    from tether.store._port import QueueCounts

    store = app.store
    limits = await store.queue_limits()
    pauses = await store.queue_pauses()
    workflows = await store.workflow_list()
    now = app.clock.now()
    counts = await store.queue_counts(now=now)
    workers = live_workers(await store.worker_list(), now)
    names = sorted(set(limits) | set(workflows.values()) | set(counts) | set(workers))
    rows = []
    for q in names:
        c = counts.get(q, QueueCounts())
        # (``paused``: a pause is the limit 0, which read as a limit of none at once)
        rows.append({"queue": q, "limit": limits.get(q), "paused": limits.get(q) == 0,
                     "limit_before_pause": pauses.get(q),
                     "workflows": sorted(w for w, wq in workflows.items() if wq == q),
                     "queued": c.queued, "due": c.due, "running": c.running,
                     "waiting": c.waiting, "workers": workers.get(q, 0)})
    return rows


def live_workers(workers: list[Any], now: float) -> dict[str, int]:
    """How many live workers (a heartbeat within ``WORKER_STALE`` of ``now``, as
    ``tether versions`` counts them) serve each queue."""
    from tether.store._port import WORKER_STALE

    served: dict[str, int] = {}
    for w in workers:
        if now - w.heartbeat_at <= WORKER_STALE:
            for q in dict.fromkeys(w.queues.split(",")):
                if q:
                    served[q] = served.get(q, 0) + 1
    return served


async def workers_document(app: App, versions: dict[str, str], *,
                           include_stale: bool = False) -> list[dict[str, Any]]:
    """The workers registered in the store, sorted by host then start: those with a
    heartbeat within ``WORKER_STALE`` (``live``), and with ``include_stale`` also the
    registrations of workers that stopped heartbeating (killed, or cut off from the
    store) and are not yet forgotten. Each with its code version (None: an app of no
    version, from ``versions``: ``tether._lifecycle.worker_versions``) and
    ``runs_held``, the running runs whose lease it owns now (``tether workers``,
    ``GET /api/v1/workers``)."""
    from tether.store._port import WORKER_STALE

    store = app.store
    workers = await store.worker_list()
    held = await store.worker_runs_held()
    now = app.clock.now()
    rows = [{"worker_id": w.worker_id, "hostname": w.hostname, "pid": w.pid,
             "queues": [q for q in dict.fromkeys(w.queues.split(",")) if q],
             "version": versions.get(w.worker_id), "started_at": w.started_at,
             "heartbeat_at": w.heartbeat_at, "runs_held": held.get(w.worker_id, 0),
             "live": now - w.heartbeat_at <= WORKER_STALE}
            for w in workers]
    rows.sort(key=lambda r: (r["hostname"], r["started_at"], r["worker_id"]))
    return [r for r in rows if include_stale or r["live"]]


def _no_live_worker(version: str) -> str:
    return f"no live worker of version {version!r}"


def version_idle_note(version: str, live: list[str]) -> str:
    """What ``tether show`` and the run page say of a queued or waiting run pinned to a
    ``version`` that no live worker has (``live``: the versions of the live versioned
    workers): only a worker of its version claims it, so it waits while the queue's
    other workers serve, which "waits in queue Q for a worker" did not explain."""
    now = f" (live now: {', '.join(live)})" if live else ""
    return (f"{_no_live_worker(version)}{now}: only one of that version claims "
            f"this run; start one, or move the run to another version with tether "
            f"migrate-runs --from {version} --to VERSION")


def version_unknown_note(version: str, why: str) -> str:
    """What ``tether show`` and the run page say in place of ``version_idle_note`` when
    the live workers could not be read (``why``): that it cannot tell whether one of
    ``version`` runs (it asserted there was none)."""
    return (f"could not tell whether a live worker of version {version!r} runs: reading "
            f"the live workers failed ({why}); only one of that version claims this run")


def pinned_to_wait(r: Any) -> bool:
    """Whether listed run ``r`` is queued or waiting and pinned to a version: only a
    worker of its version claims it next (``versions_idle``)."""
    return bool(r.version) and str(r.status) in ("queued", "waiting")


def versions_idle(found: list[Any], live: Container[str]) -> dict[str, str]:
    """Of the listed runs ``found``, each queued or waiting one pinned to a version no
    live worker has (``live``: the versions of the live workers, ``live_versions``), by
    run id: what ``tether runs``' WAITING FOR and the runs page's *Waiting for* say of
    it ("no live worker of version 'v1'", the start of ``version_idle_note``, which
    ``tether show`` and the run page say whole). The callers read ``live`` once per
    listing, and only for one that holds such a run (``pinned_to_wait``)."""
    return {r.run_id: _no_live_worker(r.version) for r in found
            if pinned_to_wait(r) and r.version not in live}


def versions_unreadable(found: list[Any]) -> dict[str, str]:
    """What ``versions_idle`` says when the read of the live workers failed: of each
    listed run pinned to wait for a worker of its version, that it cannot tell
    ("version 'v1': live workers unreadable", the short way of
    ``version_unknown_note``, which ``tether show`` and the run page say whole). Until
    2026-12-07 ``tether runs`` said nothing then, and the runs page failed."""
    return {r.run_id: f"version {r.version!r}: live workers unreadable" for r in found
            if pinned_to_wait(r)}
