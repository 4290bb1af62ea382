"""PostgreSQL store microbenchmark: the journal append hot path.

    .venv/bin/python bench/pg_store.py [--admin-url URL] [--appends 2000] [--runs 1000]
                                       [--per-run 10] [--sqlite]

Creates a scratch database (dropped at the end) and reports:
- sequential ``journal_append`` latency (µs: mean, p50, p99) of one run, each append
  awaited before the next (what one workflow's steps cost the store);
- concurrent appends/s from ``--runs`` runs each appending ``--per-run`` entries one after
  the other, all runs at once in one process (group commit at work), with the number of
  transactions and the mean batch size;
- round trips per append in both cases, counted on the wire by a TCP proxy that parses
  the client's protocol messages (tests/store/rtproxy.py); latencies are measured
  without the proxy;
- the client CPU (user + system, this process) per sequential and per concurrent append,
  and, for scale, per one-row INSERT (prepared, autocommit) sent with psycopg's
  synchronous and asynchronous connections: what any store on psycopg pays per statement;
- concurrent starts/s: ``--runs`` ``run_insert`` calls at once (concurrent ``App.start``).

``--sqlite`` runs the same workload on a SqliteStore in a temporary folder, for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.store.rtproxy import RoundTripProxy  # noqa: E402

from tether._types import JournalEntry, Lease, RunRecord  # noqa: E402
from tether.store import Store, open_store  # noqa: E402

T0 = 1_000_000.0


def run_record(run_id: str) -> RunRecord:
    return RunRecord(run_id=run_id, workflow="bench", queue="bench", status="queued",
                     input="[[], {}]", created_at=T0, updated_at=T0, available_at=T0)


def step_entry(position: int) -> JournalEntry:
    # About the size of a small step's record: name, JSON arguments and result.
    return JournalEntry(position=position, kind="step", name="fetch_page", status="ok",
                        result='{"status": 200, "title": "Example Domain", "bytes": 1256}',
                        args='[["https://example.com/page"], {}]', attempts=1,
                        started_at=T0, finished_at=T0)


async def claim_runs(store: Store, prefix: str, n: int) -> list[Lease]:
    for i in range(n):
        await store.run_insert(run=run_record(f"{prefix}{i}"))
    leases: list[Lease] = []
    while len(leases) < n:
        claimed = await store.run_claim(worker_id="bench", queues=["bench"], limit=500,
                                        now=T0, lease_seconds=3600)
        leases += [c.lease for c in claimed if c.run.run_id.startswith(prefix)]
    return leases


def cpu() -> float:
    """User + system CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def bare_insert_cpu(url: str, n: int) -> tuple[float, float]:
    """µs of client CPU per one-row INSERT (prepared, autocommit): sync and async."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_bare (id int PRIMARY KEY, v text)")
        conn.execute("TRUNCATE bench_bare")
        for i in range(20):
            conn.execute("INSERT INTO bench_bare VALUES (%s, %s)", (-1 - i, "x"), prepare=True)
        c0 = cpu()
        for i in range(n):
            conn.execute("INSERT INTO bench_bare VALUES (%s, %s)", (i, "x"), prepare=True)
        sync_us = (cpu() - c0) / n * 1e6
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as aconn:
        for i in range(20):
            await aconn.execute("INSERT INTO bench_bare VALUES (%s, %s)", (-100 - i, "x"),
                                prepare=True)
        c0 = cpu()
        for i in range(n):
            await aconn.execute("INSERT INTO bench_bare VALUES (%s, %s)", (n + i, "x"),
                                prepare=True)
        async_us = (cpu() - c0) / n * 1e6
    return sync_us, async_us


async def concurrent_starts(store: Store, runs: int) -> float:
    """Seconds for ``runs`` run_insert calls at once."""
    prefix = f"start-{uuid.uuid4().hex[:6]}-"
    t = time.perf_counter()
    await asyncio.gather(*(store.run_insert(run=run_record(f"{prefix}{i}"))
                           for i in range(runs)))
    return time.perf_counter() - t


async def sequential(store: Store, appends: int) -> list[float]:
    (lease,) = await claim_runs(store, f"seq-{uuid.uuid4().hex[:6]}-", 1)
    for pos in range(20):  # warm up: pool connection, prepared statements
        await store.journal_append(lease=lease, entry=step_entry(pos))
    times = []
    for pos in range(20, 20 + appends):
        t = time.perf_counter()
        await store.journal_append(lease=lease, entry=step_entry(pos))
        times.append(time.perf_counter() - t)
    return times


async def concurrent(store: Store, runs: int, per_run: int) -> float:
    leases = await claim_runs(store, f"con-{uuid.uuid4().hex[:6]}-", runs)

    async def one(lease: Lease) -> None:
        for pos in range(per_run):
            await store.journal_append(lease=lease, entry=step_entry(pos))

    t = time.perf_counter()
    await asyncio.gather(*(one(lease) for lease in leases))
    return time.perf_counter() - t


async def round_trips(url: str, runs: int, per_run: int) -> tuple[float, float]:
    """Round trips per append, sequential and concurrent, counted through the proxy."""
    proxy = await RoundTripProxy().start()
    store = open_store(proxy.url(url))
    await store.open()
    try:
        (lease,) = await claim_runs(store, "rt-seq-", 1)
        for pos in range(20):
            await store.journal_append(lease=lease, entry=step_entry(pos))
        proxy.reset()
        for pos in range(20, 220):
            await store.journal_append(lease=lease, entry=step_entry(pos))
        seq = proxy.round_trips / 200
        leases = await claim_runs(store, "rt-con-", runs)
        proxy.reset()

        async def one(lease: Lease) -> None:
            for pos in range(per_run):
                await store.journal_append(lease=lease, entry=step_entry(pos))

        await asyncio.gather(*(one(lease) for lease in leases))
        return seq, proxy.round_trips / (runs * per_run)
    finally:
        await store.close()
        await proxy.close()


def row(label: str, value: str) -> str:
    return f"  {label:<46} {value:>22}"


async def bench(name: str, url: str, args: argparse.Namespace, *, count_rt: bool) -> None:
    store = open_store(url)
    await store.open()
    try:
        c0 = cpu()
        times = await sequential(store, args.appends)
        seq_cpu = (cpu() - c0) / (args.appends + 20) * 1e6
        writer: Any = getattr(store, "_writer", None)
        before = (writer.batches, writer.entries) if writer is not None else None
        c0 = cpu()
        elapsed = await concurrent(store, args.runs, args.per_run)
        total = args.runs * args.per_run
        con_cpu = (cpu() - c0) / total * 1e6
        after = (writer.batches, writer.entries) if writer is not None else None
        starts = await concurrent_starts(store, args.runs)
    finally:
        await store.close()
    us = sorted(t * 1e6 for t in times)
    print(f"\n{name}")
    print(row("sequential journal_append, mean", f"{statistics.fmean(us):,.0f} µs"))
    print(row("sequential journal_append, p50 / p99",
              f"{us[len(us) // 2]:,.0f} / {us[int(len(us) * 0.99)]:,.0f} µs"))
    print(row("  client CPU per sequential append", f"{seq_cpu:,.0f} µs"))
    print(row(f"concurrent: {args.runs} runs x {args.per_run} appends",
              f"{total / elapsed:,.0f} appends/s"))
    print(row("  client CPU per concurrent append", f"{con_cpu:,.1f} µs"))
    if before is not None and after is not None:
        batches = after[0] - before[0]
        print(row("  transactions, mean batch", f"{batches:,} / {total / batches:,.1f}"))
    print(row(f"concurrent starts: {args.runs} run_insert at once",
              f"{args.runs / starts:,.0f} starts/s"))
    if count_rt:
        sync_us, async_us = await bare_insert_cpu(url, args.appends)
        print(row("one-row INSERT, client CPU: sync / async psycopg",
                  f"{sync_us:,.0f} / {async_us:,.0f} µs"))
        seq_rt, con_rt = await round_trips(url, args.runs, args.per_run)
        print(row("round trips per append, sequential", f"{seq_rt:.2f}"))
        print(row("round trips per append, concurrent", f"{con_rt:.3f}"))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--per-run", type=int, default=10)
    parser.add_argument("--sqlite", action="store_true", help="also run on SQLite")
    args = parser.parse_args()

    dbname = f"tether_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
        version = conn.execute("SHOW server_version").fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
    url = f"{args.admin_url.rsplit('/', 1)[0]}/{dbname}"
    print(f"PostgreSQL {version[0] if version else '?'} "
          f"(synchronous_commit={sync[0] if sync else '?'}), psycopg {psycopg.__version__}")
    try:
        await bench("PostgresStore", url, args, count_rt=True)
    finally:
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    if args.sqlite:
        with tempfile.TemporaryDirectory() as folder:
            await bench("SqliteStore (reference)", f"sqlite:///{folder}/bench.db", args,
                        count_rt=False)


if __name__ == "__main__":
    asyncio.run(main())
