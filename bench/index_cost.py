"""What an index on ``runs`` costs the write path, paired in one process: the same code on
a fresh store with the index and on one where it was dropped after migrating, in
alternating order, so that a loaded hour slows both alike.

    .venv/bin/python bench/index_cost.py --db sqlite   [--index tether_runs_workflow]
    .venv/bin/python bench/index_cost.py --db postgres [--index runs_workflow]

Each pair times ``bench/compare``'s two write workloads on each variant: ``throughput``
(``--runs`` runs of 10 trivial steps started with ``App.start_many``, a worker of that
concurrency, timed from the first start to the last result) and ``starts``
(``App.start_many`` of ``--starts`` runs, no worker). It prints each pair, the median
ratio (with ÷ without: below 1 means the index costs) and the index's size after the
throughput workload.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tether import App  # noqa: E402


def _app(url: str) -> tuple[App, Any]:
    app = App(url)

    @app.step
    async def noop(i: int) -> int:
        return i

    @app.workflow
    async def sequential(n: int) -> int:
        total = 0
        for i in range(n):
            total += await noop(i)
        return total

    return app, sequential


class Scratch:
    """A fresh store per measurement: a new SQLite file or PostgreSQL database."""

    def __init__(self, db: str, admin_url: str, prefix: str) -> None:
        self.db, self.admin_url, self.prefix = db, admin_url, prefix
        self.tmp = tempfile.TemporaryDirectory()
        self.names: list[str] = []

    def new(self) -> str:
        if self.db == "sqlite":
            return f"sqlite:///{self.tmp.name}/{uuid.uuid4().hex[:8]}.db"
        import psycopg

        name = f"{self.prefix}index_cost_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return f"{self.admin_url.rsplit('/', 1)[0]}/{name}"

    def sql(self, url: str, statement: str) -> Any:
        if self.db == "sqlite":
            import apsw

            conn = apsw.Connection(url.removeprefix("sqlite:///"))
            try:
                return conn.execute(statement).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            return conn.execute(statement).fetchall()

    def drop_all(self) -> None:
        if self.names:
            import psycopg

            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                for name in self.names:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.tmp.cleanup()


async def _measure(scratch: Scratch, index: str, keep: bool, workload: str,
                   runs: int, starts: int) -> tuple[float, int | None]:
    url = scratch.new()
    app, wf = _app(url)
    await app._open()
    qualified = index if scratch.db == "sqlite" else f"tether.{index}"
    if not keep:
        scratch.sql(url, f"DROP INDEX {qualified}")
    if workload == "throughput":
        async with app.worker(concurrency=runs):
            await (await app.start(wf, 10)).result(timeout=60)  # warm up
            t0 = time.perf_counter()
            handles = await app.start_many(wf, [(10,)] * runs)
            await asyncio.gather(*(h.result(timeout=900) for h in handles))
            rate = runs / (time.perf_counter() - t0)
    else:
        await app.start_many(wf, [(10,)] * 10)  # warm up
        t0 = time.perf_counter()
        await app.start_many(wf, [(10,)] * starts)
        rate = starts / (time.perf_counter() - t0)
    await app.close()
    size = None
    if keep:
        if scratch.db == "sqlite":
            size = scratch.sql(url, "SELECT sum(pgsize) FROM dbstat WHERE name = "
                                    f"'{index}'")[0][0]
        else:
            size = scratch.sql(url, f"SELECT pg_relation_size('{qualified}')")[0][0]
    return rate, size


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="sqlite")
    parser.add_argument("--index", help="default: the runs-by-workflow index")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--starts", type=int, default=10000)
    parser.add_argument("--workloads", default="throughput,starts")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--prefix", default="bench_", help="scratch database name prefix")
    args = parser.parse_args()
    index = args.index or ("tether_runs_workflow" if args.db == "sqlite" else "runs_workflow")
    scratch = Scratch(args.db, args.admin_url, args.prefix)
    try:
        for workload in args.workloads.split(","):
            ratios = []
            for pair in range(args.pairs):
                figures: dict[bool, tuple[float, int | None]] = {}
                for keep in ((True, False) if pair % 2 == 0 else (False, True)):
                    figures[keep] = await _measure(scratch, index, keep, workload,
                                                   args.runs, args.starts)
                ratio = figures[True][0] / figures[False][0]
                ratios.append(ratio)
                size = figures[True][1]
                print(f"{args.db} {workload:<10} pair {pair + 1}: with {figures[True][0]:8.0f}"
                      f"  without {figures[False][0]:8.0f} /s  ratio {ratio:.3f}"
                      + (f"  index {size / 1024:.0f} KiB" if size else ""), flush=True)
            print(f"{args.db} {workload:<10} median ratio {statistics.median(ratios):.3f} "
                  f"({min(ratios):.3f}-{max(ratios):.3f}, {len(ratios)} pairs)", flush=True)
    finally:
        scratch.drop_all()


if __name__ == "__main__":
    asyncio.run(main())
