"""The coalescing result reader: a caller never gets a state older than its own call."""

from __future__ import annotations

import asyncio

import pytest

from tether import _waiters
from tether._types import RunRecord, RunStatus
from tether._waiters import ResultWaiters


def record(status: RunStatus) -> RunRecord:
    return RunRecord(run_id="r", workflow="wf", queue="default", status=status, input="[]",
                     created_at=0.0, updated_at=0.0)


async def _no_subscribe() -> bool:
    return False


async def test_a_read_registered_during_an_in_flight_read_gets_a_fresh_state() -> None:
    """A read that began before `app.retry` committed (status failed) does not answer a
    caller who asked after it (the run retried, and completed): that caller waits for
    the next read."""
    gate = asyncio.Event()
    states = [RunStatus.FAILED, RunStatus.COMPLETED]
    calls: list[list[str]] = []

    async def read_many(ids: list[str], settled_only: bool) -> list[RunRecord]:
        calls.append(ids)
        status = states[min(len(calls) - 1, 1)]
        if len(calls) == 1:
            await gate.wait()  # the first read is in flight while the run is retried
        return [record(status)]

    waiters = ResultWaiters(read_many)
    first = asyncio.create_task(waiters.result("r", None, _no_subscribe))
    while not calls:
        await asyncio.sleep(0)
    second = asyncio.create_task(waiters.result("r", None, _no_subscribe))  # after the retry
    await asyncio.sleep(0)
    gate.set()
    assert (await first).status is RunStatus.FAILED
    assert (await second).status is RunStatus.COMPLETED
    assert len(calls) == 2
    await waiters.close()


async def test_concurrent_readers_share_one_read() -> None:
    """Readers registered together are answered by one store read."""
    calls: list[list[str]] = []

    async def read_many(ids: list[str], settled_only: bool) -> list[RunRecord]:
        calls.append(ids)
        return [record(RunStatus.COMPLETED)]

    waiters = ResultWaiters(read_many)
    got = await asyncio.gather(*(waiters.result("r", None, _no_subscribe)
                                 for _ in range(10)))
    assert all(r.status is RunStatus.COMPLETED for r in got)
    assert len(calls) == 1
    await waiters.close()


async def test_an_end_handed_over_answers_only_the_waits_that_began_before_it() -> None:
    """A worker of this process hands over the run as it ended it: waits registered
    before the end was written take it with no read; a wait registered after (it may
    follow a retry of the run) reads the run instead."""
    calls: list[list[str]] = []
    in_store = [RunStatus.RUNNING]

    async def read_many(ids: list[str], settled_only: bool) -> list[RunRecord]:
        calls.append(ids)
        return [record(in_store[0])]

    waiters = ResultWaiters(read_many)
    waiters.notified = True  # (no poll within the test)
    early = asyncio.create_task(waiters.result("r", None, _no_subscribe))
    while not calls:
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    reads_before = len(calls)  # result() reads once as it registers
    since = waiters.mark()     # the worker writes the run's end from here
    late = asyncio.create_task(waiters.result("r", None, _no_subscribe))
    await asyncio.sleep(0)
    ended = record(RunStatus.FAILED)
    in_store[0] = RunStatus.COMPLETED  # (retried and completed meanwhile)
    waiters.settle(ended, since)
    assert await early is ended
    got = await asyncio.wait_for(late, 5)  # read from the store, not the end handed over
    assert got.status is RunStatus.COMPLETED
    assert len(calls) > reads_before
    await waiters.close()


async def test_an_end_handed_over_for_a_run_nobody_waits_for_is_dropped() -> None:
    async def read_many(ids: list[str], settled_only: bool) -> list[RunRecord]:
        raise AssertionError("no read expected")

    waiters = ResultWaiters(read_many)
    waiters.settle(record(RunStatus.COMPLETED), waiters.mark())
    await waiters.close()


async def test_a_notification_reads_no_run_a_local_worker_holds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A store notification reads the runs waited for, except those a worker of this
    process holds (it answers their waits when it ends them). When the worker lets a
    run go without answering (handed back, lost, waiting), ``left`` reads it."""
    # The safety-net poll (which reads every run waited for) must not fall due during
    # the test: on a loaded machine 0.25 s can pass between two of its lines.
    monkeypatch.setattr(_waiters, "POLL_FIRST_NOTIFIED", 3600.0)
    calls: list[tuple[list[str], bool]] = []
    held = {"a"}
    status = {"a": RunStatus.RUNNING, "b": RunStatus.COMPLETED}

    async def read_many(ids: list[str], settled_only: bool) -> list[RunRecord]:
        calls.append((ids, settled_only))
        runs = [RunRecord(run_id=i, workflow="wf", queue="default", status=status[i],
                          input="[]", created_at=0.0, updated_at=0.0) for i in ids]
        return [r for r in runs if r.status.is_settled or not settled_only]

    waiters = ResultWaiters(read_many, held=held.__contains__)
    waiters.notified = True  # polls start late: only notifications and `left` read
    a = asyncio.create_task(waiters.result("a", None, _no_subscribe))
    b = asyncio.create_task(waiters.result("b", None, _no_subscribe))
    assert (await b).status is RunStatus.COMPLETED  # the first read of each
    calls.clear()
    waiters.check_all()
    for _ in range(5):
        await asyncio.sleep(0)
    assert calls == []  # "a" is held here: not read
    # The worker lost the run, and another process ended it.
    status["a"] = RunStatus.COMPLETED
    held.clear()
    waiters.left("a")
    assert (await a).status is RunStatus.COMPLETED
    assert calls == [(["a"], False)]
    await waiters.close()


async def test_a_run_left_after_its_waits_were_answered_is_not_read() -> None:
    calls: list[list[str]] = []

    async def read_many(ids: list[str], settled_only: bool) -> list[RunRecord]:
        calls.append(ids)
        return [record(RunStatus.RUNNING)]

    waiters = ResultWaiters(read_many, held=lambda run_id: True)
    waiters.notified = True
    since = waiters.mark()
    wait = asyncio.create_task(waiters.result("r", None, _no_subscribe))
    for _ in range(5):
        await asyncio.sleep(0)
    assert calls == [["r"]]  # the wait's own first read: still running
    waiters.settle(record(RunStatus.COMPLETED), since + 1)
    waiters.left("r")  # the worker's task ended right after, before the waiter resumed
    assert (await wait).status is RunStatus.COMPLETED
    for _ in range(5):
        await asyncio.sleep(0)
    assert calls == [["r"]]  # no read for `left`
    await waiters.close()


async def test_a_result_that_a_worker_here_ends_costs_one_read() -> None:
    """``result``: the wait for the end is registered before the first read, so the end
    handed over by a worker of this process answers it: one read in all, and no poll
    while a worker here holds the run."""
    calls: list[list[str]] = []

    async def read_many(ids: list[str], settled_only: bool) -> list[RunRecord]:
        calls.append(ids)
        return [record(RunStatus.RUNNING)]

    waiters = ResultWaiters(read_many, held=lambda run_id: True)  # polls every 5 ms
    since = waiters.mark() + 1  # the end is written after the wait registered
    task = asyncio.create_task(waiters.result("r", None, _no_subscribe))
    await asyncio.sleep(0.1)  # ~10 polls would have fallen due
    assert calls == [["r"]]
    ended = record(RunStatus.COMPLETED)
    waiters.settle(ended, since)
    assert await task is ended
    assert calls == [["r"]]
    await waiters.close()


async def test_a_result_polls_a_run_nobody_here_holds() -> None:
    calls: list[list[str]] = []
    status = [RunStatus.RUNNING]

    async def read_many(ids: list[str], settled_only: bool) -> list[RunRecord]:
        calls.append(ids)
        return [record(status[0])]

    waiters = ResultWaiters(read_many, held=lambda run_id: False)
    task = asyncio.create_task(waiters.result("r", 30, _no_subscribe))
    while not calls:
        await asyncio.sleep(0.001)
    status[0] = RunStatus.COMPLETED  # ended by another process, no notification
    assert (await task).status is RunStatus.COMPLETED
    assert len(calls) >= 2
    await waiters.close()


async def test_a_settled_run_is_a_result_even_with_timeout_zero() -> None:
    async def read_many(ids: list[str], settled_only: bool) -> list[RunRecord]:
        await asyncio.sleep(0.01)  # the read takes longer than the timeout
        return [record(RunStatus.FAILED)]

    waiters = ResultWaiters(read_many)
    assert (await waiters.result("r", 0, _no_subscribe)).status is RunStatus.FAILED

    async def running(ids: list[str], settled_only: bool) -> list[RunRecord]:
        return [record(RunStatus.RUNNING)]

    waiters2 = ResultWaiters(running)
    with pytest.raises(TimeoutError):
        await waiters2.result("r", 0, _no_subscribe)
    await waiters.close()
    await waiters2.close()


async def test_a_result_subscribed_just_now_reads_again() -> None:
    """An end notified before the subscription was missed: the first result after
    subscribing reads the run once more."""
    calls: list[list[str]] = []
    status = [RunStatus.RUNNING]

    async def read_many(ids: list[str], settled_only: bool) -> list[RunRecord]:
        calls.append(ids)
        return [record(status[0])]

    async def subscribe() -> bool:
        status[0] = RunStatus.COMPLETED  # ended while the subscription was being made
        return True

    waiters = ResultWaiters(read_many)
    waiters.notified = True  # (the poll would fall due only after 0.25 s)
    got = await asyncio.wait_for(waiters.result("r", None, subscribe), 0.2)
    assert got.status is RunStatus.COMPLETED
    assert calls == [["r"], ["r"]]
    await waiters.close()


async def test_a_result_whose_read_fails_raises_the_store_error() -> None:
    from tether.errors import RunNotFound, StoreUnavailable

    async def unavailable(ids: list[str], settled_only: bool) -> list[RunRecord]:
        raise StoreUnavailable("down (injected)")

    waiters = ResultWaiters(unavailable)
    with pytest.raises(StoreUnavailable):
        await waiters.result("r", 5, _no_subscribe)
    await waiters.close()

    async def missing(ids: list[str], settled_only: bool) -> list[RunRecord]:
        return []

    waiters = ResultWaiters(missing)
    with pytest.raises(RunNotFound):
        await waiters.result("r", 5, _no_subscribe)
    assert not waiters._runs  # nothing left registered
    await waiters.close()
