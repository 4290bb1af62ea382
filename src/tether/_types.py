"""Value types shared by the core, the stores and the front-ends."""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class RunStatus(enum.StrEnum):
    """Where a run is in its life.

    A run has **ended** when it is ``completed``, ``failed`` or ``cancelled``
    (:data:`ENDED`): it never runs again by itself, and signals to it are refused.
    ``blocked`` has *not* ended: the run keeps its journal and runs again after an
    operator resumes it (``App.resume``, ``tether resume``) once the code is fixed. It
    will not move by itself either, so a caller waiting for a result
    (``RunHandle.result``) stops at ``blocked`` too (:attr:`is_settled`).
    """

    #: Runnable; no worker holds it yet.
    QUEUED = "queued"
    #: A worker holds its lease and executes it.
    RUNNING = "running"
    #: Released: waits for a timer, a signal, a child or a retry backoff; no worker holds it.
    WAITING = "waiting"
    #: Finished with a result.
    COMPLETED = "completed"
    #: Finished with an error.
    FAILED = "failed"
    #: Cancelled by a user.
    CANCELLED = "cancelled"
    #: Needs an operator (e.g. non-determinism after a deploy): not ended, and never runs
    #: again until resumed (``App.resume``, ``tether resume``).
    BLOCKED = "blocked"

    @property
    def is_ended(self) -> bool:
        """Completed, failed or cancelled: the run never runs again by itself."""
        return self in ENDED

    @property
    def is_settled(self) -> bool:
        """Ended or blocked: nothing changes without someone acting, so a caller
        waiting for the run's result stops waiting."""
        return self in ENDED or self is RunStatus.BLOCKED


#: Each status by its value (``RunRecord`` reads one per row).
_STATUSES: dict[object, RunStatus] = {s.value: s for s in RunStatus}


#: The statuses of a run that has ended (the one definition; ``blocked`` is not one).
ENDED: frozenset[RunStatus] = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
#: :data:`ENDED`'s values in the order of ``RunStatus`` (``completed``, ``failed``,
#: ``cancelled``), for the code that checks a status given as text or names the set in
#: a message. The SQL of the stores lists them literally; ``tests/unit/test_states.py``
#: checks each such list against this one.
ENDED_VALUES: tuple[str, ...] = tuple(s.value for s in RunStatus if s in ENDED)


class OperationKind(enum.StrEnum):
    """What an operation in the journal is."""

    STEP = "step"
    NOW = "now"
    RANDOM = "random"
    UUID = "uuid"
    PATCH = "patch"
    SLEEP = "sleep"
    SIGNAL = "signal"
    CHILD_START = "child_start"
    CHILD_RESULT = "child_result"
    CANCEL = "cancel"


class EntryStatus(enum.StrEnum):
    """Outcome of a journal entry."""

    #: The operation finished; ``result`` holds its value.
    OK = "ok"
    #: The operation failed for good; ``error`` holds the error.
    ERROR = "error"
    #: Started, not finished: a step between retry attempts, a timer or wait not yet due.
    PENDING = "pending"


@dataclass(slots=True)
class JournalEntry:
    """One operation's record in a run's journal, keyed by (run_id, position).

    ``kind`` and ``status`` are enums (strings given by a store are converted; the
    StrEnums compare equal to, and are stored as, their plain values).
    """

    position: int
    kind: OperationKind
    name: str
    status: EntryStatus
    result: str | None = None  #: JSON text
    error: str | None = None  #: JSON text: {"type", "message", ...}
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    next_attempt_at: float | None = None  #: retry backoff / timer due time
    args: str | None = None  #: JSON text of the step's arguments

    def __post_init__(self) -> None:
        if type(self.kind) is not OperationKind:
            self.kind = OperationKind(self.kind)
        if type(self.status) is not EntryStatus:
            self.status = EntryStatus(self.status)


@dataclass(slots=True)
class RunRecord:
    """A run's row."""

    run_id: str
    workflow: str
    queue: str
    status: RunStatus
    input: str  #: JSON text of [args, kwargs]
    created_at: float
    updated_at: float
    result: str | None = None
    error: str | None = None
    owner: str | None = None
    fencing_token: int = 0
    available_at: float | None = None
    cancel_requested: bool = False
    waiting_for: str | None = None
    status_info: str | None = None
    parent_run_id: str | None = None
    finished_at: float | None = None
    parent_position: int | None = None
    #: What cancelling the parent does to this child: "cancel" or "abandon".
    on_parent_cancel: str = "cancel"
    #: Numbers about the run kept by the engine and the AI layer (JSON object text
    #: in the store): tokens and cost spent, tokens and cost saved by replay.
    metrics: dict[str, float] = field(default_factory=dict)
    #: The code version the run was started under (None: any worker may claim it).
    version: str | None = None
    #: A fork's origin: the run it was copied from, and the position it was cut at.
    forked_from: str | None = None
    forked_at: int | None = None
    #: How many times the run continued as new (earlier journals are archived).
    generation: int = 0
    #: When an operator erased the run's payloads, or None.
    erased_at: float | None = None
    #: Takeovers of the run while it was running (its worker died holding it), counted
    #: by the claim and reset by the worker when the journal moved on (migration 0005).
    crashes: int = 0
    #: The count the worker that took the run over last acknowledged: a claim that
    #: returns ``crashes > crashes_seen`` is a takeover.
    crashes_seen: int = 0
    #: Final journal entries counted at that acknowledgement (None: never).
    crash_progress: int | None = None
    #: When a cancel was first requested (``cancel_requested``), by the store's
    #: ``run_get`` only; None: not read, none was, or a version that does not record it
    #: asked (migration 0021).
    cancel_requested_at: float | None = None
    #: Why that cancel was asked (``App.cancel``'s ``reason``; a child cancelled with its
    #: parent has its parent's), by ``run_get`` only; None: not read, none was given, or
    #: a version that does not record it asked (migration 0023).
    cancel_reason: str | None = None
    #: The parent whose cancel cascaded to this run, by ``run_get`` only; None: not
    #: read, the run's own request, or a version that does not record it asked.
    cancelled_with: str | None = None

    def __post_init__(self) -> None:
        if type(self.status) is not RunStatus:
            # A dict lookup (22 ns) instead of calling the enum (314 ns): once per row read.
            self.status = _STATUSES.get(self.status) or RunStatus(self.status)


@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's hold on a run. Every write carries it; a stale token is rejected."""

    run_id: str
    worker_id: str
    fencing_token: int


@dataclass(slots=True)
class ClaimedRun:
    """A run a worker just claimed, with its journal loaded in the same transaction."""

    run: RunRecord
    lease: Lease
    journal: list[JournalEntry] = field(default_factory=list)
    #: When the run became due: its ``available_at`` before the claim (its start, a
    #: retry's or a sleep's time, a signal's arrival, the previous owner's lease expiry
    #: for a takeover), read by the claim itself; None from a store that does not say.
    due_at: float | None = None


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What ``App.get_run`` returns: the run and its journal, decoded."""

    run_id: str
    workflow: str
    queue: str
    status: RunStatus
    input: Any
    result: Any
    error: dict[str, Any] | None
    created_at: float
    updated_at: float
    finished_at: float | None
    waiting_for: str | None
    status_info: Any
    parent_run_id: str | None
    #: Its entries in position order. A signal wait without a timeout journals no start:
    #: its ``started_at`` (and ``duration``) is the completion of the latest operation
    #: before it, the run's start for its first (``tether._show.signal_wait_starts``).
    journal: list[dict[str, Any]]
    #: Numbers about the run: LLM calls, tokens and cost spent, and saved by replay.
    metrics: dict[str, float] = field(default_factory=dict)
    #: The code version it runs under (None: unversioned).
    version: str | None = None
    #: A fork's origin: the run it was copied from and the position it was cut at.
    forked_from: str | None = None
    forked_at: int | None = None
    #: How many times it continued as new; ``history`` holds the earlier generations.
    generation: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    #: Every execution attempt of its steps, with the worker that ran it (``status``
    #: ``interrupted``: the worker was cut off in it; ``superseded``: it succeeded but its
    #: result was refused, another worker having taken the run over).
    attempts: list[dict[str, Any]] = field(default_factory=list)
    #: When its payloads were erased (``tether erase``), or None.
    erased_at: float | None = None
    #: A cancel was asked and the run has not ended yet: it ends ``cancelled`` when a
    #: worker serving its queue replays it and delivers ``tether.Cancelled`` at its next
    #: operation (a waiting run's wait), where its code may still clean up.
    cancel_requested: bool = False
    #: When that cancel was first requested (by a person, the API or its parent's
    #: cancel), for a run with one pending and for one that ended cancelled; None
    #: otherwise, and when a version that does not record the time asked.
    cancel_requested_at: float | None = None
    #: The limits of its LLM budget as its workflow last entered them
    #: (``tether.ai.set_budget``, an agent's ``budget=``, a raise it took), before any
    #: call journals them: ``{"usd", "tokens"}`` (``None``: no limit of that kind; both
    #: ``None``: no budget). ``None`` when none was entered (or by a version that did
    #: not keep them). ``tether._budgets.run_budget`` reads it.
    budget_limits: dict[str, Any] | None = None
    #: Of a run not ended whose ``budget_limits`` are known: the new limits of the
    #: first ``budget`` signal sent to it and not taken yet (``tether budget`` before
    #: the run reached its budget, which it takes when it does), ``{"usd", "tokens",
    #: "more"}`` (``tether._budgets.kept_raise``); else ``None``.
    kept_budget_raise: dict[str, Any] | None = None
    #: Why that cancel was asked (``App.cancel``'s ``reason``, ``tether cancel
    #: --reason``, the API's ``{"reason"}``); a run cancelled with its parent has its
    #: parent's. None when ``cancel_requested_at`` is, and when none was given.
    cancel_reason: str | None = None
    #: The id of the parent run whose cancel cascaded to this one (its policy
    #: ``on_parent_cancel="cancel"``); None when the cancel was the run's own request,
    #: and when ``cancel_requested_at`` is None.
    cancelled_with: str | None = None


#: The most characters a cancel's reason may have (``App.cancel``, ``tether cancel
#: --reason``, the API): a sentence or two a person reads in ``tether show``.
MAX_CANCEL_REASON = 1000


def check_cancel_reason(value: object) -> str | None:
    """``value`` if it is a usable reason for a cancel (None: none given), else
    ``ConfigError`` saying why: not a string, empty, over ``MAX_CANCEL_REASON``
    characters, or holding control characters (a reason is one line, printed on a
    terminal) or a lone surrogate (no store could keep it)."""
    from tether.errors import ConfigError

    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"a cancel's reason must be a string, not {type(value).__name__}")
    if not value.strip():
        raise ConfigError("a cancel's reason is empty: give a reason, or none")
    if len(value) > MAX_CANCEL_REASON:
        raise ConfigError(f"a cancel's reason is {len(value):,} characters long; at most "
                          f"{MAX_CANCEL_REASON:,} are allowed")
    if not _FORBIDDEN.isdisjoint(value):
        raise ConfigError("a cancel's reason holds control characters (a line break, a "
                          "tab, an escape): it is one line of text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError("a cancel's reason holds a lone surrogate (not valid "
                          "Unicode)") from None
    return value


#: Characters no id or name may hold: C0/C1 controls (ESC starts terminal escapes),
#: line and paragraph separators, and the bidirectional overrides that reorder text.
_FORBIDDEN = frozenset(
    [chr(c) for c in range(0x20)] + [chr(0x7F)] + [chr(c) for c in range(0x80, 0xA0)]
    + ["\u2028", "\u2029", "\u061c", "\u200e", "\u200f"]
    + [chr(c) for c in range(0x202A, 0x202F)] + [chr(c) for c in range(0x2066, 0x206A)])


#: The most characters a new id or name may have: run ids, workflow, step, queue,
#: schedule and signal names, signal idempotency keys. A name is an identifier a person
#: reads and types (in ``tether runs``, a URL, the web UI), and the stores index them:
#: PostgreSQL refuses a B-tree entry over 2,704 bytes (``signals_pending`` indexes run
#: id and signal name together, the idempotency key's unique index run id and key), and
#: said so as an opaque "store unavailable". 200 characters are at most 800 bytes of
#: UTF-8 each, so a run id, a signal name and a key at the limit fit together, with
#: room for the ``.N`` a child's id adds to its parent's per level.
MAX_NAME = 200


def closest_name(name: str, known: Iterable[str]) -> str | None:
    """The one of ``known`` closest to ``name`` (for a typo's hint, "did you mean ...?",
    of a name the store does not know), or None when none is close."""
    close = difflib.get_close_matches(name, sorted(set(known)), n=1)
    return close[0] if close else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'crawl'?)`` (``closest_name``), or "" when none is close."""
    close = closest_name(name, known)
    return f" (did you mean {close!r}?)" if close is not None else ""


def check_name(what: str, value: object, *, new: bool = True) -> str:
    """``value`` if it is a usable id or name, else ``InvalidName`` saying why.

    ``new=False`` for a name that may already be stored, which is looked up or replayed
    rather than created: it is not held to ``MAX_NAME``, since the engine makes longer
    ids itself (a child's is its parent's and ``.N``) and older versions had no limit,
    and whatever a store holds must stay readable and actionable."""
    from tether.errors import InvalidName

    if not isinstance(value, str):
        raise InvalidName(what, str(value), f"must be a string, not {type(value).__name__}")
    if not value.strip():
        raise InvalidName(what, value, "is empty")
    if new and len(value) > MAX_NAME:  # (its length: the message says it, ``shown``)
        raise InvalidName(what, value,
                          f"is too long; at most {MAX_NAME} are allowed")
    if not _FORBIDDEN.isdisjoint(value):
        raise InvalidName(what, value, "holds control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidName(what, value, "holds a lone surrogate (not valid Unicode)") from None
    return value
