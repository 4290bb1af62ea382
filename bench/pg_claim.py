"""PostgreSQL claim cost with and without a queue concurrency limit.

    .venv/bin/python bench/pg_claim.py [--admin-url URL] [--runs 5000] [--claims 1000]
                                       [--batch 1]

Creates a scratch database (dropped at the end) with ``--runs`` queued runs on a queue
without a limit, as many on a queue with a limit (high enough never to stop a claim,
so both claim the same number of runs), and a third as many waiting runs with future
timers on the limited queue (what the held-runs count must not walk). Reports the mean
and p50/p99 latency of ``run_claim`` (``--batch`` runs per claim, journals loaded) for:

- ``before``: the claim as it was before queue limits (one UPDATE ... SKIP LOCKED and
  the journals statement in one pipeline), kept here as SQL for the comparison;
- ``unlimited``: today's claim on the queue without a limit (lock statement finds no
  row, nothing waits);
- ``limited``: today's claim on the limited queue (locks its row, counts held runs).

Claimed runs are finished right away, as a worker would, so held counts stay small.
Sessions run with ``synchronous_commit=off``: what is compared is the statements' cost,
which a WAL flush per commit (milliseconds on a shared disk) would drown.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tether._types import ClaimedRun, Lease  # noqa: E402
from tether.store._sql import run_from_row  # noqa: E402
from tether.store.postgres import PostgresStore  # noqa: E402

T0 = 1_000_000.0

BEFORE = """
UPDATE {schema}.runs
SET status = 'running', owner = %(worker_id)s, fencing_token = fencing_token + 1,
    available_at = %(lease_expires)s, updated_at = %(now)s
WHERE run_id IN (
    SELECT run_id FROM {schema}.runs
    WHERE queue = ANY(%(queues)s) AND available_at <= %(now)s
    ORDER BY available_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING run_id, workflow, queue, status, input, created_at, updated_at, result, error,
          owner, fencing_token, available_at, cancel_requested, waiting_for, status_info,
          parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
          version, forked_from, forked_at, generation, erased_at, crashes, crashes_seen,
          crash_progress"""


class BeforeStore(PostgresStore):
    """The claim without the limit statement and CTEs (the pre-0002 query)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._q["run_claim_before"] = BEFORE.replace("{schema}", self.schema)

    async def run_claim(self, *, worker_id: str, queues: list[str], limit: int, now: float,
                        lease_seconds: float) -> list[ClaimedRun]:
        params = {"worker_id": worker_id, "queues": queues, "limit": limit, "now": now,
                  "lease_expires": now + lease_seconds}
        rows, _ = await self._txn([("run_claim_before", params),
                                   ("run_claim_journals", params)])
        runs = [run_from_row(r) for r in rows]
        return [ClaimedRun(run=r, lease=Lease(r.run_id, worker_id, r.fencing_token))
                for r in runs]


async def fill(url: str, runs: int) -> None:
    store = PostgresStore(url)
    await store.open()
    try:
        await store.queue_limit_set(queue="lim", limit=1_000_000, now=T0)
    finally:
        await store.close()
    rows: list[tuple[Any, ...]] = []
    for queue in ("free", "lim"):
        rows += [(f"{queue}-{i}", "bench", queue, "queued", "[[], {}]", T0 + i * 1e-3,
                  T0, T0 + i * 1e-3) for i in range(runs)]
    rows += [(f"sleep-{i}", "bench", "lim", "waiting", "[[], {}]", T0, T0, T0 + 1e6)
             for i in range(runs // 3)]
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO tether.runs (run_id, workflow, queue, status, input, "
                "created_at, updated_at, available_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                rows)
        conn.execute("ANALYZE tether.runs")


async def measure(store: PostgresStore, queue: str, claims: int, batch: int) -> list[float]:
    times: list[float] = []
    for _ in range(claims):
        now = T0 + 10_000 + time.monotonic()  # moves on, as a worker's clock does
        t = time.perf_counter()
        got = await store.run_claim(worker_id="bench", queues=[queue], limit=batch, now=now,
                                    lease_seconds=30)
        times.append(time.perf_counter() - t)
        for c in got:
            await store.run_finish(lease=c.lease, status="completed", result="1",
                                   error=None, now=now)
    return times


def report(label: str, times: list[float], batch: int) -> None:
    us = sorted(t * 1e6 for t in times)
    print(f"{label:10} claim of {batch}: mean {statistics.mean(us):7.0f} µs  "
          f"p50 {us[len(us) // 2]:7.0f} µs  p99 {us[int(len(us) * 0.99) - 1]:7.0f} µs")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--claims", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    print(" ".join(["python", *sys.argv]))
    name = f"tether_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{args.admin_url.rsplit('/', 1)[0]}/{name}"
    try:
        await fill(url, args.runs)
        claims = min(args.claims, args.runs // (2 * args.batch))
        # The query's cost, not the disk's: commits do not wait for the WAL flush.
        fast = f"{url}?options=-c%20synchronous_commit%3Doff"
        stores = {"before": BeforeStore(fast), "unlimited": PostgresStore(fast),
                  "limited": PostgresStore(fast)}
        for store in stores.values():
            await store.open()
        try:
            # Interleave the three so that table growth and caches weigh on each alike.
            results: dict[str, list[float]] = {k: [] for k in stores}
            for _ in range(5):
                for label, store in stores.items():
                    queue = "lim" if label == "limited" else "free"
                    results[label] += await measure(store, queue, claims // 5, args.batch)
            for label, times in results.items():
                report(label, times, args.batch)
        finally:
            for store in stores.values():
                await store.close()
    finally:
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
