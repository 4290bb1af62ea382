"""A write whose commit went out and whose answer never came (the connection was lost
in between: a restart, a terminated backend, a network cut) may have committed. The
store reads the write back by its unique key on a new connection and answers as if
the commit had been answered (a run started, a signal sent under an idempotency
key), so that the caller's retry does not start a second run or send the signal
twice; where it cannot tell (no key, or no connection to read with), it raises a
StoreUnavailable with ``outcome_unknown`` whose message says how to check.

The pipelines' moment is held by a proxy that passes BEGIN, the statements and COMMIT
and keeps the Sync back while the session is ended (``pg_terminate_backend``:
``SyncHoldingProxy.end_after_commit``); a lone statement's by a proxy that passes it,
drops its answer and cuts (``CuttingProxy``), and a network cut the server does not see
by the same proxy holding the write back (``"hold"``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from functools import partial
from typing import TypeVar

import pytest

from tests.faults.cutproxy import (
    CuttingProxy,
    SyncHoldingProxy,
    cutting_proxy,
    one_connection,
    wait_for,
)
from tether._types import RunStatus
from tether.errors import StoreUnavailable
from tether.store import Wait
from tether.store.postgres import PostgresStore

from .conftest import T0, run_record, start_and_claim

pytestmark = pytest.mark.postgres

T = TypeVar("T")


@pytest.fixture
def holding(pg_url: str) -> Iterator[SyncHoldingProxy]:
    p = SyncHoldingProxy(pg_url).start()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def cutting(pg_url: str) -> Iterator[CuttingProxy]:
    with cutting_proxy(pg_url) as p:
        yield p


async def test_starts_whose_commit_went_unanswered_are_read_back_as_started(
        pg_url: str, holding: SyncHoldingProxy) -> None:
    async with one_connection(holding.url()) as store:
        await store.run_insert(run=run_record("before"))
        op = await holding.end_after_commit(pg_url, store, lambda: store.run_insert_many(
            runs=[run_record(i, now=T0 + 1) for i in ("a", "before", "b")]))
        # (it raised StoreUnavailable: a caller's retry without run ids started the
        # runs again under new ones)
        started = await op
        # ("before" existed, started at T0: not this start's)
        assert [(r.run_id, r.created_at, created) for r, created in started] == [
            ("a", T0 + 1, True), ("before", T0, False), ("b", T0 + 1, True)]
        assert {r.run_id for r in await store.run_get_many(["a", "b"])} == {"a", "b"}


async def test_a_signal_whose_commit_went_unanswered(
        pg_url: str, holding: SyncHoldingProxy) -> None:
    """With an idempotency key the signal is read back and the send answers "sent";
    without one the send raises an error whose outcome is unknown, saying how to check
    (a retry could deliver it twice)."""
    async with one_connection(holding.url()) as store:
        await store.run_insert(run=run_record("r"))
        for key in ("k1", None):
            op = await holding.end_after_commit(pg_url, store, partial(
                store.signal_send, run_id="r", name="go", payload="1", idempotency_key=key,
                now=1.0))
            if key is not None:
                sent = await op
                assert sent.created
                found = await store.signal_find(run_id="r", idempotency_key=key)
                assert found is not None and found.signal_id == sent.signal_id
                continue
            with pytest.raises(StoreUnavailable) as caught:
                await op
            assert caught.value.outcome_unknown
            message = str(caught.value)
            assert "signal 'go' to run 'r' may have been delivered" in message, message
            assert "tether show r" in message, message
        assert await store.signal_pending(run_id="r", name="go")


async def test_a_lone_start_whose_answer_was_lost_and_cannot_be_read_back(
        cutting: CuttingProxy) -> None:
    """The server committed the start and its answer was dropped; the server stays
    out of reach, so the start cannot be read back: the error says that the run may
    have started, naming it, and how to be sure (start again with its id)."""
    async with one_connection(cutting.url(), pool_timeout=1.0) as store:
        await store.run_insert(run=run_record("warm"))
        cutting.arm(b"lone-start-7", "after")
        with pytest.raises(StoreUnavailable) as caught:
            await store.run_insert(run=run_record("lone-start-7"))
        assert cutting.answered
        assert caught.value.outcome_unknown
        message = str(caught.value)
        assert "the start of run 'lone-start-7' may have committed" in message, message
        assert "tether show lone-start-7" in message, message
        assert "start again with the same run id" in message, message
        cutting.back()
        # (it was: the start's retry, with the run's id, finds it and starts nothing)
        stored, created = await store.run_insert(run=run_record("lone-start-7"))
        assert (stored.run_id, created) == ("lone-start-7", False)


async def test_a_runs_end_whose_commit_went_unanswered_is_read_back_as_ended(
        pg_url: str, holding: SyncHoldingProxy) -> None:
    """The worker's end of a run: read back (status, fencing token, time) it succeeds;
    it failed, and the worker's retry was refused as a lost lease (the run had ended),
    logged as a takeover that never happened."""
    async with one_connection(holding.url()) as store:
        claimed = await start_and_claim(store, "r")
        op = await holding.end_after_commit(pg_url, store, lambda: store.run_finish(
            lease=claimed.lease, status="completed", result="1", error=None, now=T0 + 5))
        assert await op == "completed"
        stored = await store.run_get("r")
        assert stored is not None and (stored.status, stored.result, stored.finished_at) == (
            "completed", "1", T0 + 5)


async def test_a_lone_start_whose_answer_was_lost_is_read_back_as_started(
        cutting: CuttingProxy) -> None:
    """The server committed the start (one statement: a sequential caller's) and its
    answer was dropped; the server is reachable again at once: the start is read back
    and succeeds (it raised StoreUnavailable)."""
    async with one_connection(cutting.url()) as store:
        await store.run_insert(run=run_record("warm"))
        cutting.arm(b"lone-start-8", "after")
        back = asyncio.ensure_future(cutting.wait_cut(30))
        back.add_done_callback(lambda _: cutting.back())
        stored, created = await store.run_insert(run=run_record("lone-start-8"))
        assert cutting.answered
        assert (stored.run_id, created) == ("lone-start-8", True)
        await back


async def test_starts_sharing_a_commit_that_went_unanswered_each_name_their_run(
        pg_url: str) -> None:
    """Two callers' starts in one group commit whose connection is lost once its COMMIT
    went out, and the server out of reach after (the proxy gone): each caller's error
    names its own run (both named the batch's first)."""
    holding = SyncHoldingProxy(pg_url).start()
    async with one_connection(holding.url(), pool_timeout=1.0) as store:
        await store.run_insert(run=run_record("warm"))
        holding.arm()
        starts = asyncio.gather(
            store.run_insert(run=run_record("shared-1")),
            store.run_insert(run=run_record("shared-2")), return_exceptions=True)
        await wait_for(holding.held, "the pipeline's Sync")
        holding.close()
        for run_id, caught in zip(("shared-1", "shared-2"), await starts, strict=True):
            assert isinstance(caught, StoreUnavailable), caught
            assert caught.outcome_unknown
            assert f"the start of run {run_id!r} may have committed" in str(caught), caught


async def test_a_release_whose_commit_went_unanswered_is_read_back_as_released(
        pg_url: str, holding: SyncHoldingProxy) -> None:
    """A worker's release of a run (parked on a wait): read back (waiting for what it
    said, under the lease's token) it succeeds; it failed, and the worker's retry was
    refused as a lost lease (the run waited), logged as a takeover that never
    happened."""
    async with one_connection(holding.url()) as store:
        claimed = await start_and_claim(store, "r")
        await (await holding.end_after_commit(pg_url, store, lambda: store.run_release(
            lease=claimed.lease, wait=Wait(None, "signal go", signal="go"), now=T0 + 5)))
        stored = await store.run_get("r")
        assert stored is not None and (stored.status, stored.waiting_for) == (
            RunStatus.WAITING, "signal go")


async def test_a_blocked_end_whose_commit_went_unanswered_is_read_back_as_ended(
        pg_url: str, holding: SyncHoldingProxy) -> None:
    """An end as blocked (a transaction of its own): read back it answers the status it
    stored; it failed, and the worker's retry was refused as a lost lease."""
    async with one_connection(holding.url()) as store:
        claimed = await start_and_claim(store, "r")
        op = await holding.end_after_commit(pg_url, store, lambda: store.run_finish(
            lease=claimed.lease, status="blocked", result=None, error="stuck", now=T0 + 5))
        assert await op == "blocked"
        stored = await store.run_get("r")
        assert stored is not None and (stored.status, stored.error, stored.finished_at) == (
            RunStatus.BLOCKED, "stuck", T0 + 5)


async def test_a_cancel_whose_commit_went_unanswered_answers_as_cancelled(
        pg_url: str, holding: SyncHoldingProxy) -> None:
    """A cancel (``tether cancel``, the API) whose commit went unanswered is asked again
    (a cancel changes nothing the second time) and answers with the run cancelled: it
    said the database was unavailable."""
    async with one_connection(holding.url()) as store:
        await store.run_insert(run=run_record("r"))
        op = await holding.end_after_commit(pg_url, store, lambda: store.run_cancel(
            run_id="r", now=T0 + 5, reason="no"))
        cancelled = await op
        assert (cancelled.run_id, cancelled.status) == ("r", RunStatus.CANCELLED)


async def test_releases_sharing_a_commit_that_went_unanswered_are_read_back_as_released(
        pg_url: str, holding: SyncHoldingProxy) -> None:
    """Two workers' releases written in one transaction (group commit) whose commit went
    unanswered: the batch is read back, every caller succeeds, and each run waits for
    what its release said, under its lease's token."""
    async with one_connection(holding.url()) as store:
        claims = [await start_and_claim(store, run_id) for run_id in ("r1", "r2")]
        releases = await holding.end_after_commit(pg_url, store, lambda: asyncio.gather(*(
            store.run_release(lease=c.lease, now=T0 + 5, wait=Wait(
                None, f"signal go-{c.run.run_id}", signal=f"go-{c.run.run_id}"))
            for c in claims), return_exceptions=True))
        assert await releases == [None, None]
        stored = await store.run_get_many(["r1", "r2"])
        assert sorted((r.run_id, r.status, r.waiting_for, r.fencing_token)
                      for r in stored) == [
            (c.run.run_id, RunStatus.WAITING, f"signal go-{c.run.run_id}",
             c.lease.fencing_token) for c in claims]


async def _cut_while_the_session_lives(cutting: CuttingProxy, op: Awaitable[T]
                                       ) -> tuple[T | BaseException, bool]:
    """``op``'s outcome when the write holding the armed marker is kept back by a network
    cut its server session does not see (``"hold"``), and whether the write, sent on to
    that session once ``op`` answered (a late packet), then committed after all."""
    try:
        outcome: T | BaseException = await op
    except StoreUnavailable as exc:
        outcome = exc
    assert cutting.cut.is_set()
    cutting.release()
    await wait_for(cutting.settled, "the held write settled")
    return outcome, cutting.answered


@pytest.mark.parametrize("many", [False, True], ids=["lone", "batch"])
async def test_a_start_not_found_after_a_network_cut_stays_not_started(
        cutting: CuttingProxy, many: bool) -> None:
    """A network cut the server does not see leaves the session of the start alive, the
    write perhaps still to come to it. Not found by the read-back, the start was said
    not to have committed (``outcome_unknown`` False) while that session could still
    commit it: the run then existed, and a caller told "not started" started it again
    under a new id. The session is ended (and waited for) before the read."""
    async with one_connection(cutting.url()) as store:
        await store.run_insert(run=run_record("warm"))
        cutting.arm(b"held-start-1", "hold")
        if many:
            op: Awaitable[object] = store.run_insert_many(
                runs=[run_record("held-start-1"), run_record("held-start-2")])
        else:
            op = store.run_insert(run=run_record("held-start-1"))
        outcome, committed_later = await _cut_while_the_session_lives(cutting, op)
        assert isinstance(outcome, StoreUnavailable), outcome
        assert not outcome.outcome_unknown, outcome  # (read back: not there)
        assert not committed_later
        assert await store.run_get_many(["held-start-1", "held-start-2"]) == []


async def test_a_keyed_signal_not_found_after_a_network_cut_stays_not_sent(
        cutting: CuttingProxy) -> None:
    """As a start: the send's session, left alive by the cut, is ended before its
    idempotency key is read back; not found, the send did not commit, and never will."""
    async with one_connection(cutting.url()) as store:
        await store.run_insert(run=run_record("r"))
        cutting.arm(b"held-payload-1", "hold")
        outcome, committed_later = await _cut_while_the_session_lives(
            cutting, store.signal_send(run_id="r", name="go", payload='"held-payload-1"',
                                       idempotency_key="k", now=1.0))
        assert isinstance(outcome, StoreUnavailable), outcome
        assert not outcome.outcome_unknown, outcome
        assert not committed_later
        assert await store.signal_find(run_id="r", idempotency_key="k") is None


async def test_a_runs_end_not_found_after_a_network_cut_is_made_again(
        cutting: CuttingProxy) -> None:
    """A worker's end of a run whose session a network cut left alive: not found by the
    read-back (after that session was ended), the end fails and the worker makes it
    again, which succeeds. The session, left alive, committed the first end meanwhile,
    and the retry was refused as a lost lease: a takeover that never happened."""
    async with one_connection(cutting.url()) as store:
        claimed = await start_and_claim(store, "r")
        cutting.arm(b"held-result-1", "hold")
        outcome, _ = await _cut_while_the_session_lives(cutting, store.run_finish(
            lease=claimed.lease, status="completed", result='"held-result-1"', error=None,
            now=T0 + 5))
        assert isinstance(outcome, StoreUnavailable), outcome
        assert await store.run_finish(lease=claimed.lease, status="completed",
                                      result='"held-result-1"', error=None,
                                      now=T0 + 5) == "completed"


async def test_a_cancel_asked_again_after_a_network_cut_is_not_committed_later(
        cutting: CuttingProxy) -> None:
    """A cancel whose session a network cut left alive is asked again on a new
    connection once that session has ended (as the read-backs are): the held cancel,
    sent on to it later (a late packet), commits nothing. Asked again while the session
    lived, the late cancel committed after the answer, and cancelled again a run the
    user had retried meanwhile."""
    async with one_connection(cutting.url()) as store:
        await store.run_insert(run=run_record("r"))
        cutting.arm(b"held-reason-1", "hold")
        outcome, committed_later = await _cut_while_the_session_lives(
            cutting, _cancel_then_retry(store, "held-reason-1"))
        assert not isinstance(outcome, BaseException), outcome
        assert outcome == RunStatus.QUEUED
        assert not committed_later
        stored = await store.run_get("r")
        assert stored is not None and (stored.status, stored.cancel_requested) == (
            RunStatus.QUEUED, False)


async def _cancel_then_retry(store: PostgresStore, reason: str) -> str:
    """Cancel run ``r`` (the cancel answers it cancelled), then retry it: its status."""
    cancelled = await store.run_cancel(run_id="r", now=T0 + 5, reason=reason)
    assert cancelled.status == RunStatus.CANCELLED, cancelled
    retried = await store.run_retry(run_id="r", version=None, now=T0 + 6)
    return str(retried.run.status)
