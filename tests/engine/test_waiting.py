"""Waiting costs nothing: timers, signals and children release the run. Timers and
signal timeouts run in virtual time (``tether.testing.TestEnv``, on either backend)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter

import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App
from tether.testing import TestEnv


async def test_signal_sent_before_the_wait_is_kept(store_url: str) -> None:
    app = App(store_url)

    @app.workflow
    async def wf() -> object:
        await tether.sleep(0.3)
        return await tether.wait_for_signal("approve")

    async with TestEnv(app, store_url=store_url) as env:
        h = await env.start(wf, run_id="early")
        # Time stands still until the test waits: the run is still in its sleep.
        await env.app.signal("early", "approve", {"amount": 4})
        assert await h.result(timeout=10) == {"amount": 4}
        assert [e["kind"] for e in (await env.app.get_run("early")).journal] == ["sleep",
                                                                                 "signal"]


async def test_two_signals_of_one_name_are_consumed_in_order_once_each(store_url: str) -> None:
    app = App(store_url)

    @app.workflow
    async def wf() -> list[object]:
        first = await tether.wait_for_signal("msg")
        second = await tether.wait_for_signal("msg")
        return [first, second]

    h = await app.start(wf, run_id="two")
    await app.signal("two", "msg", 1)
    await app.signal("two", "msg", 2)
    await app.signal("two", "msg", 3)  # left for a later wait, not delivered twice
    async with app.worker():
        assert await h.result(timeout=10) == [1, 2]
    await app.close()


async def test_signal_timeout_raises_and_is_recorded(store_url: str) -> None:
    app = App(store_url)

    @app.workflow
    async def wf() -> str:
        try:
            await tether.wait_for_signal("late", timeout=0.3)
        except tether.SignalTimeout as exc:
            return f"timeout {exc.name}"
        return "signal"

    async with TestEnv(app, store_url=store_url) as env:
        assert await env.run(wf, run_id="to") == "timeout late"
        (entry,) = (await env.app.get_run("to")).journal
    assert entry["kind"] == "signal" and entry["status"] == "error"
    assert abs(entry["finished_at"] - entry["started_at"] - 0.3) < 1e-6  # virtual time


async def test_timeout_racing_a_signal_has_exactly_one_winner(store_url: str) -> None:
    """Signal and timeout arrive together: one wins, is recorded, and replay agrees."""
    app = App(store_url)
    outcomes: list[tuple[str, str]] = []

    @app.workflow
    async def wf() -> str:
        try:
            got = await tether.wait_for_signal("race", timeout=0.5)
            outcome = f"signal {got}"
        except tether.SignalTimeout:
            outcome = "timeout"
        outcomes.append((tether.run_id(), outcome))
        await tether.wait_for_signal("replay")  # force a replay of the decision
        return outcome

    async with app.worker():
        results = []
        for i in range(4):
            rid = f"race{i}"
            h = await app.start(wf, run_id=rid)
            await wait_for(lambda rid=rid: status_is(app, rid, "waiting"))
            await asyncio.sleep(0.5 - 0.01 * i)
            await app.signal(rid, "race", i)
            await wait_for(lambda rid=rid: _signal_entries(app, rid, 1))
            await app.signal(rid, "replay")
            results.append(await h.result(timeout=10))
    for i, r in enumerate(results):
        info = await app.get_run(f"race{i}")
        first = info.journal[0]
        assert (first["status"] == "ok") == r.startswith("signal")
    # Every execution of a run (the first, and any replay after the `replay` signal if the
    # worker did not keep the run in memory) reached the recorded decision.
    assert {rid for rid, _ in outcomes} == {f"race{i}" for i in range(4)}
    for i, r in enumerate(results):
        assert {o for rid, o in outcomes if rid == f"race{i}"} == {r}
    await app.close()


async def _wait_deadline(app: App, run_id: str) -> float:
    """The deadline journaled by the run's first wait, once the run waits for it (its
    worker has released it)."""
    await wait_for(lambda: status_is(app, run_id, "waiting"))
    entry = (await app.get_run(run_id)).journal[0]
    assert entry["kind"] == "signal" and entry["status"] == "pending"
    return float(entry["next_attempt_at"])


async def _still_pending(app: App, run_id: str) -> bool:
    return (await app.get_run(run_id)).journal[0]["status"] == "pending"


async def test_a_signal_sent_after_the_deadline_is_a_timeout_though_no_worker_ran_then(
        store_url: str) -> None:
    """The workers are down at the wait's deadline and the signal is sent after it: when
    a worker comes back, the wait has timed out (its timeout came first), and the signal
    is kept for the next wait."""
    app = App(store_url)

    @app.workflow
    async def wf() -> list[object]:
        try:
            first: object = await tether.wait_for_signal("x", timeout=1.5)
        except tether.SignalTimeout:
            first = "timeout"
        second = await tether.wait_for_signal("x", timeout=30)
        return [first, second]

    async with app.worker():
        h = await app.start(wf, run_id="after")
        deadline = await _wait_deadline(app, "after")
    assert await _still_pending(app, "after")  # (no worker recorded the timeout)
    await wait_for(lambda: app.clock.now() > deadline + 0.05)
    await app.signal("after", "x", "late")
    async with app.worker():
        assert await h.result(timeout=20) == ["timeout", "late"]
    journal = (await app.get_run("after")).journal
    assert [(e["kind"], e["status"]) for e in journal] == [("signal", "error"),
                                                            ("signal", "ok")]
    await app.close()


async def test_a_signal_sent_before_the_deadline_and_taken_after_it_is_delivered(
        store_url: str) -> None:
    """The signal came before the deadline but no worker took it until after: it
    answers the wait (it came first), it is no timeout."""
    app = App(store_url)

    @app.workflow
    async def wf() -> object:
        try:
            return await tether.wait_for_signal("x", timeout=1.5)
        except tether.SignalTimeout:
            return "timeout"

    async with app.worker():
        h = await app.start(wf, run_id="before")
        deadline = await _wait_deadline(app, "before")
    assert app.clock.now() < deadline
    await app.signal("before", "x", "early")
    assert await _still_pending(app, "before")  # (no worker took it)
    await wait_for(lambda: app.clock.now() > deadline + 0.05)
    async with app.worker():
        assert await h.result(timeout=20) == "early"
    await app.close()


async def _signal_entries(app: App, run_id: str, n: int) -> bool:
    info = await app.get_run(run_id)
    return sum(1 for e in info.journal if e["kind"] == "signal" and e["status"] != "pending") >= n


async def test_signal_to_a_finished_run_is_an_error(store_url: str) -> None:
    app = App(store_url)

    @app.workflow
    async def wf() -> int:
        return 1

    async with app.worker():
        await (await app.start(wf, run_id="fin")).result(timeout=10)
    with pytest.raises(tether.SignalError, match="has ended"):
        await app.signal("fin", "x")
    await app.close()


async def test_idempotency_key_delivers_a_signal_once(store_url: str) -> None:
    app = App(store_url)

    @app.workflow
    async def wf() -> list[object]:
        a = await tether.wait_for_signal("s")
        try:
            b = await tether.wait_for_signal("s", timeout=0.3)
        except tether.SignalTimeout:
            b = None
        return [a, b]

    async with TestEnv(app, store_url=store_url) as env:
        h = await env.start(wf, run_id="idem")
        assert await env.app.signal("idem", "s", "once", idempotency_key="k1") is True
        assert await env.app.signal("idem", "s", "once", idempotency_key="k1") is False
        assert await h.result(timeout=10) == ["once", None]


async def test_timer_records_its_wake_time_and_releases_the_run(store_url: str) -> None:
    app = App(store_url)

    @app.workflow
    async def wf() -> float:
        start = tether.now()
        await tether.sleep(2.5)
        return (tether.now() - start).total_seconds()

    async with TestEnv(app, store_url=store_url, sticky_wait=0.5) as env:  # virtual time
        h = await env.start(wf, run_id="t")
        await env.settle()
        info = await env.app.get_run("t")
        assert info.status.value == "waiting"
        assert info.waiting_for is not None and info.waiting_for.startswith("timer until")
        elapsed = await h.result(timeout=15)
        sleep_entry = (await env.app.get_run("t")).journal[1]
    assert elapsed == 2.5
    assert sleep_entry["kind"] == "sleep" and sleep_entry["status"] == "ok"
    assert sleep_entry["next_attempt_at"] == sleep_entry["started_at"] + 2.5


async def test_set_status_is_visible_to_observers(store_url: str) -> None:
    app = App(store_url)

    @app.workflow
    async def wf() -> None:
        tether.set_status({"waiting": "budget approval", "amount": "$4.00"})
        await tether.wait_for_signal("approve")

    async with app.worker():
        await app.start(wf, run_id="st")
        await wait_for(lambda: status_is(app, "st", "waiting"))
        info = await app.get_run("st")
    assert info.status_info == {"waiting": "budget approval", "amount": "$4.00"}
    await app.close()


async def test_child_on_its_own_queue_waits_for_a_worker_of_that_queue(store_url: str) -> None:
    app = App(store_url)
    calls = Counter[str]()

    @app.workflow(queue="tools")
    async def search(q: str) -> str:
        calls[q] += 1
        return f"results for {q}"

    @app.workflow(queue="agents")
    async def agent(q: str) -> str:
        return await tether.call(search, q)

    async with app.worker(queues=["agents"]):
        h = await app.start(agent, "tether", run_id="parent")
        await wait_for(lambda: status_is(app, "parent", "waiting"))
        child = await app.get_run("parent.0")
        assert child.status.value == "queued" and child.parent_run_id == "parent"
        async with app.worker(queues=["tools"]):
            assert await h.result(timeout=10) == "results for tether"
    assert calls == {"tether": 1}
    await app.close()


async def test_cancelling_a_parent_cancels_its_children(store_url: str) -> None:
    app = App(store_url)

    @app.workflow(queue="tools")
    async def slow_tool() -> None:
        await tether.wait_for_signal("never")

    @app.workflow(queue="tools")
    async def kept_tool() -> None:
        await tether.wait_for_signal("never")

    @app.workflow(queue="agents")
    async def agent() -> None:
        await tether.start_child(kept_tool, on_parent_cancel="abandon", run_id="kept")
        await tether.call(slow_tool, run_id="killed")

    async with app.worker(queues=["agents", "tools"]):
        await app.start(agent, run_id="p")
        await wait_for(lambda: status_is(app, "killed", "waiting"))
        await app.cancel("p")
        await wait_for(lambda: status_is(app, "killed", "cancelled"))
    assert (await app.get_run("p")).status.value == "cancelled"
    assert (await app.get_run("kept")).status.value == "waiting"
    await app.close()


async def test_cancelling_a_parent_ends_a_child_no_worker_started(store_url: str) -> None:
    """A durable tool on a queue no worker serves (none started, or all down) has never
    run: cancelling its parent ends it ``cancelled`` at once, as ``app.cancel`` of that
    child does. It stayed ``queued`` (cancel requested) until a worker of its queue
    came, for ever if none does."""
    app = App(store_url)

    @app.workflow(queue="gpu")
    async def render(scene: str) -> str:
        return scene

    @app.workflow
    async def agent() -> str:
        return await tether.call(render, "intro", run_id="tool-1")

    async with app.worker(queues=["default"]):
        await app.start(agent, run_id="p")
        await wait_for(lambda: status_is(app, "p", "waiting"))
        await app.cancel("p")
        await wait_for(lambda: status_is(app, "p", "cancelled"))
        await wait_for(lambda: status_is(app, "tool-1", "cancelled"), timeout=10)
    child = await app.get_run("tool-1")
    assert child.finished_at is not None and child.journal == []
    await app.close()


async def test_child_failure_is_raised_in_the_parent(store_url: str) -> None:
    app = App(store_url)

    @app.workflow
    async def broken() -> None:
        raise RuntimeError("tool exploded")

    @app.workflow
    async def parent() -> str:
        try:
            await tether.call(broken)
        except tether.RunFailed as exc:
            return f"{exc.status}: {exc.error and exc.error['message']}"
        return "ok"

    async with app.worker():
        assert await (await app.start(parent)).result(timeout=10) == "failed: tool exploded"
    await app.close()


async def test_a_child_id_used_by_another_run_is_refused_in_the_parent(
        store_url: str) -> None:
    """``tether.call(..., run_id=X)`` where X is a run that is not this parent's child
    raises ``ConfigError`` in the parent, as ``App.start`` does for a run of another
    workflow, and journals nothing (it returned that unrelated run's result as its
    child's). The parent's own child under that id, on replay, is still its child."""
    app = App(store_url)
    outcomes: list[str] = []

    @app.workflow
    async def child_wf(x: str) -> str:
        return "child " + x

    @app.workflow
    async def other_wf() -> str:
        return "I am other"

    @app.workflow
    async def parent(cid: str) -> str:
        try:
            return str(await tether.call(child_wf, "hello", run_id=cid))
        except tether.ConfigError as exc:
            outcomes.append(str(exc))
        return str(await tether.call(child_wf, "again", run_id=f"{cid}-mine"))

    async with app.worker():
        assert await (await app.start(other_wf, run_id="taken")).result(timeout=10) \
            == "I am other"
        assert await (await app.start(parent, "taken", run_id="p")).result(timeout=10) \
            == "child again"
    info = await app.get_run("p")
    # The refused call journaled nothing: only the second child, at positions 0 and 1.
    assert [str(e["kind"]) for e in info.journal] == ["child_start", "child_result"]
    # (Refused again in each execution of the parent: it is released while its child runs.)
    assert outcomes and all("'taken' is already used by a run of workflow 'other_wf' that "
                            "is not a child of 'p'" in o for o in outcomes), outcomes
    await app.close()


def _refused_waits(app: App, seconds: float | dt.timedelta) -> None:
    """Register workflow "wf": a sleep and a signal wait of ``seconds``, each refused with a
    ConfigError, caught; it returns their messages."""

    @app.workflow
    async def wf() -> list[str]:
        seen = []
        for wait in (lambda: tether.sleep(seconds),
                     lambda: tether.wait_for_signal("go", timeout=seconds)):
            try:
                await wait()
            except tether.ConfigError as exc:
                seen.append(str(exc))
        return seen


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), float("-inf")])
async def test_a_wait_of_no_finite_number_of_seconds_is_a_config_error(
        store_url: str, seconds: float) -> None:
    """``tether.sleep(nan)`` or a signal's ``timeout=inf`` raised ``NotSerializable``
    ("timer: value of type float is not JSON-serializable"), naming no argument; now
    ``ConfigError`` names the duration, at the call, in and out of a workflow, and the
    workflow goes on after catching it with nothing journaled."""
    app = App(store_url)

    _refused_waits(app, seconds)

    with pytest.raises(tether.ConfigError, match="finite"):
        await tether.sleep(seconds)
    async with app.worker():
        seen = await (await app.start("wf", run_id="w")).result(timeout=30)
    assert len(seen) == 2 and all("a finite number of seconds" in m for m in seen), seen
    assert (await app.get_run("w")).journal == []
    await app.close()


@pytest.mark.parametrize("seconds", [1e308, 1e12, dt.timedelta(days=999_999_999)])
async def test_a_wait_past_any_date_is_a_config_error_not_a_timeline_nobody_can_show(
        store_url: str, seconds: float | dt.timedelta) -> None:
    """``tether.sleep(1e308)`` (a tool's argument passed on, say) journaled a timer no
    date can show: the run failed with "OverflowError: timestamp out of range for
    platform time_t", and ``tether show`` and the run page failed on its timeline. A
    wait over 1,000 years is a ConfigError at the call, with nothing journaled, as an
    infinite one is; 1,000 years itself is a wait like any other."""
    app = App(store_url)

    _refused_waits(app, seconds)

    @app.workflow
    async def long_wait() -> str:
        return str(await tether.wait_for_signal("go", timeout=1000 * 365.25 * 86400))

    with pytest.raises(tether.ConfigError, match="at most"):
        await tether.sleep(seconds)
    async with app.worker():
        seen = await (await app.start("wf", run_id="w")).result(timeout=30)
        handle = await app.start(long_wait, run_id="l")
        await wait_for(lambda: status_is(app, "l", "waiting"))
        await app.signal("l", "go", "here")
        assert await handle.result(timeout=30) == "here"
    assert len(seen) == 2 and all("at most 31557600000 seconds (1,000 years)" in m
                                  for m in seen), seen
    assert (await app.get_run("w")).journal == []
    await app.close()


async def test_a_child_on_an_empty_queue_name_is_refused_in_the_parent(
        store_url: str) -> None:
    """``tether.start_child(wf, queue="")`` started the child on queue "default" (the
    empty name taken as "none given"), where ``App.start(queue="")`` and
    ``tether start --queue ''`` refuse the name: a child of a workflow served on another
    queue waited there for ever. It is ``InvalidName`` in the parent now, journaling
    nothing, for ``start_child`` and ``call`` alike."""
    app = App(store_url)
    refused: list[str] = []

    @app.workflow(queue="tools")
    async def tool() -> str:
        return "tool"

    @app.workflow
    async def parent() -> str:
        for start in (lambda: tether.start_child(tool, queue=""),
                      lambda: tether.call(tool, queue=" ")):
            try:
                await start()
            except tether.InvalidName as exc:
                refused.append(str(exc))
        return str(await tether.call(tool))

    async with app.worker():
        assert await (await app.start(parent, run_id="p")).result(timeout=30) == "tool"
    # (Refused again in each execution of the parent: it is released while its child runs.)
    assert refused[:2] == ["queue '' is empty", "queue ' ' is empty"], refused
    assert all("is empty" in r for r in refused), refused
    info = await app.get_run("p")
    assert [str(e["kind"]) for e in info.journal] == ["child_start", "child_result"]
    await app.close()


async def test_a_parent_cleaning_up_after_its_cancel_sees_its_children_cancelled(
        store_url: str) -> None:
    """A parent that catches ``Cancelled`` and awaits its child (a durable tool waiting
    for a person) in its clean-up: the child was cancelled only when the parent ended,
    and the parent waited for the child, so both stayed ``waiting`` for ever. Now the
    children are asked to cancel when the cancel is delivered: the clean-up gets the
    child's end, an ``abandon`` child runs on, and a child the clean-up starts runs."""
    app = App(store_url)
    seen: list[str] = []

    @app.workflow(queue="tools")
    async def tool(name: str) -> str:
        await tether.wait_for_signal("never")
        return name

    @app.workflow(queue="tools")
    async def undo(name: str) -> str:
        return f"undone {name}"

    @app.workflow(queue="agents")
    async def agent() -> str:
        held = await tether.start_child(tool, "held", run_id="held")
        await tether.start_child(tool, "kept", run_id="kept", on_parent_cancel="abandon")
        try:
            return await held.result()
        except tether.Cancelled:
            try:
                await held.result()
            except tether.RunFailed as exc:
                seen.append(str(exc))
            seen.append(await tether.call(undo, "held", run_id="undo"))
            raise

    async with app.worker(queues=["agents", "tools"], poll_interval=0.1):
        await app.start(agent, run_id="p")
        await wait_for(lambda: status_is(app, "held", "waiting"), timeout=30)
        await wait_for(lambda: status_is(app, "p", "waiting"), timeout=30)
        await app.cancel("p")
        await wait_for(lambda: status_is(app, "p", "cancelled", "failed"), timeout=30)
        assert (await app.get_run("p")).status.value == "cancelled"
        assert (await app.get_run("held")).status.value == "cancelled"
        assert (await app.get_run("kept")).status.value == "waiting"
        assert (await app.get_run("undo")).status.value == "completed"
    # (each replay of the clean-up sees the same, from the journal)
    assert sorted(set(seen)) == ["run 'held' ended cancelled: tether.errors.Cancelled: run "
                                 "'held' was cancelled", "undone held"], seen
    await app.close()
