"""``_LatestWriter``: a run's metrics (lazy) and live status (at once) written in order,
coalesced; a journal write may take the metrics that changed and write them itself."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from tether._replay import _LatestWriter


class Harness:
    """A writer whose writes record the value of the moment, and the run's deferred
    writes as a list of tasks."""

    def __init__(self, *, lazy: bool) -> None:
        self.value = 0
        self.written: list[int] = []
        self.deferred: list[asyncio.Future[None]] = []
        self.gate: asyncio.Event | None = None
        self.writer = _LatestWriter(self._defer, self._write, lazy=lazy)

    def _defer(self, write: Awaitable[None]) -> None:
        self.deferred.append(asyncio.ensure_future(write))

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
