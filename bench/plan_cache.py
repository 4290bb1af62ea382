"""The control plane's PostgreSQL queries after warm-up: each one executed many times on
one pooled connection, as a polling dashboard or a paging API client does.

    .venv/bin/python bench/plan_cache.py --url URL [--calls 24] [--only NAME,...]

psycopg prepares a statement after five executions on a connection; PostgreSQL may then
plan it once for any parameter values (a generic plan) after five more. A query whose
generic plan is much worse than the plans made with its values is fast for its first
calls and slow from then on. For each case (the store's call with alternating realistic
parameters: a common and a rare value, a first page and a deep cursor) this prints the
median of the first 8 calls and of the last 8, the slowest, and what
``pg_prepared_statements`` says of the statements that connection prepared (generic
plans used, custom plans made). ``mix`` cases run one call many times and then another
through the same statement: what a dashboard on ``queue=`` leaves to the next caller.

The store: ``bench/runs_list.py --keep`` (1.1 M runs), then ``--extras`` here once adds
what the runs list does not build: 100,000 children of 50,000 parents, approvals among
the waiting runs, 1.1 M run events over 2,200 runs and one run of 20,000, 50 schedules,
and a queue ``rare`` (0.1 % of the runs).
``--code DIR`` imports Tether from ``DIR/src`` (the code before).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

EXTRAS = """
UPDATE tether.runs r SET parent_run_id = md5((i - (i % 22) + 4)::text),
                         parent_position = i % 22
FROM generate_series(1, {runs}) AS i WHERE r.run_id = md5(i::text) AND i % 22 IN (5, 6);
UPDATE tether.runs SET waiting_for = CASE WHEN created_at::bigint % 5 = 0
                                          THEN 'signal approval' ELSE 'timer' END
WHERE status = 'waiting';
INSERT INTO tether.run_events (run_id, kind, data)
SELECT md5(i::text), CASE WHEN j % 3 = 0 THEN 's' ELSE 'chunk' END,
       CASE WHEN j % 3 = 0 THEN 'running' ELSE '"some streamed text of a chunk"' END
FROM generate_series(1, {runs}, 500) AS i, generate_series(1, 500) AS j;
INSERT INTO tether.run_events (run_id, kind, data)
SELECT md5(({runs} - 10)::text), CASE WHEN j % 2 = 0 THEN 'o' ELSE 'chunk' END,
       CASE WHEN j % 2 = 0 THEN (j / 2)::text || ' 1 completed llm call' ELSE '"c"' END
FROM generate_series(1, 20000) AS j;
INSERT INTO tether.schedules (name, workflow, queue, cron, timezone, input, overlap,
                              catchup, catchup_max, created_at, updated_at, next_tick)
SELECT 's' || i, 'report', 'default', '*/5 * * * *', 'UTC', '[]', 'skip', 'none', 1, 0, 0, 0
FROM generate_series(1, 50) AS i;
UPDATE tether.runs SET queue = 'rare' WHERE created_at::bigint % 1000 = 999;
"""


def _id(i: int) -> str:
    return hashlib.md5(str(i).encode()).hexdigest()


Call = Callable[[Any, int], Awaitable[Any]]


def _cases(runs: int, mid: float) -> dict[str, list[Call]]:
    """name: the calls made in turn (call i is calls[i % len(calls)](store, i))."""
    deep = (mid, "")
    big = _id(runs - 10)
    with_events = [_id(i) for i in range(1, runs, 500)]
    parents = [_id(i - (i % 22) + 4) for i in range(22 * 7, runs, 22 * 997)]

    def search(**kw: Any) -> Call:
        return lambda s, i: s.run_search(limit=51, **kw)

    return {
        "run_search_all first/deep": [search(), search(before=deep)],
        "status completed/cancelled, first/deep": [
            search(status="completed"), search(status="cancelled", before=deep),
            search(status="completed", before=deep), search(status="cancelled")],
        "status running/waiting/queued": [
            search(status="running"), search(status="waiting"), search(status="queued")],
        "parent (children of a run)": [
            lambda s, i: s.run_search(parent=parents[i % len(parents)], limit=100)],
        "queue bulk/default": [search(queue="bulk"), search(queue="default", before=deep)],
        "queue=default polled": [search(queue="default")],
        "queue default/rare/absent": [
            search(queue="default"), search(queue="rare"), search(queue="absent")],
        "status=failed queue=bulk (none) / default": [
            search(queue="bulk", status="failed"), search(queue="default", status="failed")],
        "q abc/abcdef": [search(text="abc"), search(text="abcdef")],
        "mix: queue=bulk x12, then status=completed": (
            [search(queue="bulk")] * 12 + [search(status="completed", before=deep)] * 12),
        "mix: queue=bulk x12, then parent": (
            [search(queue="bulk")] * 12
            + [lambda s, i: s.run_search(parent=parents[i % len(parents)], limit=100)] * 12),
        "mix: q=abc x12, then status=failed deep": (
            [search(text="abc")] * 12 + [search(status="failed", before=deep)] * 12),
        "approvals first/next": [
            lambda s, i: s.run_list_awaiting_approval(limit=51),
            lambda s, i: s.run_list_awaiting_approval(limit=51, after=(mid, ""))],
        "run_events_read from 0 / deep cursor": [
            lambda s, i: s.run_events_read(run_id=with_events[i % 50], after=None),
            lambda s, i: s.run_events_read(run_id=big, after="18000000")],
        "run_events_read big run / none": [
            lambda s, i: s.run_events_read(run_id=big, after=None),
            lambda s, i: s.run_events_read(run_id=_id(3), after=None)],
        "run_events_latest any / chunk": [
            lambda s, i: s.run_events_latest(run_id=big),
            lambda s, i: s.run_events_latest(run_id=with_events[i % 50], kind="chunk"),
            lambda s, i: s.run_events_latest(run_id=_id(3))],
        "store_stats (/metrics)": [lambda s, i: s.store_stats(now=time.time())],
        "store_live_stats": [lambda s, i: s.store_live_stats(now=time.time())],
        "schedules list/get": [lambda s, i: s.schedule_list(),
                               lambda s, i: s.schedule_get(f"s{i % 50}")],
        "run detail (run_get, journal, attempts)": [
            lambda s, i: s.run_get(_id(1 + i * 7919 % runs)),
            lambda s, i: s.journal_read(_id(1 + i * 7919 % runs)),
            lambda s, i: s.attempt_list(_id(1 + i * 7919 % runs))],
        "workflow_list": [lambda s, i: s.workflow_list()],
    }


async def _prepared(store: Any) -> list[tuple[str, int, int]]:
    async with store._pool.connection() as conn:
        cur = await conn.execute(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
        return [(" ".join(str(s).split())[:70], int(g), int(c))
                for s, g, c in await cur.fetchall()]


async def _case(url: str, calls: list[Call], n: int) -> None:
    from tether.store import open_store

    store = open_store(url, pool_min=1, pool_max=1)  # every call on the one connection
    await store.open()
    try:
        times = []
        for i in range(n):
            t = time.perf_counter()
            await calls[i % len(calls)](store, i)
            times.append(time.perf_counter() - t)
        ms = [t * 1000 for t in times]
        print(f"    first 8 median {statistics.median(ms[:8]):8.1f} ms   last 8 median "
              f"{statistics.median(ms[-8:]):8.1f} ms   max {max(ms):8.1f} ms", flush=True)
        for text, generic, custom in await _prepared(store):
            print(f"    prepared: generic {generic:3} custom {custom:3}  {text}")
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--runs", type=int, default=1_100_000, help="as built")
    parser.add_argument("--calls", type=int, default=24)
    parser.add_argument("--only", default="", help="case names containing one of these")
    parser.add_argument("--extras", action="store_true", help="add the extras (once)")
    parser.add_argument("--code", type=Path, default=ROOT)
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve() / "src"))
    if args.extras:
        import psycopg

        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(EXTRAS.format(runs=int(args.runs)))  # (several statements)
            conn.execute("VACUUM ANALYZE tether.runs")
            conn.execute("VACUUM ANALYZE tether.run_events")
    from tether.store import open_store

    store = open_store(args.url)
    await store.open()
    newest = await store.run_search(limit=1)
    await store.close()
    mid = newest[0].created_at - 90 * 86400
    wanted = [w for w in args.only.split(",") if w]
    for name, calls in _cases(args.runs, mid).items():
        if wanted and not any(w in name for w in wanted):
            continue
        print(f"  {name}", flush=True)
        await _case(args.url, calls, args.calls)


if __name__ == "__main__":
    asyncio.run(main())
