"""Value types and backend-independent rules for runs over their whole life: retry,
fork, continue-as-new, attempts, versions, schedules and retention (migration 0003)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from tether._types import ENDED_VALUES, JournalEntry, RunRecord, RunStatus
from tether.errors import ConfigError, RunErased, RunStateError

#: Statuses a run may be retried from.
RETRYABLE = ("failed", "blocked", "cancelled")
#: Statuses a run may be erased in (``run_erase``): ended, or blocked (its code does not
#: run on until a resume), so no code of it reads or writes its payloads meanwhile.
ERASABLE = (*ENDED_VALUES, RunStatus.BLOCKED.value)
#: Most unfinished members a refused erase names (``refuse_unfinished``).
_NAMED = 10


def not_retryable(run_id: str, status: str, *, erased: bool = False) -> RunStateError:
    """A retry of a run in ``status``, not one of ``RETRYABLE``. A completed run is run
    again by a fork, which the message names: it said only which statuses a retry
    takes, and an operator who wanted a completed run again was left to find fork. An
    erased run cannot be forked either (``refuse_erased``): the message says to start a
    new run instead, where it named the fork that would be refused."""
    fork = ""
    if status == RunStatus.COMPLETED.value:
        fork = ("; its payloads were erased, so it cannot be forked either: start a new "
                "run instead" if erased else
                f"; to run it again, fork it: tether fork {run_id} --at N (POST "
                f"/api/v1/runs/{run_id}/fork), keeping its journal before position N")
    return RunStateError(run_id, status, "retry it (only a failed, blocked or cancelled "
                         f"run can be retried){fork}")


def not_resumable(run_id: str, status: str, *, erased: bool = False) -> RunStateError:
    """A resume of a run that is not ``blocked``. A failed or cancelled run runs again by
    a retry, which the message names (an operator from another engine types ``resume``
    for it), unless it was erased, which a retry refuses too."""
    retry = (f"; a {status} run runs again with a retry: tether retry {run_id} (POST "
             f"/api/v1/runs/{run_id}/retry)"
             if status in RETRYABLE and not erased else "")
    return RunStateError(run_id, status, f"resume it (only a blocked run resumes){retry}")


def version_dropped(run_id: str, before: str | None, after: str | None) -> str | None:
    """The warning of a retry that took a run's code version away: a retry gives the run
    the version of the app that retries it, none for an app of none (the bare ``tether
    retry``, ``tether serve`` without ``--app``), and a run of none is claimed by workers
    of every version, so its replay may meet code other than the code it ran under.
    ``None`` when it kept a version (or had none)."""
    if before is None or after is not None:
        return None
    return (f"run {run_id!r} ran under code version {before!r}; retried by an app of no "
            "version, it has none now: workers of every version may claim it (a retry "
            "from the app of a version, tether retry --app MODULE:APP or serve --app, "
            "gives it that version)")


def fork_version_dropped(run_id: str, fork_id: str, before: str | None,
                         after: str | None) -> str | None:
    """The warning of a fork that left its source's code version behind, as
    ``version_dropped`` is a retry's: a fork runs under the version of the app that
    forks it, none for an app of none, and a run of none is claimed by workers of every
    version, so its replay of the copied journal may meet code other than the code
    that wrote it. ``None`` when it has a version (or the source had none)."""
    if before is None or after is not None:
        return None
    return (f"run {run_id!r} ran under code version {before!r}; its fork {fork_id!r}, made "
            "by an app of no version, has none: workers of every version may claim it (a "
            "fork from the app of a version, tether fork --app MODULE:APP or serve --app, "
            "gives it that version)")


def child_id_taken(child_run_id: str, parent_run_id: str, workflow: str) -> ConfigError:
    """A child's run id already used by a run that is not this parent's child (it would
    have given the parent that run's result as its child's)."""
    return ConfigError(f"run id {child_run_id!r} is already used by a run of workflow "
                       f"{workflow!r} that is not a child of {parent_run_id!r}: give the "
                       "child another run_id")


def refuse_erased(run_id: str, erased_at: float | None, request: str) -> None:
    """Raises ``RunErased`` for a run whose payloads were erased (``run_erase``): its
    input, step results and signal payloads are the erasure marker, so its code must not
    run from them again (retry, resume, fork)."""
    if erased_at is not None:
        raise RunErased(run_id, f"{request} (start a new run instead)")


@dataclass(slots=True)
class AttemptRecord:
    """One execution attempt of a step, by one worker.

    ``status`` is ``running`` while it runs (or if its worker died in it: shown as
    ``interrupted`` once another worker holds the run), then ``ok``, ``error`` (a failed
    attempt, retried or not), ``postponed``, ``cancelled`` (a cancel request interrupted
    it) or ``superseded`` (it succeeded, but its result was refused: another worker had
    taken the run over, and runs the step again; its side effects may have happened
    twice). A reader meets any of these as a string, and should show one it does not
    know as it is.

    Not frozen: one is built for every attempt of every step, and a frozen dataclass's
    ``__init__`` (``object.__setattr__`` per field) costs ~8 times more."""

    attempt_id: str
    run_id: str
    generation: int
    position: int
    name: str
    attempt: int
    worker_id: str
    status: str
    started_at: float
    finished_at: float | None = None
    error: str | None = None  #: JSON text


@dataclass(frozen=True, slots=True)
class ArchivedJournal:
    """The journal of one earlier generation of a run that continued as new."""

    generation: int
    input: str | None
    entries: list[JournalEntry]


@dataclass(slots=True)
class ScheduleRecord:
    """A cron schedule's row."""

    name: str
    workflow: str
    queue: str
    cron: str
    timezone: str
    input: str  #: JSON text of {"args": [...], "kwargs": {...}}
    overlap: str  #: skip | allow | cancel_previous
    catchup: str  #: latest | skip | all (at most catchup_max missed ticks)
    catchup_max: int
    paused: bool = False
    next_tick: float | None = None
    last_tick: float | None = None
    last_run_id: str | None = None
    version: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


#: The prefix of a run's OpenTelemetry trace context among the shared values (``kv``):
#: ``otel.trace:<run id>``.
TRACE_KV_PREFIX = "otel.trace:"
#: Shared values that belong to one run: one of these prefixes, then the run id. A
#: purge deletes them with the run.
RUN_KV_PREFIXES = (TRACE_KV_PREFIX,)


def run_kv_keys(run_ids: list[str]) -> list[str]:
    """The keys of the shared values that belong to these runs."""
    return [prefix + run_id for run_id in run_ids for prefix in RUN_KV_PREFIXES]


def refuse_unfinished(run_id: str, status: str, family: list[tuple[str, str]]) -> None:
    """Raises ``RunStateError`` unless the run and every member of its family (``(run
    id, status)`` of its children and forks, recursively: the runs ``run_erase`` erases
    with it) is erasable. All or none: erasing the ended members alone would leave the
    data's copies in the others, and the code of a running member would read the marker
    as its own input or its child's result."""
    if status not in ERASABLE:
        raise RunStateError(run_id, status, "erase it before it has ended (cancel it first)")
    unfinished = [(r, s) for r, s in family if s not in ERASABLE]
    if unfinished:
        named = ", ".join(f"{r!r} ({s})" for r, s in unfinished[:_NAMED])
        more = len(unfinished) - _NAMED
        raise RunStateError(run_id, status, (
            "erase it while runs that hold copies of its data (its children and forks, "
            f"erased with it) have not ended: {named}"
            + (f" and {more} more" if more > 0 else "")
            + "; cancel them or let them end first"))


@dataclass(slots=True)
class PurgeReport:
    """What ``run_purge`` / ``run_erase`` deleted (counts of rows, or of payloads).

    For an erase, ``runs`` and ``run_ids`` (sorted) are the run and the members of its
    family erased with it, and the other counts their sums; ``already_erased`` is true
    when every one of them had been erased before (alone or with a family): nothing new
    was erased, and their ``erased_at`` stays when they were first erased.

    A purge's ``run_ids`` are sorted too; its ``attempts`` are the attempts the runs
    listed (``attempt_list``), whether a row or a journal entry recorded them; an
    erase's, the attempt errors it erased."""

    runs: int = 0
    journal_entries: int = 0
    archived_entries: int = 0
    attempts: int = 0
    signals: int = 0
    payloads: int = 0
    #: Content-addressed texts (tether.ai's messages) that no remaining run references.
    blobs: int = 0
    run_ids: list[str] = field(default_factory=list)
    already_erased: bool = False

    def as_dict(self) -> dict[str, int | list[str]]:
        return {"runs": self.runs, "journal_entries": self.journal_entries,
                "archived_entries": self.archived_entries, "attempts": self.attempts,
                "signals": self.signals, "payloads": self.payloads, "blobs": self.blobs,
                "run_ids": list(self.run_ids)}


@dataclass(frozen=True, slots=True)
class RetryReport:
    """What ``run_retry`` did: the run as it stored it, and the ids of the runs it
    retried with it (``children_to_retry``, down the tree), sorted; and the code version
    the run had before (``version_before``: a retry by an app of no version drops it)."""

    run: RunRecord
    children: list[str]
    version_before: str | None = None


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """How ``run_retry`` changes a journal: entries to delete, step entries to reset,
    and the name and seconds of the finished steps among them (``counted``: /metrics' step
    histogram counted them; the store keeps them in its totals so that it never goes
    down), and ``cancel`` entries that took a timer's place to turn back into that timer
    (``restore``: kind and name ``sleep``, ``pending``, with the start, deadline and
    result the cancel entry kept)."""

    delete: list[int]
    reset: list[int]
    restore: list[int] = field(default_factory=list)
    counted: list[tuple[str, float]] = field(default_factory=list)


def retry_plan(status: str, journal: list[JournalEntry],
               copied: Collection[int] = ()) -> RetryPlan:
    """What to change so that a failed, cancelled or blocked run runs again.

    Successful operations are kept. A failed run's unhandled failures are run again:
    those the code did not move on from (no operation started after the failure was
    recorded). A failed step gets a fresh attempt count (its entry becomes ``pending``
    with no attempts, keeping its last error visible until the next attempt writes);
    other failed operations (a failed child's result, a signal timeout) are forgotten so
    they are waited for again. A cancelled run forgets the ``cancel`` entry and
    everything its code did after it (clean-up after ``Cancelled``); if the cancel took
    the place of a durable timer (``tether.sleep``), the timer is given back with the
    deadline journaled when it began, so the retried run waits only for what was left
    of it (nothing if it has passed) instead of the whole duration again. A blocked run
    keeps its journal: its fixed code replays it.

    ``copied``: the positions of a fork's entries copied from its source (fencing token
    0), which /metrics counted for the source only: not in ``counted``.
    """
    by_pos = sorted(journal, key=lambda e: e.position)
    delete: list[int] = []
    reset: list[int] = []
    restore: list[int] = []
    if status == "cancelled":
        cancel = next((e for e in by_pos if e.kind == "cancel"), None)
        if cancel is not None:
            cut = cancel.position
            if cancel.next_attempt_at is not None:  # (it kept a timer's deadline)
                restore.append(cut)
                cut += 1
            delete = [e.position for e in by_pos if e.position >= cut]
    elif status == "failed":
        for e in by_pos:
            if e.status != "error":
                continue
            done = e.finished_at if e.finished_at is not None else float("-inf")
            moved_on = any(o.position > e.position and o.started_at is not None
                           and o.started_at > done for o in by_pos)
            if moved_on:
                continue
            (reset if e.kind == "step" else delete).append(e.position)
    changed = {*delete, *reset}
    counted = [(e.name, e.finished_at - e.started_at) for e in by_pos
               if e.position in changed and e.position not in copied and e.kind == "step"
               and e.status != "pending"
               and e.started_at is not None and e.finished_at is not None]
    return RetryPlan(delete=delete, reset=reset, restore=restore, counted=counted)


@dataclass(frozen=True, slots=True)
class ChildRow:
    """What ``children_to_retry`` needs of one of a run's children."""

    run_id: str
    parent_position: int | None
    status: str
    on_parent_cancel: str
    erased_at: float | None


def children_to_retry(status: str, journal: list[JournalEntry], plan: RetryPlan,
                      children: Collection[ChildRow]) -> list[str]:
    """The children a retry of their parent retries with it (each by the same rule, so
    a tree comes back whole): those the retried parent would otherwise find ended and
    fail on at once, since it waits for their results again.

    - A cancelled parent: the children its cancel cancelled (policy ``cancel``, ended
      ``cancelled``) whose ``child_start`` the retry keeps and whose result the parent
      had not taken yet.
    - A failed parent: the failed or cancelled children whose result entries the retry
      forgets (the failures the parent did not handle).
    - A blocked parent keeps its journal: none.

    An erased child is never retried (``refuse_erased``); the parent meets its end as
    before."""
    deleted = set(plan.delete)
    kept = [e for e in journal if e.position not in deleted]
    if status == "cancelled":
        starts = {e.position for e in kept if e.kind == "child_start" and e.status == "ok"}
        taken = {e.name for e in kept if e.kind == "child_result" and e.status != "pending"}
        return sorted(c.run_id for c in children
                      if c.parent_position in starts and c.run_id not in taken
                      and c.status == "cancelled" and c.on_parent_cancel == "cancel"
                      and c.erased_at is None)
    if status == "failed":
        forgotten = {e.name for e in journal
                     if e.position in deleted and e.kind == "child_result"}
        return sorted(c.run_id for c in children
                      if c.run_id in forgotten and c.status in ("failed", "cancelled")
                      and c.erased_at is None)
    return []
