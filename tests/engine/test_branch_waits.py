"""A run of several tasks waits as a whole: a branch that waits durably (a signal, a
timer, a child) parks in memory while its siblings work, and the run is released once
they are done or parked too, woken by any of the parked branches' waits
(docs/concepts.md, "Concurrency in a workflow"; ``RunContext.release``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import tether
from tests.engine.helpers import journal_has, status_is, wait_for
from tether import App
from tether.worker import Worker

DAY = 86400.0


def _parked(worker: Worker, run_id: str) -> int:
    """How many tasks of ``run_id`` are parked at a wait in ``worker``."""
    active = worker._active.get(run_id)
    ctx = active.ctx if active is not None else None
    parking = getattr(ctx, "_parking", None)
    return 0 if parking is None else len(parking.parked)


class _Held:
    """A step that counts its executions and ends when the test says so."""

    def __init__(self, app: App) -> None:
        self.runs = 0
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

        @app.step
        async def held(x: int) -> int:
            self.runs += 1
            self.entered.set()
            await self.gate.wait()
            return x

        self.step = held


async def test_a_signal_wait_beside_a_running_step_does_not_run_it_twice(
        store_url: str) -> None:
    """``gather`` of a branch of two steps, the first held, and a branch that waits for a
    signal and then runs a step: the signal is sent while the held step runs, then the
    step ends. Before, the signal branch released the run at once, interrupting the held
    step, which ran again (was paid again) at the replay; now the run is released only
    after the held step is journaled, and the signal sent meanwhile is taken at the
    replay that follows. Both branches' results; each step ran once."""
    app = App(store_url)
    held = _Held(app)
    counts: dict[str, int] = {}

    @app.step
    async def after(tag: str) -> str:
        counts[tag] = counts.get(tag, 0) + 1
        return tag

    async def work() -> list[Any]:
        return [await held.step(1), await after("work")]

    async def approval() -> list[Any]:
        return [await tether.wait_for_signal("approve"), await after("approved")]

    @app.workflow
    async def wf() -> list[Any]:
        return list(await asyncio.gather(work(), approval()))

    async with app.worker() as worker:
        handle = await app.start(wf, run_id="g")
        await asyncio.wait_for(held.entered.wait(), 30)

        async def parked_or_released() -> bool:  # (released: as it was before)
            return _parked(worker, "g") == 1 or await status_is(app, "g", "waiting")

        await wait_for(parked_or_released, timeout=30, what="the signal branch waits")
        await app.signal("g", "approve", {"ok": True})
        held.gate.set()
        assert await handle.result(timeout=30) == [[1, "work"], [{"ok": True}, "approved"]]
    assert held.runs == 1 and counts == {"work": 1, "approved": 1}
    info = await app.get_run("g")
    steps = [(e["name"], e["attempts"]) for e in info.journal if e["kind"] == "step"]
    assert sorted(steps) == [("after", 1), ("after", 1), ("held", 1)]
    await app.close()


async def test_a_long_timer_beside_a_running_step_releases_the_run_after_it(
        store_url: str) -> None:
    """``gather(step, tether.sleep(1 day))``: the step is not interrupted; once it is
    journaled the run is released for the timer."""
    app = App(store_url)
    held = _Held(app)

    @app.workflow
    async def wf() -> list[Any]:
        return list(await asyncio.gather(held.step(5), tether.sleep(DAY)))

    async with app.worker() as worker:
        await app.start(wf, run_id="t")
        await asyncio.wait_for(held.entered.wait(), 30)
        await wait_for(lambda: _parked(worker, "t") == 1, timeout=30, what="parked")
        held.gate.set()
        await wait_for(lambda: status_is(app, "t", "waiting"), timeout=30)
    info = await app.get_run("t")
    assert held.runs == 1
    assert [(e["kind"], e["status"]) for e in info.journal] == [("step", "ok"),
                                                                ("sleep", "pending")]
    assert info.waiting_for is not None and info.waiting_for.startswith("timer until")
    await app.close()


async def test_a_parked_timer_and_a_signal_timeout_go_on_in_memory_when_due(
        store_url: str) -> None:
    """A branch parked at a timer, or at a signal's timeout, that falls due while its
    sibling's step still runs goes on in memory: the timer ends, the timeout is
    recorded, and the run completes without being released (the step ran once)."""
    app = App(store_url)
    held = _Held(app)

    async def timeout() -> str:
        try:
            return str(await tether.wait_for_signal("never", timeout=0.3))
        except tether.SignalTimeout:
            return "timed out"

    async def nap() -> str:
        await tether.sleep(0.3)
        return "slept"

    @app.workflow
    async def wf() -> list[Any]:
        return list(await asyncio.gather(held.step(1), nap(), timeout()))

    async with app.worker(sticky_wait=0.05):
        handle = await app.start(wf, run_id="due")
        await wait_for(lambda: journal_has(app, "due", 1, kind="sleep"), timeout=30)
        await wait_for(lambda: journal_has(app, "due", 0, kind="signal"), timeout=30)
        info = await app.get_run("due")
        assert ("signal", "error") in [(e["kind"], e["status"]) for e in info.journal]
        assert info.status.value == "running"
        held.gate.set()
        assert await handle.result(timeout=30) == [1, "slept", "timed out"]
    assert held.runs == 1
    await app.close()


def _race_app(store_url: str) -> tuple[App, Any]:
    """An App whose workflow ``race`` awaits a signal and a one-day timer with
    ``asyncio.wait(FIRST_COMPLETED)``."""
    app = App(store_url)

    @app.workflow
    async def race() -> str:
        sig = asyncio.ensure_future(tether.wait_for_signal("go"))
        nap = asyncio.ensure_future(tether.sleep(DAY))
        done, pending = await asyncio.wait({sig, nap}, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        return f"signal {sig.result()}" if sig in done else "timer"

    return app, race


async def test_a_race_of_a_signal_and_a_long_timer_wakes_for_the_signal(
        store_url: str) -> None:
    """``asyncio.wait({signal, 1-day timer}, FIRST_COMPLETED)``: the run is released for
    both, and the signal sent after the release wakes it (before, the release kept the
    timer only: the run slept the day)."""
    app, race = _race_app(store_url)

    async with app.worker():
        handle = await app.start(race, run_id="race")
        await wait_for(lambda: status_is(app, "race", "waiting"), timeout=30)
        info = await app.get_run("race")
        assert info.waiting_for is not None
        assert "signal go" in info.waiting_for and "timer until" in info.waiting_for
        await app.signal("race", "go", 7)
        assert await handle.result(timeout=30) == "signal 7"
    await app.close()


@pytest.mark.parametrize("ends", ["b", "signal"])
async def test_a_race_of_children_or_of_a_child_and_a_signal_wakes_for_either(
        store_url: str, ends: str) -> None:
    """Two children raced (the second ends first), and a child raced with a signal (the
    signal comes first): the parent is woken by whichever comes, not only by the first
    wait its code reached."""
    app = App(store_url)

    @app.workflow
    async def kid(tag: str) -> str:
        await tether.wait_for_signal("end")
        return tag

    @app.workflow
    async def parent() -> str:
        a = await tether.start_child(kid, "a", run_id="p.a")
        waits = {asyncio.ensure_future(a.result())}
        if ends == "b":
            b = await tether.start_child(kid, "b", run_id="p.b")
            waits.add(asyncio.ensure_future(b.result()))
        else:
            waits.add(asyncio.ensure_future(tether.wait_for_signal("stop")))
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        return str(done.pop().result())

    async with app.worker():
        handle = await app.start(parent, run_id="p")
        await wait_for(lambda: status_is(app, "p", "waiting"), timeout=30)
        await wait_for(lambda: status_is(app, "p.a", "waiting"), timeout=30)
        if ends == "b":
            await wait_for(lambda: status_is(app, "p.b", "waiting"), timeout=30)
            await app.signal("p.b", "end")
            assert await handle.result(timeout=30) == "b"
        else:
            await app.signal("p", "stop", "stopped")
            assert await handle.result(timeout=30) == "stopped"
        await app.cancel("p.a")
    await app.close()


async def test_a_cancel_reaches_a_run_with_a_parked_branch(store_url: str) -> None:
    """A cancel while one branch is parked and another runs a step: the run ends
    cancelled at once (the step is interrupted, as a cancel does)."""
    app = App(store_url)
    held = _Held(app)

    @app.workflow
    async def wf() -> list[Any]:
        return list(await asyncio.gather(held.step(1), tether.wait_for_signal("go")))

    async with app.worker(heartbeat_interval=0.1) as worker:
        handle = await app.start(wf, run_id="c")
        await asyncio.wait_for(held.entered.wait(), 30)
        await wait_for(lambda: _parked(worker, "c") == 1, timeout=30, what="parked")
        await app.cancel("c")
        with pytest.raises(tether.RunFailed, match="cancelled"):
            await handle.result(timeout=30)
    assert held.runs == 1
    await app.close()


async def test_a_drain_hands_a_run_with_a_parked_branch_back_after_its_step(
        store_url: str) -> None:
    """A drain while one branch is parked and another runs a step: the run is handed
    back once the step is journaled (not interrupted), and a worker started after
    completes it with the signal sent meanwhile; the step ran once."""
    app = App(store_url)
    held = _Held(app)

    @app.workflow
    async def wf() -> list[Any]:
        return list(await asyncio.gather(held.step(1), tether.wait_for_signal("go")))

    worker = app.worker()
    await worker.start()
    try:
        handle = await app.start(wf, run_id="d")
        await asyncio.wait_for(held.entered.wait(), 30)
        await wait_for(lambda: _parked(worker, "d") == 1, timeout=30, what="parked")
        drain = asyncio.ensure_future(worker.drain(30.0))
        await app.signal("d", "go", "on")
        for _ in range(20):  # (the drain waits for the step)
            await asyncio.sleep(0)
        assert not drain.done() and await status_is(app, "d", "running")
        held.gate.set()
        assert await drain
    finally:
        await worker.stop()
    info = await app.get_run("d")
    assert info.status.value == "waiting"
    assert [(e["kind"], e["status"]) for e in info.journal] == [("step", "ok")]
    async with app.worker():
        assert await handle.result(timeout=30) == [1, "on"]
    assert held.runs == 1
    await app.close()


async def test_an_in_memory_timeout_around_a_durable_wait_fires(store_url: str) -> None:
    """``asyncio.wait_for(wait_for_signal(...), 0.3)``: the wait parks (wait_for runs it
    in a task of its own) and the timeout, a timer of the workflow's code, holds the run
    in memory until it fires. Before, the run was released at once and the timeout,
    in memory, started again at every replay: it never fired."""
    app = App(store_url)

    @app.workflow
    async def wf() -> str:
        try:
            return str(await asyncio.wait_for(tether.wait_for_signal("never"), 0.3))
        except TimeoutError:
            return "timed out"

    async with app.worker():
        handle = await app.start(wf, run_id="wf")
        assert await handle.result(timeout=30) == "timed out"
    await app.close()


async def test_a_drain_does_not_wait_for_an_in_memory_timer(store_url: str) -> None:
    """A run held in memory by an in-memory timeout around a parked wait is handed back
    at once by a drain (the timer is waited out again at the replay, as before)."""
    app = App(store_url)

    @app.workflow
    async def wf() -> str:
        try:
            return str(await asyncio.wait_for(tether.wait_for_signal("go"), 3600))
        except TimeoutError:
            return "timed out"

    worker = app.worker()
    await worker.start()
    try:
        handle = await app.start(wf, run_id="dt")
        await wait_for(lambda: _parked(worker, "dt") == 1, timeout=30, what="parked")
        assert await worker.drain(30.0)
    finally:
        await worker.stop()
    assert await status_is(app, "dt", "waiting")
    await app.signal("dt", "go", "went")
    async with app.worker():
        assert await handle.result(timeout=30) == "went"
    await app.close()


async def test_releasing_a_run_of_racing_waits_logs_no_unretrieved_task_error(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """``asyncio.wait({signal, timer}, FIRST_COMPLETED)``: at the release, each parked
    task ends with the engine's internal stop, and the task nobody awaited again was
    garbage-collected with asyncio's ERROR "Task exception was never retrieved" and a
    traceback into tether's internals in the worker's log, at every release of such a
    run. The engine's stop is retrieved now; the log stays quiet."""
    import gc
    import logging

    caplog.set_level(logging.ERROR, logger="asyncio")
    app, race = _race_app(store_url)

    async with app.worker():
        handle = await app.start(race, run_id="quiet")
        await wait_for(lambda: status_is(app, "quiet", "waiting"), timeout=30)
        gc.collect()
        await app.signal("quiet", "go", 1)
        assert await handle.result(timeout=30) == "signal 1"
    await app.close()
    gc.collect()
    unretrieved = [r.getMessage() for r in caplog.records
                   if "never retrieved" in r.getMessage()]
    assert unretrieved == []
