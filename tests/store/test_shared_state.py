"""The Store contract for migration 0002, on every backend: run metrics, blobs, shared
values with compare-and-set, token buckets, queue concurrency limits and live events.

Time moves by passing ``now``; the concurrency tests use several store objects on one
URL (each its own connection pool or writer thread), so they race for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tether._types import Lease
from tether.errors import ConfigError, LeaseLost, PayloadTooLarge, StoreError
from tether.store import Store, Wait, open_store
from tether.store._values import MAX_EVENT_BYTES

from .conftest import LEASE, T0, entry, run_record, start_and_claim


async def claim(store: Store, now: float, *, queues: tuple[str, ...] = ("q",),
                limit: int = 10, worker: str = "w2") -> list[str]:
    got = await store.run_claim(worker_id=worker, queues=list(queues), limit=limit, now=now,
                                lease_seconds=LEASE)
    return sorted(c.run.run_id for c in got)


@contextlib.asynccontextmanager
async def more_stores(url: str, n: int) -> contextlib.AsyncExitStack:  # type: ignore[misc]
    """``n`` more open stores on ``url``."""
    async with contextlib.AsyncExitStack() as stack:
        stores = []
        for _ in range(n):
            s = open_store(url)
            await s.open()
            stack.push_async_callback(s.close)
            stores.append(s)
        yield stores


# -- run metrics ----------------------------------------------------------------------


async def test_metrics_are_set_under_the_lease_and_loaded_with_the_run(store: Store) -> None:
    """Metrics replace the run's metrics and come back from run_get, run_list and a
    claim; a run without any has ``{}``."""
    lease = (await start_and_claim(store, "r1")).lease
    got = await store.run_get("r1")
    assert got is not None and got.metrics == {}
    await store.run_metrics_set(lease=lease, metrics='{"tokens": 12, "cost": 0.5}', now=T0 + 1)
    await store.run_metrics_set(lease=lease, metrics='{"tokens": 30, "cost": 0.75}',
                                now=T0 + 2)
    got = await store.run_get("r1")
    assert got is not None and got.metrics == {"tokens": 30.0, "cost": 0.75}
    assert [r.metrics for r in await store.run_list()] == [{"tokens": 30.0, "cost": 0.75}]
    taken = await store.run_claim(worker_id="w2", queues=["q"], limit=1,
                                  now=T0 + LEASE + 1, lease_seconds=LEASE)
    assert taken[0].run.metrics == {"tokens": 30.0, "cost": 0.75}
    with pytest.raises(LeaseLost):
        await store.run_metrics_set(lease=lease, metrics='{"tokens": 1}', now=T0 + LEASE + 2)
    got = await store.run_get("r1")
    assert got is not None and got.metrics["tokens"] == 30.0


@pytest.mark.parametrize("text", ['[1, 2]', '{"tokens": "many"}', '{"x": true}',
                                  "gAAAAB-encrypted", '{"x": NaN}'])
async def test_metrics_that_are_not_a_json_object_of_numbers_are_refused(
        store: Store, text: str) -> None:
    """Metrics are plain JSON so every tool can read them: anything else is refused
    with a message naming the run, and nothing is written."""
    lease = (await start_and_claim(store, "r1")).lease
    with pytest.raises(StoreError, match="r1"):
        await store.run_metrics_set(lease=lease, metrics=text, now=T0)
    got = await store.run_get("r1")
    assert got is not None and got.metrics == {}


async def test_an_append_with_metrics_writes_both_in_one_go(store: Store) -> None:
    """``journal_append(metrics=)`` (a durable LLM call: its cost and its entry) writes
    the entry and replaces the metrics, once alone and once among other runs' appends."""
    lease = (await start_and_claim(store, "r1")).lease
    await store.journal_append(lease=lease, entry=entry(0), metrics='{"tokens": 12}',
                               now=T0 + 1)
    got = await store.run_get("r1")
    assert got is not None and got.metrics == {"tokens": 12.0}
    assert [e.position for e in await store.journal_read("r1")] == [0]
    others = [(await start_and_claim(store, f"o{i}", queue=f"q{i}")).lease for i in range(6)]
    await asyncio.gather(
        store.journal_append(lease=lease, entry=entry(1), metrics='{"tokens": 30}',
                             now=T0 + 2),
        *(store.journal_append(lease=o, entry=entry(0),
                               metrics=None if i % 2 else f'{{"tokens": {i}}}', now=T0 + 2)
          for i, o in enumerate(others)))
    got = await store.run_get("r1")
    assert got is not None and got.metrics == {"tokens": 30.0}
    assert [e.position for e in await store.journal_read("r1")] == [0, 1]
    for i in range(6):
        run = await store.run_get(f"o{i}")
        assert run is not None and run.metrics == ({} if i % 2 else {"tokens": float(i)})
        assert len(await store.journal_read(f"o{i}")) == 1


async def test_an_append_refused_keeps_its_metrics_unless_the_lease_is_lost(
        store: Store) -> None:
    """The call was paid: its metrics are written even when a final entry already holds
    the position (the append raises StoreError). Under a stale lease neither is written
    (LeaseLost). Both alone and among other runs' appends."""
    runs = [(await start_and_claim(store, f"r{i}", queue=f"q{i}")).lease for i in range(8)]
    for lease in runs:
        await store.journal_append(lease=lease, entry=entry(0, result='"first"'))
    # Alone.
    with pytest.raises(StoreError) as err:
        await store.journal_append(lease=runs[0], entry=entry(0, result='"again"'),
                                   metrics='{"tokens": 5}', now=T0 + 1)
    assert not isinstance(err.value, LeaseLost)
    stale = Lease("r1", "w1", runs[1].fencing_token - 1)
    with pytest.raises(LeaseLost):
        await store.journal_append(lease=stale, entry=entry(1), metrics='{"tokens": 7}',
                                   now=T0 + 1)
    # Among others: r2 a final conflict, r3 a stale lease, the others written.
    stale3 = Lease("r3", "w1", runs[3].fencing_token - 1)
    outcomes = await asyncio.gather(*(
        store.journal_append(lease=stale3 if i == 3 else lease,
                             entry=entry(0 if i == 2 else 1), metrics=f'{{"n": {i}}}',
                             now=T0 + 2)
        for i, lease in enumerate(runs) if i >= 2), return_exceptions=True)
    assert isinstance(outcomes[0], StoreError) and not isinstance(outcomes[0], LeaseLost)
    assert isinstance(outcomes[1], LeaseLost)
    assert outcomes[2:] == [None] * 4
    metrics = {}
    for i in range(8):
        run = await store.run_get(f"r{i}")
        assert run is not None
        metrics[i] = run.metrics
        journal = await store.journal_read(f"r{i}")
        assert journal[0].result == '"first"'
        assert len(journal) == (1 if i < 4 else 2)
    assert metrics == {0: {"tokens": 5.0}, 1: {}, 2: {"n": 2.0}, 3: {},
                       **{i: {"n": float(i)} for i in range(4, 8)}}


async def test_an_append_with_metrics_that_are_not_numbers_writes_nothing(
        store: Store) -> None:
    lease = (await start_and_claim(store, "r1")).lease
    with pytest.raises(StoreError, match="r1"):
        await store.journal_append(lease=lease, entry=entry(0), metrics='{"x": "y"}',
                                   now=T0)
    got = await store.run_get("r1")
    assert got is not None and got.metrics == {}
    assert await store.journal_read("r1") == []


async def test_an_append_with_texts_stores_them_referenced_by_its_run(store: Store) -> None:
    """``journal_append(blobs=)`` (a durable LLM call: its prompt's texts and its entry)
    stores the texts in the entry's transaction, referenced by the run as
    ``blob_put(run_id=)`` would: once alone, once among other runs' appends (with and
    without metrics and texts), and after the run is purged its own texts are gone."""
    lease = (await start_and_claim(store, "r1")).lease
    await store.journal_append(lease=lease, entry=entry(0), blobs={"m1": "one", "n1": "N1"})
    assert await store.blob_get(keys=["m1", "n1"]) == {"m1": "one", "n1": "N1"}
    others = [(await start_and_claim(store, f"o{i}", queue=f"q{i}")).lease for i in range(6)]
    await asyncio.gather(
        store.journal_append(lease=lease, entry=entry(1), metrics='{"tokens": 3}',
                             now=T0 + 1, blobs={"m2": "two", "shared": "S"}),
        *(store.journal_append(lease=o, entry=entry(0), now=T0 + 1,
                               metrics=None if i % 3 else f'{{"tokens": {i}}}',
                               blobs={"shared": "S", f"own{i}": f"O{i}"} if i % 2 else None)
          for i, o in enumerate(others)))
    assert [e.position for e in await store.journal_read("r1")] == [0, 1]
    got = await store.run_get("r1")
    assert got is not None and got.metrics == {"tokens": 3.0}
    for i in range(6):
        assert len(await store.journal_read(f"o{i}")) == 1
    keys = ["m1", "n1", "m2", "shared", *(f"own{i}" for i in range(6))]
    assert sorted(await store.blob_get(keys=keys)) == sorted(
        ["m1", "n1", "m2", "shared", "own1", "own3", "own5"])
    await store.run_finish(lease=lease, status="completed", result="1", error=None,
                           now=T0 + 2)
    report = await store.run_purge(finished_before=T0 + 3, statuses=["completed"])
    assert report.run_ids == ["r1"] and report.blobs == 3  # "shared": o1, o3, o5 keep it
    assert sorted(await store.blob_get(keys=keys)) == ["own1", "own3", "own5", "shared"]


async def test_an_append_refused_with_texts_raises_as_without(store: Store) -> None:
    """Texts change nothing of how an append is refused: a final entry at the position
    raises StoreError (the metrics kept), a stale lease LeaseLost (its entry and
    metrics not written), alone and among other runs' appends. The texts may stay
    stored either way (content-addressed: harmless)."""
    runs = [(await start_and_claim(store, f"r{i}", queue=f"q{i}")).lease for i in range(6)]
    for lease in runs:
        await store.journal_append(lease=lease, entry=entry(0, result='"first"'))
    with pytest.raises(StoreError) as err:
        await store.journal_append(lease=runs[0], entry=entry(0, result='"again"'),
                                   metrics='{"tokens": 5}', now=T0 + 1, blobs={"a": "A"})
    assert not isinstance(err.value, LeaseLost)
    with pytest.raises(LeaseLost):
        await store.journal_append(lease=Lease("r1", "w1", runs[1].fencing_token - 1),
                                   entry=entry(1), blobs={"b": "B"})
    stale3 = Lease("r3", "w1", runs[3].fencing_token - 1)
    outcomes = await asyncio.gather(*(
        store.journal_append(lease=stale3 if i == 3 else lease,
                             entry=entry(0 if i == 2 else 1), metrics=f'{{"n": {i}}}',
                             now=T0 + 2, blobs={f"t{i}": f"T{i}"})
        for i, lease in enumerate(runs) if i >= 2), return_exceptions=True)
    assert isinstance(outcomes[0], StoreError) and not isinstance(outcomes[0], LeaseLost)
    assert isinstance(outcomes[1], LeaseLost)
    assert outcomes[2:] == [None] * 2
    for i in range(6):
        run = await store.run_get(f"r{i}")
        assert run is not None
        assert run.metrics == {0: {"tokens": 5.0}, 1: {}, 3: {}}.get(i, {"n": float(i)})
        journal = await store.journal_read(f"r{i}")
        assert journal[0].result == '"first"'
        assert len(journal) == (1 if i < 4 else 2)
    assert await store.blob_get(keys=["t4", "t5"]) == {"t4": "T4", "t5": "T5"}


# -- blobs --------------------------------------------------------------------------------


async def test_blobs_are_put_and_got_in_batches_and_never_overwritten(store: Store) -> None:
    """Missing keys are absent from the answer; a key already stored keeps its text."""
    texts = {f"k{i}": f"text {i} " * i for i in range(50)}
    texts["unicode"] = "é✓ " * 1000
    await store.blob_put(blobs=texts)
    await store.blob_put(blobs={"k1": "something else", "new": "n"})
    await store.blob_put(blobs={})
    got = await store.blob_get(keys=[*texts, "new", "missing"])
    assert got == {**texts, "new": "n"}
    assert await store.blob_get(keys=[]) == {}
    assert await store.blob_get(keys=["missing"]) == {}


async def test_concurrent_puts_of_overlapping_keys_all_succeed(store: Store) -> None:
    """Writers storing the same texts at once (the same prompt cached by many runs) do
    not fail each other."""
    async with more_stores(store.url, 3) as others:
        batches = [{f"k{(i * 7 + j) % 40}": f"v{(i * 7 + j) % 40}" for j in range(20)}
                   for i in range(12)]
        await asyncio.gather(*(others[i % 3].blob_put(blobs=b) for i, b in enumerate(batches)))
    got = await store.blob_get(keys=[f"k{i}" for i in range(40)])
    assert got == {f"k{i}": f"v{i}" for i in range(40)}


# -- shared values ------------------------------------------------------------------------


async def test_kv_compare_and_set(store: Store) -> None:
    """Insert-if-absent with version None; replace only from the current version."""
    assert await store.kv_get(key="breaker") is None
    assert await store.kv_cas(key="breaker", value="closed", version=None, now=T0)
    assert not await store.kv_cas(key="breaker", value="open", version=None, now=T0)
    assert await store.kv_get(key="breaker") == ("closed", 1)
    assert await store.kv_cas(key="breaker", value="open", version=1, now=T0 + 1)
    assert not await store.kv_cas(key="breaker", value="half", version=1, now=T0 + 2)
    assert await store.kv_get(key="breaker") == ("open", 2)
    assert not await store.kv_cas(key="other", value="x", version=3, now=T0)
    assert await store.kv_get(key="other") is None


async def test_kv_increments_racing_from_many_stores_lose_nothing(store: Store) -> None:
    """Read-modify-CAS loops from several store objects at once: every increment lands
    exactly once, because a CAS from a stale version fails."""
    assert await store.kv_cas(key="n", value="0", version=None, now=T0)

    async def increment(s: Store) -> int:
        tries = 0
        while True:
            tries += 1
            current = await s.kv_get(key="n")
            assert current is not None
            if await s.kv_cas(key="n", value=str(int(current[0]) + 1), version=current[1],
                              now=T0):
                return tries

    async with more_stores(store.url, 3) as others:
        tries = await asyncio.gather(*(increment(others[i % 3]) for i in range(24)))
    assert await store.kv_get(key="n") == ("24", 25)
    assert sum(tries) >= 24


# -- rate limits --------------------------------------------------------------------------


async def test_rate_bucket_is_full_at_first_use_and_refills_continuously(store: Store) -> None:
    """3 per 10 s: three takes at once, then the fourth waits 10/3 s, and is taken then."""
    for _ in range(3):
        assert await store.rate_acquire(key="rpm", limit=3, period=10, amount=1, now=T0) == 0.0
    wait = await store.rate_acquire(key="rpm", limit=3, period=10, amount=1, now=T0)
    assert wait == pytest.approx(10 / 3)
    wait = await store.rate_acquire(key="rpm", limit=3, period=10, amount=1, now=T0 + 1)
    assert wait == pytest.approx(10 / 3 - 1)
    assert await store.rate_acquire(key="rpm", limit=3, period=10, amount=1,
                                    now=T0 + 10 / 3) == 0.0
    # A denied take took nothing; amounts larger than one wait for enough tokens.
    assert await store.rate_acquire(key="rpm", limit=3, period=10, amount=2,
                                    now=T0 + 10 / 3) == pytest.approx(20 / 3)
    assert await store.rate_acquire(key="tpm", limit=1000, period=60, amount=0,
                                    now=T0) == 0.0
    # Never more than full, however long it was idle.
    for _ in range(3):
        assert await store.rate_acquire(key="rpm", limit=3, period=10, amount=1,
                                        now=T0 + 1000) == 0.0
    assert await store.rate_acquire(key="rpm", limit=3, period=10, amount=1,
                                    now=T0 + 1000) > 0


async def test_rate_bucket_ignores_a_clock_that_went_back(store: Store) -> None:
    """A caller whose clock is behind the last writer's refills nothing."""
    assert await store.rate_acquire(key="k", limit=1, period=10, amount=1, now=T0 + 10) == 0.0
    assert await store.rate_acquire(key="k", limit=1, period=10, amount=1, now=T0) == \
        pytest.approx(10)
    assert await store.rate_acquire(key="k", limit=1, period=10, amount=1,
                                    now=T0 + 20) == 0.0


@pytest.mark.parametrize(("limit", "period", "amount", "what"), [
    (0, 60, 1, "limit"), (10, 0, 1, "period"), (10, 60, -1, "amount"),
    (10, 60, 11, "exceeds"), (float("nan"), 60, 1, "limit")])
async def test_rate_limits_that_make_no_sense_are_refused(
        store: Store, limit: float, period: float, amount: float, what: str) -> None:
    with pytest.raises(ConfigError, match=what):
        await store.rate_acquire(key="bad", limit=limit, period=period, amount=amount, now=T0)


async def test_rate_takes_racing_from_many_stores_never_exceed_the_limit(store: Store) -> None:
    """Tasks on several store objects take from one bucket at the same instant: exactly
    ``limit`` takes succeed, every other one is told to wait."""
    async with more_stores(store.url, 3) as others:
        waits = await asyncio.gather(*(
            others[i % 3].rate_acquire(key="shared", limit=7, period=60, amount=1, now=T0)
            for i in range(30)))
    assert sum(1 for w in waits if w == 0.0) == 7
    assert all(w > 0 for w in waits if w != 0.0)


# -- queue limits -------------------------------------------------------------------------


async def test_queue_limits_are_set_listed_and_removed(store: Store) -> None:
    assert await store.queue_limits() == {}
    await store.queue_limit_set(queue="llm", limit=2, now=T0)
    await store.queue_limit_set(queue="tools", limit=0, now=T0)
    await store.queue_limit_set(queue="llm", limit=5, now=T0 + 1)
    assert await store.queue_limits() == {"llm": 5, "tools": 0}
    await store.queue_limit_set(queue="tools", limit=None, now=T0 + 2)
    await store.queue_limit_set(queue="never-limited", limit=None, now=T0 + 2)
    assert await store.queue_limits() == {"llm": 5}


@pytest.mark.parametrize("limit", [-1, 1.5, True, "3"])
async def test_bad_queue_limits_are_refused(store: Store, limit: object) -> None:
    with pytest.raises(ConfigError, match="llm"):
        await store.queue_limit_set(queue="llm", limit=limit, now=T0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="empty"):
        await store.queue_limit_set(queue="", limit=1, now=T0)
    assert await store.queue_limits() == {}


async def test_claim_holds_a_limited_queue_to_its_limit(store: Store) -> None:
    """With limit 2, a claim gets at most 2 runs of the queue, later claims get only what
    ends (finish, release) frees, and another queue in the same claim is not limited."""
    await store.queue_limit_set(queue="q", limit=2, now=T0)
    for i in range(5):
        await store.run_insert(run=run_record(f"r{i}", now=T0 + i * 0.001))
    for i in range(3):
        await store.run_insert(run=run_record(f"free{i}", queue="free"))
    got = await store.run_claim(worker_id="w1", queues=["q", "free"], limit=10, now=T0 + 1,
                                lease_seconds=LEASE)
    assert sorted(c.run.run_id for c in got) == ["free0", "free1", "free2", "r0", "r1"]
    assert await claim(store, T0 + 1) == []
    leases = {c.run.run_id: c.lease for c in got}
    await store.run_finish(lease=leases["r0"], status="completed", result="1", error=None,
                           now=T0 + 2)
    assert await claim(store, T0 + 2) == ["r2"]
    assert await claim(store, T0 + 2) == []
    await store.run_release(lease=leases["r1"], wait=Wait(T0 + 500, "timer"), now=T0 + 3)
    assert await claim(store, T0 + 3) == ["r3"]
    # Raising the limit lets more in; removing it lets everything in.
    await store.queue_limit_set(queue="q", limit=3, now=T0 + 4)
    assert await claim(store, T0 + 4) == ["r4"]
    await store.queue_limit_set(queue="q", limit=None, now=T0 + 5)
    await store.run_insert(run=run_record("r5", now=T0 + 5))
    assert await claim(store, T0 + 5) == ["r5"]


async def test_expired_leases_do_not_count_against_the_limit(store: Store) -> None:
    """A run whose lease expired is not held: it is claimable again (taken over), and
    the queue's limit counts only leases that have not expired."""
    await store.queue_limit_set(queue="q", limit=1, now=T0)
    await store.run_insert(run=run_record("a", now=T0))
    await store.run_insert(run=run_record("b", now=T0 + 0.5))
    assert await claim(store, T0 + 1, worker="w1") == ["a"]
    assert await claim(store, T0 + 2) == []
    after = T0 + 1 + LEASE  # a's lease expired: a holds nothing, b gets the one place
    assert await claim(store, after) == ["b"]
    assert await claim(store, after) == []  # a is claimable, but b holds the place


async def test_limit_zero_pauses_a_queue(store: Store) -> None:
    await store.run_insert(run=run_record("r1"))
    await store.queue_limit_set(queue="q", limit=0, now=T0)
    assert await claim(store, T0 + 1) == []
    assert await store.next_available_at(queues=["q"]) is None
    await store.queue_limit_set(queue="q", limit=None, now=T0 + 2)
    assert await claim(store, T0 + 2) == ["r1"]


async def test_a_pause_keeps_the_limit_a_resume_gives_back(store: Store) -> None:
    """The limit 0 (a pause) keeps the limit the queue held, and ``queue_resume`` gives
    it back: until 2026-12-07 a pause replaced it, and lifting the pause (``queue-limit
    Q none``) left the queue with no limit at all. A second pause keeps the first one's
    limit; any other limit, or none, forgets it; a queue that had no limit is resumed to
    none (its row goes); a queue that is not paused is left as it is."""
    await store.queue_limit_set(queue="q", limit=1, now=T0)
    for i in range(3):
        await store.run_insert(run=run_record(f"r{i}", now=T0 + i * 0.001))
    await store.queue_limit_set(queue="q", limit=0, now=T0 + 1)
    await store.queue_limit_set(queue="q", limit=0, now=T0 + 2)  # (paused already)
    await store.queue_limit_set(queue="free", limit=0, now=T0 + 2)
    assert await store.queue_limits() == {"free": 0, "q": 0}
    assert await store.queue_pauses() == {"free": None, "q": 1}
    assert await claim(store, T0 + 3) == []
    assert await store.queue_resume(queue="q", now=T0 + 4) == (True, 1)
    assert await store.queue_limits() == {"free": 0, "q": 1}
    assert await store.queue_pauses() == {"free": None}
    assert await claim(store, T0 + 5) == ["r0"]  # (held to the limit given back)
    assert await store.queue_resume(queue="q", now=T0 + 6) == (False, None)
    assert await store.queue_resume(queue="never", now=T0 + 6) == (False, None)
    assert await store.queue_limits() == {"free": 0, "q": 1}
    assert await store.queue_resume(queue="free", now=T0 + 7) == (True, None)
    assert await store.queue_limits() == {"q": 1}
    # A limit set while paused lifts the pause and forgets the kept one.
    await store.queue_limit_set(queue="q", limit=0, now=T0 + 8)
    await store.queue_limit_set(queue="q", limit=3, now=T0 + 9)
    assert (await store.queue_limits(), await store.queue_pauses()) == ({"q": 3}, {})
    await store.queue_limit_set(queue="q", limit=0, now=T0 + 10)
    assert await store.queue_pauses() == {"q": 3}
    await store.queue_limit_set(queue="q", limit=None, now=T0 + 11)
    await store.queue_limit_set(queue="q", limit=0, now=T0 + 12)
    assert await store.queue_pauses() == {"q": None}


def _old_limit_set(url: str, queue: str, limit: int) -> None:
    """``queue_limit_set`` as a version before migration 0019 writes it (a02bf2eb): it
    never names the kept limit."""
    if url.startswith("sqlite:"):
        import apsw

        conn = apsw.Connection(url.split("///", 1)[1])
        conn.execute("INSERT INTO tether_queue_limits (queue, max_running, updated_at) "
                     "VALUES (?, ?, ?) ON CONFLICT (queue) DO UPDATE SET max_running = ?, "
                     "updated_at = ?", (queue, limit, T0, limit, T0))
        conn.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO tether.queue_limits (queue, max_running, updated_at) "
                     "VALUES (%s, %s, %s) ON CONFLICT (queue) DO UPDATE SET "
                     "max_running = excluded.max_running, updated_at = excluded.updated_at",
                     (queue, limit, T0))


async def test_an_earlier_versions_limit_on_a_paused_queue_is_the_one_kept(
        store: Store, store_url: str) -> None:
    """An earlier version's ``queue-limit Q 3`` on a queue this one paused from 5 lifts
    the pause; its ``queue-limit Q 0`` pauses it again; ``queue-resume`` gives back 3,
    the last limit set. Until migration 0020 the earlier version left the kept 5 behind
    (it never names the column), and the resume gave back 5; a pause of its own from a
    limit kept none. Its ``queue-limit Q 0`` of a paused queue keeps what was kept."""
    await store.queue_limit_set(queue="q", limit=5, now=T0)
    await store.queue_limit_set(queue="q", limit=0, now=T0 + 1)
    _old_limit_set(store_url, "q", 3)
    assert (await store.queue_limits(), await store.queue_pauses()) == ({"q": 3}, {})
    _old_limit_set(store_url, "q", 0)
    assert await store.queue_pauses() == {"q": 3}
    _old_limit_set(store_url, "q", 0)  # (paused already)
    assert await store.queue_pauses() == {"q": 3}
    assert await store.queue_resume(queue="q", now=T0 + 2) == (True, 3)
    assert (await store.queue_limits(), await store.queue_pauses()) == ({"q": 3}, {})


async def test_next_available_at_of_a_full_queue_is_its_earliest_lease_expiry(
        store: Store) -> None:
    """Workers wait on a queue at its limit until a lease could expire (a finish wakes
    them sooner), instead of spinning on runs they may not claim."""
    await store.queue_limit_set(queue="q", limit=1, now=T0)
    await store.run_insert(run=run_record("a", now=T0))
    # Later than "a": of two runs due at the same instant either may be claimed first.
    await store.run_insert(run=run_record("b", now=T0 + 0.001))
    assert await store.next_available_at(queues=["q"]) == T0
    assert await claim(store, T0 + 1) == ["a"]
    assert await store.next_available_at(queues=["q"]) == T0 + 1 + LEASE
    await store.run_insert(run=run_record("c", queue="free", now=T0 + 3))
    assert await store.next_available_at(queues=["q", "free"]) == T0 + 3


async def test_claims_racing_from_many_stores_never_exceed_the_limit(store: Store) -> None:
    """Workers on several store objects claim from one limited queue at once: together
    they hold exactly the limit."""
    await store.queue_limit_set(queue="q", limit=3, now=T0)
    for i in range(20):
        await store.run_insert(run=run_record(f"r{i:02d}", now=T0 + i * 0.001))
    async with more_stores(store.url, 4) as others:
        for _ in range(3):
            got = await asyncio.gather(*(
                others[i % 4].run_claim(worker_id=f"w{i}", queues=["q"], limit=2,
                                        now=T0 + 1, lease_seconds=LEASE)
                for i in range(8)))
            assert sum(len(g) for g in got) <= 3
        running = await store.run_list(status="running")
    assert len(running) == 3


# -- live events --------------------------------------------------------------------------


async def test_events_published_through_another_store_arrive_in_order(store: Store) -> None:
    """A subscriber gets every event published after it subscribed, in order, whatever
    its size (on PostgreSQL a large one travels in parts); other runs' events and events
    from before it subscribed are not delivered."""
    big = "é✓x" * 6000  # 36,000 UTF-8 bytes: several notifications' worth
    async with more_stores(store.url, 1) as (other,):
        await other.run_publish(run_id="r1", data="before")
        events = store.run_events("r1")
        async with contextlib.aclosing(events):
            first = asyncio.ensure_future(anext(events))
            await _until_delivered(other, "r1", first)
            sent = [f"chunk {i}" for i in range(50)] + [big, "", "last"]
            for data in sent:
                await other.run_publish(run_id="r2", data="not for r1")
                await other.run_publish(run_id="r1", data=data)
            got: list[str] = []
            while len(got) < len(sent):
                event = await asyncio.wait_for(anext(events), 10)
                if event != "probe" or got:  # probes still in flight come first
                    got.append(event)
    assert got == sent


async def test_an_event_published_once_the_subscription_is_ready_arrives(
        store: Store) -> None:
    """``run_events(ready=...)`` calls ``ready`` once the subscription is in place (on
    PostgreSQL, its LISTEN): one event published through another store after that
    arrives, with no probe sent first."""
    async with more_stores(store.url, 1) as (other,):
        listening = asyncio.Event()
        events = store.run_events("r1", ready=listening.set)
        async with contextlib.aclosing(events):
            first = asyncio.ensure_future(anext(events))
            await asyncio.wait_for(listening.wait(), 10)
            await other.run_publish(run_id="r1", data="once")
            assert await asyncio.wait_for(first, 10) == "once"


def _cancel_when(store_obj: object, attr: str, task: list[asyncio.Task[Any]]) -> None:
    """Make ``store_obj.<attr>()`` (what says a LISTEN is in place) also cancel
    ``task[0]``, which waits for it: the wait ends and the cancellation comes in the
    same turn of the loop."""
    original = getattr(store_obj, attr)

    def and_cancel() -> None:
        original()
        task[0].cancel()

    setattr(store_obj, attr, and_cancel)


@contextlib.asynccontextmanager
async def _pg_store(url: str) -> AsyncIterator[Any]:
    store = open_store(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_a_subscriber_cancelled_as_its_listen_lands_ends(pg_migrated_url: str) -> None:
    """A subscriber to a run's events that is cancelled just as its LISTEN is put in
    place ends, cancelled. (With asyncio.wait_for on Python 3.11 the cancellation was
    lost there and the subscriber waited for events for ever: an event stream whose run
    had ended, or whose client had gone, never closed.)"""
    task: list[asyncio.Task[Any]] = []
    async with _pg_store(pg_migrated_url) as store:
        _cancel_when(store._events._changed, "notify_all", task)

        async def follow() -> None:
            async for _ in store.run_events("r1"):
                pass

        task.append(asyncio.create_task(follow()))
        await asyncio.wait(task, timeout=10)
        assert task[0].cancelled()


async def test_a_wake_up_subscription_cancelled_as_its_listen_lands_is_cancelled(
        pg_migrated_url: str) -> None:
    """``subscribe`` (a worker's wake-ups) cancelled just as its LISTEN is in place
    raises CancelledError rather than returning as if it had not been cancelled."""
    task: list[asyncio.Task[Any]] = []
    async with _pg_store(pg_migrated_url) as store:
        _cancel_when(store._listener.listening, "set", task)
        task.append(asyncio.create_task(store.subscribe(lambda: None)))
        await asyncio.wait(task, timeout=10)
        assert task[0].cancelled()
        await store._listener.close()


async def test_an_operation_cancelled_as_the_pool_hands_it_a_connection_is_cancelled(
        pg_migrated_url: str) -> None:
    """A store operation waiting for a pooled connection, cancelled in the turn of the
    loop the pool hands it one, raises the cancellation, and the connection goes back.
    (psycopg_pool waits with asyncio.wait_for, which on Python 3.11 then returned the
    connection as if nothing had happened: the operation went on, and a subscriber to a
    run's events cancelled so, as it asked the events connection to LISTEN, waited for
    events for ever: an event stream that never closed.)"""
    store = open_store(pg_migrated_url, pool_min=1, pool_max=1)
    await store.open()
    try:
        pool, conn = await store._checkout()  # the pool's one connection, held
        before = asyncio.all_tasks()
        op = asyncio.create_task(store.run_get("r1"))
        wait: list[asyncio.Task[Any]] = []
        for _ in range(1000):  # until the operation waits in the pool
            await asyncio.sleep(0)
            wait = [t for t in asyncio.all_tasks() - before - {op}
                    if t.get_coro().__qualname__ == "Condition.wait"]
            if wait:
                break
        assert len(wait) == 1
        # The wait ends (the connection is handed over) and, in the same turn, the
        # operation is cancelled.
        wait[0].add_done_callback(lambda _: op.cancel())
        await store._put_back(pool, conn)
        await asyncio.wait({op}, timeout=10)
        assert op.cancelled()
        # The connection was given back: the next operation gets it.
        assert await asyncio.wait_for(store.run_get("r1"), 10) is None
    finally:
        await store.close()


async def test_a_subscription_whose_kick_failed_listens_by_the_next_check(
        pg_migrated_url: str) -> None:
    """A new subscriber tells the busy events connection to LISTEN with a notification
    (a kick through the pool). When that kick fails (the pool exhausted, a blip), the
    connection learns of the change at its next idle check (``check_interval``: the
    store's query timeout, 1 s here) and listens then; before, it never did until some
    other subscriber came or went, and the run's live events never reached this one."""
    async with _pg_store(f"{pg_migrated_url}?query_timeout=1") as store, \
            more_stores(pg_migrated_url, 1) as (other,):
        first = store.run_events("r1")
        async with contextlib.aclosing(first):
            head = asyncio.ensure_future(anext(first))
            await _until_delivered(other, "r1", head)

            async def fail(channel: str) -> None:
                raise StoreError("no connection for the kick")

            store._events._kick = fail
            ready = asyncio.Event()
            second = store.run_events("r2", ready=ready.set)
            async with contextlib.aclosing(second):
                got = asyncio.ensure_future(anext(second))
                await asyncio.wait_for(ready.wait(), 30)  # (after _apply's 5 s)
                for _ in range(60):
                    await other.run_publish(run_id="r2", data="hello")
                    done, _ = await asyncio.wait([got], timeout=0.25)
                    if done:
                        break
                assert got.done() and got.result() == "hello"


async def _until_delivered(publisher: Store, run_id: str, first: asyncio.Future[str]) -> None:
    """Publish probes until the subscriber's first read returns one (it subscribes on
    its first read)."""
    for _ in range(100):
        await publisher.run_publish(run_id=run_id, data="probe")
        done, _ = await asyncio.wait([first], timeout=0.1)
        if done:
            assert first.result() == "probe"
            return
    raise AssertionError("the subscriber never received a probe")


async def test_events_that_are_too_large_or_carry_nul_are_refused(store: Store) -> None:
    with pytest.raises(PayloadTooLarge, match="r1"):
        await store.run_publish(run_id="r1", data="x" * (MAX_EVENT_BYTES + 1))
    with pytest.raises(StoreError, match="NUL"):
        await store.run_publish(run_id="r1", data="a\x00b")
    await store.run_publish(run_id="nobody-listens", data=json.dumps({"ok": True}))


async def test_a_place_freed_on_a_limited_queue_wakes_other_processes(store: Store) -> None:
    """Releasing a run of a limited queue (it waits for a timer) frees a place: workers
    subscribed through another store object are woken to claim it."""
    await store.queue_limit_set(queue="q", limit=1, now=T0)
    lease = (await start_and_claim(store, "r1")).lease
    async with more_stores(store.url, 1) as (other,):
        woken = asyncio.Event()
        unsubscribe = await other.subscribe(woken.set)
        try:
            # Wakeups arrive in order: once a marker run's has, every earlier one has,
            # and the wait below hears the release only (not a fixed sleep).
            await store.run_insert(run=run_record("marker", queue="elsewhere"))
            await asyncio.wait_for(woken.wait(), timeout=5)
            woken.clear()
            await store.run_release(lease=lease, wait=Wait(T0 + 100, "timer"), now=T0 + 1)
            await asyncio.wait_for(woken.wait(), timeout=5)
        finally:
            await unsubscribe()
