"""Result waiters: every ``RunHandle.result`` of one App reads through one reader.

A thousand callers waiting for a thousand runs used to read one run each, and every
store notification (any run of the schema started, ended or was released) woke all of
them to read again: a thousand reads per notification, most of the client's CPU under
load. Here the callers register a future and ask for a read; one task per App gathers
every id asked for since its last read and reads them in one store call
(``run_get_many``), so reads cost one round trip per wave, however many callers wait.

``result(run_id, timeout, subscribe)`` registers a wait for the run's end and reads the
run once: a run settled already (ended or blocked) is the answer; else the wait is
woken by ``settle(run, since)`` (a worker of this process ended the run and hands over
the run as it ended it: no read), ``check(run_id)`` (read it), ``check_all()`` (a store
notification: some run changed; read those settled among all waited for, except the
runs a worker of this process holds: it settles their waiters when it ends them, and
calls ``left(run_id)`` when it lets one go otherwise), and a per-waiter poll with
backoff (``check``, skipping runs held here), for stores without notifications, lost
notifications and runs deleted meanwhile (slower from the start where notifications
arrive).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tether._types import RunRecord
from tether.errors import RunNotFound
from tether.store._port import serve_every_caller

#: Most ids in one read.
MAX_READ = 1000
#: Polling of one waiter: first delay, growth, cap (seconds).
POLL_FIRST, POLL_GROWTH, POLL_CAP = 0.005, 1.5, 1.0
#: First delay when store notifications wake the waiters: the poll is only the safety
#: net then (a lost notification, a deleted run). Starting at 5 ms, 1,000 waiters of
#: runs lasting a few seconds polled ~14 times each, and every poll wave read all of
#: their runs again.
POLL_FIRST_NOTIFIED = 0.25

ReadMany = Callable[[list[str], bool], Awaitable[list[RunRecord]]]


@dataclass(slots=True)
class _Waiting:
    """Futures of one run: those that take any state and those waiting for the end
    (the latter with their registration's number, see ``ResultWaiters.settle``)."""
    readers: list[asyncio.Future[RunRecord]] = field(default_factory=list)
    settled: list[asyncio.Future[RunRecord]] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)


class ResultWaiters:
    """Coalesced reads for the result waiters of one App (see the module docstring)."""

    def __init__(self, read_many: ReadMany,
                 held: Callable[[str], bool] | None = None) -> None:
        self._read_many = read_many
        #: Whether a worker of this process holds the run (``check_all`` skips it).
        self._held = held
        self._runs: dict[str, _Waiting] = {}
        self._due: set[str] = set()  # ids to read soon, whatever their state
        self._all = False            # and every other id waited for, if settled
        self._kick: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        #: Store notifications reach ``check_all`` (set by the App once subscribed).
        self.notified = False
        self._registered = 0  # registrations so far (``mark``)

    async def result(self, run_id: str, timeout: float | None,
                     subscribe: Callable[[], Awaitable[bool]]) -> RunRecord:
        """``RunHandle.result``'s wait: the run once it is settled, in one read when it
        is settled already or a worker of this process ends it.

        The wait for the end is registered before the first read, so an end after that
        read (handed over by a worker here, or notified) answers it with no second read.
        ``subscribe()`` runs only if the run is not settled yet (True: it subscribed to
        store notifications just now, so an end before that is read again). ``timeout``
        counts from the first read's answer: a settled run is answered even with
        ``timeout=0``. Raises: RunNotFound, StoreError, TimeoutError."""
        now = self._register(run_id, settled=False)
        end = self._register(run_id, settled=True)
        self._due.add(run_id)
        self._wake()
        timer: asyncio.TimerHandle | None = None
        try:
            try:
                run = await now
            finally:
                self._unregister(run_id, now)
            if run.status.is_settled:
                return run
            if await subscribe():
                self.check(run_id)
            loop = asyncio.get_running_loop()
            delay = POLL_FIRST_NOTIFIED if self.notified else POLL_FIRST
            held = self._held

            def poll() -> None:
                nonlocal delay, timer
                # A run a worker of this process holds needs no poll: the worker answers
                # its wait when it ends it, and reads it when it lets it go (``left``).
                if held is None or not held(run_id):
                    self.check(run_id)
                delay = min(delay * POLL_GROWTH, POLL_CAP)
                timer = loop.call_later(delay, poll)

            timer = loop.call_later(delay, poll)
            try:
                async with asyncio.timeout(timeout):
                    return await end
            except TimeoutError:
                if timeout is None:
                    raise
                raise TimeoutError(f"run {run_id!r} did not end within {timeout:g} s"
                                   ) from None
        finally:
            if timer is not None:
                timer.cancel()
            if end.done() and not end.cancelled():
                end.exception()  # retrieved: the first read's error reached the caller
            self._unregister(run_id, end)

    def mark(self) -> int:
        """The number of waits registered so far: taken before a run's end is written,
        it tells ``settle`` which waiters began before that end."""
        return self._registered

    def settle(self, run: RunRecord, since: int) -> None:
        """``run`` ended as given (committed by a worker of this process): the waits for
        it registered before ``mark()`` returned ``since`` take it without a read. One
        registered later may have begun after something changed the run again (a
        retry), so it reads the run as usual."""
        waiting = self._runs.get(run.run_id)
        if waiting is None:
            return
        later = False
        for fut, number in zip(waiting.settled, waiting.numbers, strict=True):
            if number >= since:
                later = True
            elif not fut.done():
                fut.set_result(run)
        if later or waiting.readers:
            self.check(run.run_id)

    def check(self, run_id: str) -> None:
        """Read ``run_id`` soon if someone waits for it to settle."""
        if run_id in self._runs:
            self._due.add(run_id)
            self._wake()

    def left(self, run_id: str) -> None:
        """A worker of this process stopped holding ``run_id`` (ended, handed back,
        waiting, lost): read it if a wait for it is not answered yet."""
        waiting = self._runs.get(run_id)
        if waiting is not None and not all(fut.done() for fut in waiting.settled):
            self.check(run_id)

    def check_all(self) -> None:
        """Read every run waited for soon (something changed in the store)."""
        if self._runs:
            self._all = True
            self._wake()

    async def close(self) -> None:
        """Cancel the reader and wait for it to end, so that a read in flight is over
        (its connection back in the pool) before the App closes the store under it."""
        task, self._task = self._task, None
        for waiting in self._runs.values():
            for fut in (*waiting.readers, *waiting.settled):
                if not fut.done():
                    fut.cancel()
        self._runs.clear()
        self._due.clear()
        if task is None or task.done():
            return
        task.cancel()
        if task.get_loop() is asyncio.get_running_loop():
            # wait(), not `await task`: the reader's end (cancelled, or an error) is not
            # the caller's, and a cancel of the caller itself still reaches it.
            await asyncio.wait({task})
            if not task.cancelled():
                task.exception()  # retrieved: a reader that failed as it closed is no news

    # -- internals ------------------------------------------------------------------------

    def _register(self, run_id: str, *, settled: bool) -> asyncio.Future[RunRecord]:
        fut: asyncio.Future[RunRecord] = asyncio.get_running_loop().create_future()
        waiting = self._runs.get(run_id)
        if waiting is None:
            waiting = self._runs[run_id] = _Waiting()
        if settled:
            waiting.settled.append(fut)
            waiting.numbers.append(self._registered)
            self._registered += 1
        else:
            waiting.readers.append(fut)
        return fut

    def _unregister(self, run_id: str, fut: asyncio.Future[RunRecord]) -> None:
        waiting = self._runs.get(run_id)
        if waiting is None:
            return
        if fut in waiting.readers:
            waiting.readers.remove(fut)
        elif fut in waiting.settled:
            i = waiting.settled.index(fut)
            del waiting.settled[i], waiting.numbers[i]
        if not waiting.readers and not waiting.settled:
            del self._runs[run_id]

    def _wake(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._kick = asyncio.Event()
            self._task = loop.create_task(self._reader(), name="tether-result-reader")
        assert self._kick is not None
        self._kick.set()

    async def _reader(self) -> None:
        serve_every_caller()  # (started from one caller's context)
        kick = self._kick
        assert kick is not None
        while True:
            await kick.wait()
            kick.clear()
            any_ids = sorted(self._due & self._runs.keys())
            settled_ids = sorted(self._runs.keys() - self._due) if self._all else []
            held = self._held
            if held is not None and settled_ids:
                settled_ids = [run_id for run_id in settled_ids if not held(run_id)]
            self._due.clear()
            self._all = False
            for ids, settled_only in ((any_ids, False), (settled_ids, True)):
                for i in range(0, len(ids), MAX_READ):
                    await self._read(ids[i:i + MAX_READ], settled_only)

    async def _read(self, ids: list[str], settled_only: bool) -> None:
        # Only the futures registered before the read began may take its answer: one
        # registered while it is in flight (say, right after `app.retry`) must not get a
        # state older than its own call. Its id is due again, so the next read serves it.
        asked = {run_id: (list(w.readers), list(w.settled))
                 for run_id in ids if (w := self._runs.get(run_id)) is not None}
        try:
            runs = await self._read_many(ids, settled_only)
        except Exception as exc:  # the callers of these ids see the store's error
            for readers, settled in asked.values():
                for fut in (*readers, *settled):
                    if not fut.done():
                        fut.set_exception(exc)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Cancelled during the read, and the store turned that into an error
                # (a connection closed under the query): end, don't wait for more.
                raise asyncio.CancelledError from exc
            return
        found = {run.run_id: run for run in runs}
        for run_id, (readers, settled) in asked.items():
            run = found.get(run_id)
            if run is None:
                if settled_only:
                    continue  # not settled yet (or gone: the next full read says so)
                for fut in (*readers, *settled):
                    if not fut.done():
                        fut.set_exception(RunNotFound(run_id))
                continue
            for fut in readers:
                if not fut.done():
                    fut.set_result(run)
            if run.status.is_settled:
                for fut in settled:
                    if not fut.done():
                        fut.set_result(run)
