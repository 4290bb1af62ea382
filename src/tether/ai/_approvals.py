"""Approval gates: a run asks a human before it does something, and waits, released.

Two sides, one contract:

- In a workflow, ``await request_approval(tool, arguments, reason, approval_id=...)``
  publishes the pending approval in the run's live status (``tether.set_status``) and
  waits for the signal ``approval`` (``APPROVAL_SIGNAL``). The run holds no worker
  while it waits. The decision is the signal's payload, so the journal records it.
- Outside, ``pending_approvals(app)`` lists what waits and ``approve(app, run_id,
  ...)`` / ``reject(...)`` answer (``tether approvals`` and ``tether approve`` are the
  same from the shell).

The status a waiting run publishes (the UI and the CLI read it)::

    {"agent": "researcher", "turn": 3, "state": "awaiting_approval",
     "approval": {"id": "3.0", "tool": "buy_report", "arguments": {...},
                  "reason": "...", "since": 1767000000.0, "call_id": "call_1"}}

The signal's payload is ``{"approved": bool, "note": str | None, "approval_id": str}``.
The id makes a stale answer harmless: an answer that names another approval than the
one waiting is skipped (journaled, ignored), and ``approve()`` sends it with the
idempotency key ``approval:<id>`` (``approval_key``: with the generation in a run that
continued as new), so a double click answers once. A payload sent by
hand without an id (``tether signal RUN approval --data '{"approved": true}'``)
answers whatever approval is waiting.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import tether
from tether import App, RunStatus, TetherError
from tether.errors import shown
from tether.ext import runs_awaiting_approval

T = TypeVar("T")

__all__ = [
    "APPROVAL_SIGNAL",
    "ApprovalDecision",
    "NoPendingApproval",
    "PendingApproval",
    "approval_key",
    "approve",
    "pending_approval",
    "pending_approvals",
    "pending_approvals_page",
    "reject",
    "request_approval",
]

#: The name of the signal that answers an approval.
APPROVAL_SIGNAL = "approval"

#: ``RunInfo.waiting_for`` of a run released until its approval comes.
_WAITING_FOR = f"signal {APPROVAL_SIGNAL}"

#: The ``state`` a run's status has while it waits for an approval.
AWAITING_APPROVAL = "awaiting_approval"


def approval_key(approval_id: str, generation: int = 0) -> str:
    """The idempotency key of the answer to an approval, the same from every face (the
    CLI, the API, MCP's ``tasks/update``), so that two answers count once:
    ``approval:<id>``, and in a run that continued as new ``approval:g<generation>:<id>``.
    A run keeps its signals (and their keys) over its generations, and a new generation
    may well ask under an id an earlier one used (ids made from a turn counter that
    starts again): its answer would be dropped as a repeat, the run waiting for ever."""
    return f"approval:{approval_id}" if not generation else \
        f"approval:g{generation}:{approval_id}"



class NoPendingApproval(TetherError):
    """The run waits for no approval (it never asked, it was answered already, or it
    has ended); ``str()`` says which."""

    __module__ = "tether.ai"

    def __init__(self, run_id: str, detail: str) -> None:
        super().__init__(f"run {shown(run_id)} has no pending approval: {detail}")
        self.run_id = run_id
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    """A human's answer to one approval.

    Attributes:
        approved: the action may go ahead.
        note: what the human said (passed back to the model on a reject).
    """

    approved: bool
    note: str | None = None


@dataclass(frozen=True, slots=True)
class PendingApproval:
    """An approval a run waits for.

    Attributes:
        run_id: the waiting run.
        agent: its workflow (the agent's name).
        tool: the tool the run wants to call.
        arguments: the arguments it wants to call it with.
        reason: why (the model's words in that turn, else the tool's description).
        since: when the run started waiting (epoch seconds, journaled time).
        approval_id: which approval of the run this is (unique within the run).
        call_id: the model's id of the tool call.
        awaiting_worker: the run is claimable now (``awaits_worker``): its approval was
            answered (``answered``), or its wait's watch timeout passed (a worker takes
            it up, and it waits again, for the same approval). It stays ``waiting``, its
            status naming this approval, until a worker claims it.
        answered: an answer to this approval waits in the store for the run to take
            it (``awaiting_worker`` is true too): it is not for a person to answer any
            more (a second answer is refused). One whose watch timeout passed and that
            nobody answered is not answered, and a person may answer it.
    """

    run_id: str
    agent: str
    tool: str
    arguments: dict[str, Any]
    reason: str
    since: float
    approval_id: str
    call_id: str = ""
    awaiting_worker: bool = False
    answered: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "agent": self.agent, "tool": self.tool,
                "arguments": self.arguments, "reason": self.reason, "since": self.since,
                "approval_id": self.approval_id, "call_id": self.call_id,
                "awaiting_worker": self.awaiting_worker, "answered": self.answered}


# -- the workflow side ----------------------------------------------------------------------


async def request_approval(tool: str, arguments: Mapping[str, Any], reason: str, *,
                           approval_id: str, call_id: str = "",
                           status: Mapping[str, Any] | None = None,
                           watch: Callable[[], Awaitable[None]] | None = None,
                           watch_every: float = 60.0) -> ApprovalDecision:
    """In a workflow: publish a pending approval and wait (released) for the answer.

    Args:
        tool: what the run wants to do (a tool name).
        arguments: with which arguments.
        reason: why, for the human.
        approval_id: unique within the run and the same on every replay (e.g. the turn
            and the call's index).
        call_id: the model's id of the call, for the record.
        status: other keys of the run's status to publish alongside (the agent's name,
            its turn); ``state`` and ``approval`` are set here.
        watch: called (in the workflow) every ``watch_every`` seconds of waiting without
            an answer (each wait a journaled signal wait with that timeout); an
            exception it raises ends the wait (``tether.ai.mcp`` looks at the remote
            task the answer is for, and stops waiting when it ended).

    Returns the decision. Answers naming another approval id are skipped. Once the
    answer is taken, the status is set back to ``status`` (``None`` without it): the run
    no longer reads ``awaiting_approval`` while it goes on, nor after it ends. A run's
    status writes land in the order it made them (one in flight at a time, each the
    latest, and all of them flushed before the run waits for the signal: the answer's
    clear cannot land before the approval it clears).
    """
    since = tether.now().timestamp()
    base = dict(status or {})
    tether.set_status({**base, "state": AWAITING_APPROVAL, "approval": {
        "id": approval_id, "tool": tool, "arguments": dict(arguments), "reason": reason,
        "since": since, "call_id": call_id}})
    while True:
        if watch is None:
            payload = await tether.wait_for_signal(APPROVAL_SIGNAL)
        else:
            try:
                payload = await tether.wait_for_signal(APPROVAL_SIGNAL, timeout=watch_every)
            except tether.SignalTimeout:
                await watch()
                continue
        decision = _decision(payload, approval_id)
        if decision is not None:
            tether.set_status(base or None)  # (answered: no longer awaiting it)
            return decision


def _decision(payload: Any, approval_id: str) -> ApprovalDecision | None:
    """The decision in a signal payload, or ``None`` to skip it (another approval's
    answer, or not an answer at all: a human typo must not run a tool)."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("approved"), bool):
        return None
    target = payload.get("approval_id")
    if target is not None and str(target) != approval_id:
        return None
    note = payload.get("note")
    return ApprovalDecision(payload["approved"], None if note is None else str(note))


# -- the outside ---------------------------------------------------------------------------


def awaited_approval(run: Any) -> PendingApproval | None:
    """The approval a run (``App.get_run``'s ``RunInfo``) waits for, from its live
    status, or ``None``: what ``tether show`` prints under *waiting for*, without
    another query."""
    if run.waiting_for != _WAITING_FOR:
        return None
    return _pending_from(run.run_id, run.workflow, RunStatus(run.status), run.status_info)


def _pending_from(run_id: str, workflow: str, status: RunStatus, info: Any
                  ) -> PendingApproval | None:
    if status.is_ended or not isinstance(info, Mapping):
        return None
    approval = info.get("approval")
    if info.get("state") != AWAITING_APPROVAL or not isinstance(approval, Mapping):
        return None
    arguments = approval.get("arguments")
    return PendingApproval(
        run_id=run_id, agent=str(info.get("agent") or workflow),
        tool=str(approval.get("tool", "")),
        arguments=dict(arguments) if isinstance(arguments, Mapping) else {},
        reason=str(approval.get("reason") or ""), since=float(approval.get("since") or 0.0),
        approval_id=str(approval.get("id", "")), call_id=str(approval.get("call_id") or ""))


#: How many waiting runs ``pending_approvals`` reads from the store at a time.
_PAGE = 1000


async def pending_approvals(app: App, *, limit: int | None = None) -> list[PendingApproval]:
    """Every approval that waits, oldest first (by ``since``); at most ``limit`` of them
    (the oldest) when given.

    Reads the runs the store's index of approval waits holds
    (``run_list_awaiting_approval``: the ``waiting`` runs released on the approval
    signal, however many other runs wait), page by page, and decodes their live status.
    A run whose approval was answered stays ``waiting`` until a worker takes the answer
    up: it is listed ``answered`` (``waiting_answers``: one more read a page, only when
    a run of it is claimable).

    Raises:
        ValueError: a ``limit`` below 1.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    found: list[PendingApproval] = []
    after: tuple[float, str] | None = None
    while True:
        page = await runs_awaiting_approval(app, limit=_PAGE, after=after)
        answers = await waiting_answers(app, page)
        for run in page:
            pending = pending_of(app, run, answered=run.run_id in answers)
            if pending is not None:
                found.append(pending)
        if len(page) < _PAGE:
            break
        after = (page[-1].created_at, page[-1].run_id)
    found.sort(key=lambda p: (p.since, p.run_id))
    return found if limit is None else found[:limit]


async def pending_approvals_page(app: App, *, limit: int = 50,
                                 after: tuple[float, str] | None = None
                                 ) -> tuple[list[PendingApproval], tuple[float, str] | None]:
    """One page of the approvals that wait: at most ``limit`` of them, by their run's
    age (the run's ``created_at``, then its ``run_id``: the order of the store's index
    of approval waits), strictly after the ``after`` cursor; and the cursor of the next
    page (``None`` when none follows).

    Not ``pending_approvals``' order (by ``since``, which only a read of every pending
    approval can sort): a run's age never changes, so a cursor continues exactly, each
    approval once, whatever is answered or asked meanwhile (an approval asked meanwhile
    by a run older than the cursor shows on the next pass from the start). Reads
    ``limit + 1`` waiting runs at a time, not every one.

    Raises:
        ValueError: a ``limit`` below 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return await approval_waits_page(
        app, lambda run, answered: pending_of(app, run, answered=answered), limit=limit,
        after=after)


async def approval_waits_page(app: App, take: Callable[[Any, bool], T | None], *,
                              limit: int, after: tuple[float, str] | None
                              ) -> tuple[list[T], tuple[float, str] | None]:
    """``pending_approvals_page``'s walk of the index of approval waits, for what
    ``take`` makes of each waiting run (a record, and whether its approval was answered,
    ``waiting_answers``; None: skipped, as the table and the inbox skip an answered
    one): at most ``limit`` of them after ``after``, and the next page's cursor. (The
    inbox takes the approvals this server cannot read too.)"""
    found: list[tuple[T, tuple[float, str]]] = []
    while len(found) <= limit:
        page = await runs_awaiting_approval(app, limit=limit + 1, after=after)
        answers = await waiting_answers(app, page)
        for run in page:
            item = take(run, run.run_id in answers)
            if item is not None:
                found.append((item, (run.created_at, run.run_id)))
        if len(page) < limit + 1:
            break
        after = (page[-1].created_at, page[-1].run_id)
    shown = found[:limit]
    nxt = shown[-1][1] if len(found) > limit else None
    return [item for item, _ in shown], nxt


def pending_of(app: App, run: Any, *, answered: bool = False) -> PendingApproval | None:
    """The approval a run read from the store (a ``RunRecord``: a listing's row) waits
    for, or ``None``: what the runs page marks "needs approval" without another query.
    ``answered``: an answer to it waits for the run (``waiting_answers`` says which runs
    of a listing); marked only on a run claimable now (``awaiting_worker``), which an
    answer makes it."""
    info = _status_of(app, run)
    if info is None:
        return None
    pending = _pending_from(run.run_id, run.workflow, RunStatus(run.status), info)
    if pending is None or not awaits_worker(app, run):
        return pending
    return replace(pending, awaiting_worker=True, answered=answered)


def _status_of(app: App, run: Any) -> Any:
    """The live status of a run record waiting for an approval, decoded; None for a run
    that waits for something else, or whose status this process cannot decode."""
    if run.status_info is None or run.waiting_for != _WAITING_FOR:
        return None  # a stale status: the run waits for something else now
    try:
        return app.codec.for_run(run.run_id).decode(run.status_info, None, "status")
    except Exception:
        return None  # not JSON we wrote (or sealed with a key we lack): not an approval


def awaits_worker(app: App, run: Any) -> bool:
    """A ``waiting`` run (a ``RunRecord``) that is claimable now: its approval was
    answered (the signal made it due; a second answer is refused), or its wait's watch
    timeout passed (a worker takes it up, and it waits again, for the same approval,
    which a person may still answer). It stays ``waiting``, its status naming the
    approval, until a worker claims it. The API and ``--json`` list such a run with
    ``awaiting_worker``; whether it was answered is ``waiting_answers``' to say, read
    only for the runs this holds of."""
    return (run.status == RunStatus.WAITING.value and run.available_at is not None
            and run.available_at <= app.clock.now())


@dataclass(frozen=True, slots=True)
class WaitingAnswer:
    """An answer to the approval a run waits for, in the store until a worker takes the
    run up (the run stays ``waiting``, its status naming the approval, meanwhile).

    Attributes:
        decision: what was answered; None when this process cannot read it (sent
            encrypted with a key it lacks).
    """

    decision: ApprovalDecision | None

    def words(self, tool: str) -> str:
        """What the run waits for, as a person reads it: ``approval of refund answered
        (approved), waiting for a worker`` (``tether runs``, ``tether show``, the run
        page's head), where ``approval_wait`` said ``approval of refund``."""
        said = "" if self.decision is None else \
            f" ({'approved' if self.decision.approved else 'rejected'})"
        return f"{approval_wait(tool)} answered{said}, waiting for a worker"


async def waiting_answers(app: App, runs: Iterable[Any]) -> dict[str, WaitingAnswer]:
    """The answers that wait in the store for runs of a listing (``RunRecord``s) to take
    them, by run id: of each run waiting for an approval and claimable now
    (``awaits_worker``: an answer makes it so; so does its wait's watch timeout, with no
    answer) whose pending ``approval`` signals hold an answer to its approval. One read
    for them all (``signals_pending_many``), none when no run is claimable. An
    ``approval`` signal that answers nothing (another approval's id, no ``approved``)
    is none: the run skips it and waits on, for a person to answer."""
    due = {r.run_id: r for r in runs
           if r.waiting_for == _WAITING_FOR and awaits_worker(app, r)}
    if not due:
        return {}
    sent = await app.store.signals_pending_many(run_ids=list(due), name=APPROVAL_SIGNAL)
    found = {}
    for run_id, payloads in sent.items():
        info = _status_of(app, due[run_id])
        pending = None if info is None else _pending_from(
            run_id, due[run_id].workflow, RunStatus(due[run_id].status), info)
        answer = _answer_in(app, run_id, None if pending is None else pending.approval_id,
                            payloads)
        if answer is not None:
            found[run_id] = answer
    return found


async def waiting_answer(app: App, run_id: str, approval_id: str) -> WaitingAnswer | None:
    """The answer to approval ``approval_id`` that waits in the store for the ``waiting``
    run ``run_id`` to take it, or None: what ``tether show`` and the run page say of a
    run waiting for an approval (one read; ask it of such a run alone)."""
    sent = await app.store.signals_pending_many(run_ids=[run_id], name=APPROVAL_SIGNAL)
    return _answer_in(app, run_id, approval_id, sent.get(run_id, []))


def _answer_in(app: App, run_id: str, approval_id: str | None,
               payloads: list[str | None]) -> WaitingAnswer | None:
    """The first of a run's pending ``approval`` signals (encoded payloads, oldest
    first) that answers approval ``approval_id``, as the run will take them; None if
    none does. One this process cannot decode counts, unread.

    ``approval_id`` None: the run's live status, which names the approval it waits for,
    is one this process cannot read (encrypted with a key it lacks). Then only an answer
    that names no approval counts (it answers whatever waits: ``{"approved": true}``
    sent by hand); one naming an approval, or one this process cannot decode, may be
    for another approval and is not taken for an answer (it was: any signal, even one
    that answers nothing, made such a run "answered", and the inbox left it out)."""
    codec = app.codec.for_run(run_id)
    for text in payloads:
        try:
            payload = codec.decode(text, None, "signal")
        except Exception:
            if approval_id is None:
                continue  # (which approval it answers, if any, cannot be told)
            return WaitingAnswer(None)  # (encrypted with a key this process lacks)
        if approval_id is None:
            decision = _decision(payload, "") if isinstance(payload, Mapping) \
                and payload.get("approval_id") is None else None
        else:
            decision = _decision(payload, approval_id)
        if decision is not None:
            return WaitingAnswer(decision)
    return None


def approval_wait(tool: str) -> str:
    """What a run waiting for an approval of ``tool`` waits for, as a person reads it
    (``tether runs``' WAITING FOR, ``tether show``): its ``waiting_for`` is the signal
    that answers it, ``signal approval``."""
    return f"approval of {tool}" if tool else "approval"


async def unanswered_by(app: App, run_id: str, name: str, payload: Any) -> str | None:
    """The tool whose approval ``run_id`` waits for when the signal ``name`` carrying
    ``payload`` is no answer to it (``approval`` without ``"approved": true|false``):
    the run takes such a signal, skips it and waits on. ``None`` otherwise. Read it
    before the send: the signal wakes the run, which then waits no more."""
    if name != APPROVAL_SIGNAL or (isinstance(payload, Mapping)
                                   and isinstance(payload.get("approved"), bool)):
        return None
    try:
        run = await app.store.run_get(run_id)
    except TetherError:
        return None
    pending = pending_of(app, run) if run is not None else None
    return pending.tool if pending is not None else None


def no_answer_warning(run_id: str, tool: str, name: str, answer: str) -> str:
    """What ``tether signal`` and the API's signal answer say of such a send;
    ``answer``: how to answer the approval instead."""
    return (f"run {shown(run_id)} waits for an approval of {shown(tool, quoted=False)}: a "
            f"signal {shown(name)} without \"approved\": true or false in its data is no "
            f"answer, and the run waits on; answer it with {answer}")


async def pending_approval(app: App, run_id: str) -> PendingApproval | None:
    """The approval ``run_id`` waits for, or ``None``.

    Raises:
        RunNotFound: no run has this id.
    """
    info = await app.get_run(run_id)
    return _pending_from(info.run_id, info.workflow, info.status, info.status_info)


async def approve(app: App, run_id: str, *, approved: bool = True,
                  note: str | None = None, approval_id: str | None = None
                  ) -> PendingApproval:
    """Answer the approval ``run_id`` waits for; returns what was answered.

    ``approval_id``: answer that approval only (the one a person was shown): if the run
    waits for another one now (the one shown was answered by someone else, and the run
    went on to ask again), nothing is sent and ``NoPendingApproval`` says so. Without
    it, whichever approval the run waits for now is answered.

    Raises:
        RunNotFound: no such run.
        NoPendingApproval: the run waits for no approval, or this one was answered
            already (the second of two answers is dropped), or ``approval_id`` is not
            the one it waits for.
    """
    info = await app.get_run(run_id)
    pending = _pending_from(info.run_id, info.workflow, info.status, info.status_info)
    if pending is None:
        raise NoPendingApproval(run_id, _why_not(info.status, info.waiting_for))
    if approval_id is not None and pending.approval_id != approval_id:
        raise NoPendingApproval(
            run_id, f"approval {approval_id} was answered already; the run now waits for "
                    f"approval {pending.approval_id} ({pending.tool}), which this answer "
                    "was not meant for")
    payload = {"approved": approved, "note": note, "approval_id": pending.approval_id}
    created = await app.signal(run_id, APPROVAL_SIGNAL, payload,
                               idempotency_key=approval_key(pending.approval_id,
                                                            info.generation))
    if not created:
        raise NoPendingApproval(
            run_id, f"approval {pending.approval_id} ({pending.tool}) was answered already")
    return pending


async def reject(app: App, run_id: str, *, note: str | None = None) -> PendingApproval:
    """``approve(app, run_id, approved=False, note=note)``: the note goes to the model."""
    return await approve(app, run_id, approved=False, note=note)


def _why_not(status: RunStatus, waiting_for: str | None) -> str:
    if status.is_ended:
        return f"it has ended ({status.value})"
    if status is RunStatus.WAITING and waiting_for and waiting_for != _WAITING_FOR:
        # (it said "has not asked for one" of a run whose approval was answered a moment
        # before, now waiting for the tool's child run: what it waits for says more)
        return f"it is waiting for {shown(waiting_for, quoted=False)}, not for an approval"
    return f"it is {status.value} and has not asked for one"
