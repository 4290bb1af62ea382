"""Reads whose cost must not grow with the store's other runs, on every backend: what
``TestEnv`` polls (``Store.run_activity``) and the runs it reads in one snapshot
(``Store.run_list_unsettled``), and the children of many runs, those not
read out counted and summed in the store (``Store.run_children_many``); their answers
checked against the runs."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tether.store import Store

from .conftest import T0, run_record, start_and_claim


async def test_run_activity_says_busy_and_the_next_wake_from_the_runs_of_its_queues(
        store: Store) -> None:
    """``run_activity``: busy while a run is running on any queue, or a queued or waiting
    run of the given queues is due; the next wake is the earliest later ``available_at``
    of a queued or waiting run of those queues (not of another queue's, nor of a run
    waiting on a signal alone, nor of an ended run)."""
    assert await store.run_activity(queues=["q"], now=T0) == (False, None)
    # Ended runs and runs of other queues count for nothing, whatever their times.
    for i, status in enumerate(("completed", "failed", "cancelled", "blocked")):
        await store.run_insert(run=run_record(f"end-{i}", status=status, now=T0 - 10))
    await store.run_insert(run=run_record("other-due", queue="other", now=T0 - 5))
    await store.run_insert(run=run_record("other-later", queue="other", status="waiting",
                                          available_at=T0 + 5))
    await store.run_insert(run=run_record("on-signal", status="waiting"))  # no time
    assert await store.run_activity(queues=["q"], now=T0) == (False, None)
    # A timer of our queue: idle until it is due, and it is the next wake.
    await store.run_insert(run=run_record("timer", status="waiting", available_at=T0 + 60))
    await store.run_insert(run=run_record("later", queue="q2", status="waiting",
                                          available_at=T0 + 30))
    assert await store.run_activity(queues=["q"], now=T0) == (False, T0 + 60)
    assert await store.run_activity(queues=["q", "q2"], now=T0) == (False, T0 + 30)
    assert await store.run_activity(queues=["q", "other"], now=T0) == (True, T0 + 5)
    assert await store.run_activity(queues=["q"], now=T0 + 60) == (True, None)
    assert await store.run_activity(queues=[], now=T0) == (False, None)
    # A queued run due now on our queue: busy, and the timer is still the next wake.
    await store.run_insert(run=run_record("due", now=T0 - 1))
    assert await store.run_activity(queues=["q"], now=T0) == (True, T0 + 60)
    # A running run, of any queue: busy.
    await start_and_claim(store, "runs", queue="elsewhere", now=T0)
    assert await store.run_activity(queues=["q2"], now=T0) == (True, T0 + 30)


async def test_run_list_unsettled_reads_the_runs_that_may_move_in_one_snapshot(
        store: Store) -> None:
    """``run_list_unsettled``: the queued, running and waiting runs (not the ended nor the
    blocked ones), newest first, up to ``limit``. One statement: a run claimed between
    two calls is in each, queued and then running; read a status at a time, a claim
    between the ``running`` read and the ``queued`` one hides it from both (what
    ``TestEnv`` did until 2026-12-07: tests/testing/test_env_snapshot.py)."""
    assert await store.run_list_unsettled() == []
    for i, status in enumerate(("completed", "failed", "cancelled", "blocked")):
        await store.run_insert(run=run_record(f"end-{i}", status=status, now=T0 - 10 + i))
    await store.run_insert(run=run_record("timer", status="waiting", now=T0 + 1,
                                          available_at=T0 + 60))
    await store.run_insert(run=run_record("on-signal", status="waiting", now=T0 + 2))
    await start_and_claim(store, "busy", queue="elsewhere", now=T0 + 3)
    await store.run_insert(run=run_record("due", now=T0 + 4))

    async def listed(limit: int = 100) -> list[tuple[str, str]]:
        return [(r.run_id, r.status) for r in await store.run_list_unsettled(limit=limit)]

    before = await listed()
    assert before == [("due", "queued"), ("busy", "running"), ("on-signal", "waiting"),
                      ("timer", "waiting")]
    assert await listed(limit=2) == before[:2]
    running = await store.run_list(status="running")
    claimed = await store.run_claim(worker_id="w2", queues=["q"], limit=1, now=T0 + 5,
                                    lease_seconds=30.0)
    assert [c.run.run_id for c in claimed] == ["due"]
    queued = await store.run_list(status="queued")
    assert "due" not in {r.run_id for r in running + queued}  # (three reads: missed)
    assert await listed() == [("due", "running"), *before[1:]]  # (one: there)


async def _child(store: Store, parent: str, run_id: str, at: float, status: str,
                 cost: float, tokens: float) -> None:
    """A child run of ``parent`` created at ``at``, left ``status``, with its own cost and
    tokens in its metrics (a ``queued`` one, never claimed, has no metrics)."""
    import json

    from tether.store._port import Wait

    record = dataclasses.replace(run_record(run_id, queue=f"q-{run_id}", now=at),
                                 parent_run_id=parent)
    await store.run_insert(run=record)
    if status == "queued":
        return
    lease = (await store.run_claim(worker_id="w", queues=[f"q-{run_id}"], limit=1, now=at,
                                   lease_seconds=30.0))[0].lease
    await store.run_metrics_set(lease=lease, now=at, metrics=json.dumps(
        {"cost.usd": cost, "tokens.input": tokens, "tokens.output": 1.0}))
    if status == "waiting":
        await store.run_release(lease=lease, now=at, wait=Wait(None, "signal go", signal="go"))
    elif status != "running":
        await store.run_finish(lease=lease, status=status, result=None, error=None, now=at)


async def test_run_children_many_gives_each_parents_newest_children_and_counts_the_rest(
        store: Store) -> None:
    """``run_children_many``: for each parent asked for, in one query, its newest
    ``limit`` children (the runs ``run_search`` lists for it, in its order, whole) and
    the others counted by status with their own cost and tokens; checked against the runs
    made, with every status, ties of ``created_at``, grandchildren (not their
    grandparent's), many parents of 0 to 12 children, a parent with none, a run that
    does not exist, a parent asked for twice, and no parent at all."""
    from tether.store._port import ChildrenFigures

    statuses = ["completed", "failed", "cancelled", "blocked", "waiting", "running",
                "queued"]
    made: dict[str, list[tuple[float, str, str, float, float]]] = {}
    for i in range(17):
        status, cost, tokens = statuses[i % 7], 0.25 * (i + 1), float(10 * i)
        at = T0 + i // 2  # (ties of created_at: by id)
        await _child(store, "p", f"p.{i:02d}", at, status, cost, tokens)
        made.setdefault("p", []).append(
            (at, f"p.{i:02d}", status, 0.0 if status == "queued" else cost,
             0.0 if status == "queued" else tokens + 1.0))
    for i in range(3):  # grandchildren of p, under p.16
        await _child(store, "p.16", f"p.16.{i}", T0 + 100 + i, "completed", 1.0, 1.0)
        made.setdefault("p.16", []).append((T0 + 100 + i, f"p.16.{i}", "completed", 1.0, 2.0))
    for n in range(25):  # many parents, n % 13 children each, of several statuses
        for i in range(n % 13):
            rid, status = f"m{n:02d}.{i:02d}", statuses[(n + i) % 4]
            await store.run_insert(run=dataclasses.replace(
                run_record(rid, status=status, now=T0 - 50 + i % 5), parent_run_id=f"m{n:02d}"))
            made.setdefault(f"m{n:02d}", []).append((T0 - 50 + i % 5, rid, status, 0.0, 0.0))
    await store.run_insert(run=run_record("loner", status="completed"))

    def expected(parent: str, limit: int) -> tuple[list[str], dict[str, Any]]:
        kids = sorted(made.get(parent, []), reverse=True)
        rest: dict[str, Any] = {}
        for _, _, status, cost, tokens in kids[limit:]:
            n, c, t = rest.get(status, (0, 0.0, 0.0))
            rest[status] = (n + 1, c + cost, t + tokens)
        return [k[1] for k in kids[:limit]], rest

    def figures(got: dict[str, ChildrenFigures]) -> dict[str, Any]:
        return {s: (f.count, pytest.approx(f.cost), pytest.approx(f.tokens))
                for s, f in got.items()}

    parents = ["p", "p.16", "loner", "nobody", *(f"m{n:02d}" for n in range(25)), "p"]
    for limit in (0, 1, 5, 12, 100):
        got = await store.run_children_many(parents=parents, limit=limit)
        assert sorted(got) == sorted(set(parents))
        for parent in set(parents):
            runs, rest = expected(parent, limit)
            assert [r.run_id for r in got[parent].runs] == runs, (parent, limit)
            assert figures(got[parent].rest) == rest, (parent, limit)
            # The same runs and figures as the reads of one parent.
            assert got[parent].runs == await store.run_search(parent=parent, limit=limit) \
                if limit else not got[parent].runs
    assert got["p"].runs[0].metrics["cost.usd"] == 0.25 * 17  # whole runs, newest first
    assert await store.run_children_many(parents=[], limit=5) == {}
    assert (await store.run_children_many(parents=["nobody"], limit=5))["nobody"].runs == []


def test_sqlite_run_activity_searches_indexes(tmp_path: Path) -> None:
    """EXPLAIN QUERY PLAN of run_activity's queries on SQLite: a running run through
    tether_runs_status, a queue's due run and next wake through tether_runs_claim's
    range of that queue; never a scan of every run (the poll read them all)."""
    import apsw

    from tether.store import open_store
    from tether.store._sql import load_queries

    async def migrate() -> None:
        s = open_store(f"sqlite:///{tmp_path / 'plan.db'}")
        await s.open()
        await s.close()

    asyncio.run(migrate())
    conn = apsw.Connection(str(tmp_path / "plan.db"))
    queries = load_queries("tether.store.sqlite")
    for name, index in (("run_any_running", "tether_runs_status"),
                        ("queue_due", "tether_runs_claim (queue=? AND available_at"),
                        ("queue_next_wake", "tether_runs_claim (queue=? AND available_at")):
        plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + queries[name],
                                           {"queue": "q", "now": T0})
                if "tether_runs" in r[3]]
        assert plan and all(p.startswith("SEARCH") and index in p for p in plan), plan
    conn.close()
