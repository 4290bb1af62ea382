"""Retry and fork on both stores: a failed run continues after a fix without re-running
what succeeded; a fork copies a journal up to a position and runs on from there."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App, RetryPolicy

ONCE = RetryPolicy(max_attempts=1)


def make_app(url: str, calls: dict[str, int], broken: dict[str, bool]) -> App:
    app = App(url)

    @app.step
    async def fetch(x: int) -> int:
        calls["fetch"] = calls.get("fetch", 0) + 1
        return x + 1

    @app.step(retry=ONCE)
    async def charge(x: int) -> int:
        calls["charge"] = calls.get("charge", 0) + 1
        if broken["charge"]:
            raise ValueError("bad charge code")
        return x * 10

    @app.workflow
    async def order(x: int) -> int:
        a = await fetch(x)
        return await charge(a)

    return app


async def test_retry_after_fix_keeps_successful_steps(store_url: str) -> None:
    """A step fails permanently, the code is fixed, retry completes the run; the step
    before it did not run again; the earlier failure stays visible in the attempts."""
    calls: dict[str, int] = {}
    broken = {"charge": True}
    app = make_app(store_url, calls, broken)
    async with app, app.worker():
        h = await app.start("order", 1, run_id="o-1")
        with pytest.raises(tether.RunFailed):
            await h.result(timeout=20)
        assert calls == {"fetch": 1, "charge": 1}
        broken["charge"] = False  # the fix is deployed
        assert await app.retry("o-1") == tether.RunStatus.QUEUED
        assert await h.result(timeout=20) == 20
        assert calls == {"fetch": 1, "charge": 2}
        info = await app.get_run("o-1")
        charge_attempts = [a for a in info.attempts if a["name"] == "charge"]
        assert [a["status"] for a in charge_attempts] == ["error", "ok"]
        assert charge_attempts[0]["error"]["message"] == "bad charge code"
        assert all(a["worker_id"] for a in info.attempts)
        step = next(e for e in info.journal if e["name"] == "charge")
        assert (step["status"], step["attempts"]) == ("ok", 1)  # a fresh attempt count


async def test_retry_refuses_a_run_that_has_not_failed(store_url: str) -> None:
    calls: dict[str, int] = {}
    app = make_app(store_url, calls, {"charge": False})
    async with app, app.worker():
        h = await app.start("order", 2, run_id="o-2")
        assert await h.result(timeout=20) == 30
        with pytest.raises(tether.RunStateError) as refused:
            await app.retry("o-2")
        # (a completed run is run again by a fork: the message names it)
        assert str(refused.value) == (
            "run 'o-2' is completed: cannot retry it (only a failed, blocked or cancelled "
            "run can be retried); to run it again, fork it: tether fork o-2 --at N (POST "
            "/api/v1/runs/o-2/fork), keeping its journal before position N")
        with pytest.raises(tether.RunNotFound):
            await app.retry("nope")


async def test_retry_of_an_erased_completed_run_names_no_fork(store_url: str) -> None:
    """The refusal of a completed run's retry names the fork that runs it again, but an
    erased run cannot be forked (``RunErased``): its refusal says to start a new run
    instead. It named the fork, which then was refused in turn."""
    calls: dict[str, int] = {}
    app = make_app(store_url, calls, {"charge": False})
    async with app, app.worker():
        h = await app.start("order", 2, run_id="o-3")
        assert await h.result(timeout=20) == 30
        await app.store.run_erase(run_id="o-3", now=app.clock.now())
        with pytest.raises(tether.RunStateError) as refused:
            await app.retry("o-3")
        assert str(refused.value) == (
            "run 'o-3' is completed: cannot retry it (only a failed, blocked or cancelled "
            "run can be retried); its payloads were erased, so it cannot be forked "
            "either: start a new run instead")
        with pytest.raises(tether.RunErased):
            await app.fork("o-3", at=0)


async def test_retry_of_a_cancelled_run_forgets_the_cancel(store_url: str) -> None:
    app = App(store_url)
    ran: list[str] = []

    @app.step
    async def one() -> str:
        ran.append("one")
        return "1"

    @app.workflow
    async def waiter() -> str:
        await one()
        got = await tether.wait_for_signal("go")
        return f"got {got}"

    async with app, app.worker():
        h = await app.start(waiter, run_id="w-1")
        await wait_for(lambda: status_is(app, "w-1", "waiting"), what="waiting")
        await app.cancel("w-1")
        await wait_for(lambda: status_is(app, "w-1", "cancelled"), what="cancelled")
        await app.retry("w-1")
        await wait_for(lambda: status_is(app, "w-1", "waiting"), what="waiting again")
        await app.signal("w-1", "go", 7)
        assert await h.result(timeout=20) == "got 7"
        assert ran == ["one"]


async def test_retry_of_a_cancelled_sleep_keeps_its_deadline(store_url: str) -> None:
    """A run cancelled in a durable timer and retried waits only for what was left of
    the timer (its deadline was journaled when it began), and not at all once the
    deadline has passed; it does not sleep the whole duration again."""
    app = App(store_url)

    @app.workflow
    async def sleeper(seconds: float) -> float:
        before = tether.now().timestamp()
        await tether.sleep(seconds)
        return tether.now().timestamp() - before

    async def available_at(run_id: str) -> float | None:
        record = await app.store.run_get(run_id)
        assert record is not None
        return record.available_at

    async with app, app.worker():
        long = await app.start(sleeper, 3600.0, run_id="long")
        short = await app.start(sleeper, 2.5, run_id="short")
        for run_id in ("long", "short"):
            await wait_for(lambda r=run_id: status_is(app, r, "waiting"), what="sleeping")
        deadline = await available_at("long")
        assert deadline is not None
        for run_id in ("long", "short"):
            await app.cancel(run_id)
            await wait_for(lambda r=run_id: status_is(app, r, "cancelled"), what="cancelled")
        await asyncio.sleep(3.0)  # the short timer's deadline passes meanwhile
        await app.retry("long")
        await wait_for(lambda: status_is(app, "long", "waiting"), what="sleeping again")
        assert await available_at("long") == pytest.approx(deadline, abs=1e-3)
        info = await app.get_run("long")
        assert [(e["kind"], e["status"]) for e in info.journal[1:]] == [("sleep", "pending")]
        retried = time.monotonic()
        await app.retry("short")
        assert await short.result(timeout=10) >= 2.5
        assert time.monotonic() - retried < 2.0  # at once: no second 2.5 s sleep
        info = await app.get_run("short")
        assert [(e["kind"], e["status"]) for e in info.journal[1:3]] == [("sleep", "ok"),
                                                                         ("now", "ok")]
        await app.cancel("long")
        with pytest.raises(tether.RunFailed, match="cancelled"):
            await long.result(timeout=10)


async def test_fork_copies_the_journal_before_the_position(store_url: str) -> None:
    calls: dict[str, int] = {}
    app = make_app(store_url, calls, {"charge": False})
    async with app, app.worker():
        h = await app.start("order", 1, run_id="src")
        assert await h.result(timeout=20) == 20
        forked = await app.fork("src", at=1, new_run_id="child")
        assert await forked.result(timeout=20) == 20
        assert calls == {"fetch": 1, "charge": 2}  # fetch came from the copied journal
        again = await app.fork("src", at=0, input=[5])
        assert await again.result(timeout=20) == 60
        assert calls == {"fetch": 2, "charge": 3}
        info = await app.get_run("child")
        assert (info.forked_from, info.forked_at) == ("src", 1)
        # The same fork asked for again is idempotent, as a start with an id is: its
        # handle, nothing started (it raised ConfigError); another run's id is refused.
        same = await app.fork("src", at=1, new_run_id="child")
        assert (same.run_id, same.created, forked.created) == ("child", False, True)
        assert calls == {"fetch": 2, "charge": 3}
        assert len(await app.list_runs()) == 3
        for kwargs, holder in (
                ({"at": 0}, "a fork of run 'src' at position 1 (workflow 'order')"),
                ({"at": 1, "input": [5]}, "the fork of run 'src' at position 1 with "
                                          "another input")):
            with pytest.raises(tether.ConfigError) as refused:
                await app.fork("src", new_run_id="child", **kwargs)
            assert str(refused.value) == (f"run id 'child' is already used by {holder}; "
                                          "choose another id")
        with pytest.raises(tether.ConfigError, match="'src' is already used by a run of "
                                                     "workflow 'order' that is no fork"):
            await app.fork("child", at=0, new_run_id="src")
        # An erased fork is not that fork any more (its input is gone): refused, saying so.
        await app.store.run_erase(run_id="child", now=app.clock.now())
        with pytest.raises(tether.ConfigError, match=r"^run id 'child' is already used by "
                           r"the fork of run 'src' at position 1, erased since; choose"):
            await app.fork("src", at=1, new_run_id="child")
        with pytest.raises(tether.ConfigError, match="past its end") as info:
            await app.fork("src", at=9)
        assert "--at" not in str(info.value)  # the Python API's own words, not the CLI's
        with pytest.raises(tether.ConfigError, match=r"^at must be a position >= 0"):
            await app.fork("src", at=-1)
        with pytest.raises(tether.RunNotFound):
            await app.fork("nope", at=0)


async def test_fork_input_forms(store_url: str) -> None:
    """``App.fork(input=...)``'s rule, as its docstring and lifecycle.md give it: a list
    is the positional arguments, a dict with ``"args"`` the args/kwargs form, any other
    value (a dict without ``"args"`` too) the one argument; such a list or dict goes
    wrapped. A malformed args/kwargs form is refused before anything is stored (a string
    as ``"args"`` was split into characters by the worker, a misspelt key dropped)."""
    app = App(store_url)

    @app.workflow
    async def echo(*args: object, **kwargs: object) -> list[object]:
        return [list(args), kwargs]

    async with app, app.worker():
        await (await app.start(echo, run_id="src")).result(timeout=20)
        cases: list[tuple[object, list[object]]] = [
            ([1, "a"], [[1, "a"], {}]),
            ((1,), [[1], {}]),
            ({"args": [2], "kwargs": {"k": 3}}, [[2], {"k": 3}]),
            ({"city": "Oslo"}, [[{"city": "Oslo"}], {}]),
            ("text", [["text"], {}]),
            ([[1, 2]], [[[1, 2]], {}]),
            ([{"args": [6]}], [[{"args": [6]}], {}]),
        ]
        for i, (value, expected) in enumerate(cases):
            fork = await app.fork("src", at=0, input=value, new_run_id=f"f{i}")
            assert await fork.result(timeout=20) == expected, value
        for value, why in [({"args": [4], "extra": 5}, "not 'extra'"),
                           ({"args": [4], "kwarg": {"k": 1}}, "not 'kwarg'"),
                           ({"args": "abc"}, "must be a list"),
                           ({"args": [], "kwargs": [1]}, "must be a dict"),
                           ({"args": [], "kwargs": {1: 2}}, "must be a dict")]:
            with pytest.raises(tether.ConfigError, match=why):
                await app.fork("src", at=0, input=value, new_run_id="bad")
            with pytest.raises(tether.RunNotFound):
                await app.get_run("bad")


async def test_worker_claims_only_its_own_workflows(store_url: str) -> None:
    """Two apps share a queue: each worker takes only runs of workflows it has; a run of
    a workflow nobody registered waits, and starts when such a worker comes."""
    a, b = App(store_url), App(store_url)

    @a.workflow
    async def alpha() -> str:
        return "a"

    @b.workflow
    async def beta() -> str:
        return "b"

    async with a, b:
        h = await a.start("beta", run_id="early")  # b's worker is not up yet
        async with a.worker():
            ha = await a.start(alpha)
            assert await ha.result(timeout=20) == "a"
            # The claim that took alpha's run, started after "early" (claims go oldest
            # first), passed over "early": no need to wait for more claims.
            assert (await a.get_run("early")).status == tether.RunStatus.QUEUED
            run = await a.store.run_get("early")
            assert run is not None and run.fencing_token == 0  # never claimed by a
            async with b.worker():
                assert await h.result(timeout=20) == "b"


async def test_step_timeout_fails_the_attempt_and_retries(store_url: str) -> None:
    app = App(store_url)
    attempts: list[int] = []

    @app.step(timeout=0.2, retry=RetryPolicy(max_attempts=3, initial_interval=0.01))
    async def slow() -> str:
        attempts.append(tether.step_attempt())
        if len(attempts) < 3:
            await asyncio.sleep(30)
        return "done"

    @app.workflow
    async def wf() -> str:
        return await slow()

    async with app, app.worker():
        h = await app.start(wf)
        assert await h.result(timeout=20) == "done"
        info = await app.get_run(h.run_id)
        assert [a["status"] for a in info.attempts] == ["error", "error", "ok"]
        assert info.attempts[0]["error"]["type"].endswith("StepTimeout")
    with pytest.raises(tether.ConfigError):
        app.step(timeout=0)(lambda: None)


def test_a_nan_step_timeout_is_refused() -> None:
    """``timeout=float("nan")`` passed the ``> 0`` check (every comparison with NaN is
    false) and went to ``asyncio.timeout`` as a deadline of NaN, a timer the event loop
    cannot order: the step ran with no bound. It is refused as any other bad timeout."""
    app = App("sqlite:///unused.db")
    with pytest.raises(tether.ConfigError, match="step timeout must be"):
        app.step(timeout=float("nan"))(lambda: None)
    app.step(timeout=dt.timedelta(seconds=2), name="ok")(lambda: None)


async def test_cancel_interrupts_a_running_async_step(store_url: str) -> None:
    app = App(store_url)
    started = asyncio.Event()

    @app.step
    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    @app.workflow
    async def wf() -> str:
        try:
            await forever()
        except tether.Cancelled:
            return "cleaned up"
        return "not reached"

    async with app, app.worker():
        h = await app.start(wf)
        await asyncio.wait_for(started.wait(), 20)
        await app.cancel(h.run_id)
        await wait_for(lambda: status_is(app, h.run_id, "cancelled"), timeout=5,
                       what="cancelled at once")
        info = await app.get_run(h.run_id)
        assert [a["status"] for a in info.attempts] == ["cancelled"]
        assert [e["kind"] for e in info.journal] == ["cancel"]


async def test_a_thread_step_timeout_fails_the_attempt(sqlite_url: str) -> None:
    """A plain def step cannot be stopped, but its attempt fails at the timeout."""
    import threading

    app = App(sqlite_url)
    release = threading.Event()
    returned = threading.Event()

    @app.step(timeout=0.2, retry=ONCE)
    def stuck() -> str:
        release.wait(30)
        returned.set()
        return "late"

    @app.workflow
    async def wf() -> str:
        try:
            return await stuck()
        except tether.StepTimeout as exc:  # the recorded error keeps its class
            return f"timed out: {isinstance(exc, tether.StepError)}"

    async with app, app.worker():
        h = await app.start(wf)
        assert await h.result(timeout=20) == "timed out: True"
        # The run ended while the step's thread was still blocked: nobody waited for it.
        assert not returned.is_set()
        release.set()


async def test_clean_up_after_a_cancel_is_not_interrupted(store_url: str) -> None:
    """Once the cancel is delivered, the workflow's clean-up step runs to its end even
    though heartbeats keep reporting the cancel request."""
    app = App(store_url)
    started = asyncio.Event()

    @app.step
    async def work() -> None:
        started.set()
        await asyncio.sleep(3600)

    @app.step
    async def clean_up() -> str:
        await asyncio.sleep(1.5)  # several heartbeats of a 1 s lease
        return "cleaned"

    @app.workflow
    async def wf() -> str:
        try:
            await work()
        except tether.Cancelled:
            return await clean_up()
        return "not reached"

    async with app, app.worker(lease_seconds=1.0):
        h = await app.start(wf)
        await asyncio.wait_for(started.wait(), 20)
        await app.cancel(h.run_id)
        await wait_for(lambda: status_is(app, h.run_id, "cancelled"), timeout=20,
                       what="cancelled after clean-up")
        info = await app.get_run(h.run_id)
    assert [(e["kind"], e["status"]) for e in info.journal] == [("cancel", "ok"),
                                                                ("step", "ok")]
    assert [a["status"] for a in info.attempts] == ["cancelled", "ok"]


async def test_a_step_that_swallows_the_interrupt_is_recorded_and_the_run_cancelled(
    store_url: str,
) -> None:
    """An async step runs in the task that awaits it; a cancel interrupts it by
    cancelling that task. A step that swallows the interrupt and returns is recorded as
    it returned, and the cancel is delivered at the next operation (the task is not left
    cancelled: the run ends cancelled instead of being handed back)."""
    app = App(store_url)
    started = asyncio.Event()

    @app.step
    async def stubborn() -> str:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return "swallowed"
        return "not reached"

    @app.step
    async def after() -> str:
        return "not reached"

    @app.workflow
    async def wf() -> str:
        first = await stubborn()
        try:
            await after()
        except tether.Cancelled:
            return f"cancelled after {first}"
        return "not reached"

    async with app, app.worker():
        h = await app.start(wf)
        await asyncio.wait_for(started.wait(), 20)
        await app.cancel(h.run_id)
        await wait_for(lambda: status_is(app, h.run_id, "cancelled"), timeout=20,
                       what="cancelled")
        info = await app.get_run(h.run_id)
    assert [(e["kind"], e["status"]) for e in info.journal] == [("step", "ok"),
                                                                ("cancel", "ok")]
    assert info.journal[0]["result"] == "swallowed"


async def test_cancel_interrupts_async_steps_running_under_gather(store_url: str) -> None:
    app = App(store_url)
    started: list[int] = []

    @app.step
    async def forever(i: int) -> None:
        started.append(i)
        await asyncio.sleep(3600)

    @app.workflow
    async def wf() -> str:
        try:
            await asyncio.gather(forever(1), forever(2))
        except tether.Cancelled:
            return "cleaned up"
        return "not reached"

    async with app, app.worker():
        h = await app.start(wf)
        await wait_for(lambda: len(started) == 2, timeout=20, what="both started")
        await app.cancel(h.run_id)
        await wait_for(lambda: status_is(app, h.run_id, "cancelled"), timeout=20,
                       what="cancelled")
        info = await app.get_run(h.run_id)
    assert sorted(a["status"] for a in info.attempts) == ["cancelled", "cancelled"]


async def test_a_timeout_error_raised_by_the_step_itself_is_not_a_step_timeout(
    store_url: str,
) -> None:
    app = App(store_url)

    @app.step(timeout=30, retry=ONCE)
    async def raises() -> str:
        raise TimeoutError("the API timed out")

    @app.workflow
    async def wf() -> str:
        try:
            return await raises()
        except tether.StepTimeout:
            return "step timeout"
        except tether.StepError as exc:
            return f"step error: {exc.error_type}"

    async with app, app.worker():
        h = await app.start(wf)
        assert await h.result(timeout=20) == "step error: TimeoutError"


async def test_resume_of_a_failed_run_names_the_retry(store_url: str) -> None:
    """Only a blocked run resumes; a failed (or cancelled) run runs again by a retry,
    which the refusal now names, as a completed run's retry names the fork. An erased
    run is not sent to a retry, which refuses it too."""
    calls: dict[str, int] = {}
    app = make_app(store_url, calls, {"charge": True})
    async with app, app.worker():
        h = await app.start("order", 1, run_id="o-4")
        with pytest.raises(tether.RunFailed):
            await h.result(timeout=20)
        with pytest.raises(tether.RunStateError) as refused:
            await app.resume("o-4")
        assert str(refused.value) == (
            "run 'o-4' is failed: cannot resume it (only a blocked run resumes); a failed "
            "run runs again with a retry: tether retry o-4 (POST /api/v1/runs/o-4/retry)")
        await app.store.run_erase(run_id="o-4", now=app.clock.now())
        with pytest.raises(tether.RunStateError) as refused:
            await app.resume("o-4")
        assert str(refused.value) == (
            "run 'o-4' is failed: cannot resume it (only a blocked run resumes)")
