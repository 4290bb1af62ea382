"""``wait_for_signal`` when the clocks of the processes disagree: a signal already sent
when a wait starts answers it, and a worker whose clock is behind its run's journal
times its waits out by its own clock (docs/reliability.md, "Clock jumps")."""

from __future__ import annotations

import time

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App, SignalTimeout
from tether._clock import SystemClock


class _OffsetClock(SystemClock):
    """The machine's clock, ``offset`` seconds off."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset


def _peeking_app(store_url: str, offset: float) -> App:
    app = App(store_url, clock=_OffsetClock(offset))

    @app.workflow
    async def peeks() -> object:
        await tether.wait_for_signal("go")
        try:  # (an agent's "is an interrupt waiting?" check)
            return await tether.wait_for_signal("peek", timeout=0)
        except SignalTimeout:
            return "none waiting"

    return app


async def test_a_signal_sent_before_the_wait_answers_it_when_the_senders_clock_is_ahead(
        store_url: str) -> None:
    """A signal sent before the run reaches ``wait_for_signal(name, timeout=0)`` is
    there to take, whatever the clock of the process that sent it said. Before, the
    store took past the deadline only a signal whose send time (the sender's clock) was
    by the deadline (the worker's): from a sender 5 s ahead (on PostgreSQL: a few ms of
    a sync's error) the check found nothing, and the signal came one wait later (an
    agent's interrupt a turn late)."""
    sender = _peeking_app(store_url, 5.0)
    app = _peeking_app(store_url, 0.0)
    try:
        await app.start("peeks", run_id="peek")
        await sender.signal("peek", "peek", {"stop": True})
        await app.signal("peek", "go", None)
        async with app.worker():
            assert await app.handle("peek").result(timeout=30) == {"stop": True}
    finally:
        await sender.close()
        await app.close()


def _late_app(store_url: str, offset: float) -> App:
    app = App(store_url, clock=_OffsetClock(offset))

    @app.step
    async def first() -> int:
        return 1

    @app.workflow
    async def late() -> object:
        await first()
        await tether.wait_for_signal("go")
        try:
            return await tether.wait_for_signal("answer", timeout=600)
        except SignalTimeout:
            return "timed out"

    return app


async def test_a_worker_behind_the_journal_takes_no_signal_sent_after_the_deadline(
        store_url: str) -> None:
    """The run's first step ran on a worker an hour ahead; a worker on the true clock
    goes on, and the run waits 600 s for ``answer``. All workers stop; the answer is
    sent 700 s later, after the deadline; a worker started 800 s later times the wait
    out (the signal came after the timeout) and leaves the signal pending. Before, the
    deadline the store compared the signal's send time with was moved by the stamp's
    lead on the clock (``RunContext.lift``, an hour less the 800 s): a signal sent up
    to ~46 min after the deadline answered the wait."""
    ahead = _late_app(store_url, 3600.0)
    async with ahead.worker():
        await ahead.start("late", run_id="late")
        await wait_for(lambda: status_is(ahead, "late", "waiting"), timeout=30)
    await ahead.close()
    now = _late_app(store_url, 0.0)
    async with now.worker():
        await now.signal("late", "go", None)

        async def waits_for_answer() -> bool:
            info = await now.get_run("late")
            return info.status.is_ended or (info.status.value == "waiting" and any(
                e["kind"] == "signal" and e["name"] == "answer" for e in info.journal))

        await wait_for(waits_for_answer, timeout=30)
        [waits] = [e for e in (await now.get_run("late")).journal if e["name"] == "answer"]
    await now.close()
    sender = _late_app(store_url, 700.0)
    await sender.signal("late", "answer", "too late")
    await sender.close()
    later = _late_app(store_url, 800.0)
    try:
        async with later.worker():
            assert await later.handle("late").result(timeout=30) == "timed out"
        [timed_out] = [e for e in (await later.get_run("late")).journal
                       if e["name"] == "answer"]
        # (the timeout's deadline is the one journaled when the wait began)
        assert timed_out["next_attempt_at"] == waits["next_attempt_at"], (waits, timed_out)
        store = await later._open()  # (the answer waits for a later wait)
        assert await store.signal_pending(run_id="late", name="answer")
    finally:
        await later.close()
