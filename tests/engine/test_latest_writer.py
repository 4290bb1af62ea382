"""``_LatestWriter``: a run's metrics (lazy) and live status (at once) written in order,
coalesced; a journal write may take the metrics that changed and write them itself."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tether._replay import _LatestWriter


class Harness:
    """A writer whose writes record the value of the moment, and the run's deferred
    writes as a list of tasks."""

    def __init__(self, *, lazy: bool, what: str = "a value") -> None:
        self.value = 0
        self.written: list[int] = []
        self.deferred: list[asyncio.Future[None]] = []
        self.gate: asyncio.Event | None = None
        self.writer = _LatestWriter(self._defer, self._write, lazy=lazy, what=what)

    def _defer(self, write: Awaitable[None]) -> asyncio.Future[None]:
        fut = asyncio.ensure_future(write)
        self.deferred.append(fut)
        return fut

    async def _write(self) -> None:
        value = self.value
        if self.gate is not None:
            await self.gate.wait()
        self.written.append(value)

    def change(self, value: int) -> None:
        self.value = value
        self.writer.changed()

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        await asyncio.gather(*self.deferred)


async def test_a_lazy_writer_writes_once_at_the_next_pass_with_the_latest_value() -> None:
    h = Harness(lazy=True)
    h.change(1)
    h.change(2)
    assert h.deferred == []  # nothing started in this pass
    await h.settle()
    assert h.written == [2]


async def test_a_change_taken_before_the_next_pass_is_not_written_by_the_writer() -> None:
    h = Harness(lazy=True)
    h.change(1)
    assert h.writer.take()
    assert not h.writer.take()  # taken once
    await h.settle()
    assert h.written == [] and h.deferred == []
    h.change(2)  # a later change is the writer's again
    await h.settle()
    assert h.written == [2]


async def test_a_value_given_back_is_written_by_the_next_start_not_before() -> None:
    h = Harness(lazy=True)
    h.change(1)
    assert h.writer.take()
    h.writer.give_back()
    await h.settle()
    assert h.written == []  # nothing scheduled by the failure itself
    h.writer.start()  # the run's next flush
    await h.settle()
    assert h.written == [1]


async def test_nothing_is_taken_while_a_write_is_in_flight_and_the_latest_follows_it() -> None:
    h = Harness(lazy=True)
    h.gate = asyncio.Event()
    h.change(1)
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the write of 1 is in flight, held at the gate
    h.change(2)
    assert not h.writer.take()
    h.gate.set()
    await h.settle()
    assert h.written == [1, 2]


async def test_a_writer_that_is_not_lazy_starts_at_once() -> None:
    h = Harness(lazy=False)
    h.change(1)
    assert len(h.deferred) == 1
    assert not h.writer.take()  # already being written
    await h.settle()
    assert h.written == [1]


async def test_a_write_cancelled_before_it_began_leaves_the_writer_writing_again() -> None:
    """The task of a write cancelled before its first step (the run's flush was waiting
    for it and was cancelled) never ran, and the writer stayed "writing" for good: it
    wrote nothing more, nor let a journal write take a change, for the rest of the
    execution. The next change is written."""
    h = Harness(lazy=False)
    h.change(1)
    (first,) = h.deferred
    first.cancel()  # before the loop steps it
    await asyncio.gather(first, return_exceptions=True)
    h.deferred.clear()
    await asyncio.sleep(0)  # (its done callbacks)
    h.change(2)
    await h.settle()
    assert h.written == [2]
    h.change(3)
    assert not h.writer.take()  # (its write started at once)
    await h.settle()
    assert h.written == [2, 3]


# -- an event loop that ends while values change ---------------------------------------
#
# A write starts in a task of its own; a task made in the loop's last pass is never
# stepped, and its coroutine, destroyed unstarted, warned "coroutine
# '_LatestWriter._run' was never awaited" (an error under the suite's -W error). Here
# values change in every pass of a loop while it ends (as a step's thread or a timer
# may change them). Three writers, each changed from one pass later than the one
# before, have a write due in every pass, the last one included, whatever its number:
# a lazy writer starts its write a pass after a change, and one write in three passes.

_NOT_WRITTEN = ": the last change was not written (the event loop was ending)"


class Ticking:
    """Writers whose values change in every pass of the running loop, from ``begin``
    on, for 300 passes."""

    def __init__(self, *, lazy: bool) -> None:
        self.writers = [Harness(lazy=lazy, what=f"writer {i}") for i in range(3)]

    def begin(self) -> None:
        loop = asyncio.get_running_loop()

        def tick(n: int) -> None:
            for h in self.writers[:n + 1]:
                h.change(n)
            if n < 300:
                loop.call_soon(tick, n + 1)

        tick(0)


def _ends(end: Callable[[], None]) -> list[str]:
    """Run ``end`` (which ends a loop, and drops the writers), collect what is garbage;
    the "never awaited" warnings of coroutines meanwhile."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        end()
        gc.collect()
    return [str(w.message) for w in caught if "never awaited" in str(w.message)]


@pytest.mark.parametrize("lazy", [True, False])
def test_no_write_starts_on_an_event_loop_that_asyncio_run_is_ending(
        lazy: bool, caplog: pytest.LogCaptureFixture) -> None:
    """``asyncio.Runner`` (``asyncio.run``) ends its loop: a sweep that cancels every
    task, a few passes more (``shutdown_asyncgens``, ``shutdown_default_executor``),
    then ``close``. Values are written while the loop runs; from those last passes on
    no write starts, and each writer says that its last change was not written."""
    written: list[list[int]] = []

    def end() -> None:
        ticking = Ticking(lazy=lazy)

        async def main() -> None:
            ticking.begin()
            for _ in range(10):
                await asyncio.sleep(0)

        with asyncio.Runner() as runner:
            runner.run(main())
        written.extend(h.written for h in ticking.writers)

    with caplog.at_level(logging.WARNING, logger="tether.worker"):
        assert _ends(end) == []
    assert all(written), written  # (each wrote while the loop ran)
    told = sorted(r.getMessage() for r in caplog.records if r.name == "tether.worker")
    assert told == [f"writer {i}{_NOT_WRITTEN}" for i in range(3)], told


async def _wrapped(coro: Awaitable[Any]) -> Any:
    return await coro


def _wrapping_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
    """A task factory that runs each coroutine inside one of its own (as the worker's
    does for the tasks of a run)."""
    return asyncio.Task(_wrapped(coro), loop=loop, **kwargs)


@pytest.mark.parametrize("factory", [None, _wrapping_factory], ids=["plain", "wrapped"])
def test_a_write_whose_loop_closed_before_it_began_is_closed_and_told(
        factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A loop closed without asyncio.run's shutdown calls (``run_until_complete``, then
    ``close``) drops what its last pass scheduled, a write's first step among them: the
    write's coroutines (a task factory's wrapper too) are closed when its task is freed
    (no "never awaited" warning), and its writer says that its last change was not
    written."""
    def end() -> None:
        ticking = Ticking(lazy=False)
        loop = asyncio.new_event_loop()
        loop.set_task_factory(factory)

        async def main() -> None:
            ticking.begin()

        loop.run_until_complete(main())
        loop.close()

    with caplog.at_level(logging.WARNING, logger="tether.worker"):
        assert _ends(end) == []
    told = [r.getMessage() for r in caplog.records if r.name == "tether.worker"]
    assert told and all(m.endswith(_NOT_WRITTEN) for m in told), told


@pytest.mark.parametrize("factory", [None, _wrapping_factory], ids=["plain", "wrapped"])
def test_a_write_cancelled_before_it_began_leaves_no_coroutine_unawaited(
        factory: Any) -> None:
    """A write's task cancelled before its first step, under a task factory that wraps
    each coroutine (the worker's, for a run's tasks): the wrapper is thrown the
    cancellation and ends, and the write's own coroutine, never started, is closed with
    it. It was left to the garbage collector, which warned "coroutine '_write_latest'
    was never awaited" whenever it ran: under the suite's -W error, a failure of
    whichever test was running then (seen as a flaky
    ``tests/web/test_api.py::test_the_documents_name_patterns_are_the_servers_rules``).
    The next change is written as before."""
    written: list[int] = []

    def end() -> None:
        loop = asyncio.new_event_loop()
        loop.set_task_factory(factory)

        async def main() -> None:
            h = Harness(lazy=False)
            h.change(1)
            (first,) = h.deferred
            first.cancel()  # before the loop steps it
            await asyncio.gather(first, return_exceptions=True)
            await asyncio.sleep(0)  # (its done callbacks)
            h.deferred.clear()
            h.change(2)
            await h.settle()
            written.extend(h.written)

        loop.run_until_complete(main())
        loop.close()

    assert _ends(end) == []
    assert written == [2]
