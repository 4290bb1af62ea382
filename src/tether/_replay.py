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
import collections
import contextlib
import contextvars
import heapq
import inspect
import itertools
import json
import logging
import math
import os
import random
import sys
import sysconfig
import uuid as _uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from tether import _faults, _observe
from tether._clock import wait_event
from tether._codec import Codec
from tether._definitions import StepDef, WorkflowDef
from tether._types import EntryStatus, JournalEntry, Lease, OperationKind, RunStatus
from tether.errors import (
    Cancelled,
    LeaseLost,
    NonDeterminismError,
    PayloadError,
    StoreError,
    StoreUnavailable,
)
from tether.store._lifecycle import AttemptRecord
from tether.store._port import Wait, merge_waits
from tether.store._sql import same_entry

if TYPE_CHECKING:
    from tether._clock import Clock
    from tether._types import RunRecord
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
    """Stop reason: the run needs an operator (its code does not match its journal,
    one of its payloads was moved there from another place in the store, or is clear
    text where the payload hook expects ciphertext)."""

    error: NonDeterminismError | PayloadError


@dataclass(slots=True)
class Lost:
    """Stop reason: another worker took the run over."""

    error: BaseException


@dataclass(slots=True)
class Continue:
    """Stop reason: ``tether.continue_as_new`` (a fresh journal with this input)."""

    input: str


StopReason = Release | Blocked | Lost | Continue

#: Seconds an attempt's start may wait before it is written (see ``AttemptWriter``).
ATTEMPT_WRITE_DELAY = 0.05
#: Seconds a step's first attempt that succeeded may wait for its journal entry's commit
#: before it is written all the same (``AttemptWriter.settled``). Under load the commit
#: comes after many write delays (3,000 runs at once: a 50 ms hold let 25,690 of 30,000
#: rows through); an entry that never commits is rare, and its row is history only.
SETTLE_HOLD_MAX = 1.0

#: An attempt's state as noted: ``AttemptRecord``'s fields, in order.
AttemptRow = tuple[str, str, int, int, str, int, str, str, float, float | None, str | None]

#: A run's results are delivered in the order they completed once its tasks have settled
#: (``RunContext.turn``); a run whose tasks never settle (code that polls with
#: ``asyncio.sleep(0)``) has the next one delivered after this many passes of the loop.
SETTLE_PASSES_MAX = 1000
#: Passes of the loop that stand for "settled" on a loop whose ready queue cannot be read
#: (uvloop): the delivery order is then as good as this many passes let the tasks go.
SETTLE_PASSES_BLIND = 8
#: The least step between two completion times stamped by one execution (``stamp``):
#: distinct in the store's float8/REAL columns, and after rounding to microseconds.
STAMP_STEP = 1e-6
#: The context of the callback that delivers results: none of the run's handles.
_BARE_CONTEXT = contextvars.Context()
_turn_ids = itertools.count()

#: Metrics key: journal positions below it had their replay counted (hidden in displays).
_REPLAY_MARK = "_replay.through"

#: Keys of texts an execution remembers as stored with its entries (``stage_blobs``).
_BLOBS_STORED_MAX = 100_000

#: A run's write that failed because the store is unavailable (a dropped connection, a
#: server gone) is tried again after this many seconds, doubling up to
#: ``WRITE_RETRY_MAX`` (each wait 0-20 % longer, so that the runs of a worker do not
#: all come back at once), for as long as the run is this worker's (``write_again``).
WRITE_RETRY_FIRST = 0.2
WRITE_RETRY_MAX = 5.0


class StoreRetries(Protocol):
    """What a run tells its worker of its writes retried through a store outage (the
    worker's ``_StoreOutage``): each failure, and the store's answer again."""

    def failed(self, run_id: str | None, exc: BaseException, what: str) -> None: ...

    def back(self, *, by_run: bool = True) -> None: ...


def _what(entry: JournalEntry) -> str:
    """An entry as the log names it: "step 'ask' at position 3 (ok)"."""
    return f"{entry.kind} {entry.name!r} at position {entry.position} ({entry.status})"


@dataclass(frozen=True, slots=True)
class StepInfo:
    """What code inside a step can ask: ``tether.step_key()`` etc."""

    run_id: str
    position: int
    name: str
    attempt: int
    #: How many times the run continued as new (positions restart at 0 each time).
    generation: int = 0
    #: The journaled error of this step's previous failed attempt, whichever execution
    #: of the run made it (a release or a crash between attempts): ``{"type",
    #: "message", "attrs", ...}``, ``attrs`` holding the exception's JSON public
    #: attributes; ``None`` on a first attempt. For what a step's body must carry from
    #: one attempt to the next (``tether.ai``: what the failed attempts were paid). Read
    #: it, do not change it.
    previous_error: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        if self.generation:
            return f"{self.run_id}:{self.generation}:{self.position}"
        return f"{self.run_id}:{self.position}"


def _never() -> bool:
    return False


class _Interrupted(Exception):
    """An async step was interrupted by a cancel request (internal)."""


current_run: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "tether_run", default=None
)
current_step: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar(
    "tether_step", default=None
)
#: The id of the worker whose own work (its start, loops, runs, stop and drain) is
#: executing: its log lines carry it as ``worker_id`` (``cli._logging``).
current_worker: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tether_worker", default=None
)


class _Settler:
    """Ordered delivery's look at the event loop, shared by every run on it.

    A run whose next result waits for its turn (``RunContext.turn``) asks to be looked
    at (``kick``); once per pass of the loop, one scan of the loop's ready queue finds
    which of those runs have a handle ready (a task's step, a future's callback, run in
    the run's context: not settled), and each run then delivers its next result or asks
    again (``RunContext._pump``). Each run scanning the queue by itself cost O(runs x
    ready handles) per pass: with 1,000 gathered runs in one worker that was half the
    worker's CPU (``bench/stepcost.py --gathered 1000``)."""

    __slots__ = ("__weakref__", "_handle", "_loop", "_ready", "_runs")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        ready = getattr(loop, "_ready", None)
        #: The loop's ready queue; None where it cannot be read (uvloop).
        self._ready: collections.deque[Any] | None = (
            ready if isinstance(ready, collections.deque) else None)
        self._runs: dict[RunContext, None] = {}  # (an ordered set)
        self._handle: asyncio.Handle | None = None

    def kick(self, run: RunContext) -> None:
        """Look at ``run`` at the loop's next pass."""
        self._runs[run] = None
        if self._handle is None:
            self._handle = self._loop.call_soon(self._pass, context=_BARE_CONTEXT)

    def busy(self) -> set[RunContext] | None:
        """The runs with a handle ready to run on the loop (None: cannot look)."""
        ready = self._ready
        if ready is None:
            return None
        busy: set[RunContext] = set()
        # (A copy made in one call: another thread's call_soon_threadsafe appends to the
        # queue, and iterating it while that happens raises "deque mutated during
        # iteration"; that error in the pump once left runs waiting for ever.)
        for handle in list(ready):
            if not handle._cancelled:
                run = handle._context.get(current_run)
                if run is not None:
                    busy.add(run)
        return busy

    def _pass(self) -> None:
        self._handle = None
        runs, self._runs = self._runs, {}
        try:
            busy = self.busy()
        except Exception:
            # Whatever went wrong, no run may wait for ever: each delivers as it is.
            log.exception("ordered delivery failed; the next result of %d runs is "
                          "delivered without waiting for their tasks to settle", len(runs))
            for run in runs:
                run._deliver_anyway()
            return
        for run in runs:
            run._pump(None if busy is None else run in busy)


#: Each event loop's ``_Settler``.
_settlers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Settler] = (
    weakref.WeakKeyDictionary())


def _settler(loop: asyncio.AbstractEventLoop) -> _Settler:
    settler = _settlers.get(loop)
    if settler is None:
        settler = _settlers[loop] = _Settler(loop)
    return settler


_NOT_WRITTEN = "%s: the last change was not written (the event loop was ending)"


def _loop_ending(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether a task made on ``loop`` now may never be stepped: the loop is closed, or
    ``asyncio.run`` / ``asyncio.Runner`` is past the sweep that cancels every task (it
    has called ``shutdown_asyncgens`` or ``shutdown_default_executor``: the loop runs a
    few passes more at most). Read from asyncio's own flags; a loop without them (not
    asyncio's) is ending only once closed."""
    return (loop.is_closed() or getattr(loop, "_asyncgens_shutdown_called", False) is True
            or getattr(loop, "_executor_shutdown_called", False) is True)


def _close_unbegun(coros: tuple[Coroutine[Any, Any, Any], ...], what: str) -> None:
    """A write's task is freed: if its loop never stepped it (closed after the pass that
    made it), close its coroutines (a task factory's wrapper, then the write), which
    would otherwise warn that they were never awaited, and say that the value was not
    written."""
    if inspect.getcoroutinestate(coros[-1]) != inspect.CORO_CREATED:
        return
    for coro in coros:
        coro.close()
    log.warning(_NOT_WRITTEN, what)


class _LatestWriter:
    """Writes a value that changes often (metrics, live status) in order, coalesced:
    at most one write in flight, each sending the latest value, so two quick changes
    can't land in the wrong order. Writes join the run's deferred writes (flushed, with
    a lost lease reported, before the run's next journal write and at its end).

    ``lazy``: a change is written from the event loop's next pass, unless a journal
    write made before then carries it (``take``): a durable LLM call's cost and its
    entry are then one transaction.

    A write starts in a task of its own, which the event loop must step. A loop that is
    ending (``asyncio.run`` or ``asyncio.Runner`` past the sweep that cancels every
    task, or closed) may never step a task made now: its coroutine was destroyed never
    started ("coroutine ... was never awaited", an error under ``-W error``) and the
    value was lost without a word. So no write starts on such a loop (nor any later
    one), and the coroutines of a write whose task its loop dropped all the same (closed
    without asyncio's shutdown calls, after the pass that made the task) are closed
    when the task is freed. Either way the value not written is logged, once, with
    ``what`` (``run r-1's metrics``): the stored metrics (or live status) miss that
    change, and a worker that takes the run over starts from them."""

    def __init__(self, defer: Callable[[Awaitable[None]], asyncio.Future[None]],
                 write: Callable[[], Awaitable[None]], *, lazy: bool = False,
                 again: Callable[[StoreUnavailable, Callable[[], Awaitable[None]]],
                                 Awaitable[None]] | None = None,
                 what: str = "a value") -> None:
        self._defer = defer
        self._write = write
        self._what = what
        #: Called with the error when a write fails because the store is unavailable,
        #: to write again until it goes through (None: the error goes to the flush).
        self._again = again
        self._lazy = lazy
        self._writing = False
        self._dirty = False
        self._soon: asyncio.Handle | None = None
        #: The event loop was ending when a write was due: none starts any more.
        self._ended = False
        #: Closes the coroutines of the write in flight if its task is freed unbegun.
        self._unbegun: weakref.finalize[Any, Any] | None = None

    def changed(self) -> None:
        self._dirty = True
        if self._writing or self._soon is not None or self._ended:
            return
        if self._lazy:
            self._soon = asyncio.get_running_loop().call_soon(self.start)
        else:
            self.start()

    def start(self) -> None:
        """Start writing what changed now (a flush of the run's writes is coming)."""
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        if self._dirty and not self._writing:
            if _loop_ending(asyncio.get_running_loop()):
                self._ended = True  # (said once; nothing is scheduled any more)
                log.warning(_NOT_WRITTEN, self._what)
                return
            self._writing = True
            # (A weak reference: a write never begun must not keep its run alive, nor
            # the task its finalizer waits for.)
            coro = _write_latest(weakref.ref(self))
            task = self._defer(coro)
            wrapper = getattr(task, "get_coro", lambda: coro)()
            self._unbegun = weakref.finalize(task, _close_unbegun, (wrapper, coro), self._what)
            self._unbegun.atexit = False
            task.add_done_callback(self._write_ended)

    def _write_ended(self, task: asyncio.Future[None]) -> None:
        """A write's task is done. One cancelled before it began (its flush's caller
        cancelled, the loop's sweep that cancels every task) never ran, so never ended
        the write: this writer stayed writing for good, and wrote nothing more (nor let a
        journal write take a change) for the rest of the execution. It ends it here; the
        change is written by the next start, or, on a loop that is ending, told."""
        begun, self._unbegun = self._unbegun, None
        if begun is None:
            return  # (it began, and ended the write itself)
        unbegun = begun.detach()
        if unbegun is not None:
            # Under a task factory that wraps the write (the worker's, for a run's
            # tasks), the cancellation ended the wrapper alone: the write's coroutine,
            # never started, is closed here. It was left to the garbage collector, which
            # warned "coroutine '_write_latest' was never awaited" whenever it ran (an
            # error in whichever test ran then, under -W error), until 2026-12-07.
            for coro in unbegun[2][0]:
                if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
                    coro.close()
        self._writing = False
        if self._dirty and _loop_ending(task.get_loop()):
            self._ended = True
            log.warning(_NOT_WRITTEN, self._what)

    def take(self) -> bool:
        """Whether the caller writes the latest value itself, now: True when it changed
        and no write of it has started (this writer then writes nothing; the caller calls
        ``give_back`` if its write fails)."""
        if not self._dirty or self._writing:
            return False
        self._dirty = False
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        return True

    def give_back(self) -> None:
        """A value taken was not written: the next ``take`` or ``start`` (the run's next
        journal write or flush) writes it. Nothing is scheduled now: the write that
        failed has already told the run."""
        self._dirty = True


async def _write_latest(ref: weakref.ref[_LatestWriter]) -> None:
    """A ``_LatestWriter``'s write: the latest value until none is new (the writer is
    held weakly until the write begins: see ``start``)."""
    writer = ref()
    if writer is None:
        return
    begun, writer._unbegun = writer._unbegun, None
    if begun is not None:
        begun.detach()  # (begun: nothing for the finalizer to close)
    try:
        while writer._dirty:
            writer._dirty = False
            try:
                await writer._write()
            except StoreUnavailable as exc:
                if writer._again is None:
                    raise
                await writer._again(exc, writer._write)  # (the latest value each time)
    finally:
        writer._writing = False


class AttemptWriter:
    """Writes the execution attempts of steps (history) for all the runs of a worker,
    off the hot path: an attempt's state is noted in memory and written at most
    ``ATTEMPT_WRITE_DELAY`` later, in one store call with every other state noted
    meanwhile. So a step pays no commit of its own for its history; an attempt that
    ends within the delay is written once, finished; one still running then is on disk
    before a crash can cut it off (``show`` then calls it interrupted). On a store that
    reads a step's first attempt that succeeded from its journal entry
    (``attempts_from_journal``: SQLite), such an attempt ended within the delay is not
    written at all once its entry is committed (``settled``)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._prefix = _uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)
        self._buffer: dict[str, AttemptRow] = {}
        #: The runs of the attempts in the buffer, with how many each has there.
        self._buffered_runs: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._last: asyncio.Future[None] | None = None
        #: Writes created and not yet issued to the store (their task not yet started).
        self._unissued = 0
        #: The store commits writes in the order issued: a write need not wait for the
        #: one before it (each run's end waits for its attempts, and only for those).
        caps = getattr(store, "capabilities", None)
        self._ordered = bool(getattr(caps, "ordered_writes", False))
        #: The store reads a first attempt that succeeded from the journal (``settled``).
        self._from_journal = bool(getattr(caps, "attempts_from_journal", False))
        #: Attempts not recorded since the store became unavailable (0: it is not).
        self._lost = 0
        #: What the writes run in: no run's context, the worker's that made this writer
        #: (its lines, an outage's, name that worker: ``worker=ID``).
        self._context = contextvars.Context()
        self._context.run(current_worker.set, current_worker.get())
        #: Attempts none of whose states has been written yet.
        self._fresh: set[str] = set()
        #: States noted, by state (``running`` once per attempt started): the worker's
        #: ``/metrics`` reads them (one increment per note, on the step's path).
        self.noted: dict[str, int] = dict.fromkeys(
            ("running", "ok", "error", "postponed", "cancelled", "superseded"), 0)
        #: Fresh attempts that succeeded, their entries' commits not yet known, with the
        #: loop's time when they ended: a write holds them back until ``SETTLE_HOLD_MAX``
        #: after that (their entry commits meanwhile, as a rule; if it did not, the row
        #: explains why the step runs again).
        self._settling: dict[str, float] = {}

    def next_id(self) -> str:
        """A new attempt id, unique across processes (a random prefix and a counter)."""
        return f"{self._prefix}-{next(self._ids)}"

    def note(self, attempt_id: str, row: AttemptRow) -> None:
        """Note an attempt's state: ``row`` holds ``AttemptRecord``'s fields in order
        (a tuple costs a step less than the record, which is built once per attempt,
        when the buffer is written); a later state replaces an earlier one."""
        self.noted[row[7]] += 1
        if self._from_journal:
            if row[7] == "running":  # (an attempt's first state)
                self._fresh.add(attempt_id)
            elif row[7] == "ok" and attempt_id in self._fresh:
                self._settling[attempt_id] = asyncio.get_running_loop().time()
            elif self._settling:  # (superseded: its entry will never commit)
                self._settling.pop(attempt_id, None)
        if attempt_id not in self._buffer:
            runs = self._buffered_runs
            runs[row[1]] = runs.get(row[1], 0) + 1
        self._buffer[attempt_id] = row
        timer = self._timer
        # (Its timers in no run's context: they write for every run, and would count as
        # a timer of the run's code that holds a parked run: ``_Parking``.)
        if timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                ATTEMPT_WRITE_DELAY, self._write, context=_BARE_CONTEXT)
        elif self._settling:  # (a timer set for held attempts only may be far off)
            loop = asyncio.get_running_loop()
            if timer.when() > loop.time() + ATTEMPT_WRITE_DELAY:
                timer.cancel()
                self._timer = loop.call_later(ATTEMPT_WRITE_DELAY, self._write,
                                              context=_BARE_CONTEXT)

    def amend(self, attempt_id: str, row: AttemptRow) -> None:
        """Note more of an attempt that ended (``row``, in the state already noted):
        not counted again in ``noted``."""
        self.noted[row[7]] -= 1
        self.note(attempt_id, row)

    def settled(self, attempt_id: str) -> None:
        """The attempt, a step's first, succeeded and its journal entry is committed:
        on a store that reads such an attempt from the entry (``attempts_from_journal``),
        its row is not written if none of its states was written yet. A row already
        written (an attempt that outlived the write delay) is completed as usual, so the
        history never shows it ``running``; and an attempt whose entry was not
        committed keeps its row, which explains why the step runs again."""
        if attempt_id in self._fresh and self._from_journal:
            self._fresh.discard(attempt_id)
            self._settling.pop(attempt_id, None)
            run_id = self._buffer.pop(attempt_id)[1]
            left = self._buffered_runs[run_id] - 1
            if left:
                self._buffered_runs[run_id] = left
            else:  # (a run's end then has nothing of it to write first)
                del self._buffered_runs[run_id]

    def _write(self, run_id: str | None = None, *,
               hold: bool = True) -> asyncio.Future[None] | None:
        """Write the buffer, except (with ``hold``) the attempts that succeeded less
        than ``SETTLE_HOLD_MAX`` ago and wait for their entries' commits (``_settling``);
        the run whose end this write precedes (``run_id``) has none held back."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer:
            return self._last
        buffer = self._buffer
        kept: dict[str, AttemptRow] = {}
        settling: dict[str, float] = {}
        if hold and self._settling:
            since = asyncio.get_running_loop().time() - SETTLE_HOLD_MAX
            for attempt_id, ended in self._settling.items():
                if ended > since and buffer[attempt_id][1] != run_id:
                    kept[attempt_id] = buffer.pop(attempt_id)
                    settling[attempt_id] = ended
        batch = [AttemptRecord(*row) for row in buffer.values()]
        self._buffer = kept
        self._settling = settling
        self._fresh = set(kept)
        self._buffered_runs.clear()
        for row in kept.values():
            self._buffered_runs[row[1]] = self._buffered_runs.get(row[1], 0) + 1
        if kept:  # (written at the latest SETTLE_HOLD_MAX after the first of them ended)
            self._timer = asyncio.get_running_loop().call_at(
                min(settling.values()) + SETTLE_HOLD_MAX, self._write,
                context=_BARE_CONTEXT)
        if not batch:
            return self._last
        before = self._last
        ordered = self._ordered

        async def write() -> None:
            self._unissued -= 1  # (issued below, before this task first waits)
            if before is not None and not ordered:
                # In order: a finished state never precedes its start.
                with contextlib.suppress(BaseException):
                    await before
            try:
                await self.store.attempt_record(attempts=batch)
            except StoreUnavailable as exc:  # history only: never fails a run
                # Told once per outage (a write every 50 ms would be a line each).
                level = logging.DEBUG if self._lost else logging.WARNING
                self._lost += len(batch)
                log.log(level, "could not record %d step attempts: %s", len(batch), exc)
            except Exception as exc:
                log.warning("could not record %d step attempts: %s", len(batch), exc)
            else:
                if self._lost:
                    log.warning("step attempts recorded again; %d were lost while the store "
                                "was unavailable (the journal has every step's outcome)",
                                self._lost)
                    self._lost = 0

        self._unissued += 1
        # In a context of its own: it writes for every run (its log lines, e.g. of an
        # outage, are not one run's, which the context of the run that noted last was),
        # holding only the worker's id.
        self._last = asyncio.get_running_loop().create_task(
            write(), context=self._context.copy())
        return self._last

    async def flush(self, run_id: str | None = None) -> None:
        """Write what was noted (of ``run_id``, or of every run). On a store that keeps
        its writes in order (``ordered_writes``), return once every write is issued: a
        write the caller issues next commits after them (a run's end and its attempts
        then share a commit, with no wait between them). Otherwise wait for them."""
        if run_id is None or run_id in self._buffered_runs:
            self._write(run_id, hold=run_id is not None)
        if self._ordered:
            if self._unissued:  # their tasks start before this one resumes (FIFO)
                await asyncio.sleep(0)
            return
        if self._last is not None:
            # wait(), not `await shield(...)` under suppress(BaseException): that also
            # swallowed a cancel of the caller (a worker stopping as a run ended), whose
            # code then went on as if it had not been cancelled.
            await asyncio.wait({self._last})

    async def close(self, timeout: float = 5.0) -> None:
        """Write what was noted and wait until every write ended, at most ``timeout``
        seconds (a worker stopping: the states noted within the last
        ``ATTEMPT_WRITE_DELAY`` are not lost, and a store that went away does not hold
        the stop for long)."""
        self._write(hold=False)
        last = self._last
        if last is None:  # the last ends after every write before it
            return
        done, _ = await asyncio.wait({last}, timeout=timeout)
        if not done:
            log.warning("step attempts not written within %.0f s of the worker's stop "
                        "(the store does not answer); their history may lack them", timeout)


def cut_off_attempts(rows: list[AttemptRecord],
                     generation: int) -> dict[int, tuple[int, float]]:
    """Per position of ``generation``, the trailing attempts of ``rows`` (a run's
    history, read before this execution began any attempt) that never ended
    (``running``: their executions were cut off): the highest one's number and the
    earliest one's start. An attempt that ended after them (as every attempt of a step
    that then failed, before a ``tether retry`` gave it a fresh count) leaves none."""
    trailing: dict[int, tuple[int, float]] = {}
    for r in sorted((r for r in rows if r.generation == generation),
                    key=lambda r: (r.started_at, r.attempt)):
        if r.status != "running":
            trailing.pop(r.position, None)
            continue
        seen = trailing.get(r.position)
        trailing[r.position] = ((r.attempt, r.started_at) if seen is None
                                else (max(seen[0], r.attempt), seen[1]))
    return trailing


class _StepSet(set[asyncio.Future[Any]]):
    """``RunContext._step_tasks`` once a task of the run has parked: a step's end (its
    ``discard``) makes the parked tasks look again whether the run is quiescent. A run
    that never parks keeps the plain set: its steps pay nothing for this."""

    def __init__(self, tasks: set[asyncio.Future[Any]], poke: Callable[[], None]) -> None:
        super().__init__(tasks)
        self._poke = poke

    def discard(self, task: object) -> None:
        super().discard(task)
        self._poke()


class _Busy:
    """``RunContext.busy()``: counts a store call of an operation in flight."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx

    def __enter__(self) -> None:
        self._ctx.io += 1

    def __exit__(self, *exc: object) -> None:
        ctx = self._ctx
        ctx.io -= 1
        if ctx._parking is not None:
            ctx._parking.poke()


class _Parking:
    """The tasks of one run parked at a durable wait (``RunContext.release``), and when
    to release the run for them.

    The run is released once it is quiescent: at least one task parked, and none of
    its tasks working: no step running (``_step_tasks``), no journal write or other
    store call of an operation in flight (``io``, ``_inflight``), no result waiting for
    its turn (``_turns``), no handle of the run ready on the loop (``_Settler.busy``), and
    no timer of the run's code on the loop (``asyncio.sleep``, ``wait_for``: set in the
    run's context; not counted once the worker drains). Its ``Wait`` is then the merge
    of every parked task's (``merge_waits``), and every parked task stops (``_Stop``).

    The look is event-driven: it runs from the loop's next pass after a task parks, a
    step ends, a write or store call ends, or the worker drains; while a ready handle
    or a turn remains it looks again at the next pass, and while only a timer of the
    run's code remains, when that timer is due. A parked task whose own deadline comes
    first (a timer, a signal's timeout, a retry) goes on in memory instead."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        #: Parked tasks' futures (set True: due; False: released), with their waits and
        #: the timer of their own deadline.
        self.parked: dict[asyncio.Future[bool], tuple[Wait, asyncio.TimerHandle | None]] = {}
        self._look_handle: asyncio.Handle | None = None
        self._soon = False  # (whether ``_look_handle`` is a call_soon, not a timer)
        self._blind = 0  # passes looked at on a loop whose ready queue cannot be read
        ctx._step_tasks = _StepSet(ctx._step_tasks, self.poke)

    async def park(self, wait: Wait, resume_at: float | None) -> bool:
        """Park the current task until the run is released (False) or ``resume_at``
        comes (True)."""
        ctx = self.ctx
        loop = ctx._loop
        fut: asyncio.Future[bool] = loop.create_future()
        due = None
        if resume_at is not None:
            # (not the run's context: a timer of the run's code would hold the run)
            due = loop.call_later(max(resume_at - ctx.clock.now(), 0.0), self._due, fut,
                                  context=_BARE_CONTEXT)
        self.parked[fut] = (wait, due)
        self.poke()
        try:
            return await fut
        finally:
            if due is not None:
                due.cancel()
            if self.parked.pop(fut, None) is not None:
                self.poke()  # (cancelled by the workflow's code: the others look again)

    def _due(self, fut: asyncio.Future[bool]) -> None:
        if not fut.done():
            self.parked.pop(fut, None)
            fut.set_result(True)

    def stop_all(self) -> None:
        """The run's code stops (released, blocked, lease lost...): every parked task
        stops with it."""
        for fut in list(self.parked):
            if not fut.done():
                fut.set_result(False)
        self.parked.clear()

    def poke(self) -> None:
        """Something of the run ended: look at the loop's next pass."""
        if not self.parked:
            return
        handle = self._look_handle
        if handle is not None:
            if self._soon:
                return
            handle.cancel()  # (a look at a timer's time: sooner now)
        self._soon = True
        self._look_handle = self.ctx._loop.call_soon(self._look, context=_BARE_CONTEXT)

    def _look(self) -> None:
        self._look_handle = None
        ctx = self.ctx
        if not self.parked or ctx.stop is not None:
            return
        if ctx._step_tasks or ctx.io or ctx._inflight:
            self._blind = 0
            return  # (their ends poke)
        if any(not turn[3].done() for turn in ctx._turns):
            self.poke()  # (the pump delivers it: a task of the run goes on)
            return
        busy = ctx._settler.busy()
        if busy is None:  # (uvloop: cannot look; let the tasks go a few passes)
            self._blind += 1
            if self._blind < SETTLE_PASSES_BLIND:
                self.poke()
                return
        elif ctx in busy:  # (a handle of the run is ready: look at the next pass)
            self.poke()
            return
        self._blind = 0
        if not ctx.draining:
            when = self._next_timer()
            if when is not None:
                self._soon = False
                self._look_handle = ctx._loop.call_at(when, self._look,
                                                      context=_BARE_CONTEXT)
                return
        ctx.halt(Release(merge_waits(wait for wait, _ in self.parked.values())))

    def _next_timer(self) -> float | None:
        """When the earliest timer that the run's code set on the loop is due (None:
        none, or a loop whose timers cannot be read)."""
        scheduled = getattr(self.ctx._loop, "_scheduled", None)
        if not isinstance(scheduled, list):
            return None
        ctx = self.ctx
        found: float | None = None
        for handle in list(scheduled):  # (one call: see ``_Settler.busy``)
            if (not handle._cancelled and handle._context.get(current_run) is ctx
                    and (found is None or handle._when < found)):
                found = handle._when
        return found


#: The key of a run's input (``{"args": [...], "kwargs": {...}, "ext": {...}}``) that
#: holds what its parent handed down to integrations (``tether.ext.start_child``'s
#: ``inherit``); the workflow's own arguments never see it.
INHERIT_KEY = "ext"


def inherited_of(data: Any) -> dict[str, Any]:
    """What a run's decoded input hands down to integrations (``{}``: nothing)."""
    found = data.get(INHERIT_KEY) if isinstance(data, dict) else None
    return dict(found) if isinstance(found, dict) else {}


#: The folders whose frames ``_code_at`` passes over: Tether's own code, and Python's
#: standard library (asyncio's machinery between a task and the code it runs).
_NOT_THE_CODE = (os.path.dirname(os.path.abspath(__file__)) + os.sep,
                 os.path.join(sysconfig.get_paths()["stdlib"], ""))


def _code_at() -> str | None:
    """Where the workflow's code asked for the operation being checked: the innermost
    frame of the calling stack outside Tether's own code, as ``FILE, line N, in FN``;
    None if the stack holds none (an operation that checks its entry in a task of its
    own). Read only when a replay meets another operation than the journal's: it tells
    the operator which line of the changed code to look at."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith(_NOT_THE_CODE) and not name.startswith("<"):
            return f"{name}, line {frame.f_lineno}, in {frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return None


class RunContext:
    """The journal cursor of one run being executed by one worker: its lease, its
    journal, the next position, the determinism check, why the run's code must stop,
    and the writes (ordered, some deferred). The operations that move the cursor live
    in ``tether._operations``."""

    def __init__(self, *, lease: Lease, workflow: WorkflowDef, journal: list[JournalEntry],
                 store: Store, codec: Codec, clock: Clock, executor: Executor | None,
                 sticky_wait: float, cancel_requested: bool = False,
                 metrics: dict[str, float] | None = None, generation: int = 0,
                 attempt_writer: AttemptWriter | None = None,
                 taken_over: bool = False,
                 retries: StoreRetries | None = None,
                 version: str | None = None, queue: str | None = None,
                 step_mocks: Mapping[str, StepDef] | None = None,
                 workflows: Mapping[str, WorkflowDef] | None = None) -> None:
        self.run_id = lease.run_id
        #: The workflows registered on the worker's app, by name: a child started by
        #: name whose function is known here has its arguments checked (``start_child``).
        self.workflows: Mapping[str, WorkflowDef] = workflows if workflows is not None else {}
        #: The queue the run is on (a start may name another than its workflow's).
        self.queue = queue if queue is not None else workflow.queue
        #: The run's code version (None: unversioned); its children get it.
        self.version = version
        #: Steps replaced by test doubles, by name (``WorkerHost.step_mocks``): an
        #: attempt of a step named here calls the double's function instead.
        self.step_mocks: Mapping[str, StepDef] = step_mocks if step_mocks is not None else {}
        self.lease = lease
        self.workflow = workflow
        self.journal: dict[int, JournalEntry] = {e.position: e for e in journal}
        self.last_recorded = max(self.journal, default=-1)
        self.position = 0
        self.store = store
        self.codec = codec.for_run(self.run_id)  # its payloads are bound to this run
        self.clock = clock
        self.executor = executor
        self.sticky_wait = sticky_wait
        self.cancel_requested = cancel_requested
        self.cancel_delivered = False
        self.stop: StopReason | None = None
        #: The status the worker recorded the run's end with, once the store took it
        #: (``cancelled`` for a block whose cancel it had not heard of yet); None else.
        self.ended: RunStatus | None = None
        self.replayed = 0  #: operations answered from the journal
        self.executed = 0  #: operations run for real
        self._deferred: list[asyncio.Future[None]] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.wake = asyncio.Event()  #: set when a cancel arrives during an in-memory wait
        self.metrics: dict[str, float] = dict(metrics or {})
        #: Integrations' state for this execution (``tether.ext.Run.memory``).
        self.memory: dict[object, Any] = {}
        #: What the run's parent handed down to integrations with its input
        #: (``tether.ext.Run.inherited``), set when the input is decoded.
        self.inherited: dict[str, Any] = {}
        #: Texts to store with the next entry written at a position (``stage_blobs``),
        #: and the keys this execution stored so (a bounded memory: see ``stage_blobs``).
        self._blobs: dict[int, dict[str, str]] = {}
        self._blobs_stored: set[str] = set()
        # Plain JSON, never through the payload hook: stores read these numbers.
        self._metrics_writer = _LatestWriter(self._defer, lambda: self.store.run_metrics_set(
            lease=self.lease, metrics=json.dumps(self.metrics), now=self.clock.now()),
            lazy=True, again=partial(self.write_again, "write its metrics"),
            what=f"run {self.run_id}'s metrics")
        self._status_text: str | None = None
        self._status_writer = _LatestWriter(self._defer, lambda: self.store.run_set_status_info(
            lease=self.lease, info=self._status_text, now=self.clock.now()),
            again=partial(self.write_again, "write its status"),
            what=f"run {self.run_id}'s live status")
        #: The worker's account of the store's outages (None: log only).
        self.retries = retries
        self._loop = asyncio.get_running_loop()
        self.generation = generation
        #: Set when the worker drains (SIGTERM): the run is handed back at its next
        #: operation or wait, after the step in flight is journaled.
        self.draining = False
        #: Async steps running (the tasks awaiting them) and sync steps' executor futures.
        self._step_tasks: set[asyncio.Future[Any]] = set()
        #: Tasks running an async step that ``request_cancel`` cancelled.
        self.step_interrupts: set[asyncio.Task[Any]] = set()
        self.attempt_writer = attempt_writer or AttemptWriter(store)
        #: The run was taken over from a worker that died holding it (``taken_over``:
        #: now, or before and not since retried): an execution before this one may
        #: have been killed in a step. Such attempts are in the history only; the first
        #: step run for real here reads them once (``read_cut_off``), so that the
        #: step's next attempt is numbered and counted after them. (Any other run's
        #: executions read nothing more.) ``None`` until read; empty when nothing
        #: can have been cut off.
        self.cut_off: dict[int, tuple[int, float]] | None = None if taken_over else {}
        #: (Kept for telemetry: an execution's span that a dead worker never ended is
        #: emitted by a later execution, ``tether.otel``.)
        self.taken_over = taken_over
        self._cut_off_read: asyncio.Future[dict[int, tuple[int, float]]] | None = None
        #: The task that runs the workflow's code (the context is made in it).
        self.main_task: asyncio.Task[Any] | None = asyncio.current_task(self._loop)
        #: Set when the worker cancels the tasks the workflow left running after its
        #: code ended: their steps' cancellation is not the workflow's doing.
        self.abandoned = False
        #: Entries of steps the workflow's code cancelled, written with the next flush.
        self._cancelled: list[JournalEntry] = []
        #: Whether the worker is stopping (set by the worker): a step cancelled then was
        #: not cancelled by the workflow's code.
        self.shutting_down: Callable[[], bool] = _never
        #: Set when a task other than the main one takes a position: from then on the
        #: run's results are delivered in the order they completed (``turn``).
        self.ordered = False
        #: Results waiting for their turn: (completion time, position, seq, future).
        self._turns: list[tuple[float, int, int, asyncio.Future[None]]] = []
        #: Live results stamped and not yet written (position: completion time): none
        #: later than them is delivered before them.
        self._inflight: dict[int, float] = {}
        #: The latest completion time stamped or delivered (``stamp`` goes past it).
        self._last = 0.0
        #: The latest completion time in the journal as it was read (None: not yet
        #: looked at; ``stamp`` reads it once).
        self._recorded_last: float | None = None
        #: How far the last ``stamp`` put its time past the clock's (0 unless the clock
        #: is behind the journal's times): a time compared with the clock (a retry's,
        #: a signal's deadline, a child's ``available_at``) is the stamp minus ``lift``.
        self.lift = 0.0
        self._settler = _settler(self._loop)
        self._passes = 0
        self._never_settled = False
        #: The loop's ready queue (None: not readable, as on uvloop), and its first
        #: handle and length at the main task's last look (``_others_ready``): handles
        #: before that length were looked at.
        self._ready = self._settler._ready
        self._seen_first: object = None
        self._seen_len = 0
        #: Store calls of the run's operations in flight (journal writes, a signal
        #: taken, a child read): a parked task waits for them (``_Parking``).
        self.io = 0
        #: Tasks parked at a durable wait (None until the first parks).
        self._parking: _Parking | None = None
        #: Attempts of this execution that succeeded but whose result's journal write
        #: did not end well (``unconfirmed``), with their rows and entries; None: none.
        self._unconfirmed: dict[str, tuple[AttemptRow, JournalEntry]] | None = None
        #: When the run's lease runs out by this worker's clock, as the store holds it
        #: (the claim's or the last heartbeat's time plus a lease: ``renew``), less the
        #: worker's ``lease_margin`` (room for another worker's clock running ahead); no
        #: step starts from then until it is renewed (``lease_renewed``). Infinite
        #: outside a worker.
        self.lease_until = math.inf
        #: Set (and cleared) to wake the steps waiting for the lease's renewal.
        self._lease_wake: asyncio.Event | None = None
        #: Asks the worker's heartbeat to renew the lease now (set by the worker).
        self.ask_renewal: Callable[[], None] | None = None

    # -- positions and the determinism check ------------------------------------------

    def take_position(self) -> int:
        pos = self.position
        self.position = pos + 1
        if not self.ordered:
            task = asyncio.current_task(self._loop)
            if task is not self.main_task and task is not None:
                self.ordered = True  # (a branch: results are delivered in order now)
                self.tasks.add(task)
        elif (task := asyncio.current_task(self._loop)) is not None:
            self.tasks.add(task)
        return pos

    def halt(self, reason: StopReason) -> _Stop:
        """Record why the run's code must stop; a lost lease outranks a block, which
        outranks a release; two releases merge (``merge_waits``: the earlier deadline,
        and every signal and child of both). Branches parked at a wait stop too."""
        cur = self.stop
        if cur is None or isinstance(reason, Lost):
            self.stop = reason
        elif isinstance(reason, Blocked) and not isinstance(cur, Lost):
            self.stop = reason
        elif isinstance(reason, Continue) and isinstance(cur, Release):
            self.stop = reason
        elif isinstance(reason, Release) and isinstance(cur, Release):
            if reason.wait != cur.wait:
                self.stop = Release(merge_waits((cur.wait, reason.wait)))
        if self._parking is not None:
            self._parking.stop_all()
        self._wake_lease_waits()
        return _Stop()

    def check_running(self) -> None:
        if self.stop is not None:
            raise _Stop()

    #: The replayer's opt-in argument check (``tether.testing.replay(compare_args=
    #: True)``): an operation the journal answers hands ``compare_args`` the arguments
    #: the code passes now. A worker's replay never compares them.
    compares_args = False

    def compare_args(self, entry: JournalEntry, args: Any) -> None:
        """Note ``args`` (the code's arguments, as a value) against ``entry``'s recorded
        ones: the replayer's check only (``compares_args``)."""

    def argument_texts(self, blobs: Mapping[str, str]) -> None:
        """The content-addressed texts the code's next arguments name (an LLM call's
        prompt, by digest), for the replayer's check to say what changed in them
        (``tether.ext.Run.argument_texts``); nothing anywhere else."""

    def recorded(self, pos: int, kind: OperationKind, name: str) -> JournalEntry | None:
        """The entry at ``pos`` if it records this operation; stops the run as blocked if
        it records another one."""
        entry = self.journal.get(pos)
        if entry is None:
            return None
        if entry.kind != kind or entry.name != name:
            err = NonDeterminismError(self.run_id, pos, (entry.kind, entry.name), (kind, name),
                                      code_at=_code_at())
            raise self.halt(Blocked(err))
        return entry

    def unconsumed_entry(self) -> JournalEntry | None:
        """A recorded entry the finished code never asked for (code removed an operation)."""
        for pos in range(self.position, self.last_recorded + 1):
            entry = self.journal.get(pos)
            if entry is not None and entry.kind != OperationKind.CANCEL:
                return entry
        return None

    def end_stop(self, error: BaseException | None) -> StopReason | None:
        """Why the run stops, now that its code ended: returned (``error`` None) or
        raised ``error``. ``stop`` if one was set; else blocked if the code raised
        ``NonDeterminismError`` itself (an integration found that what the journal holds
        no longer fits the code: a recorded model response calling a tool since renamed),
        as the engine's own check blocks it, or returned with recorded entries it never
        asked for (an operation removed). One rule for the worker, which records the
        end, and for the observers, whose span says it."""
        if self.stop is not None:
            return self.stop
        if isinstance(error, NonDeterminismError):
            return Blocked(error)
        if error is None:
            extra = self.unconsumed_entry()
            if extra is not None:
                return Blocked(NonDeterminismError(
                    self.run_id, extra.position, (extra.kind, extra.name), None))
        return None

    # -- writes -------------------------------------------------------------------------

    async def write(self, entry: JournalEntry) -> None:
        """Record an entry durably before going on; metrics that changed and are not
        being written yet (a durable LLM call's cost) go in its transaction, and so do
        the texts staged for its position (``stage_blobs``: a call's prompt)."""
        if self._metrics_writer.take():
            metrics: str | None = json.dumps(self.metrics)
            now = self.clock.now()
        else:
            metrics, now = None, 0.0
        blobs = self._blobs.pop(entry.position, None) if self._blobs else None
        # (As the store keeps them: through the payload hook, under its keyed digests.)
        sealed = None if blobs is None else self.codec.seal_blobs(blobs)
        self.io += 1  # (a task parked meanwhile waits for it: ``_Parking``)
        try:
            if self._deferred:
                await self.flush()
            try:
                _faults.point("journal.before_append")
                await self.store.journal_append(lease=self.lease, entry=entry,
                                                metrics=metrics, now=now, blobs=sealed)
            except LeaseLost as exc:
                raise self.halt(Lost(exc)) from None
            except StoreUnavailable as exc:
                # (Off the hot path: only a failed append pays for the retry's setup.)
                await self.write_again(_what(entry), exc, partial(
                    self.store.journal_append, lease=self.lease, entry=entry,
                    metrics=metrics, now=now, blobs=sealed), position=entry.position)
            except BaseException as exc:
                if metrics is not None and isinstance(exc, Exception):
                    self._metrics_writer.give_back()
                if blobs is not None:  # (not known to be stored: with the next write)
                    self._blobs.setdefault(entry.position, {}).update(blobs)
                raise
        finally:
            self.io -= 1
            if self._parking is not None:
                self._parking.poke()
        if blobs is not None:
            self._stored(blobs)
        self.journal[entry.position] = entry
        _faults.point("journal.after_commit")

    def stage_blobs(self, pos: int, blobs: Mapping[str, str]) -> int:
        """Texts to store with the next entry written at ``pos``, in its transaction
        (``Store.journal_append(blobs=)``), leaving out those this execution stored
        already; how many were staged. Until that write commits they are not counted
        as stored, so that an entry written meanwhile at another position (a call made
        concurrently with the same prompt) stores them too rather than naming texts
        that may never be written."""
        stored = self._blobs_stored
        new = {k: v for k, v in blobs.items() if k not in stored}
        if new:
            self._blobs.setdefault(pos, {}).update(new)
        return len(new)

    def _stored(self, blobs: Mapping[str, str]) -> None:
        """Texts committed with an entry: not staged again by this execution. Past
        ``_BLOBS_STORED_MAX`` keys the memory starts over (a text then goes out once
        more, which the store ignores)."""
        if len(self._blobs_stored) + len(blobs) > _BLOBS_STORED_MAX:
            self._blobs_stored.clear()
        self._blobs_stored.update(blobs)

    async def write_again(self, what: str, exc: StoreUnavailable,
                          write: Callable[[], Awaitable[Any]], *,
                          position: int | None = None) -> None:
        """``write()`` failed with ``exc``: the store is unavailable (a connection cut,
        perhaps after the server committed it; a server gone), and what it writes (a
        step's result: a paid call) exists only in this worker's memory. Write it again,
        backing off from ``WRITE_RETRY_FIRST`` to ``WRITE_RETRY_MAX`` seconds, until the
        store takes it, for as long as the run is this worker's: the lease's fencing
        token decides that when the store answers again, however long the outage and
        whether the lease expired meanwhile (nobody else took the run: still this
        worker's). A retry of a journal append that had in fact committed is taken as
        written by the store (same position, fencing token and content).

        Ends with the run's code stopped (``_Stop``, reason ``Lost``) if another worker
        took the run over (the write is refused, ``LeaseLost``, or the heartbeat said
        so): what was to be written is dropped, logged, and that worker replays the run
        from its journal. A worker that stops meanwhile cancels this (its grace period,
        if it drains, lets it go on until then). Raises any other error of the store.
        ``position``: the journal entry's that ``what`` names, a field of its lines."""
        run_id = self.run_id
        # (Logged from the run's context, not a step's: the lines carry the position
        # they name as a field of their own.)
        fields = None if position is None else {"position": position}
        retries = self.retries
        delay = WRITE_RETRY_FIRST
        try:
            while True:
                note = f"could not {what}; trying again in {delay:.1f} s (kept in memory)"
                if retries is not None:
                    retries.failed(run_id, exc, note)
                else:
                    log.debug("run %s: store unavailable (%s); %s", run_id, exc, note)
                await asyncio.sleep(delay * random.uniform(1.0, 1.2))
                if isinstance(self.stop, Lost):  # (the heartbeat: taken over meanwhile)
                    raise _Stop()
                try:
                    await write()
                except StoreUnavailable as failed:
                    exc = failed
                    delay = min(delay * 2, WRITE_RETRY_MAX)
                    continue
                except LeaseLost as lost:
                    if retries is not None:
                        retries.back()  # (the store answered)
                    raise self.halt(Lost(lost)) from None
                if retries is not None:
                    retries.back()
                log.info("run %s: %s written after the store came back", run_id, what,
                         extra=fields)
                return
        except BaseException as stopped:
            if isinstance(self.stop, Lost):
                # (DEBUG: the run's end says the loss once, as a WARNING: the worker's
                # ``_lease_lost``, with the step results refused, ``superseded``.)
                log.debug("run %s: lease lost while the store was unavailable (another "
                          "worker took the run over: fencing token %d is stale); the "
                          "%s held in memory is dropped (it stands only if its first "
                          "attempt committed before its connection was cut), and that "
                          "worker continues the run from its journal", run_id,
                          self.lease.fencing_token, what, extra=fields)
            elif isinstance(stopped, asyncio.CancelledError):
                log.warning("run %s: stopped with %s not written (the store is "
                            "unavailable); a worker that takes the run over replays it "
                            "from its journal, and runs that operation again", run_id, what,
                            extra=fields)
            raise

    def _defer(self, write: Awaitable[None]) -> asyncio.Future[None]:
        fut = asyncio.ensure_future(write)
        self._deferred.append(fut)
        return fut

    def write_deferred(self, entry: JournalEntry) -> None:
        """Record an entry without waiting (clock and random values): later writes are
        ordered after it, and the run flushes before it ends."""
        self.journal[entry.position] = entry
        self._defer(self._append_deferred(entry))

    async def _append_deferred(self, entry: JournalEntry) -> None:
        # (A step the workflow cancelled: the texts its body staged go with its entry.)
        blobs = self._blobs.pop(entry.position, None) if self._blobs else None
        sealed = None if blobs is None else self.codec.seal_blobs(blobs)
        try:
            await self.store.journal_append(lease=self.lease, entry=entry, blobs=sealed)
        except StoreUnavailable as exc:
            await self.write_again(_what(entry), exc, partial(
                self.store.journal_append, lease=self.lease, entry=entry, blobs=sealed),
                position=entry.position)
        if blobs is not None:
            self._stored(blobs)

    def note_cancelled(self, entry: JournalEntry) -> None:
        """A step that the workflow's code cancelled: journal it with the run's next write
        or flush (a done future among the deferred writes makes ``write`` flush first),
        unless the main task is being cancelled by then (``_write_cancelled``)."""
        self._cancelled.append(entry)
        done = self._loop.create_future()
        done.set_result(None)
        self._deferred.append(done)

    def _write_cancelled(self) -> None:
        entries, self._cancelled = self._cancelled, []
        stopped = self.stop is not None and not isinstance(self.stop, Release)
        if stopped or self.shutting_down():
            # The worker stops the run (or its lease was lost) since: the cancellation
            # may have been its doing; the steps run again at the next replay.
            return
        for entry in entries:
            self.write_deferred(entry)

    async def flush(self) -> None:
        if self._cancelled:
            self._write_cancelled()
        self._metrics_writer.start()
        pending, self._deferred = self._deferred, []
        for fut in pending:
            try:
                await fut
            except LeaseLost as exc:
                raise self.halt(Lost(exc)) from None

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

    def set_metrics(self, values: dict[str, float | None]) -> None:
        """Set numbers of the run's metrics (``None``: remove the key) and persist them
        soon, only when that changes what the run holds (thread-safe, as
        ``add_metrics``): a value that is a state, not a count (``tether.ai``'s budget
        limits), which a replay sets again at no write."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self._loop:
            self._loop.call_soon_threadsafe(self.set_metrics, dict(values))
            return
        changed = False
        for key, value in values.items():
            if value is None:
                changed = self.metrics.pop(key, None) is not None or changed
            elif self.metrics.get(key) != float(value):
                self.metrics[key] = float(value)
                changed = True
        if changed:
            self._metrics_writer.changed()

    def count_replay(self, sdef: StepDef, pos: int, value: Any) -> None:
        """Metrics of a result answered from the journal (e.g. tokens not paid again),
        counted at most once per position over the run's life."""
        counted = self.metrics.get(_REPLAY_MARK, 0.0)  # positions below it are counted
        if sdef.on_replay is None or pos < counted:
            return
        deltas = dict(sdef.on_replay(value) or {})
        deltas[_REPLAY_MARK] = pos + 1 - counted
        self.add_metrics(deltas)

    def status_changed(self, text: str | None) -> None:
        """The live status changed (encoded JSON or ``None``): persist it soon
        (thread-safe, as ``add_metrics``: sync steps run in an executor)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self._loop:
            self._loop.call_soon_threadsafe(self.status_changed, text)
            return
        self._status_text = text
        self._status_writer.changed()

    # -- results in the order they completed -------------------------------------------
    #
    # A branch of a gather (or a TaskGroup member) that performs several operations takes
    # its next position when its previous result arrives, so the positions a run's tasks
    # take depend on the order in which their results arrive. Live, that is the order in
    # which they completed; a replay answers recorded results without waiting, in the
    # order the code asks for them. Once a task other than the main one takes a position
    # (``ordered``), every result, live or recorded, is delivered by ``turn``: one at a
    # time, in the order of completion times (``stamp``: finished_at, then position), each
    # only once the run's tasks have settled (none of their handles is ready to run). Live
    # and replay then take the same positions: the same deliveries, in the same order,
    # into the same settled run. A run of one task never waits (``ordered`` stays False).

    def stamp(self) -> float:
        """The completion time (``finished_at``) of a result about to be journaled: the
        clock's, but at least ``STAMP_STEP`` past every completion time this execution
        stamped or delivered, so that completion times follow the delivery order even
        when the clock steps back (a resync of ``SyncedClock``, the system clock set) or
        stands still (a test's clock). In a run of one task (not ``ordered``) the clock's
        own time, nothing being ordered by it, but past the journal's results all the
        same (below).

        A live result completes after every result the journal holds, and its time
        must say so whatever this worker's clock says: a replay delivers recorded
        results in the order of their times, and one still to be delivered (another
        branch's) that a result stamped by a clock behind the journal's came before
        would be delivered after it, so that its branch, going on first, would take
        the other's positions (the run blocked). The clock is behind the journal's
        times where the run was last run by a worker whose clock was ahead (skew
        between hosts, a step back of the store's or the machine's clock). A clock at
        exactly the journal's latest time keeps it (``TestEnv``'s, skipped to a timer:
        ``tether.now()`` there is the timer's time, not a microsecond after)."""
        t = raw = self.clock.now()
        recorded = self._recorded_last
        if recorded is None:
            recorded = self._recorded_last = self._journal_last()
        if t < recorded:  # (a clock behind the journal's; one at its exact time, a
            t = recorded + STAMP_STEP  # test's that skipped to a timer, keeps its time)
        if self.ordered:
            last = self._last + STAMP_STEP
            if t < last:
                t = last
            self._last = t
        elif t > self._last:
            self._last = t
        self.lift = t - raw
        return t

    def _journal_last(self) -> float:
        """The latest completion time in the journal (0.0: none)."""
        return max((e.finished_at for e in self.journal.values()
                    if e.finished_at is not None), default=0.0)

    def waits(self, task: asyncio.Task[Any] | None = None) -> bool:
        """Whether a recorded result, about to be answered to ``task`` (default: the
        current one), waits for its turn: in a run of several tasks; and when a task the
        main one started and that has not taken a position yet is ready to run
        (``t = asyncio.create_task(branch()); await step()``: live, the branch ran while
        the step did, and took its first position then)."""
        if self.ordered:
            return True
        if task is None:
            task = asyncio.current_task(self._loop)
        return task is self.main_task and self._others_ready()

    async def journal_result(self, entry: JournalEntry) -> None:
        """Journal a live result the workflow receives next (``finished_at`` from
        ``stamp``), and wait for its turn in a run of several tasks."""
        if self.ordered:
            await self.in_flight(entry.position, entry.finished_at or 0.0, self.write(entry))
        else:
            await self.write(entry)
        if self.ordered:
            await self.turn(entry.finished_at, entry.position)

    async def turn(self, key: float | None, pos: int) -> None:
        """Wait until the result at ``pos``, completed at ``key`` (a final entry's
        ``finished_at``; ``None``: first), is the earliest waiting and the run's tasks
        have settled."""
        fut: asyncio.Future[None] = self._loop.create_future()
        heapq.heappush(self._turns, (float("-inf") if key is None else key, pos,
                                     next(_turn_ids), fut))
        self._kick()
        await fut

    async def in_flight(self, pos: int, key: float, write: Awaitable[Any]) -> Any:
        """Await ``write``, the journaling of a live result completed at ``key``: no
        result completed later is delivered before this one's turn."""
        self._inflight[pos] = key
        try:
            return await write
        finally:
            del self._inflight[pos]
            self._kick()
            if self._parking is not None:
                self._parking.poke()

    def _kick(self) -> None:
        if self._turns:
            self._settler.kick(self)

    def _pump(self, unsettled: bool | None) -> None:
        """Deliver the earliest result waiting if the run's tasks have settled (the
        settler's look: ``unsettled``, None where it cannot look); look again at the
        loop's next pass while they have not, or after each delivery. An error of its
        own must not leave the run waiting for ever: the earliest result is then
        delivered as it is (logged)."""
        try:
            self._deliver_next(unsettled)
        except Exception:
            log.exception("run %s: ordered delivery failed; the next result is delivered "
                          "without waiting for the run's tasks to settle", self.run_id)
            self._deliver_anyway()

    def _deliver_anyway(self) -> None:
        """Deliver the earliest result waiting, settled or not (after an error)."""
        turns = self._turns
        while turns:
            fut = heapq.heappop(turns)[3]
            if not fut.done():
                fut.set_result(None)
                break
        self._kick()

    def _deliver_next(self, unsettled: bool | None) -> None:
        """One look of ``_pump``: deliver the earliest result, or ask to look again."""
        turns = self._turns
        while turns and turns[0][3].done():  # (its task was cancelled meanwhile)
            heapq.heappop(turns)
        if not turns or self.stop is not None:
            return
        if unsettled is None:
            unsettled = self._passes < SETTLE_PASSES_BLIND  # (uvloop: cannot look)
        if unsettled:
            self._passes += 1
            if self._passes < SETTLE_PASSES_MAX:
                self._kick()
                return
            if not self._never_settled:
                self._never_settled = True
                log.warning("run %s: its tasks did not settle within %d passes of the "
                            "event loop (code polling with asyncio.sleep(0)?); results are "
                            "delivered without waiting for them, so a replay may take "
                            "other positions", self.run_id, SETTLE_PASSES_MAX)
        self._passes = 0
        key, _, _, fut = turns[0]
        if self._inflight and min(self._inflight.values()) < key:
            return  # after the result being journaled: its turn kicks the pump again
        heapq.heappop(turns)
        if key > self._last:
            self._last = key
        fut.set_result(None)
        self._kick()

    def _others_ready(self) -> bool:
        """Whether a task of this run other than the current one (and than Tether's own
        writes and reads) is ready to run. Called by the main task for each result it
        is answered from the journal: it looks only at the handles added to the loop's
        ready queue since its last look, if it has not let the loop run since."""
        ready = self._ready
        if not ready:
            self._seen_len = 0
            return False
        n = len(ready)
        seen = self._seen_len
        if ready[0] is self._seen_first and n >= seen:
            if n == seen:
                return False
            new = n - seen
        else:
            new = n
            self._seen_first = ready[0]
        self._seen_len = n
        current = asyncio.current_task(self._loop)
        try:
            handles = list(itertools.islice(reversed(ready), new))
        except RuntimeError:
            # Another thread's call_soon_threadsafe (an executor thread's step ending, a
            # store's writer thread) appended to the queue between the iterator's making
            # and its first step: "deque mutated during iteration", which failed the run
            # (a kill soak's run, on replay). A copy made in one call cannot be cut so:
            # its handles from the first new one (only other threads append meanwhile,
            # at the right; the loop, this thread, is the only one that pops).
            handles = list(ready)[n - new:]
            handles.reverse()
        for handle in handles:
            task = getattr(handle._callback, "__self__", None)
            if (isinstance(task, asyncio.Task) and task is not current
                    and not handle._cancelled
                    and handle._context.get(current_run) is self
                    and task not in self._deferred and task is not self._cut_off_read):
                return True
        return False

    # -- cancellation -------------------------------------------------------------------

    def enters(self, pos: int) -> bool:
        """Whether ``enter(pos)`` could do anything (stop, drain, cancel, or a recorded
        entry at ``pos``): the hot path of a step skips the coroutine when it could not."""
        return (self.stop is not None or self.draining or self.cancel_requested
                or pos in self.journal)

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
            await self._drained()
        if entry is not None and entry.kind == OperationKind.CANCEL:
            if self.waits():
                await self.turn(entry.finished_at, pos)
            self.cancel_delivered = True
            self.replayed += 1
            raise Cancelled(self.run_id)
        if self.cancel_requested and not self.cancel_delivered and (
            entry is None or entry.status == PENDING
        ):
            now = self.stamp()
            if entry is not None and entry.kind == OperationKind.SLEEP:
                # It takes a timer's place: it keeps the timer's start and deadline, so
                # that a retry of the run gives the timer back (``retry_plan``).
                cancel = JournalEntry(pos, OperationKind.CANCEL, "cancel", OK,
                                      result=entry.result, started_at=entry.started_at,
                                      finished_at=now, next_attempt_at=entry.next_attempt_at)
            else:
                cancel = JournalEntry(pos, OperationKind.CANCEL, "cancel", OK,
                                      started_at=now, finished_at=now)
            await self._cancel_children()
            await self.journal_result(cancel)
            self.cancel_delivered = True
            raise Cancelled(self.run_id)

    async def _cancel_children(self) -> None:
        """The cancel is being delivered: ask the run's children whose policy is
        ``cancel`` to cancel now, not once the run ends. Its code may catch
        ``Cancelled`` and clean up (await a child's result, run steps) for as long as it
        likes; until 2026-12-06 its children ran on meanwhile, and a parent awaiting a
        child that waited for a signal stayed ``waiting`` for ever, cancelled or not.

        Done before the ``cancel`` entry is journaled: a worker that dies in between
        leaves the cancel undelivered, and the next one asks again (a no-op for the
        children already ended). Not done on the replay of that entry, which would
        cancel the children the clean-up started; those are cancelled when the run
        ends. Should the store fail here, the run's end cancels them as it always did."""
        try:
            asked = await self.store.run_children_cancel(parent_run_id=self.run_id,
                                                         now=self.clock.now())
        except Exception as exc:  # its end cancels them (worker: _cancel_children)
            log.warning("run %s: cancel its children now: %s; they are cancelled when "
                        "it ends", self.run_id, exc, extra={"run_id": self.run_id})
            return
        if asked:
            log.info("run %s cancelled; cancelling children %s", self.run_id, asked,
                     extra={"run_id": self.run_id})

    def request_cancel(self) -> None:
        """A cancel arrived: wake an in-memory wait and interrupt running async steps
        (they end as an interrupted attempt; the cancel takes their position). Branches
        parked at a durable wait (``release``) release the run at once: its next
        execution delivers the cancel."""
        self.cancel_requested = True
        self.wake.set()
        self._wake_lease_waits()
        if (self._parking is not None and self._parking.parked and self.stop is None
                and not self.cancel_delivered):
            self.halt(Release(Wait(self.clock.now(), "cancel requested")))
        if not self.cancel_delivered:  # clean-up steps after Cancelled run to the end
            for t in list(self._step_tasks):
                if isinstance(t, asyncio.Task):
                    # An async step runs in the task that awaits it: cancelling that
                    # task interrupts the step, and ``_invoke`` takes the cancel back.
                    if t in self.step_interrupts:
                        continue
                    self.step_interrupts.add(t)
                t.cancel()

    def drain(self) -> None:
        """The worker is stopping: hand the run back at its next operation or wait (in a
        run of several tasks, once the steps its other tasks are running are journaled:
        see ``release``)."""
        self.draining = True
        self.wake.set()
        self._wake_lease_waits()
        if self._parking is not None:
            self._parking.poke()  # (its in-memory timers no longer hold the run)

    async def _drained(self, at: float | None = None) -> None:
        if self.draining:
            now = self.clock.now()
            await self.release(Wait(now if at is None else max(at, now),
                                    "handed back by a draining worker"))

    # -- the lease as this worker's clock tells it ----------------------------------------

    def renew(self, until: float) -> None:
        """The heartbeat renewed the run's lease: steps may start until ``until`` (the
        lease's end as the store holds it, less the worker's margin); the steps waiting
        for it start."""
        self.lease_until = until
        self._wake_lease_waits()

    def _wake_lease_waits(self) -> None:
        wake = self._lease_wake
        if wake is not None:
            wake.set()
            wake.clear()  # (its waiters are woken all the same)

    async def lease_renewed(self) -> None:
        """Wait until the heartbeat renews the lease, which ran out by this worker's
        clock (``lease_until``), or the run stops, drains or is asked to cancel (the
        caller looks again: ``enter``). Another worker may take over a run whose lease
        ran out, and run the step about to start; a worker cut off from the store (its
        writes and heartbeats retried meanwhile) reaches the steps of a run's other
        branches with no store call on the way. Steps already running go on. The heartbeat is asked
        to go at once (``ask_renewal``): a clock that jumped ahead (a test's virtual
        clock moved on) waits one heartbeat's round trip, not its interval. Woken by the
        events, no polling; counted as the run's store call in flight (``busy``), so
        that a sibling parked at a wait does not release the run meanwhile."""
        wake = self._lease_wake
        if wake is None:
            wake = self._lease_wake = asyncio.Event()
        if self.ask_renewal is not None:
            self.ask_renewal()
        with self.busy():
            await wake.wait()

    # -- attempts (history, written off the hot path) --------------------------------------

    async def read_cut_off(self) -> dict[int, tuple[int, float]]:
        """Per position, the attempts of this generation that an earlier execution
        started and never ended (their worker died, stopped or let the run go in them):
        the highest such attempt's number and the earliest one's start, counting only
        those after the position's last attempt that ended. Read from the history once
        per execution (the steps of a ``gather`` share the read); a history that cannot
        be read counts none (numbered as if they had not run, as before)."""
        if self.cut_off is not None:
            return self.cut_off
        if self._cut_off_read is None:
            self._cut_off_read = asyncio.ensure_future(self._read_cut_off())
        return await asyncio.shield(self._cut_off_read)

    async def _read_cut_off(self) -> dict[int, tuple[int, float]]:
        try:
            rows = await self.store.attempt_list(self.run_id)
        except Exception as exc:  # history only: the step runs anyway
            log.warning("run %s: could not read its step attempts (%s); a step cut off "
                        "by an earlier execution is numbered as if it had not run",
                        self.run_id, exc)
            rows = []
        self.cut_off = cut_off_attempts(rows, self.generation)
        return self.cut_off

    def unconfirmed(self, attempt_id: str, row: AttemptRow, entry: JournalEntry) -> None:
        """A step's attempt that succeeded (``row``, noted ``ok``) but whose result's
        journal write (``entry``) did not end well: refused by fencing, or cut off with
        its outcome unknown (the run's task cancelled mid-way). If the run turns out to
        be lost, ``supersede`` tells which."""
        if self._unconfirmed is None:
            self._unconfirmed = {}
        self._unconfirmed[attempt_id] = (row, entry)

    async def supersede(self, run: RunRecord | None) -> list[AttemptRow] | None:
        """The run was lost to another worker (``Lost``): of this execution's attempts
        that succeeded but whose result's write did not end well (``unconfirmed``), note
        ``superseded`` those whose result the journal does not hold as written here
        (``same_entry``): their body ran (its side effect happened) but their result was
        refused, and the new owner runs the step again. One read of the journal (of the
        run's generation: ``run``, as read now, says whether it continued as new since;
        None: not known, the current one). An attempt whose result the journal holds
        (committed before the takeover) stays ``ok``. Returns the rows noted
        ``superseded``; None if the journal could not be read (the rows then stay as
        noted, ``ok``: the worker cannot tell)."""
        pending, self._unconfirmed = self._unconfirmed, None
        if not pending:
            return []
        try:
            if run is not None and run.generation != self.generation:
                entries = next((g.entries for g in await self.store.journal_archive_read(
                    self.run_id) if g.generation == self.generation), [])
            else:
                entries = await self.store.journal_read(self.run_id)
        except StoreError as exc:
            log.debug("run %s: could not read its journal to tell whether %d step "
                      "results were refused (%s); their attempts stay ok", self.run_id,
                      len(pending), exc)
            return None
        held = {e.position: e for e in entries}
        noted: list[AttemptRow] = []
        for attempt_id, (row, entry) in pending.items():
            stored = held.get(entry.position)
            stood = stored is not None and same_entry(stored, entry)
            if _observe.observers:  # (the attempt's span says which)
                _observe.step_settled(self, entry.position, not stood)
            if stood:
                continue  # (it stood: committed before the takeover)
            superseded: AttemptRow = (*row[:7], "superseded", row[8], row[9], None)
            self.attempt_writer.note(attempt_id, superseded)
            noted.append(superseded)
        return noted

    def lost_at(self) -> int:
        """Where the run stood as this execution gave it up: the first position it took
        that its journal does not hold as ended (an operation in flight), else the
        next one it would have taken."""
        journal = self.journal
        for pos in range(self.position):
            entry = journal.get(pos)
            if entry is None or entry.status == PENDING:
                return pos
        return self.position

    async def flush_history(self) -> None:
        """Write this run's attempts noted so far (at the run's end): whoever sees the
        end sees them (``AttemptWriter.flush``)."""
        await self.attempt_writer.flush(self.run_id)

    # -- waiting ------------------------------------------------------------------------

    async def wait_until(self, at: float, waiting_for: str) -> None:
        """Wait until ``at``: in memory if short, else release the run (see ``release``:
        a branch parked there until ``at`` goes on in memory)."""
        while True:
            remaining = at - self.clock.now()
            if remaining <= 0:
                return
            if remaining <= self.sticky_wait:
                break
            await self.release(Wait(at, waiting_for), at)
        if self.cancel_requested and not self.cancel_delivered:
            return
        await self._drained(at)
        self.wake.clear()
        await wait_event(self.wake, remaining)
        await self._drained(at)

    async def release(self, wait: Wait, resume_at: float | None = None) -> None:
        """Release the run until ``wait`` (raises ``_Stop``). In a run whose other tasks
        are still working (a step running, a write in flight, a task ready to run, an
        in-memory timer of the workflow's code), this task parks here instead, and the
        run is released once they are all done or parked too, for any of the parked
        tasks' waits (``_Parking``): a sibling's wait does not interrupt a step, which
        would run again at the next replay. Returns only if ``resume_at`` (the wait's
        own deadline) comes while the task is parked: it goes on in memory."""
        if self.stop is None and not self._alone():
            task = asyncio.current_task(self._loop)
            if task is not None:
                self.tasks.add(task)  # (cancelled with the others if the code ends first)
            if await self.parking().park(wait, resume_at):
                return
            raise _Stop()  # (released with the others: ``self.stop`` says why)
        raise self.halt(Release(wait))

    def _alone(self) -> bool:
        """Whether the current task is the run's only task still working: the main
        task, no step running, no other task that took a position or ran a step left
        unfinished, none parked. A run of one task (the common case) is released at
        once, as it always was."""
        if self._step_tasks or (self._parking is not None and self._parking.parked):
            return False
        current = asyncio.current_task(self._loop)
        if current is not self.main_task:
            return False
        return all(t is current or t.done() for t in self.tasks)

    def parking(self) -> _Parking:
        """The run's parked tasks (made at the first park)."""
        if self._parking is None:
            self._parking = _Parking(self)
        return self._parking

    def busy(self) -> _Busy:
        """``with ctx.busy():`` around a store call that a parked sibling must wait for
        (what a wait reads or writes before it parks)."""
        return _Busy(self)
