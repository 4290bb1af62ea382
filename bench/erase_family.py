"""What erasing a run with a big family costs: one transaction for all of it.

    .venv/bin/python bench/erase_family.py [--db sqlite|postgres] [--children 1000]
                                           [--rounds 3]

A parent starts ``--children`` child runs (each: one step on a 200-byte input), waits
for them and ends; then ``run_erase`` of the parent erases it and every child in one
transaction (``tether erase``: a run's family). Per round it prints the erase's wall
time and, for scale, the erase of a lone run of the same shape. On SQLite that time is
how long the store's one writer is held (other runs' appends wait); on PostgreSQL how
long the family's rows stay locked.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import tether
from tether import App

PG = os.environ.get("TETHER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
#: The prefix of the PostgreSQL database each round creates and drops.
PREFIX = os.environ.get("TETHER_BENCH_DB_PREFIX", "tether_bench_")


@contextmanager
def store_url(db: str, round_no: int) -> Iterator[str]:
    """A fresh store: a SQLite file, or a PostgreSQL database dropped after."""
    if db == "sqlite":
        yield f"sqlite:///{tempfile.mkdtemp()}/erase.db"
        return
    import psycopg

    name = f"{PREFIX}erase_{os.getpid()}_{round_no}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_app(url: str) -> App:
    app = App(url)

    @app.step
    async def work(text: str) -> str:
        return text.upper()

    @app.workflow
    async def kid(text: str) -> str:
        return await work(text)

    @app.workflow
    async def parent(n: int) -> int:
        handles = [await tether.start_child(kid, f"{i:04d}" * 50) for i in range(n)]
        return len(await asyncio.gather(*(h.result() for h in handles)))

    return app


async def one_round(url: str, children: int) -> tuple[float, float]:
    app = make_app(url)
    async with app, app.worker(concurrency=50):
        rid = f"p-{uuid.uuid4().hex[:8]}"
        assert await (await app.start("parent", children, run_id=rid)).result(
            timeout=600) == children
        lone = f"l-{uuid.uuid4().hex[:8]}"
        await (await app.start("kid", "x" * 200, run_id=lone)).result(timeout=60)
        t0 = time.perf_counter()
        report = await app.store.run_erase(run_id=rid, now=app.clock.now())
        family = time.perf_counter() - t0
        assert report.runs == children + 1
        t0 = time.perf_counter()
        await app.store.run_erase(run_id=lone, now=app.clock.now())
        single = time.perf_counter() - t0
    return family, single


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--children", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    fam: list[float] = []
    one: list[float] = []
    for r in range(args.rounds):
        with store_url(args.db, r) as url:
            family, single = await one_round(url, args.children)
        fam.append(family)
        one.append(single)
        print(f"round {r + 1}: family of {args.children + 1} runs {family * 1000:.1f} ms, "
              f"one run {single * 1000:.1f} ms")
    print(f"median: family {statistics.median(fam) * 1000:.1f} ms "
          f"({statistics.median(fam) / (args.children + 1) * 1e6:.0f} us a run), "
          f"one run {statistics.median(one) * 1000:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
