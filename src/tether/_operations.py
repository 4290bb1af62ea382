"""The operations a workflow performs, and their public functions.

Each operation takes the run's journal cursor (``RunContext``, in ``_replay``) and the
position it took when it was called. It is answered from the journal entry at that
position if there is one (replay), and otherwise runs for real and journals its outcome
before the workflow goes on: steps (with retries), timers, signal waits, child runs,
journaled values (clock, random, uuid), patch markers and the live status.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import datetime as dt
import functools
import inspect
import math
import random as _random
import threading
import uuid as _uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tether import _observe
from tether._clock import utc_datetime
from tether._codec import (
    SLOT_ERROR,
    SLOT_INPUT,
    SLOT_JOURNAL,
    SLOT_RESULT,
    SLOT_SIGNAL,
    SLOT_STATUS,
)
from tether._definitions import StepDef, WorkflowDef
from tether._errors_codec import error_to_dict, step_error
from tether._replay import (
    ERROR,
    INHERIT_KEY,
    OK,
    PENDING,
    AttemptRow,
    Lost,
    RunContext,
    StepInfo,
    _Interrupted,
    _Stop,
    current_run,
    current_step,
)
from tether._retry import decide_retry
from tether._types import MAX_NAME, JournalEntry, OperationKind, RunRecord, RunStatus, check_name
from tether.errors import (
    ConfigError,
    InvalidName,
    LeaseLost,
    NonRetryable,
    OutsideRun,
    PayloadError,
    Postpone,
    RunFailed,
    RunNotFound,
    SignalTimeout,
    StepTimeout,
)
from tether.store._port import Wait

R = TypeVar("R")


# -- the public functions (re-exported by tether) ------------------------------------------


def _ctx(what: str) -> RunContext:
    ctx = current_run.get()
    if ctx is None:
        raise OutsideRun(f"tether.{what}()")
    if current_step.get() is not None:
        # An operation of the run started from a step's body would take a position in
        # the workflow's journal that replay (which answers the step from its record)
        # never takes again: the run would be blocked at its next replay.
        raise OutsideRun(f"tether.{what}()", "a workflow's own code (not in a step)")
    return ctx


#: The longest wait (``tether.sleep``, a signal's ``timeout``): 1,000 years. A longer one
#: has a deadline no date can show (past the year 9999 within a few more millennia, at
#: once for 1e308): it was journaled, then the run failed with "OverflowError: timestamp
#: out of range", and ``tether show`` and the run page could not show its timeline.
MAX_WAIT = 1000 * 365.25 * 86400.0


def _seconds(duration: float | dt.timedelta) -> float:
    if isinstance(duration, dt.timedelta):
        seconds = duration.total_seconds()
    elif isinstance(duration, bool) or not isinstance(duration, (int, float)):
        raise ConfigError(f"expected seconds (int or float) or a timedelta, "
                        f"got {type(duration).__name__}")
    elif not math.isfinite(duration):
        raise ConfigError(f"expected a finite number of seconds, got {duration!r}")
    else:
        seconds = float(duration)
    if seconds > MAX_WAIT:
        raise ConfigError(f"expected at most {MAX_WAIT:.0f} seconds (1,000 years), got "
                          f"{duration!r}")
    return seconds


def sleep(duration: float | dt.timedelta) -> Awaitable[None]:
    """A durable timer. The run is released while it waits (unless the wait is short),
    and wakes when it is due on whichever worker is up; the wake-up time is journaled,
    so it survives every worker being stopped. Outside a workflow, and in a step (whose
    outcome is journaled as a whole): ``asyncio.sleep``. A duration of zero or less
    wakes at once.

    Raises:
        ConfigError: ``duration`` is not a finite number of seconds (or a timedelta),
            or is over 1,000 years (``MAX_WAIT``); nothing is journaled.
    """
    seconds = _seconds(duration)
    ctx = current_run.get()
    if ctx is None or current_step.get() is not None:
        return asyncio.sleep(seconds)
    return timer(ctx, ctx.take_position(), seconds)


def wait_for_signal(name: str, timeout: float | dt.timedelta | None = None) -> Awaitable[Any]:
    """Wait for the next signal ``name`` and return its JSON payload.

    Signals sent before the wait are kept and delivered in order; several waits on one
    name consume successive signals. The run is released while it waits.

    The signal or the timeout, whichever came first, wins: a signal sent before the
    deadline is delivered even if no worker got to the wait until after it, and one sent
    after the deadline is no answer to this wait (it stays for a later one), even if the
    workers were down at the deadline. A signal already there when the wait starts
    answers it, ``timeout=0`` too, whatever the clock of the process that sent it said.

    Raises:
        SignalTimeout: ``timeout`` passed first (catchable).
        ConfigError: ``timeout`` is not a finite number of seconds, or is over 1,000
            years; nothing is journaled.
    """
    ctx = _ctx("wait_for_signal")
    t = None if timeout is None else _seconds(timeout)
    refuse: InvalidName | None = None
    try:
        check_name("signal name", name, new=ctx.journal.get(ctx.position) is None)
    except InvalidName as exc:
        if len(name) <= MAX_NAME:
            raise
        check_name("signal name", name, new=False)
        refuse = exc  # (unless its signal is there: see signal_wait)
    return signal_wait(ctx, ctx.take_position(), name, t, refuse)


def set_status(info: Any) -> None:
    """Publish a small JSON status for observers (``App.get_run``, ``tether show``)."""
    ctx = current_run.get()
    if ctx is None:
        return
    status_publish(ctx, info)


class ChildHandle(Generic[R]):
    """A child run started from a workflow."""

    def __init__(self, run_id: str, annotation: Any = None) -> None:
        self.run_id = run_id
        self._annotation = annotation

    def __repr__(self) -> str:
        return f"ChildHandle(run_id={self.run_id!r})"

    def result(self) -> Awaitable[R]:
        """Wait (released) for the child to end; its outcome is journaled.

        Raises:
            RunFailed: the child failed or was cancelled.
        """
        ctx = _ctx("ChildHandle.result")
        return child_wait(ctx, ctx.take_position(), self.run_id, self._annotation)


def _child_target(workflow: Callable[..., Any] | str, queue: str | None) -> tuple[str, str, Any]:
    if isinstance(workflow, str):
        return workflow, queue or "default", None
    wdef = getattr(workflow, "__tether_workflow__", None)
    if wdef is None:
        raise ConfigError(
            f"{getattr(workflow, '__name__', workflow)!r} is not a workflow: decorate it "
            "with @app.workflow"
        )
    return wdef.name, queue or wdef.queue, wdef.return_annotation


async def _start_child(ctx: RunContext, pos: int, workflow: Callable[..., Any] | str,
                       args: tuple[Any, ...], kwargs: dict[str, Any], queue: str | None,
                       run_id: str | None, on_parent_cancel: str,
                       inherit: Mapping[str, Any] | None = None) -> ChildHandle[Any]:
    if queue is not None and ctx.journal.get(pos) is None:
        check_name("queue", queue)  # (as App.start; "" meant the default queue before)
    name, q, annotation = _child_target(workflow, queue)
    if ctx.journal.get(pos) is None:
        # A new start: arguments its function (known here) cannot take raise now, in
        # the workflow's code, as App.start does. (Not a start the journal holds: a
        # replay answers it as it was, its child started under older rules.)
        wdef = (ctx.workflows.get(name) if isinstance(workflow, str)
                else getattr(workflow, "__tether_workflow__", None))
        if isinstance(wdef, WorkflowDef):
            wdef.check_arguments(args, kwargs)
    if run_id is not None:  # (a child the journal holds was started under older rules)
        check_name("run id", run_id, new=ctx.journal.get(pos) is None)
    if isinstance(workflow, str) and queue is None and ctx.journal.get(pos) is None:
        # Named by string: its queue is the one the workers that serve it registered.
        with ctx.busy():
            q = (await ctx.store.workflow_list()).get(name, q)
    payload: dict[str, Any] = {"args": list(args)}
    if kwargs:
        payload["kwargs"] = kwargs
    if inherit:  # (stored with the child's input: it outlives every crash of either run)
        payload[INHERIT_KEY] = dict(inherit)
    what = f"input of child workflow {name!r}"
    # Bound to the child (the id ``child_start`` gives it), whose input it is; the
    # copy journaled as the operation's arguments is bound to this run.
    text = ctx.codec.for_run(run_id or _child_id(ctx, pos)).encode(payload, what, SLOT_INPUT)
    journaled = ctx.codec.encode(payload, what) if ctx.codec.binds else text
    child_id = await child_start(ctx, pos, name, q, text, run_id, on_parent_cancel,
                                 journaled)
    return ChildHandle(child_id, annotation)


def _child_id(ctx: RunContext, pos: int) -> str:
    """A child's default run id: ``<parent id>.<position>``, and after a
    ``continue_as_new`` ``<parent id>.g<generation>.<position>`` (positions start again
    at 0 in each generation: the same id was the earlier generation's child, whose
    result the new one got)."""
    if ctx.generation:
        return f"{ctx.run_id}.g{ctx.generation}.{pos}"
    return f"{ctx.run_id}.{pos}"


def start_child(workflow: Callable[..., Awaitable[R]] | str, *args: Any, queue: str | None = None,
                run_id: str | None = None, on_parent_cancel: str = "cancel",
                **kwargs: Any) -> Awaitable[ChildHandle[R]]:
    """Start ``workflow`` as an independent durable child run on its own queue.

    ``queue`` defaults to the workflow's own (an empty name is ``InvalidName``, as for
    ``App.start``); ``run_id`` to ``<parent id>.<position>``
    (``<parent id>.g<generation>.<position>`` after ``continue_as_new``).
    ``on_parent_cancel`` is ``"cancel"`` (cancelling the parent cancels the child: it is
    asked to when the parent's code gets ``Cancelled``, so a parent that catches it
    and awaits the child sees it end ``cancelled``) or ``"abandon"``. A workflow may be
    named by string when its code lives elsewhere.
    """
    if on_parent_cancel not in ("cancel", "abandon"):
        raise ConfigError("on_parent_cancel must be 'cancel' or 'abandon'")
    ctx = _ctx("start_child")
    return _start_child(ctx, ctx.take_position(), workflow, args, kwargs, queue, run_id,
                        on_parent_cancel)


def call(workflow: Callable[..., Awaitable[R]] | str, *args: Any, queue: str | None = None,
         run_id: str | None = None, **kwargs: Any) -> Awaitable[R]:
    """Start a child run and wait for its result (a "durable tool" on its own queue).

    Two operations, the start and the wait, whose positions are both taken when
    ``call`` is called: ``asyncio.gather(tether.call(a), tether.call(b))`` records a's
    start and wait, then b's, whichever child starts or ends first, so a replay (which
    answers both starts at once) asks for the same positions."""
    ctx = _ctx("call")
    start = ctx.take_position()
    return _call(ctx, start, ctx.take_position(), workflow, args, kwargs, queue, run_id)


async def _call(ctx: RunContext, start: int, wait: int, workflow: Callable[..., Any] | str,
                args: tuple[Any, ...], kwargs: dict[str, Any], queue: str | None,
                run_id: str | None) -> Any:
    handle = await _start_child(ctx, start, workflow, args, kwargs, queue, run_id, "cancel")
    return await child_wait(ctx, wait, handle.run_id, handle._annotation)


# -- steps ---------------------------------------------------------------------------------


async def run_step(ctx: RunContext, sdef: StepDef, pos: int, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
    """A step: answered from the journal, or run under its retry policy until it succeeds
    or fails for good. Each attempt's outcome is journaled before the step goes on; the
    retry decision is ``decide_retry`` (pure).

    This runs once per step of every run, so its common path (a first execution that
    succeeds) is kept flat: no coroutine of its own for the checks, the encoding, the
    call of an async step or the journaling of its result."""
    # (its loop given: ``current_task()`` would look it up, a getpid() system call)
    task = asyncio.current_task(ctx._loop)
    if task is not None:
        ctx.tasks.add(task)
    if ctx.enters(pos):
        await ctx.enter(pos)
    name = sdef.name
    entry = ctx.recorded(pos, OperationKind.STEP, name)
    if entry is not None and entry.status != PENDING:
        ctx.replayed += 1
        if ctx.compares_args:  # (the replayer's opt-in check; a worker never compares)
            ctx.compare_args(entry, [list(args), kwargs] if kwargs else list(args))
        if entry.status == ERROR and _was_cancelled(ctx, entry):
            await _cancelled_again(ctx)
        if sdef.on_recorded is not None and entry.status == OK:
            value = _outcome(ctx, entry, sdef)
            sdef.on_recorded(value)
            if ctx.waits(task):
                await ctx.turn(entry.finished_at, pos)
        else:
            if ctx.waits(task):
                await ctx.turn(entry.finished_at, pos)  # (see RunContext.turn)
            value = _outcome(ctx, entry, sdef)
        ctx.count_replay(sdef, pos, value)
        return value
    codec = ctx.codec
    try:
        args_text = codec.encode([list(args), kwargs] if kwargs else list(args),
                                 f"arguments of step {name!r}")
    except PayloadError as exc:
        await _args_unstorable(ctx, name, pos, exc)
        raise
    ctx.executed += 1
    cut_off = ctx.cut_off
    if cut_off is None:  # (a run taken over: read once per execution)
        with ctx.busy():
            cut_off = await ctx.read_cut_off()
        if isinstance(ctx.stop, Lost):  # (lost meanwhile: see _take_rate)
            raise _Stop()
    state = _Attempts.resume(ctx, name, entry, cut_off.get(pos))
    writer = ctx.attempt_writer
    fresh = entry is None  # (no entry yet, and no attempt of this execution ended)
    while True:
        if state.next_at is not None:
            await ctx.wait_until(state.next_at, state.waiting_for or f"retry {name}")
            await ctx.enter(pos)
        started = ctx.clock.now()
        while started >= ctx.lease_until:  # (ran out by this clock: not renewed in time)
            await ctx.lease_renewed()
            if ctx.enters(pos):  # (stopped, draining, or a cancel to deliver meanwhile)
                await ctx.enter(pos)
            started = ctx.clock.now()
        state.begin(started)
        # Every attempt's history, with the worker running it (written off the hot path).
        attempt_id = writer.next_id()
        head = (attempt_id, ctx.run_id, ctx.generation, pos, name, state.attempts,
                ctx.lease.worker_id)
        writer.note(attempt_id, (*head, "running", started, None, None))
        try:
            if sdef.rate_limit is not None:
                await _take_rate(ctx, sdef)
            info = StepInfo(ctx.run_id, pos, name, state.attempts, ctx.generation,
                            state.last_error)
            attempt = _invoke(ctx, sdef, info, args, kwargs, task, head, started)
            # (no observer: no wrapping coroutine, one fewer frame per step)
            value = await (_observe.step(ctx, info, attempt) if _observe.observers
                           else attempt)
        except _Stop:
            raise
        except _NotStarted:  # (its body never ran: the next execution runs it)
            writer.note(attempt_id, (*head, "superseded", started, ctx.clock.now(), None))
            raise _Stop() from None
        except asyncio.CancelledError:
            if (_cancelled_by_workflow(ctx, sdef, pos, state, args_text, task)
                    or _cancelled_unjournaled(ctx, task)):
                writer.note(attempt_id, (*head, "cancelled", started, ctx.clock.now(), None))
            raise
        except _Interrupted:
            fresh = False
            writer.note(attempt_id, (*head, "cancelled", started, ctx.clock.now(), None))
            await ctx.enter(pos)  # delivers the cancel at this position
            continue  # (a cancel already delivered: the step runs again)
        except BaseException as exc:
            # A library's sys.exit() or a KeyboardInterrupt raised by user code is a
            # failed attempt like any other, not the worker's end (the worker's own
            # shutdown arrives as CancelledError, handled above; a CancelledError that
            # the step's code raised itself arrives as _OwnCancel, see ``_invoke``, and a
            # plain-def step's GeneratorExit too, see ``_in_thread``).
            exc = _raised(exc)
            fresh = False
            writer.note(attempt_id, (
                *head, "postponed" if isinstance(exc, Postpone) else "error", started,
                ctx.clock.now(), codec.encode_error(error_to_dict(exc))))
            await _record_failure(ctx, sdef, pos, state, exc, args_text)
            continue
        now = ctx.stamp()
        first_at = state.first_at
        if ctx.lift:  # (the stamp past the clock: the start too, the step keeps its length)
            started = min(started + ctx.lift, now)
            first_at = state.started_at(ctx.lift, now)
        writer.note(attempt_id, (*head, "ok", started, now, None))
        # The result is journaled before the workflow goes on; a result that cannot be
        # stored fails the step for good.
        try:
            text = codec.encode(value, f"result of step {name!r}")
        except PayloadError as exc:
            err = codec.encode_error(error_to_dict(exc, attempts=state.attempts))
            await ctx.journal_result(JournalEntry(
                pos, OperationKind.STEP, name, ERROR, error=err, attempts=state.attempts,
                started_at=first_at, finished_at=now, args=args_text,
            ))
            if _observe.observers:
                _observe.step_settled(ctx, pos, False)
            raise step_error(codec.decode(err), step=name, position=pos) from exc
        done = JournalEntry(
            pos, OperationKind.STEP, name, OK, result=text, attempts=state.attempts,
            started_at=first_at, finished_at=now, args=args_text,
        )
        try:
            if ctx.ordered:  # (a run of several tasks: see RunContext.turn)
                await ctx.in_flight(pos, now, ctx.write(done))
            else:
                await ctx.write(done)
        except BaseException:
            # Its body ran, its result's write did not end well: refused by fencing
            # (another worker took the run over), or its outcome unknown (cancelled
            # mid-way). If the run was lost, its end says which (``superseded``).
            ctx.unconfirmed(attempt_id, (*head, "ok", started, now, None), done)
            raise
        if _observe.observers:  # (the attempt's span ends as its result stands)
            _observe.step_settled(ctx, pos, False)
        if fresh and state.attempts == 1:  # (a new entry: it holds this attempt)
            writer.settled(attempt_id)
        if ctx.ordered:
            await ctx.turn(now, pos)
        return codec.decode_encoded(value, text, sdef.return_annotation)


@dataclass(slots=True)
class _Attempts:
    """Where a step's attempts stand: restored from its pending entry after a release or
    a crash, so the count and the schedule survive both."""

    attempts: int = 0
    first_at: float | None = None
    #: ``first_at`` was read off this execution's clock (not the journal's).
    first_here: bool = False
    next_at: float | None = None
    #: What the run waits for before the next attempt ("" : "retry <step>").
    waiting_for: str = ""
    #: The journaled error of the previous failed attempt (``StepInfo.previous_error``):
    #: from the pending entry, then from each failure of this execution.
    last_error: dict[str, Any] | None = None

    @classmethod
    def resume(cls, ctx: RunContext, name: str, entry: JournalEntry | None,
               cut_off: tuple[int, float] | None = None) -> _Attempts:
        """``cut_off``: the highest number and the earliest start of the attempts an
        earlier execution began after the entry and never ended (a kill -9, a stop):
        they count as attempts (the next is numbered after them, and the policy's
        ``max_attempts``, backoff and ``max_duration`` count them), but the step always
        runs again after one: it did not fail (crashes are bounded by ``max_crashes``)."""
        state = cls()
        if cut_off is not None:
            state.attempts, state.first_at = cut_off
        if entry is None:
            return state
        state.attempts = max(entry.attempts, state.attempts)
        state.first_at = entry.started_at or state.first_at
        state.next_at = entry.next_attempt_at
        if entry.error is not None:
            prev = ctx.codec.decode(entry.error) or {}
            if isinstance(prev, dict):
                state.last_error = prev
                if str(prev.get("type", "")).endswith(".Postpone"):
                    state.waiting_for = f"postponed {name}: {prev.get('message', '')}"
        return state

    def begin(self, now: float) -> None:
        if self.first_at is None:
            self.first_at = now
            self.first_here = True
        self.attempts += 1

    def started_at(self, lift: float, finished_at: float) -> float | None:
        """The entry's ``started_at`` for one finished at ``finished_at``, a stamp
        ``lift`` past the clock (``RunContext.stamp``): a first attempt's start read off
        this execution's clock is moved by as much, so that the step keeps its length
        (not the clock's lag behind the journal's times); one from the journal stays."""
        if self.first_at is None or not self.first_here:
            return self.first_at
        return min(self.first_at + lift, finished_at)


async def _args_unstorable(ctx: RunContext, name: str, pos: int, exc: PayloadError) -> None:
    """Arguments that cannot be stored fail the step before it runs (recorded, so replay
    fails the same way)."""
    now = ctx.stamp()
    await ctx.journal_result(JournalEntry(pos, OperationKind.STEP, name, ERROR,
                                   error=ctx.codec.encode_error(error_to_dict(exc)),
                                   started_at=now, finished_at=now))


async def _record_failure(ctx: RunContext, sdef: StepDef, pos: int, state: _Attempts,
                          exc: BaseException, args_text: str) -> None:
    """Journal a failed attempt and schedule the next; raise ``StepError`` (the recorded
    error) if the step failed for good."""
    now = ctx.stamp()
    assert state.first_at is not None
    # The next attempt's time is compared with the clock: off the clock's time, not
    # the stamp's (past the clock's by ``lift`` when the journal's times are ahead).
    decision = decide_retry(sdef.retry, exc, attempts=state.attempts,
                            first_attempt_at=state.first_at, now=now - ctx.lift)
    recorded = error_to_dict(exc, attempts=decision.attempts)
    err = ctx.codec.encode_error(recorded)
    state.last_error = recorded
    final = decision.failed_for_good
    entry = JournalEntry(
        pos, OperationKind.STEP, sdef.name, ERROR if final else PENDING, error=err,
        attempts=decision.attempts,
        started_at=state.started_at(ctx.lift, now) if final else state.first_at,
        finished_at=now if final else None, next_attempt_at=decision.retry_at,
        args=args_text,
    )
    if final:
        await ctx.journal_result(entry)  # (the workflow receives the error next)
    else:
        await ctx.write(entry)
    if not decision.postponed:
        _observe.step_failed(ctx, StepInfo(ctx.run_id, pos, sdef.name, state.attempts), exc,
                             decision.retry_at)
    if decision.retry_at is None:
        raise step_error(ctx.codec.decode(err), step=sdef.name, position=pos) from exc
    state.attempts = decision.attempts
    state.next_at = decision.retry_at
    state.waiting_for = (f"postponed {sdef.name}: {exc}" if decision.postponed
                         else f"retry {sdef.name}")


async def _take_rate(ctx: RunContext, sdef: StepDef) -> None:
    """Take from the step's rate limit, or postpone the step until it can.

    The step does not start if the run's lease was lost while its limit was read (the
    heartbeat's finding, or a write of another of the run's tasks refused by fencing):
    another worker holds the run, and may run that very step. Read in memory, as
    ``_in_thread`` does, and for the same reasons (only ``Lost``: a block or a release
    leaves the lease valid; the loss's cancel does not reach a branch that ``gather(...,
    return_exceptions=True)`` leaves running). Nor does it start while the lease has
    run out by this worker's clock (the read outlasted it): it waits for the heartbeat
    to renew it, as at the attempt's start (``RunContext.lease_renewed``)."""
    rl = sdef.rate_limit
    assert rl is not None
    with ctx.busy():
        wait = await ctx.store.rate_acquire(key=rl.key, limit=rl.limit, period=rl.per,
                                             amount=rl.cost, now=ctx.clock.now())
    if isinstance(ctx.stop, Lost):
        raise _NotStarted()
    while ctx.clock.now() >= ctx.lease_until:  # (see RunContext.lease_renewed)
        await ctx.lease_renewed()
        if isinstance(ctx.stop, Lost):
            raise _NotStarted()
        if ctx.stop is not None:
            raise _Stop()
    if wait > 0:
        raise Postpone(wait, f"rate limit {rl.key!r}")


#: Plain-def steps whose function is running in a thread now (``busy_step_threads``).
_threads_busy = 0
_threads_busy_lock = threading.Lock()


class _NotStarted(Exception):
    """A step's attempt that did not start: the run's lease was lost (found by a write
    of another of its tasks or by the heartbeat) while the step waited for a free
    thread (a plain-def step: ``_in_thread``) or for its rate limit (``_take_rate``).
    Internal: ``_invoke`` and ``run_step`` note the attempt ``superseded`` and make it
    the run's stop."""


class _LeaseRanOut(Exception):
    """A plain-def step's function that its thread did not start: the run's lease ran
    out by the worker's clock (``RunContext.lease_until``) while the step waited for a
    free thread. Internal: ``_invoke`` waits for the renewal in the event loop (not in
    the thread, which other steps need) and submits the function again
    (``_lease_back``)."""


def _in_thread(ctx: RunContext, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A plain-def step's function in its executor thread, counted while it runs.

    Not started if the run's lease was lost while the step waited for a free thread
    (every thread busy with other steps): another worker holds the run, and may have
    run that very step already. The lease as this worker knows it, read in memory
    (``ctx.stop`` is ``Lost``: the heartbeat's finding, or a write refused by fencing),
    with no store round trip. The cancel of the run's tasks that follows the loss
    reaches a queued step only if its task is cancelled before a thread takes it, and
    not at all a branch that ``gather(..., return_exceptions=True)`` leaves running.
    (Any other stop, a block or a release, leaves the lease valid: a step that starts
    then has its result journaled, as one that had started before.)

    Nor does it start once the run's lease ran out by this worker's clock meanwhile
    (``RunContext.lease_until``, the worker's margin included: the attempt's start
    compared it before the step queued): the thread hands the step back to the event
    loop (``_LeaseRanOut``), where it waits for the renewal as an async step does,
    leaving the thread to other steps."""
    if isinstance(ctx.stop, Lost):
        raise _NotStarted()
    if ctx.clock.now() >= ctx.lease_until:
        raise _LeaseRanOut()
    global _threads_busy
    with _threads_busy_lock:
        _threads_busy += 1
    try:
        return fn(*args, **kwargs)
    except GeneratorExit as exc:
        # Set on the future the step's coroutine awaits, it would be thrown into that
        # coroutine, which Python then closes: the engine's code around it, awaiting as
        # it records the failure, raised RuntimeError("coroutine ignored GeneratorExit"),
        # an executor crash. It is the attempt's error, as it is for an async step.
        raise _OwnCancel() from exc
    finally:
        with _threads_busy_lock:
            _threads_busy -= 1


def busy_step_threads() -> int:
    """How many plain-def steps' functions are running in threads of this process: what
    keeps ``tether worker`` from exiting past its grace period. (An executor's thread
    that has returned its step is idle, not busy: counting live threads took one that
    had just returned, not yet woken by the executor's shutdown, for a stuck step.)"""
    return _threads_busy


def _submit(ctx: RunContext, loop: asyncio.AbstractEventLoop, call: Callable[[], Any],
            ) -> tuple[concurrent.futures.Future[Any] | None, asyncio.Future[Any]]:
    """A plain-def step's ``call`` submitted to the run's executor (None: the loop's
    default one, whose future is not kept): the thread's future and the loop's."""
    thread: concurrent.futures.Future[Any] | None = None
    if ctx.executor is not None:  # (as run_in_executor does, the thread's kept)
        thread = ctx.executor.submit(call)
        inner = asyncio.wrap_future(thread, loop=loop)
    else:
        inner = loop.run_in_executor(None, call)
    ctx._step_tasks.add(inner)
    return thread, inner


async def _lease_back(ctx: RunContext, head: tuple[str, str, int, int, str, int, str] | None,
                      started: float) -> None:
    """A plain-def step handed back by its thread (``_LeaseRanOut``): wait in the event
    loop until the heartbeat renews the run's lease (``RunContext.lease_renewed``), then
    let ``_invoke`` submit it again, under the same attempt (its row stays ``running``
    meanwhile, as a step's that waits for a thread does). It never starts if the run
    stops meanwhile: lost to another worker, its attempt is noted ``superseded``
    (``_NotStarted``); released or blocked, ``cancelled`` (as one the run's cancel takes
    out of the executor's queue: ``_outlived``); a cancel request ends it as an
    interrupted attempt (``_Interrupted``: ``run_step`` delivers the cancel); the task's
    own cancel (the workflow's code, the worker's stop) goes to ``run_step``."""
    try:
        while ctx.clock.now() >= ctx.lease_until:
            if (ctx.stop is not None
                    or (ctx.cancel_requested and not ctx.cancel_delivered)):
                break
            await ctx.lease_renewed()
    except asyncio.CancelledError:
        if ctx.stop is not None:  # (the run's unwinding: nothing else notes it)
            _not_started(ctx, head, started)
        raise
    if isinstance(ctx.stop, Lost):
        raise _NotStarted()  # (noted by _invoke)
    if ctx.stop is not None:
        _not_started(ctx, head, started)
        raise _Stop()
    if ctx.cancel_requested and not ctx.cancel_delivered:
        raise _Interrupted()


def _not_started(ctx: RunContext, head: tuple[str, str, int, int, str, int, str] | None,
                 started: float) -> None:
    """Note the attempt of a plain-def step that no thread started, as its run stopped:
    ``superseded`` if the run was lost (the next owner runs it), else ``cancelled``."""
    if head is not None and not ctx.shutting_down():
        status = "superseded" if isinstance(ctx.stop, Lost) else "cancelled"
        ctx.attempt_writer.note(head[0], (*head, status, started, ctx.clock.now(), None))


async def _invoke(ctx: RunContext, sdef: StepDef, info: StepInfo, args: tuple[Any, ...],
                  kwargs: dict[str, Any], task: asyncio.Task[Any] | None,
                  head: tuple[str, str, int, int, str, int, str] | None = None,
                  started: float = 0.0) -> Any:
    """One attempt of the step, with ``current_step`` set.

    An async step is awaited in the task that runs the operation (a task of its own per
    step cost two more trips through the event loop per step). A cancel request
    interrupts it by cancelling this task (``RunContext.request_cancel``) and the cancel
    is taken back here (``uncancel``), as ``asyncio.timeout`` does for the timeout.
    ``task`` is the current task (``run_step`` looked it up). A sync step runs in the
    executor, with the caller's context; a sync step's function that outlives the
    run's execution here (the run was taken from this worker, or unwound, while its
    thread ran: a thread cannot be stopped) notes its attempt's end when it returns
    (``_outlived``: ``head`` and ``started`` are the attempt's). A step replaced by a
    test double (``RunContext.step_mocks``) calls the double, under the step's own
    timeout."""
    if ctx.step_mocks:
        sdef = ctx.step_mocks.get(sdef.name, sdef)
    token = current_step.set(info)
    try:
        if not sdef.is_async:
            context = contextvars.copy_context()
            loop = asyncio.get_running_loop()
            call = functools.partial(context.run, _in_thread, ctx, sdef.fn, *args, **kwargs)
            thread, inner = _submit(ctx, loop, call)
            try:
                while True:
                    try:
                        if sdef.timeout is None:
                            value = await inner
                        else:
                            async with asyncio.timeout(sdef.timeout):
                                value = await inner
                        break
                    except _LeaseRanOut:  # (its thread did not start it: see _in_thread)
                        ctx._step_tasks.discard(inner)
                        thread = None  # (none holds it while it waits)
                        await _lease_back(ctx, head, started)
                        thread, inner = _submit(ctx, loop, call)
                if inspect.isawaitable(value):
                    _not_awaited(value)
                    raise NonRetryable(
                        f"step {sdef.name!r}: its plain function returned "
                        f"{type(value).__name__}, which nothing awaits: a function that "
                        "returns an awaitable must itself be async def (`async def f(): "
                        "return await search(q)`, not `lambda: search(q)`)")
                return value
            except _NotStarted:
                if head is not None:  # (its body never ran: the next execution runs it)
                    ctx.attempt_writer.note(head[0], (*head, "superseded", started,
                                                      ctx.clock.now(), None))
                raise _Stop() from None
            except TimeoutError:
                if inner.done() and not inner.cancelled():
                    raise  # the step itself raised TimeoutError
                timed_out = StepTimeout(sdef.name, sdef.timeout or 0.0)
                if thread is not None and head is not None:  # (its function runs on)
                    _ran_on(ctx, thread, head, started, timed_out)
                raise timed_out from None
            except asyncio.CancelledError as exc:
                current = asyncio.current_task()
                if current is not None and not current.cancelling():
                    if inner.cancelled() and ctx.cancel_requested:
                        if thread is not None and head is not None:
                            _ran_on(ctx, thread, head, started)  # (noted cancelled)
                        raise _Interrupted() from None
                    if not inner.cancelled():  # the step's function raised it
                        raise _OwnCancel() from exc
                if thread is not None and head is not None:
                    if ctx.stop is not None:
                        _outlived(ctx, thread, head, started)
                    elif task is not None and not ctx.shutting_down():
                        # (run_step notes it cancelled: _cancelled_by_workflow, or
                        # _cancelled_unjournaled, whichever applies)
                        _ran_on(ctx, thread, head, started)
                raise
            finally:
                ctx._step_tasks.discard(inner)
        assert task is not None
        ctx._step_tasks.add(task)
        scope: asyncio.Timeout | None = None
        try:
            if sdef.timeout is None:
                return await sdef.fn(*args, **kwargs)
            async with asyncio.timeout(sdef.timeout) as scope:
                return await sdef.fn(*args, **kwargs)
        except TimeoutError:
            if scope is not None and scope.expired():
                raise StepTimeout(sdef.name, sdef.timeout or 0.0) from None
            raise  # the step itself raised TimeoutError
        except asyncio.CancelledError as exc:
            if task in ctx.step_interrupts:
                ctx.step_interrupts.discard(task)
                # Interrupted by the cancel request alone (no other cancel of this task,
                # such as the worker's shutdown, is pending).
                if task.uncancel() == 0 and ctx.cancel_requested:
                    raise _Interrupted() from None
            elif not task.cancelling():
                raise _OwnCancel() from exc  # nobody cancelled the task: the step raised it
            raise
        finally:
            ctx._step_tasks.discard(task)
            if task in ctx.step_interrupts:
                # The step returned or raised despite the cancel (it swallowed it).
                ctx.step_interrupts.discard(task)
                task.uncancel()
    finally:
        current_step.reset(token)


class _OwnCancel(Exception):
    """A step's code raised ``asyncio.CancelledError`` although nobody cancelled its task,
    or a plain-def step's function raised ``GeneratorExit`` (``_in_thread``) (internal;
    its ``__cause__`` is that error): a failed attempt like any other error. Let through,
    the first ended the run's task as if the worker were stopping, and the run stayed
    'running' under the live worker's lease with nothing executing it; the second crashed
    the executor."""


def _raised(exc: BaseException) -> BaseException:
    """What a step's code raised: ``exc``, or the error an ``_OwnCancel`` carries."""
    if isinstance(exc, _OwnCancel) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


#: The error type of a step cancelled by the workflow's own code (journaled).
_CANCELLED_TYPE = "asyncio.CancelledError"


def _outlived(ctx: RunContext, thread: concurrent.futures.Future[Any],
              head: tuple[str, str, int, int, str, int, str], started: float) -> None:
    """A sync step's attempt whose run stopped executing here (``ctx.stop``: the lease
    lost to another worker, the run released or blocked) while its function ran on in
    its thread: when the function ends, its attempt is noted ``superseded`` (it returned,
    but its result is never recorded: the run's next execution runs the step again) or
    ``error`` (it raised). Until then its row stays ``running``, which it is (``show``
    calls it interrupted). A function no thread had taken yet is cancelled with the run's
    tasks and never runs: its attempt is noted at once, ``superseded`` if the run was
    lost (as ``_in_thread`` notes one it holds back), else ``cancelled`` (it stayed
    ``running``, shown interrupted, though nothing ran it). Not when the worker is
    stopping by then (its history is written as it stops; the attempt stays as noted),
    nor when the event loop is gone."""
    loop = ctx._loop

    def ended(_: concurrent.futures.Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # (the event loop is closed)
            loop.call_soon_threadsafe(note)

    def note() -> None:
        if ctx.shutting_down():
            return
        now = ctx.clock.now()
        if thread.cancelled():  # (no thread took it: its body never ran)
            status = "superseded" if isinstance(ctx.stop, Lost) else "cancelled"
            ctx.attempt_writer.note(head[0], (*head, status, started, now, None))
            return
        exc = thread.exception()
        if exc is None or isinstance(exc, _NotStarted):  # (not started: see _in_thread)
            row: AttemptRow = (*head, "superseded", started, now, None)
        else:
            row = (*head, "error", started, now,
                   ctx.codec.encode_error(error_to_dict(_raised(exc))))
        ctx.attempt_writer.note(head[0], row)

    thread.add_done_callback(ended)


def _ran_on(ctx: RunContext, thread: concurrent.futures.Future[Any],
            head: tuple[str, str, int, int, str, int, str], started: float,
            timed_out: StepTimeout | None = None) -> None:
    """A plain-def step's attempt noted ``cancelled`` (a cancel request, the workflow's
    own code, an ``asyncio.timeout`` around the main task), or ``error`` by its
    ``timeout=`` (``timed_out``: the ``StepTimeout`` noted), while its function may run
    on in its thread (a thread cannot be stopped): when the function ends, its attempt
    says so, its status, its journal and its run as they are. Its end time becomes the
    function's end (the attempt's duration: how long it ran), and its error (a cancel's
    ``asyncio.CancelledError``, or the ``StepTimeout`` with its message continued) tells
    how long it ran past the cancel or the timeout (``ran_on``, seconds) and how it
    ended: returned (its result dropped) or raised (``raised``: that error). Nothing for
    a function no thread started (it never ran), nor when the worker is stopping by then
    (as ``_outlived``)."""
    loop = ctx._loop
    cancelled_at = ctx.clock.now()

    def ended(_: concurrent.futures.Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # (the event loop is closed)
            loop.call_soon_threadsafe(note)

    def note() -> None:
        if ctx.shutting_down() or thread.cancelled():
            return
        exc = thread.exception()
        if isinstance(exc, (_NotStarted, _LeaseRanOut)):  # (not started: _in_thread)
            return
        exc = None if exc is None else _raised(exc)
        now = ctx.clock.now()
        ran_on = max(now - cancelled_at, 0.0)
        if exc is None:
            how = "returned (its result dropped)"
        else:
            how = f"raised {type(exc).__name__}: {exc}"
        err: dict[str, Any]
        if timed_out is None:
            status = "cancelled"
            err = {"type": _CANCELLED_TYPE,
                   "message": f"ran on {ran_on:.1f} s after its cancel, then {how}"}
        else:  # (the error run_step noted, continued)
            status = "error"
            err = error_to_dict(timed_out)
            err["message"] = (f"{err.get('message')}; it ran on {ran_on:.1f} s after its "
                              f"timeout, then {how}")
        err["ran_on"] = round(ran_on, 3)
        if exc is not None:
            err["raised"] = error_to_dict(exc)
        ctx.attempt_writer.amend(head[0], (*head, status, started, now,
                                           ctx.codec.encode_error(err)))

    thread.add_done_callback(ended)


def _cancelled_by_workflow(ctx: RunContext, sdef: StepDef, pos: int, state: _Attempts,
                           args_text: str, task: asyncio.Task[Any] | None) -> bool:
    """A step's task was cancelled while the step ran or waited for its next attempt.
    When the workflow's own code did it (``task.cancel()`` of a branch, the loser of
    ``asyncio.wait(..., FIRST_COMPLETED)``, ``asyncio.wait_for``'s timeout, a
    ``TaskGroup`` whose sibling failed), the cancellation is the step's outcome: it is
    journaled, so replay neither runs the step again nor lets it finish (see
    ``_cancelled_again``). Not when Tether unwinds the run (released, blocked, lease
    lost) or abandons the tasks left running after the workflow returned, nor for a
    step awaited by the workflow's main task itself (its cancel cannot be told apart
    from the worker's stop): the step then runs again at the next replay. The entry is
    written with the run's next write (``RunContext.note_cancelled``), and only if the
    worker is not stopping by then (nor when the event loop closes, which cancels every
    task at once). Returns whether it is the step's outcome (its attempt then ends
    ``cancelled``: it stayed ``running``, which ``show`` called interrupted, though
    the journal says the step ended; a plain-def step's function already running in its
    thread runs on, and its result is dropped)."""
    if (ctx.stop is not None or ctx.abandoned or task is None or task is ctx.main_task
            or ctx.shutting_down()):
        return False
    now = ctx.clock.now()
    err = ctx.codec.encode_error({
        "type": _CANCELLED_TYPE, "attempts": state.attempts,
        "message": f"step {sdef.name!r} was cancelled by the workflow's code"})
    ctx.note_cancelled(JournalEntry(pos, OperationKind.STEP, sdef.name, ERROR, error=err,
                                    attempts=state.attempts,
                                    started_at=state.first_at or now, finished_at=now,
                                    args=args_text))
    return True


def _cancelled_unjournaled(ctx: RunContext, task: asyncio.Task[Any] | None) -> bool:
    """A step cancelled neither by the run's unwinding (``ctx.stop``) nor by the worker's
    stop, whose cancellation is not journaled (``_cancelled_by_workflow``): a branch the
    workflow left running when its code ended (the worker cancels it: ``abandoned``), or
    a step awaited by the main task itself when the workflow's code cancels that task
    (an ``asyncio.timeout`` around it). Its attempt ends ``cancelled``: nothing else
    notes it, and it stayed ``running``, which ``show`` called interrupted. The step's
    journal is unchanged (an abandoned branch's step is never recorded; the main task's
    runs again at the next replay)."""
    return (ctx.stop is None and task is not None
            and (ctx.abandoned or task is ctx.main_task) and not ctx.shutting_down())


def _was_cancelled(ctx: RunContext, entry: JournalEntry) -> bool:
    """Whether a step's error entry records its cancellation by the workflow's code."""
    err = ctx.codec.decode(entry.error) if entry.error else None
    return isinstance(err, dict) and err.get("type") == _CANCELLED_TYPE


async def _cancelled_again(ctx: RunContext) -> None:
    """Replay of a step that the workflow's code cancelled: it never returns. The
    workflow's code cancels it again at the same point (the sibling that won replays,
    the ``wait_for`` times out again), which ends it as it ended live."""
    await ctx._loop.create_future()


def _outcome(ctx: RunContext, entry: JournalEntry, sdef: StepDef) -> Any:
    if entry.status == ERROR:
        raise step_error(ctx.codec.decode(entry.error) or {}, step=sdef.name,
                         position=entry.position)
    return ctx.codec.decode(entry.result, sdef.return_annotation)


# -- waiting operations --------------------------------------------------------------------



async def timer(ctx: RunContext, pos: int, seconds: float) -> None:
    """A durable timer: the wake-up time is journaled when the timer starts."""
    await ctx.enter(pos)
    kind = OperationKind.SLEEP
    entry = ctx.recorded(pos, kind, "sleep")
    if entry is not None and entry.status == OK:
        ctx.replayed += 1
        if ctx.waits():
            await ctx.turn(entry.finished_at, pos)
        return
    if entry is None:
        now = ctx.clock.now()
        wake = now + max(seconds, 0.0)
        entry = JournalEntry(pos, kind, "sleep", PENDING,
                             result=ctx.codec.encode(wake, "timer"),
                             started_at=now, next_attempt_at=wake)
        await ctx.write(entry)
        ctx.executed += 1
    wake_at = entry.next_attempt_at if entry.next_attempt_at is not None else 0.0
    await ctx.wait_until(wake_at, f"timer until {_iso(wake_at)}")
    await ctx.enter(pos)
    await ctx.journal_result(JournalEntry(pos, kind, "sleep", OK, result=entry.result,
                                    started_at=entry.started_at, finished_at=ctx.stamp(),
                                    next_attempt_at=wake_at))


async def signal_wait(ctx: RunContext, pos: int, name: str, timeout: float | None,
                      refuse: InvalidName | None = None) -> Any:
    """Take the next signal ``name`` (journaled), or release the run until it comes.

    ``refuse``: the name is over ``MAX_NAME`` and the journal does not hold this wait.
    A run of a version without the limit may have been waiting for it, and
    ``App.signal`` takes such a name for the run that waits for it: if its signal is
    there, it is taken; else ``refuse`` is raised, as a new wait for it is refused."""
    await ctx.enter(pos)
    kind = OperationKind.SIGNAL
    entry = ctx.recorded(pos, kind, name)
    if entry is not None and entry.status != PENDING:
        ctx.replayed += 1
        if ctx.waits():
            await ctx.turn(entry.finished_at, pos)
        return _signal_outcome(ctx, entry, name)
    now = ctx.clock.now()
    first = False  # (see below)
    if refuse is not None and entry is None:
        deadline = None  # (one take; nothing journaled if it finds nothing)
    elif entry is None:
        first = True
        deadline = now + timeout if timeout is not None else None
        if deadline is not None:
            # The deadline is journaled so that replay does not restart the timeout.
            entry = JournalEntry(pos, kind, name, PENDING, started_at=now,
                                 next_attempt_at=deadline,
                                 args=ctx.codec.encode({"timeout": timeout}, "timeout"))
            await ctx.write(entry)
    else:
        deadline = entry.next_attempt_at
    timeout_error = ctx.codec.encode_error(
        {"type": "tether.errors.SignalTimeout", "message": str(SignalTimeout(name, timeout)),
         "timeout": timeout})
    # ``first``: a signal already there at the wait's first take, in the execution that
    # set its deadline, was sent before the wait (or raced its start), and answers it
    # even if its send time, the sender's clock (ahead of this one's), is past the
    # deadline (``timeout=0``: an agent's "is an interrupt waiting?" check). Later
    # takes, and those of an execution that found the deadline journaled, take only a
    # signal sent by the deadline, on the clock (not moved by the stamp's lead).
    while True:
        with ctx.busy():
            await ctx.flush()
            now = ctx.stamp()  # (the signal's entry, if one is taken, completes now)
            # The store compares the deadline (the clock's) with the clock's time, not
            # with the stamp (past it by ``lift``): the wait times out by the clock,
            # not early, and a signal sent after the deadline is no answer.
            take = ctx.store.signal_take(lease=ctx.lease, name=name, position=pos,
                                         deadline=deadline, now=now,
                                         timeout_error=timeout_error,
                                         sent_by=math.inf if first else None,
                                         clock_now=now - ctx.lift)
            first = False
            try:
                taken = await (ctx.in_flight(pos, now, take) if ctx.ordered else take)
            except LeaseLost as exc:
                raise ctx.halt(Lost(exc)) from None
        if taken is not None:
            break
        if refuse is not None and entry is None:
            raise refuse
        # (Parked while sibling tasks work: back here if the timeout comes meanwhile,
        # to record it, or take a signal sent since.)
        await ctx.release(Wait(deadline, f"signal {name}", signal=name), deadline)
    ctx.journal[pos] = taken
    ctx.executed += 1
    if ctx.ordered:
        await ctx.turn(taken.finished_at, pos)
    return _signal_outcome(ctx, taken, name)


def _signal_outcome(ctx: RunContext, entry: JournalEntry, name: str) -> Any:
    if entry.status == ERROR:
        err = ctx.codec.decode(entry.error) or {}
        raise SignalTimeout(name, err.get("timeout"))
    return ctx.codec.decode(entry.result, None, SLOT_SIGNAL)


async def child_start(ctx: RunContext, pos: int, workflow: str, queue: str, input_text: str,
                      run_id: str | None, on_parent_cancel: str,
                      args_text: str | None = None) -> str:
    """Start a child run (journaled with its id, and with ``args_text``, its input as
    this run's journal keeps it, default ``input_text``); returns the child's run id."""
    await ctx.enter(pos)
    kind = OperationKind.CHILD_START
    entry = ctx.recorded(pos, kind, workflow)
    if entry is not None and entry.status == OK:
        ctx.replayed += 1
        if ctx.compares_args and args_text is not None:  # (the replayer's opt-in check)
            ctx.compare_args(entry, ctx.codec.decode(args_text))
        if ctx.waits():
            await ctx.turn(entry.finished_at, pos)
        return str(ctx.codec.decode(entry.result))
    with ctx.busy():
        await ctx.flush()
        child_id = run_id or _child_id(ctx, pos)
        now = ctx.stamp()
        # (the child's times are compared with the clock: claimable now, not once the
        # clock has caught up with the journal's times)
        at = now - ctx.lift
        child = RunRecord(run_id=child_id, workflow=workflow, queue=queue,
                          status=RunStatus.QUEUED, input=input_text, created_at=at,
                          updated_at=at, available_at=at, parent_run_id=ctx.run_id,
                          parent_position=pos, on_parent_cancel=on_parent_cancel,
                          # (a child runs on its parent's code version: unversioned, a
                          # deploy's new workers claimed an old version's children)
                          version=ctx.version)
        entry = JournalEntry(pos, kind, workflow, OK,
                             result=ctx.codec.encode(child_id, "run id"), started_at=now,
                             finished_at=now,
                             args=input_text if args_text is None else args_text)
        await _observe.child_starting(ctx, child_id)
        start = ctx.store.child_start(lease=ctx.lease, child=child, entry=entry)
        try:
            await (ctx.in_flight(pos, now, start) if ctx.ordered else start)
        except LeaseLost as exc:
            raise ctx.halt(Lost(exc)) from None
    ctx.journal[pos] = entry
    ctx.executed += 1
    if ctx.ordered:
        await ctx.turn(now, pos)
    return child_id


#: Least seconds between a fork's looks at a child it shares with its source
#: (``child_wait``); each look is a claim and a replay of the fork.
SHARED_CHILD_POLL = 5.0
#: Most seconds between two looks: a child running long is looked at every tenth of its
#: age so far, up to this (a child of a day: ~330 looks in all, not 17,000).
SHARED_CHILD_POLL_MAX = 300.0


async def child_wait(ctx: RunContext, pos: int, child_id: str, annotation: Any,
                     tool: str | None = None) -> Any:
    """Wait for a run to end (released meanwhile); its outcome is journaled. ``tool``:
    the child serves the call of an agent's tool so named (for the observers)."""
    await ctx.enter(pos)
    kind = OperationKind.CHILD_RESULT
    entry = ctx.recorded(pos, kind, child_id)
    if entry is None or entry.status == PENDING:
        while True:
            with ctx.busy():
                await ctx.flush()
                run = await ctx.store.run_get(child_id)
                if (tool is not None and _observe.observers and run is not None
                        and run.status.is_ended):
                    # (In the busy block: what the observer reads delays no sibling's turn.)
                    await _observe.child_tool_ended(ctx, _observe.ChildTool(
                        tool, pos, child_id, run.created_at, ctx.clock.now(),
                        str(run.status)))
            if run is None:
                raise RunNotFound(child_id)
            if run.status.is_ended:
                break
            # A fork waits for its source's children (shared, not its own): a child's end
            # finds a waiter among several only through its own parent, so the fork
            # looks again, every tenth of the child's age (SHARED_CHILD_POLL at least,
            # SHARED_CHILD_POLL_MAX at most): it learns of an end within ~10 % of the
            # child's run time, at ~330 replays for a child of a day, not 17,000.
            now = ctx.clock.now()
            poll = (None if run.parent_run_id == ctx.run_id else now + min(max(
                (now - run.created_at) / 10, SHARED_CHILD_POLL), SHARED_CHILD_POLL_MAX))
            # (Raises: parked while sibling tasks work, the run is released after;
            # returns if the poll comes first while parked.)
            await ctx.release(Wait(poll, f"child {child_id}", child=child_id), poll)
        now = ctx.stamp()
        child = ctx.codec.for_run(child_id)
        if run.erased_at is not None:
            entry = _erased_child(ctx, pos, child_id, now)
        elif run.status is RunStatus.COMPLETED:
            # The child's result, bound to the child, is journaled bound to this run.
            result = (None if run.result is None
                      else ctx.codec.reseal(run.result, child, SLOT_JOURNAL, SLOT_RESULT))
            entry = JournalEntry(pos, kind, child_id, OK, result=result, started_at=now,
                                 finished_at=now)
        else:
            detail = {"type": "tether.errors.RunFailed", "status": run.status,
                      "error": child.decode(run.error, None, SLOT_ERROR) if run.error else None,
                      "message": f"child run {child_id!r} ended {run.status}"}
            entry = JournalEntry(pos, kind, child_id, ERROR,
                                 error=ctx.codec.encode_error(detail), started_at=now,
                                 finished_at=now)
        ctx.executed += 1
        await ctx.journal_result(entry)
    else:
        ctx.replayed += 1
        if ctx.waits():
            await ctx.turn(entry.finished_at, pos)
    if entry.status == ERROR:
        detail = ctx.codec.decode(entry.error) or {}
        raise RunFailed(child_id, str(detail.get("status", "failed")), detail.get("error"))
    return ctx.codec.decode(entry.result, annotation)


def _erased_child(ctx: RunContext, pos: int, child_id: str, now: float) -> JournalEntry:
    """The outcome of a child erased (``tether erase`` of it alone) before this run took
    its result: a failure with status ``erased``. Its result and error are the erasure
    marker, which the code would otherwise take as the child's answer and run on with."""
    erased = {"type": "tether.errors.RunErased",
              "message": "its payloads were erased (tether erase) before its result was taken"}
    detail = {"type": "tether.errors.RunFailed", "status": "erased", "error": erased,
              "message": f"child run {child_id!r} was erased"}
    return JournalEntry(pos, OperationKind.CHILD_RESULT, child_id, ERROR,
                        error=ctx.codec.encode_error(detail), started_at=now,
                        finished_at=now)


# -- live status, journaled values, patch markers ------------------------------------------


def status_publish(ctx: RunContext, info: Any) -> None:
    """Publish a live status; skipped while replaying (the store already has it)."""
    ctx.check_running()
    if ctx.position <= ctx.last_recorded:
        return
    ctx.status_changed(None if info is None else ctx.codec.encode(info, "status", SLOT_STATUS))
    # (from a plain ``def`` step's thread too: ``status_changed`` hands it to the loop)


def value_op(ctx: RunContext, kind: OperationKind, make: Any) -> Any:
    """A journaled value (clock, random, uuid): recorded once, replayed after."""
    ctx.check_running()
    pos = ctx.take_position()
    entry = ctx.recorded(pos, kind, kind.value)
    if entry is not None:
        ctx.replayed += 1
        return ctx.codec.decode(entry.result)
    value = make()
    now = ctx.clock.now()
    ctx.executed += 1
    ctx.write_deferred(JournalEntry(pos, kind, kind.value, OK,
                                     result=ctx.codec.encode(value, kind.value),
                                     started_at=now, finished_at=now))
    return value


def patch_marker(ctx: RunContext, change_id: str) -> bool:
    """``tether.patched``: True (journaled) where the journal has no entry yet or this
    marker; False where the journal predates the patch (nothing is taken or recorded)."""
    ctx.check_running()
    pos = ctx.position
    entry = ctx.journal.get(pos)
    if entry is not None and not (
        entry.kind == OperationKind.PATCH and entry.name == change_id
    ):
        return False  # this run's journal predates the patch: keep the old path
    ctx.take_position()
    if entry is not None:
        ctx.replayed += 1
        return True
    now = ctx.clock.now()
    ctx.write_deferred(JournalEntry(pos, OperationKind.PATCH, change_id, OK,
                                     result="true", started_at=now, finished_at=now))
    return True


def deprecated_patch_marker(ctx: RunContext, change_id: str) -> None:
    """``tether.deprecate_patch``: takes the ``change_id`` marker where the journal has it
    at this position (a run that took the patched path); otherwise takes and records
    nothing, so that the next operation is checked at this position as before."""
    ctx.check_running()
    entry = ctx.journal.get(ctx.position)
    if entry is not None and entry.kind == OperationKind.PATCH and entry.name == change_id:
        ctx.take_position()
        ctx.replayed += 1


def _iso(ts: float) -> str:
    return utc_datetime(ts).isoformat(timespec="seconds")



def now_value(ctx: RunContext | None) -> dt.datetime:
    if ctx is None:
        return dt.datetime.now(dt.UTC)
    ts = value_op(ctx, OperationKind.NOW, ctx.clock.now)
    return dt.datetime.fromtimestamp(ts, dt.UTC)



def random_value(ctx: RunContext | None) -> float:
    if ctx is None:
        return _random.random()
    return float(value_op(ctx, OperationKind.RANDOM, _random.random))



def uuid_value(ctx: RunContext | None) -> _uuid.UUID:
    if ctx is None:
        return _uuid.uuid4()
    return _uuid.UUID(value_op(ctx, OperationKind.UUID, lambda: str(_uuid.uuid4())))



def _not_awaited(value: Any) -> None:
    """Close an awaitable a plain step function returned (no 'never awaited' warning)."""
    close = getattr(value, "close", None)
    if inspect.iscoroutine(value) and callable(close):
        close()


async def run_sync_step(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A plain ``def`` step called outside a workflow: just a call, off the event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)
