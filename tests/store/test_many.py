"""run_insert_many and run_get_many: the store calls behind App.start_many and the
result waiters, on every backend."""

from __future__ import annotations

from tether.store import Store

from .conftest import T0, run_record, start_and_claim


async def test_insert_many_creates_in_one_call_and_is_idempotent(store: Store) -> None:
    await store.run_insert(run=run_record("old", workflow="a"))
    got = await store.run_insert_many(runs=[
        run_record("r1"), run_record("old", workflow="b"), run_record("r2"),
        run_record("r1", workflow="c")])
    assert [(r.run_id, r.workflow, created) for r, created in got] == [
        ("r1", "wf", True), ("old", "a", False), ("r2", "wf", True), ("r1", "wf", False)]
    assert sorted(r.run_id for r in await store.run_list()) == ["old", "r1", "r2"]
    assert await store.run_insert_many(runs=[]) == []
    stored = await store.run_get("r2")
    assert stored is not None and stored.status == "queued" and stored.available_at == T0


async def test_inserted_many_are_claimable(store: Store) -> None:
    await store.run_insert_many(runs=[run_record(f"r{i}", now=T0 + i) for i in range(5)])
    claimed = await store.run_claim(worker_id="w", queues=["q"], limit=10, now=T0 + 10,
                                    lease_seconds=30)
    assert [c.run.run_id for c in claimed] == [f"r{i}" for i in range(5)]


async def test_get_many_finds_existing_runs_and_filters_settled(store: Store) -> None:
    await store.run_insert_many(runs=[run_record("a"), run_record("b")])
    done = await start_and_claim(store, "done", queue="other")
    await store.run_finish(lease=done.lease, status="completed", result="7", error=None,
                           now=T0 + 1)
    got = await store.run_get_many(["a", "missing", "done", "b"])
    assert sorted(r.run_id for r in got) == ["a", "b", "done"]
    settled = await store.run_get_many(["a", "missing", "done", "b"], settled_only=True)
    assert [(r.run_id, r.status, r.result) for r in settled] == [("done", "completed", "7")]
    assert await store.run_get_many([]) == []


async def test_get_many_reads_more_ids_than_one_statement_holds(store: Store) -> None:
    ids = [f"r{i:04}" for i in range(1200)]
    await store.run_insert_many(runs=[run_record(i) for i in ids])
    got = await store.run_get_many(ids)
    assert sorted(r.run_id for r in got) == ids
