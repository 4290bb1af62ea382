"""The storage port: everything Tether persists goes through ``Store``.

Internal: not for users to implement until it settles. Backends:
``tether.store.sqlite`` (embedded default) and ``tether.store.postgres``.

Every method that writes into a run takes the caller's ``Lease`` and raises
``LeaseLost`` when the run's fencing token moved on: a worker that lost its lease
can never write into a run another worker took over. Methods take ``now`` from the
caller's clock; no query reads the database's own clock.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from tether._types import ENDED_VALUES, ClaimedRun, JournalEntry, Lease, RunRecord
from tether.store._lifecycle import (
    ArchivedJournal,
    AttemptRecord,
    PurgeReport,
    RetryReport,
    ScheduleRecord,
)

#: Set (to True) by a caller that would rather fail than wait while the store's server
#: is known to be down: an HTTP request to ``tether serve``, whose person or client
#: should get its 503 at once. A store that has no idle connection and whose last
#: attempt to connect failed then raises ``StoreUnavailable`` without waiting for its
#: pool's timeout (PostgreSQL; the embedded SQLite store has no server). A worker's
#: own calls leave it unset and wait: a server that restarts within the pool's timeout
#: is ridden through. Tasks inherit it from the context that creates them, so a task
#: shared by many callers sets it back to False.
FAIL_FAST: ContextVar[bool] = ContextVar("tether_store_fail_fast", default=False)

#: Set (to seconds) by a caller whose store operations should each wait less for the
#: server's answer than the store's own deadline (PostgreSQL: ``query_timeout``, 30 s
#: by default): an HTTP request to ``tether serve`` (``--request-timeout``, 5 s), whose
#: person or client should get its 503 soon when the server hangs, where a worker's
#: operation waits out a slow moment. Each operation gets the shorter of the two (long
#: ones ten times it), a write through a shared batch the shortest of its callers'.
#: Tasks inherit it as they do ``FAIL_FAST``. The embedded SQLite store has no server to
#: wait for, but another process's write lock: an operation waits for it this long
#: (not the store's ``busy_timeout``), then fails alone, nothing of it written.
REQUEST_TIMEOUT: ContextVar[float | None] = ContextVar("tether_store_request_timeout",
                                                      default=None)


def serve_every_caller() -> None:
    """Forget the caller's ``FAIL_FAST`` and ``REQUEST_TIMEOUT`` in the current context:
    for a task that serves every caller (a writer, a reader of results), which inherits
    the context of whichever caller started it."""
    FAIL_FAST.set(False)
    REQUEST_TIMEOUT.set(None)


def every_caller_context() -> contextvars.Context:
    """A copy of the current context with ``FAIL_FAST`` and ``REQUEST_TIMEOUT`` at their
    defaults: the one to create a store's long-lived task in (``create_task(...,
    context=)``), which the first caller (in ``tether serve``, a request) would otherwise
    give its own for the life of the process, and with it the callbacks that the task
    schedules (a listener's wake-ups run in its context)."""
    ctx = contextvars.copy_context()
    ctx.run(serve_every_caller)
    return ctx


@dataclass(frozen=True, slots=True)
class StoreCapabilities:
    """What a backend can do beyond the common contract."""

    #: Other processes can wake this one when work arrives (LISTEN/NOTIFY, sockets).
    notifications: bool = False
    #: Several hosts may share the store (PostgreSQL yes, SQLite no).
    multi_host: bool = False
    #: Writes issued one after the other from one event loop commit in that order, even
    #: when the caller does not wait for one before issuing the next (SQLite: one
    #: writer, fed in order). Without it, a caller that needs the order waits.
    ordered_writes: bool = False
    #: ``attempt_list`` reads a step's first attempt that succeeded from its journal
    #: entry and the lease's worker, so the worker need not write that attempt's row
    #: (``AttemptWriter.settled``; SQLite, migration 0012).
    attempts_from_journal: bool = False


@dataclass(slots=True)
class HeartbeatResult:
    """What a worker learns when it renews its leases."""

    #: Runs this worker still holds.
    owned: set[str] = field(default_factory=set)
    #: Of those, runs a user asked to cancel.
    cancel_requested: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class SignalSent:
    """What ``signal_send`` did."""

    signal_id: int
    #: False when a signal with the same idempotency key was already there.
    created: bool
    #: With ``created`` False, the name and (encoded) payload of the signal stored
    #: under the key, which may be another signal than this send's: the key is the
    #: run's, whatever the name. (None with ``created`` True.)
    name: str | None = None
    payload: str | None = None


@dataclass(frozen=True, slots=True)
class Wait:
    """What a released run waits for, so that its waker can find it.

    ``available_at`` is the deadline (timer, timeout, retry); ``signal`` and ``child``
    name an event that makes the run claimable earlier.
    """

    available_at: float | None
    description: str
    #: A signal's name; several (a run whose branches wait for different things) in the
    #: list form of ``wait_names``.
    signal: str | None = None
    #: A run's id (this run's child); several in the list form of ``wait_names``.
    child: str | None = None

    @property
    def listed(self) -> bool:
        """Whether it waits for several signals or children (the list form of
        ``wait_names``, which the stores match with statements of their own)."""
        return is_wait_list(self.signal) or is_wait_list(self.child)


#: ``Wait.description`` of a run released on the signal ``approval`` alone: what
#: ``tether.ai``'s approvals wait for, and what the stores' partial index of the runs
#: awaiting an approval (``run_list_awaiting_approval``) selects, as a literal.
APPROVAL_WAITING_FOR = "signal approval"


#: Separates the names of a ``Wait`` for several signals or children (``wait_names``):
#: a control character, which no signal name or run id holds (``check_name``).
WAIT_LIST_SEP = "\x1f"


def wait_names(names: Iterable[str]) -> str | None:
    """The ``signal`` or ``child`` of a ``Wait`` for any of ``names``: ``None`` for none,
    the name itself for one (as a run of one task has always stored it, so the stores'
    indexed lookups of one name are unchanged), and for several the list form
    ``"\x1fa\x1fb\x1f"``: it starts with the separator, so it never equals a name,
    and holds ``SEP name SEP`` for each of its names (the stores' SQL tests that)."""
    unique = list(dict.fromkeys(names))
    if not unique:
        return None
    if len(unique) == 1:
        return unique[0]
    return WAIT_LIST_SEP + WAIT_LIST_SEP.join(unique) + WAIT_LIST_SEP


def is_wait_list(value: str | None) -> bool:
    """Whether a ``Wait``'s ``signal`` or ``child`` is in the list form (several)."""
    return value is not None and value.startswith(WAIT_LIST_SEP)


def wait_list(value: str | None) -> list[str]:
    """The names a ``Wait``'s ``signal`` or ``child`` stands for (``wait_names``)."""
    if value is None:
        return []
    if value.startswith(WAIT_LIST_SEP):
        return [name for name in value.split(WAIT_LIST_SEP) if name]
    return [value]


def merge_waits(waits: Iterable[Wait]) -> Wait:
    """One ``Wait`` for a run whose branches wait for several things at once: claimable
    at the earliest deadline, or earlier when any of their signals or children comes
    (a replay then answers whichever branch it was, and releases the run again for the
    others)."""
    waits = list(waits)
    deadlines = [w.available_at for w in waits if w.available_at is not None]
    return Wait(
        min(deadlines) if deadlines else None,
        " or ".join(dict.fromkeys(part for w in waits
                                  for part in w.description.split(" or "))),
        signal=wait_names(n for w in waits for n in wait_list(w.signal)),
        child=wait_names(n for w in waits for n in wait_list(w.child)),
    )


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker process, for detecting owners that are provably dead."""

    worker_id: str
    hostname: str
    pid: int
    pid_start: str
    queues: str
    started_at: float
    heartbeat_at: float


# -- the control plane's reads (tether serve; migration 0004) ----------------------------

#: A worker that has not heartbeated for this many seconds is not counted as live.
WORKER_STALE = 60.0

#: Upper bounds (seconds) of the step latency histogram ``store_stats`` reports.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Upper bounds (seconds) of the histogram of ended runs' durations ``store_stats``
#: reports (from creation to end): a second to a day, as many as ``STEP_BUCKETS``.
RUN_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
               21600.0, 86400.0)


@dataclass(frozen=True, slots=True)
class RunEvent:
    """A stored event of a run, for Server-Sent Events.

    ``event_id`` is an opaque cursor: reading after it returns every later event once,
    from any process on the same store. ``kind`` is ``op`` (a journal entry finished,
    failed or was retried; ``data`` is JSON of position, kind, name, status, attempts),
    ``status`` (``data`` is JSON of the new status and what it waits for), ``live`` (the
    live status changed; read it from the run) or ``chunk`` (``data`` is what
    ``run_publish`` sent)."""

    event_id: str
    kind: str
    data: str | None


@dataclass(frozen=True, slots=True)
class ChildrenFigures:
    """Child runs of one status (``RunChildren.rest``): how many, and the sums of their
    own cost (``cost.usd``) and tokens (input and output)."""

    count: int
    cost: float = 0.0
    tokens: float = 0.0


@dataclass(frozen=True, slots=True)
class RunChildren:
    """The children of one run (``ServeQueries.run_children_many``): its newest ``limit``
    (``runs``, in ``run_search``'s order: newest first) and the others counted by status
    with the sums of their own cost and tokens (``rest``: the statuses with none left
    out; empty when there are no others)."""

    runs: list[RunRecord]
    rest: dict[str, ChildrenFigures]


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Numbers about the whole store, for ``GET /metrics``."""

    runs_by_status: dict[str, int]
    #: queue -> (queued runs, created_at of the oldest queued run)
    queues: dict[str, tuple[int, float]]
    step_count: int
    step_seconds: float
    #: how many finished steps took at most each of ``STEP_BUCKETS``
    step_buckets: tuple[int, ...]
    #: totals of the runs' metrics (``tokens.input``, ``cost.usd``, ``saved.*``, ...)
    llm: dict[str, float]
    workers: int
    #: (workflow, status) -> runs; their sums per status are ``runs_by_status``
    runs_by_workflow: dict[tuple[str, str], int] = field(default_factory=dict)
    #: step name -> its finished steps' (count, seconds, one count per ``STEP_BUCKETS``):
    #: their sums are ``step_count``, ``step_seconds`` and ``step_buckets``
    step_names: dict[str, tuple[float, ...]] = field(default_factory=dict)
    #: (workflow, ended status) -> runs that ended so, ever: those the store keeps plus
    #: those purged or retried since (``tether_metric_totals``); it never goes down
    run_ends: dict[tuple[str, str], int] = field(default_factory=dict)
    #: workflow -> its ended runs' (count, seconds from creation to end, one count per
    #: ``RUN_BUCKETS``), ever, as ``run_ends``
    run_durations: dict[str, tuple[float, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LiveStats:
    """The figures of ``GET /metrics`` that an index answers whatever the store's size,
    read at each scrape (``store_live_stats``): per queue, the queued runs and the
    time the oldest became claimable; the workers that heartbeated in the last minute."""

    queues: dict[str, tuple[int, float]]
    workers: int


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """The unfinished runs of one queue (``ServeQueries.queue_counts``): ``queued``
    (of which ``due`` are claimable now, the rest delayed starts or backoffs not yet
    due), ``running`` (claimed by a worker) and ``waiting`` (released: a timer, a
    signal, a child)."""

    queued: int = 0
    due: int = 0
    running: int = 0
    waiting: int = 0


def queue_counts_of(rows: Iterable[Sequence[object]]) -> dict[str, QueueCounts]:
    """``queue_counts`` of the stores' rows: (queue, status, runs, due)."""
    out: dict[str, dict[str, int]] = {}
    for queue, status, n, due in rows:
        counts = out.setdefault(str(queue), {})
        counts[str(status)] = int(str(n))
        if status == "queued":
            counts["due"] = int(str(due or 0))
    return {q: QueueCounts(queued=c.get("queued", 0), due=c.get("due", 0),
                           running=c.get("running", 0), waiting=c.get("waiting", 0))
            for q, c in out.items()}


#: The run metrics ``StoreStats.llm`` sums, in the order the stores' queries give them.
LLM_KEYS = ("tokens.input", "tokens.output", "cost.usd", "saved.tokens.input",
            "saved.tokens.output", "saved.cost.usd", "llm.calls")


def _step_keys() -> list[str]:
    return ["step.count", "step.seconds", *(f"step.le.{b:g}" for b in STEP_BUCKETS)]


#: In the keys of ``tether_metric_totals``, what follows it is a step name: the totals
#: of that step name's purged steps (``step.count@charge``), beside those of all steps.
STEP_NAME_MARK = "@"


def metric_totals_of(durations: Iterable[tuple[str, float]], metrics: Iterable[str | None]
                     ) -> dict[str, float]:
    """What runs about to be purged count for in the cumulative figures of /metrics,
    keyed as the stores keep them (``tether_metric_totals``): their finished steps'
    count, seconds and histogram buckets, of all and per step name (``durations``: each
    step's name and seconds), and the LLM totals of their metrics (``metrics``: each
    run's metrics JSON).

    A duration is a difference of wall-clock times: one that the clock stepped back
    across is negative, and counts as 0 (as the live figures count it, ``stats_steps``),
    or a purge would take seconds out of the histogram's sum."""
    totals = dict.fromkeys([*_step_keys(), *LLM_KEYS], 0.0)
    keys = _step_keys()
    for name, d in durations:
        d = max(d, 0.0)
        for suffix in ("", f"{STEP_NAME_MARK}{name}"):
            totals[keys[0] + suffix] = totals.get(keys[0] + suffix, 0.0) + 1
            totals[keys[1] + suffix] = totals.get(keys[1] + suffix, 0.0) + d
            for key, b in zip(keys[2:], STEP_BUCKETS, strict=True):
                if d <= b:
                    totals[key + suffix] = totals.get(key + suffix, 0.0) + 1
    for text in metrics:
        values = json.loads(text) if text else {}
        for key in LLM_KEYS:
            value = values.get(key) if isinstance(values, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                totals[key] += value
    return {k: v for k, v in totals.items() if v}


def _run_keys() -> list[str]:
    return ["run.count", "run.seconds", *(f"run.le.{b:g}" for b in RUN_BUCKETS)]


#: In the keys of ``tether_metric_totals``, the runs that ended with a status, before
#: ``STEP_NAME_MARK`` and their workflow: ``run.ended.failed@charge``.
RUN_ENDED = "run.ended."


def run_end_totals_of(runs: Iterable[tuple[str, str, float]]) -> dict[str, float]:
    """What ended runs about to leave the store's ended runs (purged, or queued again
    by ``tether retry``) count for in the cumulative figures of /metrics, keyed as the
    stores keep them (``tether_metric_totals``): per workflow, how many ended with each
    status (``run.ended.failed@NAME``) and the histogram of their durations
    (``run.count@NAME``, ``run.seconds@NAME``, ``run.le.60@NAME``...). ``runs``: each
    run's workflow, status and seconds from creation to end (a negative one, the clock
    set back, counts as 0, as ``stats_run_durations`` counts it); a run of another
    status (not ended) counts for nothing."""
    totals: dict[str, float] = {}
    keys = _run_keys()

    def add(key: str, value: float) -> None:
        totals[key] = totals.get(key, 0.0) + value

    for workflow, status, d in runs:
        if status not in ENDED_VALUES:
            continue
        d, at = max(d, 0.0), f"{STEP_NAME_MARK}{workflow}"
        add(f"{RUN_ENDED}{status}{at}", 1)
        add(keys[0] + at, 1)
        add(keys[1] + at, d)
        for key, b in zip(keys[2:], RUN_BUCKETS, strict=True):
            if d <= b:
                add(key + at, 1)
    return {k: v for k, v in totals.items() if v}


def run_durations_of(rows: Iterable[Sequence[object]]) -> dict[str, list[float]]:
    """The histogram per workflow of the stores' ``stats_run_durations`` rows (a
    workflow, the index of the first of ``RUN_BUCKETS`` its runs took at most, or
    ``len(RUN_BUCKETS)`` for more, how many, their seconds): count, seconds, one
    cumulative count per bound."""
    out: dict[str, list[float]] = {}
    for workflow, bucket, n, seconds in rows:
        figures = out.setdefault(str(workflow), [0.0] * (len(RUN_BUCKETS) + 2))
        count, at = float(str(n)), int(str(bucket))
        figures[0] += count
        figures[1] += float(str(seconds))
        for i in range(at, len(RUN_BUCKETS)):
            figures[2 + i] += count
    return out


def _run_figures(by_workflow: Mapping[tuple[str, str], int],
                 durations: Iterable[Sequence[object]], totals: Mapping[str, float]
                 ) -> tuple[dict[tuple[str, str], int], dict[str, tuple[float, ...]]]:
    """``StoreStats.run_ends`` and ``run_durations`` of the live runs (``by_workflow``;
    ``durations``: ``stats_run_durations``' rows) plus what purges and retries took out
    (``totals``)."""
    ends: dict[tuple[str, str], int] = {
        (w, st): n for (w, st), n in by_workflow.items() if st in ENDED_VALUES}
    keys = _run_keys()
    live = run_durations_of(durations)
    for key, value in totals.items():
        if key.startswith(RUN_ENDED) and STEP_NAME_MARK in key:
            status, workflow = key[len(RUN_ENDED):].split(STEP_NAME_MARK, 1)
            ends[(workflow, status)] = ends.get((workflow, status), 0) + int(value)
        elif key.startswith(keys[0] + STEP_NAME_MARK):
            live.setdefault(key[len(keys[0]) + 1:], [0.0] * len(keys))
    figures = {w: tuple(v + totals.get(k + STEP_NAME_MARK + w, 0.0)
                        for k, v in zip(keys, values, strict=True))
               for w, values in live.items()}
    return ends, figures


def stored_event_kinds(kind: str) -> list[str]:
    """The values of the events' ``kind`` column that read as ``kind``: the compact rows
    of ops and statuses (``o``, ``s``: PostgreSQL migration 0007, SQLite 0011) and the
    rows stored before them under the full names."""
    return {"op": ["o", "op"], "status": ["s", "status"]}.get(kind, [kind])


def stats_with_totals(by_workflow: Iterable[Sequence[object]],
                      queues: dict[str, tuple[int, float]],
                      steps: Iterable[Sequence[object]], llm: Sequence[float], workers: int,
                      totals: Mapping[str, float],
                      run_durations: Iterable[Sequence[object]] = ()) -> StoreStats:
    """``StoreStats`` of the live rows' figures (``by_workflow``: rows of workflow,
    status, runs; ``steps``: rows of a step name, count, seconds, one count per bucket;
    ``llm``: one sum per ``LLM_KEYS``; ``run_durations``: ``stats_run_durations``' rows,
    ``run_durations_of``) plus what purges and retries took out (``totals``), so that
    the counters of /metrics never go down."""
    keys = _step_keys()
    runs_by_workflow: dict[tuple[str, str], int] = {}
    by_status: dict[str, int] = {}
    for workflow, status, n in by_workflow:
        runs_by_workflow[(str(workflow), str(status))] = int(str(n))
        by_status[str(status)] = by_status.get(str(status), 0) + int(str(n))
    live: dict[str, list[float]] = {}
    for row in steps:
        live[str(row[0])] = [float(str(v)) for v in row[1:]]
    for key in totals:  # (step names whose steps were all purged)
        if key.startswith(keys[0] + STEP_NAME_MARK):
            live.setdefault(key[len(keys[0]) + 1:], [0.0] * len(keys))
    names = {name: tuple(v + totals.get(k + STEP_NAME_MARK + name, 0.0)
                         for k, v in zip(keys, values, strict=True))
             for name, values in live.items()}
    step = [sum(values[i] for values in live.values()) + totals.get(k, 0.0)
            for i, k in enumerate(keys)]
    run_ends, durations = _run_figures(runs_by_workflow, run_durations, totals)
    return StoreStats(
        runs_by_status=by_status, queues=queues, step_count=int(step[0]),
        step_seconds=step[1], step_buckets=tuple(int(n) for n in step[2:]),
        llm={k: float(v) + totals.get(k, 0.0) for k, v in zip(LLM_KEYS, llm, strict=True)},
        workers=workers, runs_by_workflow=runs_by_workflow, step_names=names,
        run_ends=run_ends, run_durations=durations)


class ServeQueries(Protocol):
    """What ``tether serve`` reads beyond the engine's contract (both backends)."""

    async def run_search(self, *, status: str | None = None, workflow: str | None = None,
                         queue: str | None = None, parent: str | None = None,
                         text: str | None = None, limit: int = 50,
                         before: tuple[float, str] | None = None) -> list[RunRecord]:
        """Runs matching every given filter (``text``: a substring of the run id), newest
        first (by ``created_at``, then ``run_id``), strictly after the ``before`` cursor
        (the last run's (created_at, run_id) of the previous page). Each record has
        ``run_get``'s fields, a fork's origin (``forked_from``, ``forked_at``) among them."""

    async def run_children_many(self, *, parents: Sequence[str],
                                limit: int) -> dict[str, RunChildren]:
        """The children of each run of ``parents``, in one query whatever their number:
        for each, its newest ``limit`` children (``run_search(parent=..., limit=limit)``
        gives the same runs) and the others counted by status with their own cost and
        tokens (``tokens.input`` + ``tokens.output``), counted in the store: those runs
        are never read out. Every parent asked for
        is a key, a run with no children (or none at all) with no runs and no rest. A
        run page's tree asks once per level for the children of all the runs it draws
        there (it asked once per run: up to 100 round trips a redraw)."""

    async def run_list_awaiting_approval(self, *, limit: int = 1000,
                                         after: tuple[float, str] | None = None
                                         ) -> list[RunRecord]:
        """The ``waiting`` runs whose wait is the approval signal alone (``waiting_for``
        is ``APPROVAL_WAITING_FOR``: ``tether.ai``'s ``request_approval``), oldest first
        (by ``created_at``, then ``run_id``), strictly after the ``after`` cursor (the
        last run's (created_at, run_id) of the previous page). A partial index holds
        exactly these runs: a page costs the same however many other runs wait."""

    async def signals_pending_many(self, *, run_ids: Sequence[str],
                                   name: str) -> dict[str, list[str | None]]:
        """The signals ``name`` sent to each run of ``run_ids`` and not yet consumed by
        a wait (``signal_pending``'s, for many runs): their encoded payloads, oldest
        first, in one query whatever the number of runs, through the index of pending
        signals. A run with none (or no such run) is no key. The approval listings ask
        it once for the runs of a page whose approval may have been answered: the
        answer waits there until a worker takes the run up."""

    async def run_count_awaiting_approval(self, *, now: float, limit: int,
                                          upto: tuple[float, str] | None = None
                                          ) -> tuple[int, int]:
        """How many of the runs ``run_list_awaiting_approval`` lists a person may
        answer at ``now``: not claimable (``available_at`` unset or later), or
        claimable with no ``approval`` signal pending for it (its watch's deadline
        passed, unanswered; one pending, it was answered and awaits a worker), counting
        the oldest ``limit`` at most; and how many of those are at or before the cursor
        ``upto`` (a run's (created_at, run_id); 0 without). One query through the same
        partial index, bounded by ``limit``: the approvals inbox's "12 waiting",
        "showing 26-50 of 62"."""

    async def run_events_read(self, *, run_id: str, after: str | None,
                              limit: int = 500) -> list[RunEvent]:
        """The run's stored events after the cursor ``after`` (None: from the start),
        oldest first. Raises: ValueError for a cursor this backend never made."""

    async def run_event_exists(self, *, run_id: str, event_id: str) -> bool:
        """Whether ``event_id`` is the id of one of the run's stored events: a cursor
        of this run for ``run_events_read``, not one of another run (which that takes
        for a point of this run's events: a wrong one) nor one never made. One index
        lookup. Raises: ValueError for an id this backend never makes."""

    async def run_events_latest(self, *, run_id: str, limit: int = 500,
                                kind: str | None = None) -> list[RunEvent]:
        """The run's newest ``limit`` stored events (of ``kind`` alone when given), oldest
        first: the last ones ``run_events_read`` would return, in its order, with the
        same ids. It reads the events index backwards, so its cost does not grow with the
        run's events (with ``kind``, it skips the newer events of other kinds)."""

    async def store_stats(self, *, now: float) -> StoreStats:
        """Runs by status, queue depth and age, step latencies, LLM totals, and the
        workers that heartbeated within the last minute before ``now``. The cumulative
        figures (steps, LLM totals, and what purges added to them) are read in one
        snapshot, so that a purge committing meanwhile is counted once. It scans every
        run and finished step the store keeps: seconds on a store of millions of steps.
        """

    async def store_live_stats(self, *, now: float) -> LiveStats:
        """``store_stats``' queue depths and ages and its live workers alone: index
        lookups, cheap on any store (what ``tether serve`` reads at each scrape)."""

    async def queue_counts(self, *, now: float) -> dict[str, QueueCounts]:
        """Per queue, its ``queued`` (``due`` at ``now`` among them), ``running`` and
        ``waiting`` runs; a queue with none of them is absent (``tether queues``). One
        grouped count through the status indexes: it reads every unfinished run (not
        the ended ones), an operator's read, not a hot path."""


class Store(ServeQueries, Protocol):
    """Everything Tether persists."""

    url: str
    capabilities: StoreCapabilities

    @property
    def outages(self) -> int:
        """How many times this store found its server gone since it was made (a
        connection lost, an attempt refused); 0 for a store with no server. A worker
        that sees it grow met an outage even when none of its own calls failed (on
        PostgreSQL they wait for the server to come back)."""

    async def open(self) -> None:
        """Connect and migrate. Raises: StoreUnavailable, ConfigError."""

    async def close(self) -> None:
        """Finish pending writes and disconnect."""

    async def run_insert(self, *, run: RunRecord) -> tuple[RunRecord, bool]:
        """Insert ``run`` unless one with its id exists; return (the stored run, created?).
        A run with ``parent_run_id`` is a child (``parent_position``, ``on_parent_cancel``)."""

    async def run_get(self, run_id: str) -> RunRecord | None:
        """The run, or None."""

    async def run_get_many(self, run_ids: list[str], *,
                           settled_only: bool = False) -> list[RunRecord]:
        """The runs of these ids that exist (with ``settled_only``: only those ended or
        blocked), in no particular order: one read for many result waiters."""

    async def run_insert_many(self, *, runs: list[RunRecord]) -> list[tuple[RunRecord, bool]]:
        """``run_insert`` for each run, in one transaction; results in the given order.
        An id given twice is inserted once (the second is reported not created)."""

    async def run_list(self, *, status: str | None = None, limit: int = 100) -> list[RunRecord]:
        """Runs, newest first."""

    async def run_list_unsettled(self, *, limit: int = 100) -> list[RunRecord]:
        """The ``queued``, ``running`` and ``waiting`` runs, newest first, read in one
        snapshot (one statement): a run claimed, released or woken meanwhile is in the
        list once, under one of its statuses. Three ``run_list`` calls, one a status,
        missed a run claimed between the ``running`` read and the ``queued`` one
        (``tether.testing.TestEnv`` reads what still moves so). Index lookups: the
        newest of each status."""

    async def journal_read(self, run_id: str) -> list[JournalEntry]:
        """The run's journal in position order."""

    async def run_claim(self, *, worker_id: str, queues: list[str], limit: int, now: float,
                        lease_seconds: float, workflows: list[str] | None = None,
                        version: str | None = None,
                        exclude: Collection[str] = (),
                        takeover_before: float | None = None) -> list[ClaimedRun]:
        """Claim up to ``limit`` runnable runs under a new lease (fencing token + 1),
        each with its journal loaded in the same transaction. A queue with a concurrency
        limit (``queue_limit_set``) gives at most its limit less the runs held under
        leases that have not expired, counted atomically across workers. Only runs of
        ``workflows`` (None: any) and of code ``version`` or of no version are taken,
        and none whose id is in ``exclude`` (runs this worker handed back for a while,
        e.g. because it cannot decrypt them: other workers still take them). With
        ``takeover_before``, a ``running`` run whose lease expired after that time is
        not taken over (a worker back from a store outage: the lease may have expired
        only because its owner could not write either, and the owner may renew it)."""

    async def journal_append(self, *, lease: Lease, entry: JournalEntry,
                             metrics: str | None = None, now: float = 0.0,
                             blobs: Mapping[str, str] | None = None) -> None:
        """Record one operation's outcome (a pending entry may be overwritten, a final
        one never). With ``metrics``, also replace the run's metrics as
        ``run_metrics_set(metrics=, now=)`` would, in the same transaction: a durable
        LLM call's cost and its entry are one commit. The metrics are written even when
        the entry is refused because a final one holds its position (the call was paid
        all the same). With ``blobs``, also store those texts, referenced by the run, as
        ``blob_put(blobs=, run_id=lease.run_id)`` would, in the same transaction and
        before the entry: an entry whose arguments name texts (a durable LLM call's
        prompt) commits with them, and never without them. Texts may stay stored when
        the entry is refused (they are content-addressed: storing one is harmless).
        Idempotent for its own entry: an append made again after its first attempt
        committed unbeknown to the caller (the connection cut before the answer) finds
        the same final entry, written under the same fencing token, and succeeds
        without changing it (``_sql.same_entry``). Raises: LeaseLost if
        ``lease`` is stale (neither entry nor metrics written); StoreError if another
        final entry holds the position."""

    async def run_finish(self, *, lease: Lease, status: str, result: str | None,
                         error: str | None, now: float) -> str:
        """End the run (completed, failed, cancelled, blocked) and wake any run waiting
        for it as a child; returns the status it ended with. A run ended ``blocked``
        whose cancel is pending ends ``cancelled`` instead (``error`` kept), its
        children cancelled as ``run_children_cancel`` does, in the same transaction: a
        cancel committed after its worker last heard of cancels has no code left that
        could see it, as ``run_cancel`` ends a blocked run. Raises: LeaseLost."""

    async def run_release(self, *, lease: Lease, wait: Wait, now: float) -> None:
        """Give the run up to wait: no owner, claimable again at ``wait.available_at``
        or when woken. If the awaited event already happened (a pending signal of that
        name, a finished child) or a cancel is pending, it is claimable at once, so no
        wake-up is lost between the check and the release. Raises: LeaseLost."""

    async def run_resume(self, *, run_id: str, now: float) -> RunRecord:
        """Make a blocked run claimable again (after an operator fixed the code).
        Raises: RunNotFound, TetherError if the run is not blocked."""

    async def run_set_status_info(self, *, lease: Lease, info: str | None, now: float) -> None:
        """Publish the run's live status (JSON text). Raises: LeaseLost."""

    async def signal_send(self, *, run_id: str, name: str, payload: str | None,
                          idempotency_key: str | None, now: float) -> SignalSent:
        """Store a signal for a run and wake the run if it waits for it. A second signal
        with the same idempotency key is not stored again.
        Raises: RunNotFound, SignalError if the run has ended."""

    async def signal_find(self, *, run_id: str, idempotency_key: str) -> SignalSent | None:
        """The signal sent to the run under ``idempotency_key``, taken or not
        (``created`` False, its name and encoded payload), or None if the run has none
        (or no such run). A read: for a face that tells a resend, made after the wait it
        answered was over, whether it was the send stored (MCP ``tasks/update``)."""

    async def signal_pending(self, *, run_id: str, name: str) -> bool:
        """Whether a signal ``name`` sent to the run waits, not yet consumed by a wait
        (``signal_take``). A read: it consumes and journals nothing."""

    async def signal_take(self, *, lease: Lease, name: str, position: int,
                          deadline: float | None, now: float,
                          timeout_error: str, sent_by: float | None = None,
                          clock_now: float | None = None) -> JournalEntry | None:
        """Consume the oldest pending signal ``name`` into the journal at ``position``
        (an ``ok`` signal entry with its payload, completed at ``now``); else, if
        ``deadline`` has passed, record ``timeout_error`` there (an ``error`` entry
        whose ``next_attempt_at`` is ``deadline``); else return None. The deadline
        has passed once ``clock_now`` (default ``now``) is at or past it: ``now`` is
        a stamp, past the clock where the clock is behind the journal's times
        (``RunContext.lift``), ``clock_now`` the clock's time. Once it has, only a
        signal sent at or before ``sent_by`` (default ``deadline``; its ``now`` at
        ``signal_send``, on the same clock) is taken: a signal sent after the deadline
        came after the timeout, whenever a worker gets to the wait, so the entry is the
        timeout and the signal stays pending for a later wait. ``sent_by`` is
        ``math.inf`` at a wait's first take (every signal there was sent before the
        wait, whatever its sender's clock said). One transaction, so a signal racing a
        timeout has exactly one winner.
        Raises: LeaseLost."""

    async def child_start(self, *, lease: Lease, child: RunRecord,
                          entry: JournalEntry) -> RunRecord:
        """Insert the child run (idempotent on its id) and journal ``entry`` (whose result
        names it) in one transaction. Returns the stored child. Raises: LeaseLost."""

    async def run_children_cancel(self, *, parent_run_id: str, now: float) -> list[str]:
        """Ask the unfinished children of a run whose policy is ``cancel`` to cancel; one
        whose code cannot observe it, blocked or queued and never started (no journal
        entry), ends ``cancelled`` at once (and wakes a run waiting for it), as
        ``run_cancel`` ends such a run, and its own children are cancelled in turn.
        A child asked here for the first time records the parent's id
        (``cancelled_with``) and its reason (``cancel_reason``).
        Returns the runs asked or ended, sorted."""

    async def subscribe(self, callback: Callable[[], None], *,
                        on_cancel: Callable[[str], None] | None = None,
                        ) -> Callable[[], Awaitable[None]]:
        """Call ``callback`` (on the caller's event loop) whenever another process may
        have made work available or ended a run (new run, signal, cancel, finish), and
        ``on_cancel(run_id)`` when a cancel was asked of a ``running`` run (so that the
        worker holding it interrupts it at once instead of at its next heartbeat).
        Returns an async unsubscribe function. Backends without notifications never
        call them; callers also poll slowly (and heartbeats report cancels)."""

    async def run_cancel(self, *, run_id: str, now: float,
                         reason: str | None = None) -> RunRecord:
        """Ask a run to cancel; a released or queued run becomes claimable at once. A
        run that ends at once (blocked, or queued and never started) has its children
        cancelled as ``run_children_cancel`` does. ``reason`` (why; None: none given) is
        kept with the request's time: a repeat keeps the first request's (and its
        ``cancelled_with``, the parent of a cascade that asked first), and its children
        get it with their parent's id. Returns the run's record after the request, as
        ``run_get`` reads it (its ``cancel_reason`` and ``cancelled_with`` the ones kept).
        Raises: RunNotFound."""

    async def lease_heartbeat(self, *, worker_id: str, now: float,
                              lease_seconds: float) -> HeartbeatResult:
        """Extend every lease ``worker_id`` holds and report which it still holds."""

    async def lease_expire_owner(self, *, worker_id: str, now: float) -> list[str]:
        """Make a dead worker's runs claimable at once, and forget the worker; return
        their ids, sorted (a count until 2026-12-06: the worker that takes one over
        now says its owner was found dead, not that its lease expired)."""

    async def worker_register(self, *, info: WorkerInfo) -> None:
        """Record a live worker."""

    async def worker_unregister(self, *, worker_id: str, now: float) -> None:
        """Forget a worker, handing its runs back to the queue at once."""

    async def worker_list(self) -> list[WorkerInfo]:
        """Known workers."""

    async def worker_runs_held(self) -> dict[str, int]:
        """For each worker that holds runs now (owns the lease of a running run), how
        many (a scan of the owner index: the runs no worker holds are not read)."""

    async def workflow_register(self, *, workflows: dict[str, str], now: float) -> None:
        """Record workflow names and their queues (workers do this at start), so that
        runs can be started by name from a process without the code (the CLI)."""

    async def workflow_list(self) -> dict[str, str]:
        """Registered workflow names and their queues."""

    async def next_available_at(self, *, queues: list[str], workflows: list[str] | None = None,
                                version: str | None = None,
                                exclude: Collection[str] = ()) -> float | None:
        """The earliest time a run on ``queues`` (filtered as ``run_claim`` filters,
        ``exclude`` included) becomes claimable, or None."""

    async def run_activity(self, *, queues: list[str], now: float
                           ) -> tuple[bool, float | None]:
        """(whether a run is ``running``, on any queue, or a ``queued`` or ``waiting`` run
        on ``queues`` is due at ``now``; the earliest ``available_at`` after ``now`` of the
        ``queued`` and ``waiting`` runs on ``queues``, or None): what
        ``tether.testing.TestEnv`` polls to tell that every run waits and when the next
        one wakes. Index lookups (the claim index's first entries of each queue), so its
        cost does not grow with the store's ended runs."""

    # -- shared state for the AI layer and limits (migration 0002) ---------------------

    async def run_metrics_set(self, *, lease: Lease, metrics: str, now: float) -> None:
        """Replace the run's metrics (JSON object of numbers: tokens, cost, saved by
        replay; see ``RunRecord.metrics``). Only the lease holder writes them.
        Raises: LeaseLost."""

    async def blob_put(self, *, blobs: dict[str, str], run_id: str | None = None) -> None:
        """Store content-addressed texts (key = digest of the text); a key already
        stored is left as it is. Not fenced: the same key always holds the same text.
        With ``run_id``, also record (in the same transaction, first) that the run
        references them: ``run_purge`` and ``run_erase`` delete a text once no remaining
        run references it. Texts stored without a run are never deleted by them."""

    async def blob_get(self, *, keys: list[str]) -> dict[str, str]:
        """The stored texts of ``keys`` (missing keys are absent from the result)."""

    async def kv_get(self, *, key: str) -> tuple[str, int] | None:
        """A shared value and its version (e.g. a provider's circuit breaker), or None."""

    async def kv_cas(self, *, key: str, value: str, version: int | None, now: float) -> bool:
        """Compare-and-set: with ``version=None`` insert ``key`` if absent; else replace it
        only if its version is still ``version`` (the version then goes up by one).
        True if written. Atomic across processes and hosts."""

    async def rate_acquire(self, *, key: str, limit: float, period: float, amount: float,
                           now: float) -> float:
        """Take ``amount`` from the rate limit ``key`` (at most ``limit`` per ``period``
        seconds, as a token bucket refilled continuously, full at first use). Returns
        0.0 when taken; else the seconds until ``amount`` will be available, taking
        nothing. Atomic across processes and hosts."""

    async def queue_limit_set(self, *, queue: str, limit: int | None, now: float) -> None:
        """At most ``limit`` runs of ``queue`` run at once across all workers (``None``
        removes the limit). ``run_claim`` honours it atomically. ``0`` pauses the
        queue and keeps the limit it held (unless it was paused already), for
        ``queue_resume``; any other limit, or ``None``, forgets it."""

    async def queue_limits(self) -> dict[str, int]:
        """The queues that have a concurrency limit, and their limits."""

    async def queue_resume(self, *, queue: str, now: float) -> tuple[bool, int | None]:
        """Lift the pause of ``queue`` (its limit 0): it gets back the limit it held
        before the pause (``queue_limit_set`` to 0 keeps it; ``None``: it had none, and
        has none again). Returns whether it was paused, and its limit now (``None``:
        none). A queue that is not paused is left as it is."""

    async def queue_pauses(self) -> dict[str, int | None]:
        """The paused queues (the limit 0), each with the limit a ``queue_resume``
        gives it back (``None``: none)."""

    async def run_publish(self, *, run_id: str, data: str) -> None:
        """Live event for observers of a run (e.g. a streamed LLM token chunk):
        delivered to ``run_events`` subscribers in any process, and kept in the run's
        event log for ``run_events_read`` (migration 0004)."""

    def run_events(self, run_id: str, *,
                   ready: Callable[[], None] | None = None) -> AsyncIterator[str]:
        """Live events published for ``run_id`` from now on, until the caller stops.
        ``ready``, if given, is called once the subscription is in place (the first
        ``__anext__`` sets it up): every event published after that call is delivered.
        Together with a read of the store made after it (``signal_pending``), a
        subscriber misses nothing that happened before it subscribed either."""

    # -- runs over their whole life (migration 0003; see store/_lifecycle.py) ----------

    async def attempt_record(self, *, attempts: list[AttemptRecord]) -> None:
        """Record (or update, by ``attempt_id``) execution attempts of steps, in one
        transaction. History, not fenced: it never changes what a run does."""

    async def attempt_list(self, run_id: str) -> list[AttemptRecord]:
        """A run's attempts in the order they started."""

    async def run_retry(self, *, run_id: str, version: str | None, now: float) -> RetryReport:
        """Make a failed, blocked or cancelled run runnable again under ``version``,
        changing its journal as ``retry_plan`` says, with the children
        ``children_to_retry`` names (each under its own version, by the same rules), in
        one transaction; the run as stored, and the children retried. Raises:
        RunNotFound, TetherError (the run is in another state)."""

    async def run_fork(self, *, source_run_id: str, run: RunRecord, at: int,
                       entries: Sequence[JournalEntry] | None = None) -> RunRecord:
        """Insert ``run`` (queued) with a copy of the source's journal entries before
        position ``at``, or with ``entries`` instead when given (the source's, read by
        the caller, their payloads encoded again for the new run). Raises: RunNotFound
        (no source), ConfigError (the id is used)."""

    async def run_continue(self, *, lease: Lease, input: str, now: float) -> None:
        """Continue the run as new: archive its journal as the current generation, empty
        it, set ``input``, bump the generation and queue the run (pending signals stay
        pending). Raises: LeaseLost."""

    async def run_crash_mark(self, *, lease: Lease, crashes: int, progress: int) -> None:
        """After a takeover: set the run's consecutive crash count (also as
        ``crashes_seen``, acknowledged) and the journal progress (final entries) it was
        counted at (migration 0005). Raises: LeaseLost."""

    async def journal_archive_read(self, run_id: str) -> list[ArchivedJournal]:
        """The journals of the run's earlier generations, oldest first."""

    async def run_versions(self) -> list[tuple[str | None, str, int]]:
        """(version, status, number of runs) for every pair present."""

    async def run_version_candidates(self, *, version: str) -> list[tuple[str, str]]:
        """(run_id, workflow) of the unfinished runs of ``version``."""

    async def run_version_set(self, *, run_ids: list[str], from_version: str,
                              to_version: str, now: float) -> list[str]:
        """Move those of ``run_ids`` still on ``from_version``, unfinished and not held by
        a worker, to ``to_version``; return the ids moved."""

    async def schedule_upsert(self, *, schedule: ScheduleRecord) -> None:
        """Create or redefine a schedule; its pause state is kept, and its next tick
        unless the cron or time zone changed."""

    async def schedule_list(self) -> list[ScheduleRecord]:
        """Every schedule, by name."""

    async def schedule_get(self, name: str) -> ScheduleRecord | None:
        """One schedule, or None."""

    async def schedule_pause(self, *, name: str, paused: bool, next_tick: float | None,
                             now: float) -> bool:
        """Pause or resume (with a new next tick); False if there is no such schedule."""

    async def schedule_delete(self, name: str) -> bool:
        """Forget a schedule (its runs stay); False if there was none."""

    async def schedule_advance(self, *, name: str, expected: float | None,
                               next_tick: float | None, last_tick: float | None,
                               last_run_id: str | None, now: float) -> bool:
        """Compare-and-set the schedule's next tick from ``expected``: True for the one
        caller (across workers and hosts) that moved it."""

    async def run_purge(self, *, finished_before: float, statuses: list[str],
                        limit: int = 1000, workflows: list[str] | None = None,
                        exclude_workflows: list[str] | None = None) -> PurgeReport:
        """Delete up to ``limit`` runs that ended (``statuses``) before a time, with
        their journals, archived journals, attempts and signals; a run with an
        unfinished child, and a child whose parent has not ended, are kept. Only runs
        of ``workflows`` (None: of any; an empty list: none), and none of
        ``exclude_workflows``."""

    async def run_erase(self, *, run_id: str, now: float) -> PurgeReport:
        """Replace every payload of an ended (or blocked) run with ``{"erased": true}``,
        keeping its timeline's shape, and delete the events it published (streamed
        text); the same, in the same transaction, for its family: its children and its
        forks, recursively (copies of its data). ``run_ids``: every run erased, sorted.
        Raises: RunNotFound, RunStateError (the run or a member of its family has not
        ended: nothing is erased; the message names the members)."""
