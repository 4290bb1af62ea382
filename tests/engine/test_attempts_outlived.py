"""What a step attempt's history says when its execution ends without recording it: a
sync step whose thread outlives the run's execution here (the heartbeat found the lease
lost and cancelled the run), a step whose result a crashed executor never wrote, and
steps that do not start once the run is lost while they wait (for a thread, for their
rate limit, for the history of a run taken over)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App, RateLimit, _faults
from tether._replay import current_run
from tether.worker import _worker


def _charge(app: App, effects: Path, *, is_async: bool = False,
            **options: Any) -> Callable[[], Any]:
    """``charge``: a step whose side effect is a line appended to ``effects`` (a plain
    ``def``, or ``is_async``; ``options``: ``app.step``'s)."""
    def charge() -> str:
        with effects.open("a") as f:
            f.write("charged\n")
        return "charged"

    async def charge_async() -> str:
        return charge()

    step: Callable[[], Any] = app.step(name="charge", **options)(
        charge_async if is_async else charge)
    return step


class _Holds:
    """``hold(i)``: a plain-def step that keeps its executor thread until ``release`` is
    set (``entered``: the ``i`` of those a thread took), so that a step queued behind
    every thread waits for one."""

    def __init__(self, app: App) -> None:
        self.entered: list[int] = []
        self.release = threading.Event()
        entered, release = self.entered, self.release

        @app.step
        def hold(i: int) -> int:
            entered.append(i)
            release.wait(60)
            return i

        self.step = hold

    async def queued(self, app: App, threads: int, run_id: str) -> None:
        """Until every thread holds a ``hold`` step, and ``charge``'s attempt began
        (queued behind them)."""
        await wait_for(lambda: len(self.entered) == threads, timeout=30,
                       what="every thread busy with a hold step")
        await wait_for(lambda: _has(app, run_id, "running"), timeout=30,
                       what="charge's attempt begun (queued for a thread)")


class _Blocking:
    """``charge``: a step that blocks until ``release`` is set (a plain ``def``, in its
    thread) or, ``is_async``, until cancelled, then returns or, ``raises``, raises
    ``ValueError("card declined")``; ``begun`` is set as its body starts."""

    def __init__(self, app: App, *, is_async: bool = False, raises: bool = False) -> None:
        self.begun, self.release = threading.Event(), threading.Event()
        begun, release = self.begun, self.release

        def blocks() -> str:
            begun.set()
            release.wait(60)
            if raises:
                raise ValueError("card declined")
            return "charged"

        async def waits() -> str:
            begun.set()
            await asyncio.Event().wait()  # (until cancelled)
            return "charged"

        self.step: Callable[[], Any] = app.step(name="charge")(waits if is_async else blocks)

    async def started(self) -> None:
        """Until its body has begun."""
        assert await asyncio.to_thread(self.begun.wait, 30)


async def _statuses(app: App, run_id: str, step: str) -> list[str]:
    rows = await app.store.attempt_list(run_id)
    return [r.status for r in sorted(rows, key=lambda r: r.started_at) if r.name == step]


@pytest.mark.parametrize("outcome", ["returns", "raises"])
async def test_a_thread_that_outlives_its_lost_run_notes_how_its_attempt_ended(
        store_url: str, outcome: str) -> None:
    """The heartbeat finds the lease lost (expired in the store, a thief claimed the run)
    and cancels the run while its sync step blocks in a thread. When the function then
    returns, its attempt is noted ``superseded`` (its result is never recorded: the new
    owner runs the step again); when it raises, ``error``. It stayed ``running`` for
    good (``show`` said ``interrupted``), though the function had run to its end."""
    app = App(store_url)
    charge = _Blocking(app, raises=outcome == "raises")
    release = charge.release

    @app.workflow
    async def pay() -> str:
        return await charge.step()

    await app._open()
    store = app.store
    await app.start(pay, run_id="p")
    async with app.worker(lease_seconds=2.0, concurrency=1) as worker:
        await charge.started()
        await wait_for(lambda: _has(app, "p", "running"), timeout=30,
                       what="the attempt's running row written")
        await store.lease_expire_owner(worker_id=worker.worker_id, now=app.clock.now())
        claimed = await store.run_claim(worker_id="thief", queues=["default"], limit=1,
                                        now=app.clock.now(), lease_seconds=60)
        assert [c.run.run_id for c in claimed] == ["p"]
        await wait_for(lambda: _dropped(worker, "p"), timeout=30, what="the run dropped")
        assert await _statuses(app, "p", "charge") == ["running"]
        release.set()
        want = "superseded" if outcome == "returns" else "error"
        await wait_for(lambda: _has(app, "p", want), timeout=30,
                       what=f"the attempt noted {want}")
    rows = await store.attempt_list("p")
    assert [r.status for r in rows] == [want]
    if outcome == "raises":
        assert rows[0].error is not None and "card declined" in rows[0].error
    info = await app.get_run("p")
    assert [a["status"] for a in info.attempts] == [want]
    await app.close()


async def _has(app: App, run_id: str, status: str) -> bool:
    return status in await _statuses(app, run_id, "charge")


async def _dropped(worker: Any, run_id: str) -> bool:
    return not worker.holds(run_id)


class Unprintable:
    """A result whose ``model_dump`` raises: writing the run's end crashes the
    executor (tests/faults/poison_apps.py)."""

    def model_dump(self, **_: object) -> object:
        raise RuntimeError("cannot print me")


async def test_a_crashed_executors_hand_back_notes_a_step_it_never_recorded_superseded(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step succeeds, its result's write fails (an unexpected error: the workflow
    catches it), and the run's end crashes the executor: the run is handed back and the
    replay runs the step again. Its first attempt is noted ``superseded``, as a lost
    run's is (it stayed ``ok``, for a step whose journal entry says one attempt)."""
    monkeypatch.setattr(_worker, "STORE_RETRY_DELAY", 0.05)
    app = App(store_url)
    ran: list[int] = []

    @app.step
    async def charge() -> str:
        ran.append(1)
        return "charged"

    @app.workflow
    async def pay() -> object:
        try:
            await charge()
        except RuntimeError:
            pass
        return Unprintable()

    def fail() -> None:
        raise RuntimeError("the write went wrong")

    _faults.arm("journal.before_append", fail)
    try:
        async with app.worker():
            await app.start(pay, run_id="c")
            await wait_for(lambda: status_is(app, "c", "failed"), timeout=60)
    finally:
        _faults.disarm_all()
    assert len(ran) == 2  # (run again after the first crash; recorded since)
    assert await _statuses(app, "c", "charge") == ["superseded", "ok"]
    await app.close()


async def test_a_sync_step_queued_for_a_thread_does_not_start_once_the_run_is_lost(
        store_url: str, tmp_path: Any) -> None:
    """Every executor thread is busy with a step of the run, and a third kind of step,
    ``charge``, waits for a free thread behind them. Meanwhile another worker takes the
    run over, and a write of another branch of the run is refused by fencing (the run is
    lost here). When the threads free up, ``charge`` does not start: the new owner may
    have run it already. Its attempt is noted ``superseded``. (It started and charged:
    the branches of ``gather(..., return_exceptions=True)`` are not cancelled when one
    of them stops, and nothing looked at the lease before the thread took the step.)"""
    app = App(store_url)
    effects = tmp_path / "charged.txt"
    holds, charge = _Holds(app), _charge(app, effects)
    taken = asyncio.Event()

    @app.step
    async def late() -> str:
        await taken.wait()
        return "late"

    @app.workflow
    async def fan(threads: int) -> list[str]:
        async def lose_first() -> str:
            try:
                return await late()
            finally:
                holds.release.set()  # (the branch stopped: its write was refused)

        results = await asyncio.gather(
            lose_first(), *[holds.step(i) for i in range(threads)], charge(),
            return_exceptions=True)
        return [type(r).__name__ for r in results]

    await app._open()
    store = app.store
    # (a long lease: the heartbeat, which would cancel the run's tasks, comes too late)
    async with app.worker(lease_seconds=60.0, concurrency=1) as worker:
        assert worker._executor is not None
        threads = worker._executor._max_workers
        await app.start(fan, threads, run_id="f")
        await holds.queued(app, threads, "f")
        assert not holds.release.is_set()
        await store.lease_expire_owner(worker_id=worker.worker_id, now=app.clock.now())
        claimed = await store.run_claim(worker_id="thief", queues=["default"], limit=1,
                                        now=app.clock.now(), lease_seconds=600)
        assert [c.run.run_id for c in claimed] == ["f"]
        taken.set()
        await wait_for(lambda: _dropped(worker, "f"), timeout=30, what="the run dropped")
        await wait_for(lambda: _has(app, "f", "superseded"), timeout=30,
                       what="charge's attempt noted superseded")
    assert not effects.exists()
    assert await _statuses(app, "f", "charge") == ["superseded"]
    assert set(await _statuses(app, "f", "hold")) == {"superseded"}
    await app.close()


async def test_a_step_waiting_for_its_rate_limit_does_not_start_once_the_run_is_lost(
        store_url: str, tmp_path: Any) -> None:
    """An async step with a rate limit waits for the store's answer (held here) while
    another worker takes the run over, and a write of another branch of the run is
    refused by fencing (the run is lost here). When the limit's answer comes, ``charge``
    does not start: the new owner may run it. Its attempt is noted ``superseded``. (It
    started and charged: nothing looked at the lease after the await; the branches of
    ``gather(..., return_exceptions=True)`` are not cancelled when one of them stops.)"""
    app = App(store_url)
    effects = tmp_path / "charged.txt"
    acquiring, taken, lost = asyncio.Event(), asyncio.Event(), asyncio.Event()

    charge = _charge(app, effects, is_async=True, rate_limit=RateLimit("cards", 100, per=1.0))

    @app.step
    async def late() -> str:
        await taken.wait()
        return "late"

    @app.workflow
    async def pay() -> list[str]:
        async def lose_first() -> str:
            try:
                return await late()
            finally:
                lost.set()  # (the branch stopped: its write was refused)

        results = await asyncio.gather(lose_first(), charge(), return_exceptions=True)
        return [type(r).__name__ for r in results]

    await app._open()
    store = app.store
    acquire = store.rate_acquire

    async def held(**kwargs: Any) -> float:
        acquiring.set()
        await lost.wait()  # (the limit's answer comes once the run is lost here)
        return await acquire(**kwargs)

    store.rate_acquire = held  # type: ignore[method-assign]
    # (a long lease: the heartbeat, which would cancel the run's tasks, comes too late)
    async with app.worker(lease_seconds=60.0, concurrency=1) as worker:
        await app.start(pay, run_id="r")
        await asyncio.wait_for(acquiring.wait(), 30)
        await store.lease_expire_owner(worker_id=worker.worker_id, now=app.clock.now())
        claimed = await store.run_claim(worker_id="thief", queues=["default"], limit=1,
                                        now=app.clock.now(), lease_seconds=600)
        assert [c.run.run_id for c in claimed] == ["r"]
        taken.set()
        await wait_for(lambda: _dropped(worker, "r"), timeout=30, what="the run dropped")
        await wait_for(lambda: _has(app, "r", "superseded"), timeout=30,
                       what="charge's attempt noted superseded")
    assert not effects.exists()
    assert await _statuses(app, "r", "charge") == ["superseded"]
    await app.close()


async def test_a_step_of_a_run_taken_over_does_not_start_once_the_run_is_lost_meanwhile(
        store_url: str, tmp_path: Any) -> None:
    """A run taken over from a dead worker reads its cut-off attempts once, at its first
    step run for real (held here). Meanwhile another worker takes the run over, and a
    timer of another branch of the run is refused by fencing (the run is lost here).
    When the read comes back, ``charge`` does not start: the new owner may run it.
    (It started and charged: nothing looked at the lease after the read.)"""
    app = App(store_url)
    effects = tmp_path / "charged.txt"
    reading, taken, lost = asyncio.Event(), asyncio.Event(), asyncio.Event()
    charge = _charge(app, effects, is_async=True)

    @app.workflow
    async def pay() -> list[str]:
        async def lose_first() -> None:
            try:
                await taken.wait()
                await tether.sleep(0.01)
            finally:
                lost.set()  # (the branch stopped: its timer's write was refused)

        results = await asyncio.gather(lose_first(), charge(), return_exceptions=True)
        return [type(r).__name__ for r in results]

    await app._open()
    store = app.store
    attempt_list = store.attempt_list

    async def held(run_id: str) -> Any:
        if current_run.get() is not None and not lost.is_set():  # (the run's own read)
            reading.set()
            await lost.wait()  # (the history's answer comes once the run is lost here)
        return await attempt_list(run_id)

    store.attempt_list = held  # type: ignore[method-assign]
    await app.start(pay, run_id="c")
    died = await store.run_claim(worker_id="dead", queues=["default"], limit=1,
                                 now=app.clock.now(), lease_seconds=600)
    assert [c.run.run_id for c in died] == ["c"]
    await store.lease_expire_owner(worker_id="dead", now=app.clock.now())
    # (a long lease: the heartbeat, which would cancel the run's tasks, comes too late)
    async with app.worker(lease_seconds=60.0, concurrency=1) as worker:
        await asyncio.wait_for(reading.wait(), 30)
        await store.lease_expire_owner(worker_id=worker.worker_id, now=app.clock.now())
        claimed = await store.run_claim(worker_id="thief", queues=["default"], limit=1,
                                        now=app.clock.now(), lease_seconds=600)
        assert [c.run.run_id for c in claimed] == ["c"]
        taken.set()
        await wait_for(lambda: _dropped(worker, "c"), timeout=30, what="the run dropped")
    assert not effects.exists()
    assert await _statuses(app, "c", "charge") == []
    await app.close()


async def test_a_sync_step_queued_for_a_thread_when_the_heartbeat_finds_its_run_lost(
        store_url: str, tmp_path: Any) -> None:
    """Every executor thread is busy with a step of the run, and ``charge`` waits for a
    free thread behind them, when the heartbeat finds the run taken over and cancels
    its tasks: ``charge``, which no thread had taken, never runs, and its attempt is
    noted ``superseded`` at once (the new owner runs it). It stayed ``running`` for
    good (``show`` said interrupted, as for a step cut off in its body)."""
    app = App(store_url)
    effects = tmp_path / "charged.txt"
    holds, charge = _Holds(app), _charge(app, effects)
    release = holds.release

    @app.workflow
    async def fan(threads: int) -> list[str]:
        results = await asyncio.gather(*[holds.step(i) for i in range(threads)], charge(),
                                       return_exceptions=True)
        return [type(r).__name__ for r in results]

    await app._open()
    store = app.store
    try:
        async with app.worker(lease_seconds=2.0, concurrency=1) as worker:
            assert worker._executor is not None
            threads = worker._executor._max_workers
            await app.start(fan, threads, run_id="q")
            await holds.queued(app, threads, "q")
            await store.lease_expire_owner(worker_id=worker.worker_id, now=app.clock.now())
            claimed = await store.run_claim(worker_id="thief", queues=["default"], limit=1,
                                            now=app.clock.now(), lease_seconds=600)
            assert [c.run.run_id for c in claimed] == ["q"]
            await wait_for(lambda: _dropped(worker, "q"), timeout=30, what="the run dropped")
            release.set()
            await wait_for(lambda: _all(app, "q", "hold", "superseded"), timeout=30,
                           what="the hold steps' attempts noted superseded")
    finally:
        release.set()
    assert not effects.exists()
    assert await _statuses(app, "q", "charge") == ["superseded"]
    await app.close()


async def test_a_sync_step_the_workflow_cancels_while_it_waits_for_a_thread(
        store_url: str, tmp_path: Any) -> None:
    """Every executor thread is busy with a step of the run, and the workflow's own code
    cancels ``charge`` while it waits for a free thread behind them. It never runs; the
    journal records it cancelled by the workflow's code, and its attempt ends
    ``cancelled``. (It stayed ``running``, which ``show`` called interrupted, in a run
    that completed.)"""
    app = App(store_url)
    effects = tmp_path / "charged.txt"
    holding, charge = _Holds(app), _charge(app, effects)
    release = holding.release
    queued, cancelled = asyncio.Event(), asyncio.Event()

    @app.workflow
    async def fan(threads: int) -> list[str]:
        holds = [asyncio.ensure_future(holding.step(i)) for i in range(threads)]
        charging = asyncio.ensure_future(charge())  # (queued behind the holds)

        async def cancel_it() -> None:
            await queued.wait()
            charging.cancel()
            await asyncio.wait([charging])
            cancelled.set()

        results = await asyncio.gather(*holds, charging, cancel_it(),
                                       return_exceptions=True)
        return [type(r).__name__ for r in results]

    await app._open()
    try:
        async with app.worker(lease_seconds=60.0, concurrency=1) as worker:
            assert worker._executor is not None
            threads = worker._executor._max_workers
            await app.start(fan, threads, run_id="w")
            await holding.queued(app, threads, "w")
            queued.set()
            await asyncio.wait_for(cancelled.wait(), 30)
            release.set()
            await wait_for(lambda: status_is(app, "w", "completed"), timeout=30)
    finally:
        release.set()
    assert not effects.exists()
    assert await _statuses(app, "w", "charge") == ["cancelled"]
    info = await app.get_run("w")
    assert [a["status"] for a in info.attempts if a["name"] == "charge"] == ["cancelled"]
    await app.close()


async def _all(app: App, run_id: str, step: str, status: str) -> bool:
    statuses = await _statuses(app, run_id, step)
    return bool(statuses) and set(statuses) == {status}


async def test_an_async_step_the_workflow_cancels_ends_its_attempt_cancelled(
        store_url: str) -> None:
    """The workflow's own code cancels an async step in its body: the journal records it
    cancelled by the workflow's code, and its attempt ends ``cancelled`` (it stayed
    ``running``, shown interrupted, in a run that completed)."""
    app = App(store_url)
    charge = _Blocking(app, is_async=True)

    @app.workflow
    async def pay() -> str:
        charging = asyncio.ensure_future(charge.step())
        await charge.started()
        charging.cancel()
        await asyncio.wait([charging])
        return "cancelled" if charging.cancelled() else "not cancelled"

    async with app.worker():
        await app.start(pay, run_id="a")
        await wait_for(lambda: status_is(app, "a", "completed"), timeout=30)
    assert await _statuses(app, "a", "charge") == ["cancelled"]
    await app.close()


async def test_a_branch_left_running_when_the_workflow_returns_ends_its_attempt_cancelled(
        store_url: str) -> None:
    """A branch the workflow never awaits is cancelled by the worker when the workflow's
    code returns: its step's attempt ends ``cancelled`` (it stayed ``running``, shown
    interrupted, in a run that completed)."""
    app = App(store_url)
    charge = _Blocking(app, is_async=True)
    branches: list[asyncio.Future[Any]] = []

    @app.workflow
    async def pay() -> str:
        branches.append(asyncio.ensure_future(charge.step()))  # (never awaited)
        await charge.started()
        return "done"

    async with app.worker():
        await app.start(pay, run_id="b")
        await wait_for(lambda: status_is(app, "b", "completed"), timeout=30)
        await wait_for(lambda: _all(app, "b", "charge", "cancelled"), timeout=30,
                       what="the abandoned branch's attempt noted cancelled")
    assert await _statuses(app, "b", "charge") == ["cancelled"]
    await app.close()


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_step_of_the_main_task_the_workflow_times_out_ends_its_attempt_cancelled(
        store_url: str, kind: str) -> None:
    """The workflow's main task awaits a step under ``asyncio.timeout``: the timeout
    cancels the main task, and the step's attempt ends ``cancelled`` (it stayed
    ``running``, shown interrupted, in a run that went on and completed). A plain-def
    step's function runs on in its thread: when it returns, its attempt says so."""
    app = App(store_url)
    charge = _Blocking(app, is_async=kind == "async")
    release = charge.release

    @app.workflow
    async def pay() -> str:
        try:
            async with asyncio.timeout(None) as scope:
                async def expire() -> None:  # (once the step's body has begun)
                    await charge.started()
                    scope.reschedule(asyncio.get_running_loop().time())

                expiring = asyncio.ensure_future(expire())
                await charge.step()
        except TimeoutError:
            await expiring
            return "timed out"
        return "charged"

    try:
        async with app.worker():
            await app.start(pay, run_id="m")
            await wait_for(lambda: status_is(app, "m", "completed"), timeout=30)
            await wait_for(lambda: _all(app, "m", "charge", "cancelled"), timeout=30,
                           what="the timed-out step's attempt noted cancelled")
            if kind == "sync":
                release.set()
                await wait_for(lambda: _ran_on_noted(app, "m"), timeout=30,
                               what="the function's end noted on its attempt")
    finally:
        release.set()
    assert await _statuses(app, "m", "charge") == ["cancelled"]
    assert (await app.get_run("m")).result == "timed out"
    await app.close()


async def _ran_on_noted(app: App, run_id: str) -> dict[str, Any] | None:
    """The error of ``charge``'s one attempt once it says how its function ended."""
    info = await app.get_run(run_id)
    errors = [a["error"] for a in info.attempts if a["name"] == "charge"]
    return errors[0] if len(errors) == 1 and errors[0] is not None else None


@pytest.mark.parametrize("outcome", ["returns", "raises"])
@pytest.mark.parametrize("how", ["by its workflow", "with its run"])
async def test_a_cancelled_sync_steps_function_that_runs_on_notes_its_end_on_its_attempt(
        store_url: str, how: str, outcome: str) -> None:
    """A plain-def step is cancelled while its function runs in its thread: by the
    workflow's own code (``task.cancel()`` of its branch), or with its run (``cancel``).
    Its attempt ends ``cancelled`` at once; the function runs on (a thread cannot be
    stopped). When it returns or raises, its attempt says so, still ``cancelled``: its
    end time is the function's, and its error tells how long the function ran past its
    cancel and how it ended (what it raised). The journal and the run are as they were.
    (Its end left no trace: the attempt said ``cancelled`` at the cancel's time.)"""
    app = App(store_url)
    charge = _Blocking(app, raises=outcome == "raises")

    @app.workflow
    async def pay() -> str:
        if how == "with its run":
            return str(await charge.step())
        charging = asyncio.ensure_future(charge.step())
        await charge.started()
        charging.cancel()
        await asyncio.wait([charging])
        return "cancelled"

    ended = "completed" if how == "by its workflow" else "cancelled"
    try:
        async with app.worker() as worker:
            await app.start(pay, run_id="c")
            await charge.started()
            if how == "with its run":
                await app.cancel("c")
            await wait_for(lambda: status_is(app, "c", ended), timeout=30)
            await wait_for(lambda: _all(app, "c", "charge", "cancelled"), timeout=30,
                           what="the step's attempt noted cancelled")
            before = await app.get_run("c")
            [cancelled] = [a for a in before.attempts if a["name"] == "charge"]
            assert cancelled["error"] is None
            charge.release.set()
            err = await wait_for(lambda: _ran_on_noted(app, "c"), timeout=30,
                                 what="the function's end noted on its attempt")
            assert worker.attempts_noted()["cancelled"] == 1  # (its end: not one more)
    finally:
        charge.release.set()
    after = await app.get_run("c")
    [attempt] = [a for a in after.attempts if a["name"] == "charge"]
    assert attempt["status"] == "cancelled"
    assert attempt["finished_at"] >= cancelled["finished_at"]
    assert err["type"] == "asyncio.CancelledError"
    assert err["ran_on"] >= 0
    assert err["message"].startswith(f"ran on {err['ran_on']:.1f} s after its cancel, then ")
    if outcome == "returns":
        assert err["message"].endswith("returned (its result dropped)")
        assert "raised" not in err
    else:
        assert err["message"].endswith("raised ValueError: card declined")
        assert err["raised"]["type"] == "ValueError"
        assert err["raised"]["message"] == "card declined"
    assert after.status.value == ended
    assert after.journal == before.journal
    assert after.result == before.result and after.error == before.error
    await app.close()


class _HeldHeartbeats:
    """The store's ``lease_heartbeat``, held on demand: while held, a heartbeat waits
    for ``go`` (the worker's heartbeat loop stalls in it, as in front of a store that
    answers every other call but not it); ``waiting`` is set once one does."""

    def __init__(self, app: App) -> None:
        self._beat = app.store.lease_heartbeat
        self.go, self.waiting = asyncio.Event(), asyncio.Event()
        self.go.set()
        app.store.lease_heartbeat = self  # type: ignore[method-assign]

    async def __call__(self, **kwargs: Any) -> Any:
        if not self.go.is_set():
            self.waiting.set()
            await self.go.wait()
        return await self._beat(**kwargs)

    async def hold(self, app: App, run_id: str) -> float:
        """Hold the heartbeats from now; once one waits (no renewal comes any more),
        the end of ``run_id``'s lease as the store holds it."""
        self.go.clear()
        await asyncio.wait_for(self.waiting.wait(), 30)
        run = await app.store.run_get(run_id)
        assert run is not None and run.available_at is not None
        return run.available_at


def _asked_renewal(worker: Any) -> bool:
    """A step asked the (held) heartbeat for a renewal: it waits for one to start
    (``RunContext.lease_renewed``)."""
    return bool(worker._beat_now.is_set())


@pytest.mark.parametrize("outcome", ["renewed", "lost", "cancelled"])
async def test_a_sync_step_a_thread_takes_once_the_lease_ran_out_waits_in_the_loop(
        store_url: str, tmp_path: Path, outcome: str) -> None:
    """Every executor thread is busy with a step of the run, and ``charge`` waits for a
    free thread behind them, while the worker's heartbeats are held: its lease runs out
    by its clock. When a thread takes ``charge``, it does not start it, nor wait in the
    thread: it hands it back to the event loop, which waits for the renewal (asked at
    once). Renewed, ``charge`` runs under the same attempt and the run completes; lost
    to another worker meanwhile, it never runs, and its attempt is noted
    ``superseded``; the run's cancel requested meanwhile, it never runs, its attempt
    is noted ``cancelled`` and the cancel is delivered there (the run ends
    cancelled). (It started: its thread looked only whether the run was lost.)"""
    app = App(store_url)
    effects = tmp_path / "charged.txt"
    holds, charge = _Holds(app), _charge(app, effects)

    @app.workflow
    async def fan(threads: int) -> list[str]:
        results = await asyncio.gather(*[holds.step(i) for i in range(threads)], charge(),
                                       return_exceptions=True)
        return [type(r).__name__ for r in results]

    await app._open()
    store = app.store
    beats = _HeldHeartbeats(app)
    try:
        async with app.worker(lease_seconds=2.0, concurrency=1) as worker:
            assert worker._executor is not None
            threads = worker._executor._max_workers
            await app.start(fan, threads, run_id="q")
            await holds.queued(app, threads, "q")
            end = await beats.hold(app, "q")
            await wait_for(lambda: app.clock.now() > end, timeout=30,
                           what="the lease ran out by the worker's clock")
            holds.release.set()  # (a thread takes charge)
            await wait_for(lambda: effects.exists() or _asked_renewal(worker), timeout=30,
                           what="charge run, or waiting for the lease's renewal")
            assert not effects.exists()
            if outcome == "lost":
                claimed = await store.run_claim(
                    worker_id="thief", queues=["default"], limit=1, now=app.clock.now(),
                    lease_seconds=600)
                assert [c.run.run_id for c in claimed] == ["q"]
            elif outcome == "cancelled":
                await app.cancel("q")
                await wait_for(lambda: status_is(app, "q", "cancelled"), timeout=30)
            beats.go.set()
            if outcome == "lost":
                await wait_for(lambda: _dropped(worker, "q"), timeout=30,
                               what="the run dropped")
                await wait_for(lambda: _has(app, "q", "superseded"), timeout=30,
                               what="charge's attempt noted superseded")
            elif outcome == "renewed":
                await wait_for(lambda: status_is(app, "q", "completed"), timeout=30)
    finally:
        holds.release.set()
        beats.go.set()
    info = await app.get_run("q")
    charges = [a["status"] for a in info.attempts if a["name"] == "charge"]
    if outcome == "lost":
        assert not effects.exists()
        assert charges == ["superseded"]
    elif outcome == "cancelled":
        assert not effects.exists()
        assert charges == ["cancelled"]
        assert info.status.value == "cancelled"
    else:
        assert effects.read_text() == "charged\n"
        assert charges == ["ok"]
        assert info.result == ["int"] * threads + ["str"]
    await app.close()


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_no_step_starts_within_the_lease_margin_of_the_leases_end(
        store_url: str, tmp_path: Path, kind: str) -> None:
    """The worker's heartbeats are held while one branch of the run is in a step; by the
    worker's clock the lease has not run out, but less than its ``lease_margin`` is
    left, when another worker whose clock runs ahead of it takes the run over, and the
    other branch reaches ``charge``. It does not start: it waits for the renewal, and
    the heartbeat, once it goes through, finds the run lost (the worker drops it).
    (Without the margin it started, under the lease another worker held.)"""
    app = App(store_url)
    effects = tmp_path / "charged.txt"
    charge = _charge(app, effects, is_async=kind == "async")
    begun, go, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    @app.step
    async def slow() -> str:
        begun.set()
        await release.wait()
        return "slow"

    @app.workflow
    async def pay() -> list[str]:
        async def later() -> str:
            await go.wait()
            return str(await charge())

        return list(await asyncio.gather(slow(), later()))

    await app._open()
    store = app.store
    beats = _HeldHeartbeats(app)
    margin = 1.5
    try:
        async with app.worker(lease_seconds=3.0, lease_margin=margin) as worker:
            await app.start(pay, run_id="m")
            await asyncio.wait_for(begun.wait(), 30)
            end = await beats.hold(app, "m")
            await wait_for(lambda: app.clock.now() >= end - margin + 0.05, timeout=30,
                           what="within the margin of the lease's end")
            # (the other worker's clock is ahead by the margin: the lease is out by it)
            claimed = await store.run_claim(worker_id="thief", queues=["default"], limit=1,
                                            now=end + 0.01, lease_seconds=600)
            assert [c.run.run_id for c in claimed] == ["m"]
            go.set()
            await wait_for(lambda: effects.exists() or _asked_renewal(worker), timeout=30,
                           what="charge run, or waiting for the lease's renewal")
            assert not effects.exists()
            beats.go.set()
            await wait_for(lambda: _dropped(worker, "m"), timeout=30, what="the run dropped")
    finally:
        release.set()
        beats.go.set()
    assert not effects.exists()
    assert await _statuses(app, "m", "charge") == []
    await app.close()


@pytest.mark.parametrize("outcome", ["returns", "raises"])
async def test_a_timed_out_sync_steps_function_that_runs_on_notes_its_end_on_its_attempt(
        store_url: str, outcome: str) -> None:
    """A plain-def step's ``timeout=`` expires while its function runs in its thread:
    its attempt ends ``error`` (``StepTimeout``) at once and the function runs on (a
    thread cannot be stopped). When it returns or raises, its attempt says so, still
    ``error``: its end time is the function's, and its error, the ``StepTimeout``'s,
    goes on to tell how long the function ran past the timeout and how it ended, as a
    cancelled one's does. The journal and the run are as they were. (Its end left no
    trace.)"""
    app = App(store_url)
    begun, release = threading.Event(), threading.Event()

    @app.step(name="charge", timeout=1.0, retry=tether.RetryPolicy(max_attempts=1))
    def charge() -> str:
        begun.set()
        release.wait(60)
        if outcome == "raises":
            raise ValueError("card declined")
        return "charged"

    @app.workflow
    async def pay() -> str:
        return await charge()

    try:
        async with app.worker() as worker:
            await app.start(pay, run_id="t")
            assert await asyncio.to_thread(begun.wait, 30)
            await wait_for(lambda: status_is(app, "t", "failed"), timeout=30)
            before = await app.get_run("t")
            [timed_out] = [a for a in before.attempts if a["name"] == "charge"]
            assert timed_out["status"] == "error"
            assert "ran_on" not in timed_out["error"]
            release.set()

            async def noted() -> dict[str, Any] | None:
                err = (await _ran_on_noted(app, "t")) or {}
                return err if "ran_on" in err else None

            err = await wait_for(noted, timeout=30,
                                 what="the function's end noted on its attempt")
            assert worker.attempts_noted()["error"] == 1  # (its end: not one more)
    finally:
        release.set()
    after = await app.get_run("t")
    [attempt] = [a for a in after.attempts if a["name"] == "charge"]
    assert attempt["status"] == "error"
    assert attempt["finished_at"] >= timed_out["finished_at"]
    assert err["type"] == timed_out["error"]["type"] == "tether.errors.StepTimeout"
    assert err["message"].startswith(
        f"{timed_out['error']['message']}; it ran on {err['ran_on']:.1f} s after its "
        "timeout, then ")
    assert err["ran_on"] >= 0
    if outcome == "returns":
        assert err["message"].endswith("returned (its result dropped)")
        assert "raised" not in err
    else:
        assert err["message"].endswith("raised ValueError: card declined")
        assert err["raised"]["type"] == "ValueError"
    assert after.status is tether.RunStatus.FAILED
    assert [e["status"] for e in after.journal] == [e["status"] for e in before.journal]
    await app.close()
