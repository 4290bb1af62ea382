"""``AttemptWriter``: step attempts written off the hot path, in order. A store that
commits writes in the order issued (``ordered_writes``: SQLite) gets the next write at
once; any other store gets it only once the write before it ended, so a finished state
can never be committed before its start. A flush (a run's end) returns on the first
kind of store once the writes are issued (the end, written next, commits after them),
on the other once they ended."""

from __future__ import annotations

import asyncio

import pytest

from tether import _replay
from tether._replay import ATTEMPT_WRITE_DELAY, AttemptWriter
from tether.store import StoreCapabilities
from tether.store._lifecycle import AttemptRecord


class _Store:
    """Records each ``attempt_record`` call when it is issued; the first one's commit is
    held until released. A store that keeps the order commits no later call before it
    either (as SQLite's one writer does)."""

    def __init__(self, ordered: bool) -> None:
        self.capabilities = StoreCapabilities(ordered_writes=ordered)
        self.ordered = ordered
        self.calls: list[list[tuple[str, str]]] = []
        self.release = asyncio.Event()

    async def attempt_record(self, *, attempts: list[AttemptRecord]) -> None:
        self.calls.append([(a.attempt_id, a.status) for a in attempts])
        if len(self.calls) == 1 or self.ordered:
            await self.release.wait()


def _row(attempt_id: str, status: str) -> tuple[object, ...]:
    return (attempt_id, "r", 0, 0, "s", 1, "w1", status, 1.0, None, None)


@pytest.mark.parametrize("ordered", [True, False])
async def test_the_next_write_waits_only_where_the_store_does_not_keep_order(
        ordered: bool) -> None:
    store = _Store(ordered)
    writer = AttemptWriter(store)  # type: ignore[arg-type]
    writer.note("a1", _row("a1", "running"))  # type: ignore[arg-type]
    first = writer._write()
    writer.note("a1", _row("a1", "ok"))  # type: ignore[arg-type]
    flushed = asyncio.ensure_future(writer.flush("r"))
    for _ in range(5):
        await asyncio.sleep(0)
    # Issued at once to a store that keeps the order; held back by any other store.
    assert store.calls == ([[("a1", "running")], [("a1", "ok")]] if ordered
                           else [[("a1", "running")]])
    # Issued is enough where the order is kept; elsewhere the flush waits for the last.
    assert flushed.done() is ordered
    store.release.set()
    await flushed
    assert writer._last is not None
    await writer._last
    assert first is not None and first.done()
    assert store.calls == [[("a1", "running")], [("a1", "ok")]]


async def test_an_ordered_flush_returns_after_a_write_made_earlier_in_the_pass_is_issued(
        ) -> None:
    """The timer's write made in this pass and not yet started: the flush lets it start
    (issue its store call) before returning, so the caller's next write comes after."""
    store = _Store(True)
    writer = AttemptWriter(store)  # type: ignore[arg-type]
    writer.note("a1", _row("a1", "ok"))  # type: ignore[arg-type]
    writer._write()  # (what the timer does), its task not started yet
    assert store.calls == []
    await writer.flush("r")  # r's attempts are no longer buffered: nothing new to write
    assert store.calls == [[("a1", "ok")]]
    store.release.set()


@pytest.mark.parametrize("ordered", [True, False])
async def test_close_writes_what_was_noted_and_gives_up_on_a_store_that_hangs(
        ordered: bool) -> None:
    """A worker's stop writes the states noted in the last 50 ms; a store that does not
    answer holds the stop no longer than the timeout."""
    store = _Store(ordered)
    writer = AttemptWriter(store)  # type: ignore[arg-type]
    writer.note("a1", _row("a1", "ok"))  # type: ignore[arg-type]
    await asyncio.wait_for(writer.close(timeout=0.05), 5)
    assert store.calls == [[("a1", "ok")]]  # issued at once, not after the 50 ms timer
    store.release.set()
    store2 = _Store(ordered)
    store2.release.set()  # this one answers
    writer2 = AttemptWriter(store2)  # type: ignore[arg-type]
    writer2.note("b1", _row("b1", "running"))  # type: ignore[arg-type]
    await writer2.close()
    assert store2.calls == [[("b1", "running")]]
    assert writer2._last is not None and writer2._last.done()


async def test_a_flush_cancelled_while_it_waits_for_the_write_is_cancelled() -> None:
    """A flush on a store that does not keep the order, cancelled while it waits for
    the write in flight (a worker stopping as a run ends), raises the cancellation;
    the write goes on. (It returned as if it had not been cancelled.)"""
    store = _Store(False)
    writer = AttemptWriter(store)  # type: ignore[arg-type]
    writer.note("a1", _row("a1", "ok"))  # type: ignore[arg-type]
    flushed = asyncio.ensure_future(writer.flush("r"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert store.calls == [[("a1", "ok")]] and not flushed.done()
    flushed.cancel()
    await asyncio.wait({flushed}, timeout=5)
    assert flushed.cancelled()
    assert writer._last is not None and not writer._last.done()
    store.release.set()
    await asyncio.wait_for(writer._last, 5)


class _JournalStore:
    """A store that reads a first attempt that succeeded from its journal entry
    (``attempts_from_journal``, as SQLite does) and records what it is given."""

    def __init__(self) -> None:
        self.capabilities = StoreCapabilities(ordered_writes=True, attempts_from_journal=True)
        self.written: list[tuple[str, str]] = []

    async def attempt_record(self, *, attempts: list[AttemptRecord]) -> None:
        self.written += [(a.attempt_id, a.status) for a in attempts]


def _run_row(attempt_id: str, status: str, run_id: str) -> tuple[object, ...]:
    return (attempt_id, run_id, 0, 0, "s", 1, "w1", status, 1.0, None, None)


async def test_a_first_attempt_whose_entry_committed_is_not_written() -> None:
    """``settled`` (the entry of a first attempt that succeeded is committed) drops the
    attempt's row when none of its states was written; an attempt whose state was
    written, or a store that does not read attempts from the journal, keeps it."""
    store = _JournalStore()
    writer = AttemptWriter(store)  # type: ignore[arg-type]
    writer.note("a1", _run_row("a1", "running", "r1"))  # type: ignore[arg-type]
    writer.note("a1", _run_row("a1", "ok", "r1"))  # type: ignore[arg-type]
    writer.settled("a1")
    writer.note("a2", _run_row("a2", "running", "r2"))  # type: ignore[arg-type]
    writer._write()  # (the write delay passed: a2's running state is written)
    writer.note("a2", _run_row("a2", "ok", "r2"))  # type: ignore[arg-type]
    writer.settled("a2")
    await writer.flush("r2")
    assert "r1" not in writer._buffered_runs
    await writer.close()
    assert store.written == [("a2", "running"), ("a2", "ok")]

    other = _Store(ordered=True)
    other.release.set()
    plain = AttemptWriter(other)  # type: ignore[arg-type]
    plain.note("a1", _run_row("a1", "running", "r1"))  # type: ignore[arg-type]
    plain.note("a1", _run_row("a1", "ok", "r1"))  # type: ignore[arg-type]
    plain.settled("a1")
    await plain.close()
    assert other.calls == [[("a1", "ok")]]


async def test_an_attempt_waiting_for_its_entry_is_held_back_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A write holds back a first attempt that succeeded while its entry's commit is not
    known yet, for ``SETTLE_HOLD_MAX`` after it ended; if the entry never commits (a store
    error, a lost lease) a write after that has it, so the history explains why the step
    runs again. A run's end, and the worker's stop, write such an attempt at once; an
    attempt that starts meanwhile is written within the write delay, as ever."""
    monkeypatch.setattr(_replay, "SETTLE_HOLD_MAX", 0.3)
    store = _JournalStore()
    writer = AttemptWriter(store)  # type: ignore[arg-type]
    for attempt_id, run_id in (("a1", "r1"), ("a2", "r2"), ("a3", "r3")):
        writer.note(attempt_id, _run_row(attempt_id, "running", run_id))  # type: ignore[arg-type]
        writer.note(attempt_id, _run_row(attempt_id, "ok", run_id))  # type: ignore[arg-type]
    writer._write()
    assert store.written == []  # all three held back
    await writer.flush("r2")  # r2 ends (its entry failed): its attempt goes first
    for _ in range(3):
        await asyncio.sleep(0)
    assert store.written == [("a2", "ok")]
    writer.settled("a1")  # a1's entry commits at last
    writer.note("a5", _run_row("a5", "running", "r5"))  # type: ignore[arg-type]
    await asyncio.sleep(ATTEMPT_WRITE_DELAY * 2)  # a5 starts: written within the delay
    assert store.written == [("a2", "ok"), ("a5", "running")]
    await asyncio.sleep(0.3)  # a3's entry never commits: its hold ends
    assert store.written == [("a2", "ok"), ("a5", "running"), ("a3", "ok")]
    writer.note("a4", _run_row("a4", "running", "r4"))  # type: ignore[arg-type]
    writer.note("a4", _run_row("a4", "ok", "r4"))  # type: ignore[arg-type]
    await writer.close()  # the worker stops: nothing is held back
    assert store.written == [("a2", "ok"), ("a5", "running"), ("a3", "ok"), ("a4", "ok")]


async def test_a_held_attempt_superseded_is_written_at_the_next_write_and_counted() -> None:
    """A first attempt that succeeded is held back while its entry's commit is not known
    (``attempts_from_journal``); noted ``superseded`` (its result refused: the run was
    lost), it is no longer held: the next write has it, in its last state. The state is
    counted (``noted``: the worker's ``/metrics``)."""
    store = _JournalStore()
    writer = AttemptWriter(store)  # type: ignore[arg-type]
    writer.note("a1", _run_row("a1", "running", "r1"))  # type: ignore[arg-type]
    writer.note("a1", _run_row("a1", "ok", "r1"))  # type: ignore[arg-type]
    writer._write()
    assert store.written == []  # held back, its entry's commit not known
    writer.note("a1", _run_row("a1", "superseded", "r1"))  # type: ignore[arg-type]
    writer._write()
    for _ in range(3):
        await asyncio.sleep(0)
    assert store.written == [("a1", "superseded")]
    assert writer.noted["superseded"] == 1 and writer.noted["ok"] == 1
    await writer.close()
