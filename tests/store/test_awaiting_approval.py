"""``Store.run_list_awaiting_approval`` on every backend: the waiting runs released on the
approval signal alone, oldest first, page after page, whatever else waits; on SQLite the
query reads the partial index of these runs, never the whole runs table."""

from __future__ import annotations

from pathlib import Path

from tether.store import Store, Wait
from tether.store._port import APPROVAL_WAITING_FOR, merge_waits
from tether.store._sql import load_queries

from .conftest import T0, sqlite_plans, start_and_claim


async def _release(store: Store, run_id: str, at: float, wait: Wait) -> None:
    claimed = await start_and_claim(store, run_id, now=at, queue=f"q-{run_id}")
    await store.run_release(lease=claimed.lease, wait=wait, now=at)


def _approval() -> Wait:
    return Wait(None, APPROVAL_WAITING_FOR, signal="approval")


async def _pages(store: Store, limit: int) -> list[str]:
    ids: list[str] = []
    after: tuple[float, str] | None = None
    while True:
        page = await store.run_list_awaiting_approval(limit=limit, after=after)
        ids += [r.run_id for r in page]
        if len(page) < limit:
            return ids
        after = (page[-1].created_at, page[-1].run_id)


async def test_lists_every_approval_wait_oldest_first_and_nothing_else(store: Store) -> None:
    # Approval waits, two of them at one instant (then by run id), among runs waiting on
    # timers, on other signals, and on the approval or something else (not listed: the
    # approvals inbox lists a run waiting on the approval alone, as it always did).
    await _release(store, "b-old", T0, _approval())
    await _release(store, "a-old", T0, _approval())
    for i in range(6):
        await _release(store, f"timer-{i}", T0 + 1 + i, Wait(T0 + 1000, "sleep 1000s"))
        await _release(store, f"other-{i}", T0 + 1 + i,
                       Wait(None, "signal go", signal="go"))
    await _release(store, "either", T0 + 8, merge_waits(
        [_approval(), Wait(T0 + 500, "sleep 500s")]))
    await _release(store, "new", T0 + 9, _approval())
    await _release(store, "answered", T0 + 10, _approval())
    expected = ["a-old", "b-old", "new", "answered"]
    for limit in (1, 2, 3, 50):
        assert await _pages(store, limit) == expected
    first = (await store.run_list_awaiting_approval(limit=1))[0]
    assert (first.status, first.waiting_for) == ("waiting", APPROVAL_WAITING_FOR)
    # Answered, a run stays listed until a worker claims it (the answer is its signal,
    # taken by the claimed run): then it has left the list.
    await store.signal_send(run_id="answered", name="approval", payload="{}",
                            idempotency_key=None, now=T0 + 11)
    assert await _pages(store, 2) == expected
    claimed = await store.run_claim(worker_id="w1", queues=["q-answered"], limit=1,
                                    now=T0 + 12, lease_seconds=30)
    assert [c.run.run_id for c in claimed] == ["answered"]
    assert await _pages(store, 2) == expected[:3]


def test_sqlite_reads_the_partial_index(tmp_path: Path) -> None:
    plan = sqlite_plans(tmp_path, "run_list_awaiting_approval")(
        {"limit": 50, "after_at": T0, "after_id": "r"})
    assert any("tether_runs_awaiting_approval" in p for p in plan), plan
    assert not any(p.startswith("SCAN tether_runs") and "INDEX" not in p for p in plan), plan


def test_the_store_matches_what_tether_ai_waits_for() -> None:
    """The stores' index selects ``waiting_for`` as a literal; tether.ai writes it."""
    from tether.ai._approvals import _WAITING_FOR

    assert _WAITING_FOR == APPROVAL_WAITING_FOR
    for package in ("tether.store.sqlite", "tether.store.postgres"):
        sql = load_queries(package, "serve.sql")["run_list_awaiting_approval"]
        assert f"waiting_for = '{APPROVAL_WAITING_FOR}'" in sql


async def test_the_pending_signals_of_many_runs_in_one_read(store: Store) -> None:
    """``signals_pending_many``: each run's signals of the name not yet taken, oldest
    first; a run with none, a run that does not exist, another name's signals and a
    signal taken are left out (what the approval listings read for a page)."""
    await _release(store, "one", T0, _approval())
    await _release(store, "two", T0, _approval())
    await _release(store, "none", T0, _approval())
    for run_id, payload in (("one", '{"n": 1}'), ("two", None), ("one", '{"n": 2}')):
        await store.signal_send(run_id=run_id, name="approval", payload=payload,
                                idempotency_key=None, now=T0 + 1)
    await store.signal_send(run_id="none", name="go", payload="{}", idempotency_key=None,
                            now=T0 + 1)
    ids = ["one", "two", "none", "missing", "one"]
    assert await store.signals_pending_many(run_ids=ids, name="approval") == {
        "one": ['{"n": 1}', '{"n": 2}'], "two": [None]}
    assert await store.signals_pending_many(run_ids=[], name="approval") == {}
    (claimed,) = await store.run_claim(worker_id="w1", queues=["q-one"], limit=1,
                                       now=T0 + 2, lease_seconds=30)
    taken = await store.signal_take(lease=claimed.lease, name="approval", position=0,
                                    deadline=None, now=T0 + 2, timeout_error="")
    assert taken is not None
    assert await store.signals_pending_many(run_ids=ids, name="approval") == {
        "one": ['{"n": 2}'], "two": [None]}


def test_sqlite_reads_the_pending_signals_index(tmp_path: Path) -> None:
    plan = sqlite_plans(tmp_path, "signals_pending_many")(
        {"run_ids": '["a", "b"]', "name": "approval"})
    assert any("tether_signals_pending" in p for p in plan), plan
    assert not any(p.startswith("SCAN tether_signals") for p in plan), plan

async def test_counts_the_approvals_a_person_may_answer_and_a_pages_place(store: Store) -> None:
    """``run_count_awaiting_approval``: the approval waits not claimable now (the
    inbox's "N waiting"), the oldest ``limit`` at most, and how many of them are at or
    before a cursor (its page's place); a run waiting on anything else is not counted,
    nor one answered (claimable, an approval signal waiting for it); one past its
    watch's deadline with no answer is (claimable too, but a person may answer it)."""
    for i in range(5):
        await _release(store, f"ask-{i}", T0 + i, _approval())
    await _release(store, "other", T0 + 1, Wait(None, "signal go", signal="go"))
    await _release(store, "timer", T0 + 1, Wait(T0 + 1000, "sleep 1000s"))
    await _release(store, "watched", T0 + 6, Wait(T0 + 100, APPROVAL_WAITING_FOR,
                                                  signal="approval"))
    assert await store.run_count_awaiting_approval(now=T0 + 10, limit=100) == (6, 0)
    assert await store.run_count_awaiting_approval(
        now=T0 + 10, limit=100, upto=(T0 + 1, "ask-1")) == (6, 2)
    assert await store.run_count_awaiting_approval(now=T0 + 10, limit=4) == (4, 0)
    assert await store.run_count_awaiting_approval(
        now=T0 + 10, limit=4, upto=(T0 + 9, "z")) == (4, 4)
    # Past its watch's deadline, unanswered, a run is claimable (a worker takes it up)
    # and still answerable: counted.
    assert await store.run_count_awaiting_approval(now=T0 + 200, limit=100) == (6, 0)
    # Answered: claimable at once, an approval signal waiting for it: not counted.
    await store.signal_send(run_id="ask-3", name="approval", payload="{}",
                            idempotency_key=None, now=T0 + 11)
    assert await store.run_count_awaiting_approval(
        now=T0 + 12, limit=100, upto=(T0 + 4, "ask-4")) == (5, 4)
    # Another run's or another name's signal is no answer of this one.
    await store.signal_send(run_id="watched", name="go", payload="{}",
                            idempotency_key=None, now=T0 + 13)
    assert await store.run_count_awaiting_approval(now=T0 + 200, limit=100) == (5, 0)


def test_sqlite_counts_through_the_partial_index(tmp_path: Path) -> None:
    plan = sqlite_plans(tmp_path, "run_count_awaiting_approval")(
        {"limit": 50, "now": T0, "upto_at": T0, "upto_id": "r"})
    assert any("tether_runs_awaiting_approval" in p for p in plan), plan
    assert not any(p.startswith("SCAN tether_runs") and "INDEX" not in p for p in plan), plan
