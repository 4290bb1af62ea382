"""What an index on ``runs`` costs the write path, paired in one process: the same code on
a fresh store with the index and on one where it was dropped after migrating, in
alternating order, so that a loaded hour slows both alike.

    .venv/bin/python bench/index_cost.py --db sqlite   [--index tether_runs_workflow]
    .venv/bin/python bench/index_cost.py --db postgres [--index runs_workflow]
    .venv/bin/python bench/index_cost.py --db postgres --private --index run_events_key \
        --instead "CREATE INDEX run_events_run ON tether.run_events (run_id, txid, event_id)"

Each pair times ``bench/compare``'s two write workloads on each variant: ``throughput``
(``--runs`` runs of 10 trivial steps started with ``App.start_many``, a worker of that
concurrency, timed from the first start to the last result) and ``starts``
(``App.start_many`` of ``--starts`` runs, no worker). It prints each pair's rate, the process's
CPU time a run and the bytes written a run (SQLite: /proc/self/io ``wchar``, the WAL
this process writes; PostgreSQL: the server's WAL, by ``pg_current_wal_lsn``, ours alone
with ``--private``), the median ratios (with ÷ without) and
the index's size after the workload. With ``--instead SQL`` the other store is not
without the index but with it dropped and ``SQL`` run in its place (another shape of
index, such as the one it replaced): "without" below then means that store.
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
sys.path.insert(0, str(ROOT))  # (tests.chaos.pgcluster, for --private)

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
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def drop_all(self) -> None:
        if self.names:
            import psycopg

            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                for name in self.names:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.tmp.cleanup()


def _wal_lsn(scratch: Scratch, url: str) -> str:
    return str(scratch.sql(url, "SELECT pg_current_wal_lsn()::text")[0][0])


def _wal_since(scratch: Scratch, url: str, lsn: str) -> int:
    """WAL bytes the server wrote since ``lsn``: ours alone on a cluster of our own
    (--private); on a shared one, other clients' writes too."""
    return int(scratch.sql(url, f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}')")[0][0])


def _written() -> int:
    """Bytes this process passed to write() so far (/proc/self/io's wchar): on SQLite,
    the WAL frames its commits append and the checkpoints' copies (load does not move
    it, as it moves a time)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


async def _measure(scratch: Scratch, index: str, keep: bool, workload: str,
                   runs: int, starts: int,
                   instead: str | None = None) -> tuple[float, float, int, int | None]:
    url = scratch.new()
    app, wf = _app(url)
    await app._open()
    pg = scratch.db == "postgres"
    qualified = index if scratch.db == "sqlite" else f"tether.{index}"
    if not keep:
        scratch.sql(url, f"DROP INDEX {qualified}")
        if instead:
            scratch.sql(url, instead)
    if workload == "throughput":
        async with app.worker(concurrency=runs):
            await (await app.start(wf, 10)).result(timeout=60)  # warm up
            lsn = _wal_lsn(scratch, url) if pg else ""
            t0, c0, w0 = time.perf_counter(), time.process_time(), _written()
            handles = await app.start_many(wf, [(10,)] * runs)
            await asyncio.gather(*(h.result(timeout=900) for h in handles))
            rate = runs / (time.perf_counter() - t0)
            cpu, written = (time.process_time() - c0) / runs, (_written() - w0) // runs
            if pg:
                written = _wal_since(scratch, url, lsn) // runs
    else:
        await app.start_many(wf, [(10,)] * 10)  # warm up
        lsn = _wal_lsn(scratch, url) if pg else ""
        t0, c0, w0 = time.perf_counter(), time.process_time(), _written()
        await app.start_many(wf, [(10,)] * starts)
        rate = starts / (time.perf_counter() - t0)
        cpu, written = (time.process_time() - c0) / starts, (_written() - w0) // starts
        if pg:
            written = _wal_since(scratch, url, lsn) // starts
    await app.close()
    size = None
    if keep:
        if scratch.db == "sqlite":
            size = scratch.sql(url, "SELECT sum(pgsize) FROM dbstat WHERE name = "
                                    f"'{index}'")[0][0]
        else:
            size = scratch.sql(url, f"SELECT pg_relation_size('{qualified}')")[0][0]
    return rate, cpu, written, size


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
    parser.add_argument("--instead", metavar="SQL",
                        help="the other store: the index dropped and this statement run in "
                             "its place (default: the index dropped alone)")
    parser.add_argument("--private", action="store_true",
                        help="PostgreSQL: a cluster of our own (tests.chaos.pgcluster; root), "
                             "so that the WAL bytes are this benchmark's alone")
    args = parser.parse_args()
    index = args.index or ("tether_runs_workflow" if args.db == "sqlite" else "runs_workflow")
    cluster = None
    if args.private and args.db == "postgres":
        from tests.chaos.pgcluster import PrivateCluster

        cluster = PrivateCluster().start()
        args.admin_url = cluster.url()
    scratch = Scratch(args.db, args.admin_url, args.prefix)
    try:
        for workload in args.workloads.split(","):
            ratios, cpu_ratios, bytes_ratios = [], [], []
            for pair in range(args.pairs):
                figures: dict[bool, tuple[float, float, int, int | None]] = {}
                for keep in ((True, False) if pair % 2 == 0 else (False, True)):
                    figures[keep] = await _measure(scratch, index, keep, workload,
                                                   args.runs, args.starts, args.instead)
                w, wo = figures[True], figures[False]
                ratios.append(w[0] / wo[0])
                cpu_ratios.append(w[1] / wo[1])
                bytes_ratios.append(w[2] / wo[2] if wo[2] else 1.0)
                print(f"{args.db} {workload:<10} pair {pair + 1}: with {w[0]:7.0f}  without "
                      f"{wo[0]:7.0f} /s ({ratios[-1]:.3f});  CPU {w[1] * 1e6:6.0f} / "
                      f"{wo[1] * 1e6:6.0f} us a run;  written {w[2]} / {wo[2]} B a run"
                      + (f";  index {w[3] / 1024:.0f} KiB" if w[3] else ""), flush=True)
            for label, values in (("rate", ratios), ("CPU", cpu_ratios),
                                  ("written", bytes_ratios)):
                print(f"{args.db} {workload:<10} {label} with / without: median "
                      f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f}, "
                      f"{len(values)} pairs)", flush=True)
    finally:
        scratch.drop_all()
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    asyncio.run(main())
