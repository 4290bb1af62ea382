"""The journal cursor.

The journal holds one entry per operation of a run, keyed by (run_id, position).
Replay walks the workflow from the top and answers each operation from its entry.
The first position without an entry runs for real.

A ``RunContext`` lives in a contextvar while a worker executes one run. Each operation
takes the next position *when it is called* (not when it first suspends), so
``asyncio.gather(a(), b(), c())`` gets positions in call order on every replay.

Stopping a run's code early (to release it, or because it is blocked or lost its
lease) unwinds the coroutine with ``_Stop``, a ``BaseException`` so that ordinary
``except Exception`` blocks in workflow code do not swallow it. The reason is also
kept on the context, so even an ``except BaseException`` that swallows it cannot make
the run continue: every later operation raises it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import functools
import itertools
import json
import logging
import random as _random
import uuid as _uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tether import _faults
from tether._clock import wait_event
from tether._codec import Codec
from tether._definitions import StepDef, WorkflowDef
from tether._errors_codec import error_to_dict, step_error
from tether._types import EntryStatus, JournalEntry, Lease, OperationKind, RunRecord, RunStatus
from tether.errors import (
    Cancelled,
    LeaseLost,
    NonDeterminismError,
    PayloadError,
    Postpone,
    RunFailed,
    RunNotFound,
    SignalTimeout,
    StepTimeout,
)
from tether.store._lifecycle import AttemptRecord
from tether.store._port import Wait

if TYPE_CHECKING:
    from tether._clock import Clock
    from tether.store._port import Store

log = logging.getLogger("tether.worker")

OK, ERROR, PENDING = EntryStatus.OK, EntryStatus.ERROR, EntryStatus.PENDING


class _Stop(BaseException):
    """Tether is unwinding this run's code (to release it while it waits, or because it
    is blocked or lost its lease). If you see this, an ``except BaseException:`` in the
    workflow caught it: re-raise it."""


@dataclass(slots=True)
class Release:
    """Stop reason: wait released (see ``Wait``)."""

    wait: Wait


@dataclass(slots=True)
class Blocked:
    """Stop reason: the run needs an operator."""

    error: NonDeterminismError


@dataclass(slots=True)
class Lost:
    """Stop reason: another worker took the run over."""

    error: BaseException


@dataclass(slots=True)
class Continue:
    """Stop reason: ``tether.continue_as_new`` (a fresh journal with this input)."""

    input: str


StopReason = Release | Blocked | Lost | Continue

#: Seconds an attempt's start may wait before it is written (see ``_record_attempt``).
ATTEMPT_WRITE_DELAY = 0.05

#: Metrics key: journal positions below it had their replay counted (hidden in displays).
_REPLAY_MARK = "_replay.through"


@dataclass(frozen=True, slots=True)
class StepInfo:
    """What code inside a step can ask: ``tether.step_key()`` etc."""

    run_id: str
    position: int
    name: str
    attempt: int
    #: How many times the run continued as new (positions restart at 0 each time).
    generation: int = 0

    @property
    def key(self) -> str:
        if self.generation:
            return f"{self.run_id}:{self.generation}:{self.position}"
        return f"{self.run_id}:{self.position}"


class _Interrupted(Exception):
    """An async step was interrupted by a cancel request (internal)."""


current_run: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "tether_run", default=None
)
current_step: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar(
    "tether_step", default=None
)


class _LatestWriter:
    """Writes a value that changes often (metrics, live status) in order, coalesced:
    at most one write in flight, each sending the latest value, so two quick changes
    can't land in the wrong order. Writes join the run's deferred writes (flushed, with
    a lost lease reported, before the run's next journal write and at its end)."""

    def __init__(self, defer: Callable[[Awaitable[None]], None],
                 write: Callable[[], Awaitable[None]]) -> None:
        self._defer = defer
        self._write = write
        self._writing = False
        self._dirty = False

    def changed(self) -> None:
        self._dirty = True
        if not self._writing:
            self._writing = True
            self._defer(self._run())

    async def _run(self) -> None:
        try:
            while self._dirty:
                self._dirty = False
                await self._write()
        finally:
            self._writing = False


class AttemptWriter:
    """Writes the execution attempts of steps (history) for all the runs of a worker,
    off the hot path: an attempt's state is noted in memory and written at most
    ``ATTEMPT_WRITE_DELAY`` later, in one store call with every other state noted
    meanwhile. So a step pays no commit of its own for its history; an attempt that
    ends within the delay is written once, finished; one still running then is on disk
    before a crash can cut it off (``show`` then calls it interrupted)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._prefix = _uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)
        self._buffer: dict[str, AttemptRecord] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._last: asyncio.Future[None] | None = None

    def next_id(self) -> str:
        """A new attempt id, unique across processes (a random prefix and a counter)."""
        return f"{self._prefix}-{next(self._ids)}"

    def note(self, attempt: AttemptRecord) -> None:
        self._buffer[attempt.attempt_id] = attempt
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(ATTEMPT_WRITE_DELAY,
                                                                self._write)

    def _write(self) -> asyncio.Future[None] | None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer:
            return self._last
        batch, self._buffer = list(self._buffer.values()), {}
        before = self._last

        async def write() -> None:
            if before is not None:  # in order: a finished state never precedes its start
                with contextlib.suppress(BaseException):
                    await before
            try:
                await self.store.attempt_record(attempts=batch)
            except Exception as exc:  # history only: never fails a run
                log.warning("could not record %d step attempts: %s", len(batch), exc)

        self._last = asyncio.ensure_future(write())
        return self._last

    async def flush(self, run_id: str | None = None) -> None:
        """Write what was noted (of ``run_id``, or of every run) and wait for it."""
        if run_id is None or any(a.run_id == run_id for a in self._buffer.values()):
            self._write()
        if self._last is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._last)


class RunContext:
    """One run being executed by one worker: its lease and its journal."""

    def __init__(self, *, lease: Lease, workflow: WorkflowDef, journal: list[JournalEntry],
                 store: Store, codec: Codec, clock: Clock, executor: Executor | None,
                 sticky_wait: float, cancel_requested: bool = False,
                 metrics: dict[str, float] | None = None, generation: int = 0,
                 attempt_writer: AttemptWriter | None = None) -> None:
        self.run_id = lease.run_id
        self.lease = lease
        self.workflow = workflow
        self.journal: dict[int, JournalEntry] = {e.position: e for e in journal}
        self.last_recorded = max(self.journal, default=-1)
        self.position = 0
        self.store = store
        self.codec = codec
        self.clock = clock
        self.executor = executor
        self.sticky_wait = sticky_wait
        self.cancel_requested = cancel_requested
        self.cancel_delivered = False
        self.stop: StopReason | None = None
        self.replayed = 0  #: operations answered from the journal
        self.executed = 0  #: operations run for real
        self._deferred: list[asyncio.Future[None]] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.wake = asyncio.Event()  #: set when a cancel arrives during an in-memory wait
        self.metrics: dict[str, float] = dict(metrics or {})
        #: Integrations' state for this execution (``tether.ext.Run.memory``).
        self.memory: dict[object, Any] = {}
        # Plain JSON, never through the payload hook: stores read these numbers.
        self._metrics_writer = _LatestWriter(self._defer, lambda: self.store.run_metrics_set(
            lease=self.lease, metrics=json.dumps(self.metrics), now=self.clock.now()))
        self._status_text: str | None = None
        self._status_writer = _LatestWriter(self._defer, lambda: self.store.run_set_status_info(
            lease=self.lease, info=self._status_text, now=self.clock.now()))
        self._loop = asyncio.get_running_loop()
        self.generation = generation
        #: Set when the worker drains (SIGTERM): the run is handed back at its next
        #: operation or wait, after the step in flight is journaled.
        self.draining = False
        self._step_tasks: set[asyncio.Future[Any]] = set()
        self.attempt_writer = attempt_writer or AttemptWriter(store)

    # -- positions and the determinism check ------------------------------------------

    def take_position(self) -> int:
        pos = self.position
        self.position = pos + 1
        return pos

    def _halt(self, reason: StopReason) -> _Stop:
        """Record why the run's code must stop; a lost lease outranks a block, which
        outranks a release; of two releases the earlier wake-up wins."""
        cur = self.stop
        if cur is None or isinstance(reason, Lost):
            self.stop = reason
        elif isinstance(reason, Blocked) and not isinstance(cur, Lost):
            self.stop = reason
        elif isinstance(reason, Continue) and isinstance(cur, Release):
            self.stop = reason
        elif isinstance(reason, Release) and isinstance(cur, Release):
            a, b = cur.wait.available_at, reason.wait.available_at
            if b is not None and (a is None or b < a):
                self.stop = reason
        return _Stop()

    def check_running(self) -> None:
        if self.stop is not None:
            raise _Stop()

    def recorded(self, pos: int, kind: OperationKind, name: str) -> JournalEntry | None:
        """The entry at ``pos`` if it records this operation; parks the run as blocked if
        it records another one."""
        entry = self.journal.get(pos)
        if entry is None:
            return None
        if entry.kind != kind or entry.name != name:
            err = NonDeterminismError(self.run_id, pos, (entry.kind, entry.name), (kind, name))
            raise self._halt(Blocked(err))
        return entry

    def unconsumed_entry(self) -> JournalEntry | None:
        """A recorded entry the finished code never asked for (code removed an operation)."""
        for pos in range(self.position, self.last_recorded + 1):
            entry = self.journal.get(pos)
            if entry is not None and entry.kind != OperationKind.CANCEL:
                return entry
        return None

    # -- writes -------------------------------------------------------------------------

    async def write(self, entry: JournalEntry) -> None:
        """Record an entry durably before going on."""
        if self._deferred:
            await self.flush()
        try:
            await self.store.journal_append(lease=self.lease, entry=entry)
        except LeaseLost as exc:
            raise self._halt(Lost(exc)) from None
        self.journal[entry.position] = entry
        _faults.point("journal.after_commit")

    def _defer(self, write: Awaitable[None]) -> None:
        self._deferred.append(asyncio.ensure_future(write))

    def write_deferred(self, entry: JournalEntry) -> None:
        """Record an entry without waiting (clock and random values): later writes are
        ordered after it, and the run flushes before it ends."""
        self.journal[entry.position] = entry
        self._defer(self.store.journal_append(lease=self.lease, entry=entry))

    async def flush(self) -> None:
        pending, self._deferred = self._deferred, []
        for fut in pending:
            try:
                await fut
            except LeaseLost as exc:
                raise self._halt(Lost(exc)) from None

    # -- metrics --------------------------------------------------------------------------

    def add_metrics(self, deltas: dict[str, float]) -> None:
        """Add to the run's metrics and persist them soon (thread-safe: sync steps run in
        an executor). Writes are coalesced and ordered: one in flight at a time, each
        carrying the latest totals."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self._loop:
            self._loop.call_soon_threadsafe(self.add_metrics, dict(deltas))
            return
        changed = False
        for key, value in deltas.items():
            if value:
                self.metrics[key] = self.metrics.get(key, 0.0) + float(value)
                changed = True
        if changed:
            self._metrics_writer.changed()

    def _count_replay(self, sdef: StepDef, pos: int, value: Any) -> None:
        """Metrics of a result answered from the journal (e.g. tokens not paid again),
        counted at most once per position over the run's life."""
        counted = self.metrics.get(_REPLAY_MARK, 0.0)  # positions below it are counted
        if sdef.on_replay is None or pos < counted:
            return
        deltas = dict(sdef.on_replay(value) or {})
        deltas[_REPLAY_MARK] = pos + 1 - counted
        self.add_metrics(deltas)

    # -- cancellation -------------------------------------------------------------------

    async def enter(self, pos: int) -> None:
        """Start of an async operation: stop if halted; deliver a pending cancel.

        A cancel is delivered at the first operation that is not answered by a final
        journal entry; a ``cancel`` entry takes that position (replacing a pending one),
        so replay raises ``Cancelled`` at the same point.
        """
        if self.stop is not None:
            raise _Stop()
        entry = self.journal.get(pos)
        if self.draining and (entry is None or entry.status == PENDING):
            self._check_drain()
        if entry is not None and entry.kind == OperationKind.CANCEL:
            self.cancel_delivered = True
            self.replayed += 1
            raise Cancelled(self.run_id)
        if self.cancel_requested and not self.cancel_delivered and (
            entry is None or entry.status == PENDING
        ):
            now = self.clock.now()
            await self.write(JournalEntry(pos, OperationKind.CANCEL, "cancel", OK,
                                          started_at=now, finished_at=now))
            self.cancel_delivered = True
            raise Cancelled(self.run_id)

    def request_cancel(self) -> None:
        """A cancel arrived: wake an in-memory wait and interrupt running async steps
        (they end as an interrupted attempt; the cancel takes their position)."""
        self.cancel_requested = True
        self.wake.set()
        if not self.cancel_delivered:  # clean-up steps after Cancelled run to the end
            for t in list(self._step_tasks):
                t.cancel()

    def drain(self) -> None:
        """The worker is stopping: hand the run back at its next operation or wait."""
        self.draining = True
        self.wake.set()

    def _check_drain(self, at: float | None = None) -> None:
        if self.draining:
            now = self.clock.now()
            raise self._halt(Release(Wait(now if at is None else max(at, now),
                                          "handed back by a draining worker")))

    # -- attempts (history, written off the hot path) --------------------------------------

    def _record_attempt(self, attempt: AttemptRecord) -> None:
        self.attempt_writer.note(attempt)

    async def flush_history(self) -> None:
        """Write this run's attempts noted so far and wait for them (at the run's end)."""
        await self.attempt_writer.flush(self.run_id)

    # -- waiting ------------------------------------------------------------------------

    async def wait_until(self, at: float, waiting_for: str) -> None:
        """Wait until ``at``: in memory if short, else release the run."""
        remaining = at - self.clock.now()
        if remaining <= 0:
            return
        if remaining > self.sticky_wait:
            raise self._halt(Release(Wait(at, waiting_for)))
        if self.cancel_requested and not self.cancel_delivered:
            return
        self._check_drain(at)
        self.wake.clear()
        await wait_event(self.wake, remaining)
        self._check_drain(at)

    # -- operations -----------------------------------------------------------------------

    async def run_step(self, sdef: StepDef, pos: int, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> Any:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        await self.enter(pos)
        name = sdef.name
        entry = self.recorded(pos, OperationKind.STEP, name)
        if entry is not None and entry.status != PENDING:
            self.replayed += 1
            value = self._outcome(entry, sdef)
            self._count_replay(sdef, pos, value)
            return value
        codec = self.codec
        now = self.clock.now()
        try:
            args_text = codec.encode([list(args), kwargs] if kwargs else list(args),
                                     f"arguments of step {name!r}")
        except PayloadError as exc:
            await self.write(JournalEntry(pos, OperationKind.STEP, name, ERROR,
                                          error=codec.encode_error(error_to_dict(exc)),
                                          started_at=now, finished_at=now))
            raise
        attempts = entry.attempts if entry is not None else 0
        first_at = entry.started_at if entry is not None and entry.started_at else None
        next_at = entry.next_attempt_at if entry is not None else None
        policy = sdef.retry
        self.executed += 1
        waiting_for = f"retry {name}"
        if entry is not None and entry.error is not None:
            prev = codec.decode(entry.error) or {}
            if isinstance(prev, dict) and str(prev.get("type", "")).endswith(".Postpone"):
                waiting_for = f"postponed {name}: {prev.get('message', '')}"
        while True:
            if next_at is not None:
                await self.wait_until(next_at, waiting_for)
                await self.enter(pos)
            started = self.clock.now()
            if first_at is None:
                first_at = started
            attempts += 1
            info = StepInfo(self.run_id, pos, name, attempts, self.generation)
            record = AttemptRecord(
                self.attempt_writer.next_id(), self.run_id, self.generation, pos, name,
                attempts, self.lease.worker_id, "running", started)
            self._record_attempt(record)
            try:
                if sdef.rate_limit is not None:
                    await self._take_rate(sdef)
                value = await self._invoke(sdef, info, args, kwargs)
            except (_Stop, asyncio.CancelledError):
                raise
            except _Interrupted:
                self._record_attempt(_ended(
                    record, status="cancelled", finished_at=self.clock.now()))
                await self.enter(pos)  # delivers the cancel at this position
                continue  # (a cancel already delivered: the step runs again)
            except Postpone as exc:
                # Not a failed attempt: same count, no policy consumed.
                self._record_attempt(_ended(
                    record, status="postponed", finished_at=self.clock.now(),
                    error=codec.encode_error(error_to_dict(exc))))
                attempts -= 1
                now = self.clock.now()
                next_at = now + exc.delay
                waiting_for = f"postponed {name}: {exc}"
                await self.write(JournalEntry(
                    pos, OperationKind.STEP, name, PENDING,
                    error=codec.encode_error(error_to_dict(exc, attempts=attempts)),
                    attempts=attempts, started_at=first_at, next_attempt_at=next_at,
                    args=args_text,
                ))
                continue
            except Exception as exc:
                now = self.clock.now()
                self._record_attempt(_ended(
                    record, status="error", finished_at=now,
                    error=codec.encode_error(error_to_dict(exc, attempts=attempts))))
                nxt = policy.next_attempt_at(attempts=attempts, first_attempt_at=first_at,
                                             now=now, error=exc)
                retry_after = getattr(exc, "retry_after", None)
                if nxt is not None and isinstance(retry_after, (int, float)) and retry_after > 0:
                    nxt = max(nxt, now + float(retry_after))
                waiting_for = f"retry {name}"
                err = codec.encode_error(error_to_dict(exc, attempts=attempts))
                status = ERROR if nxt is None else PENDING
                await self.write(JournalEntry(
                    pos, OperationKind.STEP, name, status, error=err, attempts=attempts,
                    started_at=first_at, finished_at=now if nxt is None else None,
                    next_attempt_at=nxt, args=args_text,
                ))
                if nxt is None:
                    raise step_error(codec.decode(err), step=name, position=pos) from exc
                next_at = nxt
                continue
            now = self.clock.now()
            self._record_attempt(_ended(record, status="ok", finished_at=now))
            try:
                text = codec.encode(value, f"result of step {name!r}")
            except PayloadError as exc:
                err = codec.encode_error(error_to_dict(exc, attempts=attempts))
                await self.write(JournalEntry(
                    pos, OperationKind.STEP, name, ERROR, error=err, attempts=attempts,
                    started_at=first_at, finished_at=now, args=args_text,
                ))
                raise step_error(codec.decode(err), step=name, position=pos) from exc
            await self.write(JournalEntry(
                pos, OperationKind.STEP, name, OK, result=text, attempts=attempts,
                started_at=first_at, finished_at=now, args=args_text,
            ))
            return codec.decode(text, sdef.return_annotation)

    async def _take_rate(self, sdef: StepDef) -> None:
        """Take from the step's rate limit, or postpone the step until it can."""
        rl = sdef.rate_limit
        assert rl is not None
        wait = await self.store.rate_acquire(key=rl.key, limit=rl.limit, period=rl.per,
                                             amount=rl.cost, now=self.clock.now())
        if wait > 0:
            raise Postpone(wait, f"rate limit {rl.key!r}")

    async def _invoke(self, sdef: StepDef, info: StepInfo, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Any:
        token = current_step.set(info)
        try:
            if sdef.is_async:
                # Its own task, so that a cancel request can interrupt it at once.
                inner: asyncio.Future[Any] = asyncio.ensure_future(sdef.fn(*args, **kwargs))
                self._step_tasks.add(inner)
            else:
                ctx = contextvars.copy_context()
                loop = asyncio.get_running_loop()
                call = functools.partial(ctx.run, sdef.fn, *args, **kwargs)
                inner = loop.run_in_executor(self.executor, call)
            try:
                if sdef.timeout is None:
                    return await inner
                return await asyncio.wait_for(inner, sdef.timeout)
            except TimeoutError:
                if inner.done() and not inner.cancelled():
                    raise  # the step itself raised TimeoutError
                raise StepTimeout(sdef.name, sdef.timeout or 0.0) from None
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if (inner.cancelled() and self.cancel_requested and task is not None
                        and not task.cancelling()):
                    raise _Interrupted() from None
                raise
            finally:
                self._step_tasks.discard(inner)
        finally:
            current_step.reset(token)

    def _outcome(self, entry: JournalEntry, sdef: StepDef) -> Any:
        if entry.status == ERROR:
            raise step_error(self.codec.decode(entry.error) or {}, step=sdef.name,
                             position=entry.position)
        return self.codec.decode(entry.result, sdef.return_annotation)

    # -- waiting operations ---------------------------------------------------------------

    async def sleep(self, pos: int, seconds: float) -> None:
        """A durable timer: the wake-up time is journaled when the timer starts."""
        await self.enter(pos)
        kind = OperationKind.SLEEP
        entry = self.recorded(pos, kind, "sleep")
        if entry is not None and entry.status == OK:
            self.replayed += 1
            return
        if entry is None:
            now = self.clock.now()
            wake = now + max(seconds, 0.0)
            entry = JournalEntry(pos, kind, "sleep", PENDING,
                                 result=self.codec.encode(wake, "timer"),
                                 started_at=now, next_attempt_at=wake)
            await self.write(entry)
            self.executed += 1
        wake_at = entry.next_attempt_at if entry.next_attempt_at is not None else 0.0
        await self.wait_until(wake_at, f"timer until {_iso(wake_at)}")
        await self.enter(pos)
        await self.write(JournalEntry(pos, kind, "sleep", OK, result=entry.result,
                                      started_at=entry.started_at, finished_at=self.clock.now(),
                                      next_attempt_at=wake_at))

    async def wait_signal(self, pos: int, name: str, timeout: float | None) -> Any:
        """Take the next signal ``name`` (journaled), or release the run until it comes."""
        await self.enter(pos)
        kind = OperationKind.SIGNAL
        entry = self.recorded(pos, kind, name)
        if entry is not None and entry.status != PENDING:
            self.replayed += 1
            return self._signal_outcome(entry, name)
        now = self.clock.now()
        if entry is None:
            deadline = now + timeout if timeout is not None else None
            if deadline is not None:
                # The deadline is journaled so that replay does not restart the timeout.
                entry = JournalEntry(pos, kind, name, PENDING, started_at=now,
                                     next_attempt_at=deadline,
                                     args=self.codec.encode({"timeout": timeout}, "timeout"))
                await self.write(entry)
        else:
            deadline = entry.next_attempt_at
        await self.flush()
        timeout_error = self.codec.encode_error(
            {"type": "tether.errors.SignalTimeout", "message": str(SignalTimeout(name, timeout)),
             "timeout": timeout})
        try:
            taken = await self.store.signal_take(lease=self.lease, name=name, position=pos,
                                                 deadline=deadline, now=now,
                                                 timeout_error=timeout_error)
        except LeaseLost as exc:
            raise self._halt(Lost(exc)) from None
        if taken is None:
            raise self._halt(Release(Wait(deadline, f"signal {name}", signal=name)))
        self.journal[pos] = taken
        self.executed += 1
        return self._signal_outcome(taken, name)

    def _signal_outcome(self, entry: JournalEntry, name: str) -> Any:
        if entry.status == ERROR:
            err = self.codec.decode(entry.error) or {}
            raise SignalTimeout(name, err.get("timeout"))
        return self.codec.decode(entry.result)

    async def start_child(self, pos: int, workflow: str, queue: str, input_text: str,
                          run_id: str | None, on_parent_cancel: str) -> str:
        """Start a child run (journaled with its id); returns the child's run id."""
        await self.enter(pos)
        kind = OperationKind.CHILD_START
        entry = self.recorded(pos, kind, workflow)
        if entry is not None and entry.status == OK:
            self.replayed += 1
            return str(self.codec.decode(entry.result))
        await self.flush()
        child_id = run_id or f"{self.run_id}.{pos}"
        now = self.clock.now()
        child = RunRecord(run_id=child_id, workflow=workflow, queue=queue, status=RunStatus.QUEUED,
                          input=input_text, created_at=now, updated_at=now, available_at=now,
                          parent_run_id=self.run_id, parent_position=pos,
                          on_parent_cancel=on_parent_cancel)
        entry = JournalEntry(pos, kind, workflow, OK, result=self.codec.encode(child_id, "run id"),
                             started_at=now, finished_at=now, args=input_text)
        try:
            await self.store.child_start(lease=self.lease, child=child, entry=entry)
        except LeaseLost as exc:
            raise self._halt(Lost(exc)) from None
        self.journal[pos] = entry
        self.executed += 1
        return child_id

    async def child_result(self, pos: int, child_id: str, annotation: Any) -> Any:
        """Wait for a run to end (released meanwhile); its outcome is journaled."""
        await self.enter(pos)
        kind = OperationKind.CHILD_RESULT
        entry = self.recorded(pos, kind, child_id)
        if entry is None or entry.status == PENDING:
            await self.flush()
            run = await self.store.run_get(child_id)
            if run is None:
                raise RunNotFound(child_id)
            if not run.status.is_ended:
                raise self._halt(Release(Wait(None, f"child {child_id}", child=child_id)))
            now = self.clock.now()
            if run.status is RunStatus.COMPLETED:
                entry = JournalEntry(pos, kind, child_id, OK, result=run.result, started_at=now,
                                     finished_at=now)
            else:
                detail = {"type": "tether.errors.RunFailed", "status": run.status,
                          "error": self.codec.decode(run.error) if run.error else None,
                          "message": f"child run {child_id!r} ended {run.status}"}
                entry = JournalEntry(pos, kind, child_id, ERROR,
                                     error=self.codec.encode_error(detail), started_at=now,
                                     finished_at=now)
            await self.write(entry)
            self.executed += 1
        else:
            self.replayed += 1
        if entry.status == ERROR:
            detail = self.codec.decode(entry.error) or {}
            raise RunFailed(child_id, str(detail.get("status", "failed")), detail.get("error"))
        return self.codec.decode(entry.result, annotation)

    def set_status(self, info: Any) -> None:
        """Publish a live status; skipped while replaying (the store already has it)."""
        self.check_running()
        if self.position <= self.last_recorded:
            return
        self._status_text = None if info is None else self.codec.encode(info, "status")
        self._status_writer.changed()

    def value_op(self, kind: OperationKind, make: Any) -> Any:
        """A journaled value (clock, random, uuid): recorded once, replayed after."""
        self.check_running()
        pos = self.take_position()
        entry = self.recorded(pos, kind, kind.value)
        if entry is not None:
            self.replayed += 1
            return self.codec.decode(entry.result)
        value = make()
        now = self.clock.now()
        self.executed += 1
        self.write_deferred(JournalEntry(pos, kind, kind.value, OK,
                                         result=self.codec.encode(value, kind.value),
                                         started_at=now, finished_at=now))
        return value

    def patched(self, change_id: str) -> bool:
        self.check_running()
        pos = self.position
        entry = self.journal.get(pos)
        if entry is not None and not (
            entry.kind == OperationKind.PATCH and entry.name == change_id
        ):
            return False  # this run's journal predates the patch: keep the old path
        self.take_position()
        if entry is not None:
            self.replayed += 1
            return True
        now = self.clock.now()
        self.write_deferred(JournalEntry(pos, OperationKind.PATCH, change_id, OK,
                                         result="true", started_at=now, finished_at=now))
        return True


def _ended(a: AttemptRecord, *, status: str, finished_at: float,
           error: str | None = None) -> AttemptRecord:
    """``a`` finished (``dataclasses.replace`` costs several times more per step)."""
    return AttemptRecord(a.attempt_id, a.run_id, a.generation, a.position, a.name, a.attempt,
                         a.worker_id, status, a.started_at, finished_at, error)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def now_value(ctx: RunContext | None) -> dt.datetime:
    if ctx is None:
        return dt.datetime.now(dt.UTC)
    ts = ctx.value_op(OperationKind.NOW, ctx.clock.now)
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def random_value(ctx: RunContext | None) -> float:
    if ctx is None:
        return _random.random()
    return float(ctx.value_op(OperationKind.RANDOM, _random.random))


def uuid_value(ctx: RunContext | None) -> _uuid.UUID:
    if ctx is None:
        return _uuid.uuid4()
    return _uuid.UUID(ctx.value_op(OperationKind.UUID, lambda: str(_uuid.uuid4())))


async def run_sync_step(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A plain ``def`` step called outside a workflow: just a call, off the event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)

