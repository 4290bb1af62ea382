"""``GET /metrics`` on a large store: what each stats query and a scrape cost.

    .venv/bin/python bench/metrics_scrape.py --db postgres [--runs 200000] [--steps 10]
    .venv/bin/python bench/metrics_scrape.py --db sqlite   [--runs 200000] [--steps 10]

Builds a store of ``--runs`` ended runs of ``--steps`` finished steps each (plus a few
queued and running runs, a third of the runs with LLM metrics, an archived generation for
one run in 20) with SQL alone (PostgreSQL ``generate_series``, a recursive CTE on
SQLite), in a scratch database (``--admin-url``; dropped at the end, ``--keep`` keeps it)
or a temporary SQLite file. Then it times, best and median of ``--repeat``:

- each query of ``Store.store_stats`` alone (``stats_workflows``, ``stats_queues``,
  ``stats_steps``, ``stats_metrics``, ``stats_workers``, ``metric_totals``,
  ``stats_run_durations``), then ``store_stats`` itself (all of them in one snapshot);
- ``GET /metrics`` through ``tether serve``'s ASGI application (in process) with
  ``metrics_interval=0`` (every figure computed in the request, as before the metrics
  cache) and with the default interval (the cumulative figures computed in the
  background: the scrape reads the live gauges only), the first scrape after start apart.
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

#: One row of each table's text columns: what a real journal entry and run carry.
PAYLOAD = "x" * 200


def _pg_fill(url: str, runs: int, steps: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"""
            INSERT INTO tether.runs (run_id, workflow, queue, status, input, result,
                created_at, updated_at, finished_at, metrics, generation)
            SELECT 'r' || i, 'wf', 'default',
                   CASE WHEN i % 1000 = 0 THEN 'failed' ELSE 'completed' END,
                   '{PAYLOAD}', '{PAYLOAD}', i, i + 10, i + 10,
                   CASE WHEN i % 3 = 0 THEN '{{"llm.calls": 2, "tokens.input": 1000, '
                        '"tokens.output": 200, "cost.usd": 0.01}}' END,
                   CASE WHEN i % 20 = 0 THEN 1 ELSE 0 END
            FROM generate_series(1, {runs}) AS i""")
        conn.execute(f"""
            INSERT INTO tether.runs (run_id, workflow, queue, status, input, created_at,
                updated_at, available_at)
            SELECT 'q' || i, 'wf', 'q' || (i % 4), CASE WHEN i % 2 = 0 THEN 'queued'
                   ELSE 'running' END, '{PAYLOAD}', i, i, i
            FROM generate_series(1, 200) AS i""")
        conn.execute(f"""
            INSERT INTO tether.journal (run_id, position, kind, name, status, result,
                attempts, started_at, finished_at, args, fencing_token)
            SELECT 'r' || i, p, 'step', 'step_' || p, 'completed', '{PAYLOAD}', 1,
                   i + p, i + p + (i * 7 + p * 13) % 5000 / 1000.0, '[]', 1
            FROM generate_series(1, {runs}) AS i, generate_series(1, {steps}) AS p""")
        conn.execute(f"""
            INSERT INTO tether.journal_archive (run_id, generation, position, kind, name,
                status, result, attempts, started_at, finished_at, args, fencing_token)
            SELECT 'r' || i, 0, p, 'step', 'step_' || p, 'completed', '{PAYLOAD}', 1,
                   i + p, i + p + 0.5, '[]', 1
            FROM generate_series(20, {runs}, 20) AS i, generate_series(1, {steps}) AS p""")
        conn.execute("VACUUM ANALYZE")


def _sqlite_fill(path: str, runs: int, steps: int) -> None:
    import apsw

    conn = apsw.Connection(path)
    conn.execute("BEGIN")
    conn.execute(f"""
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {runs})
        INSERT INTO tether_runs (run_id, workflow, queue, status, input, result,
            created_at, updated_at, finished_at, metrics, generation)
        SELECT 'r' || i, 'wf', 'default',
               CASE WHEN i % 1000 = 0 THEN 'failed' ELSE 'completed' END,
               '{PAYLOAD}', '{PAYLOAD}', i, i + 10, i + 10,
               CASE WHEN i % 3 = 0 THEN '{{"llm.calls": 2, "tokens.input": 1000, '
                    || '"tokens.output": 200, "cost.usd": 0.01}}' END,
               CASE WHEN i % 20 = 0 THEN 1 ELSE 0 END
        FROM n""")
    conn.execute(f"""
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
        INSERT INTO tether_runs (run_id, workflow, queue, status, input, created_at,
            updated_at, available_at)
        SELECT 'q' || i, 'wf', 'q' || (i % 4), CASE WHEN i % 2 = 0 THEN 'queued'
               ELSE 'running' END, '{PAYLOAD}', i, i, i FROM n""")
    conn.execute(f"""
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {runs}),
             p(p) AS (SELECT 1 UNION ALL SELECT p + 1 FROM p WHERE p < {steps})
        INSERT INTO tether_journal (run_id, position, kind, name, status, result,
            attempts, started_at, finished_at, args, fencing_token)
        SELECT 'r' || i, p, 'step', 'step_' || p, 'completed', '{PAYLOAD}', 1,
               i + p, i + p + ((i * 7 + p * 13) % 5000) / 1000.0, '[]', 1
        FROM n, p""")
    conn.execute(f"""
        WITH RECURSIVE n(i) AS (SELECT 20 UNION ALL SELECT i + 20 FROM n
                                WHERE i + 20 <= {runs}),
             p(p) AS (SELECT 1 UNION ALL SELECT p + 1 FROM p WHERE p < {steps})
        INSERT INTO tether_journal_archive (run_id, generation, position, kind, name,
            status, result, attempts, started_at, finished_at, args, fencing_token)
        SELECT 'r' || i, 0, p, 'step', 'step_' || p, 'completed', '{PAYLOAD}', 1,
               i + p, i + p + 0.5, '[]', 1 FROM n, p""")
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def _stats(times: list[float]) -> str:
    return f"best {min(times) * 1000:8.1f} ms  median {statistics.median(times) * 1000:8.1f} ms"


async def _time_queries(store: Any, repeat: int) -> None:
    from tether.store._port import WORKER_STALE

    names = ["stats_workflows", "stats_queues", "stats_steps", "stats_metrics",
             "stats_workers", "metric_totals", "stats_run_durations"]
    sqlite = not hasattr(store, "_one")
    if sqlite:
        from tether.store.sqlite._serve import Q
    else:
        from tether.store.postgres._serve import SERVE_QUERIES as Q
    for name in (n for n in names if n in Q):  # (an earlier version has fewer)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            if sqlite:
                params = {"alive_since": time.time() - WORKER_STALE}
                await store._read(lambda c, n=name, p=params: c.execute(Q[n], p).fetchall())
            else:
                params = {"since": time.time() - WORKER_STALE}
                await store._one(name, params if name == "stats_workers" else None)
            times.append(time.perf_counter() - t)
        print(f"  {name:<19} {_stats(times)}")
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        await store.store_stats(now=time.time())
        times.append(time.perf_counter() - t)
    print(f"  {'store_stats':<19} {_stats(times)}")


async def _time_scrapes(url: str, repeat: int) -> None:
    import httpx

    from tether import App
    from tether.serve import create_app

    for label, interval in (("in the request (interval 0)", 0.0),
                            ("cached (default interval)", None)):
        app = App(url=url)
        await app._open()
        kwargs: dict[str, Any] = {} if interval is None else {"metrics_interval": interval}
        try:
            asgi = create_app(app, mcp=False, **kwargs)
        except TypeError:  # (before the metrics cache: always in the request)
            if interval is None:
                await app.close()
                continue
            asgi = create_app(app, mcp=False)
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                     timeout=120) as http:
            t = time.perf_counter()
            first = await http.get("/metrics")
            first_s = time.perf_counter() - t
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                r = await http.get("/metrics")
                times.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
        await app.close()
        print(f"  GET /metrics {label}: first {first.status_code} in {first_s * 1000:.1f} ms;"
              f" then {_stats(times)}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--prefix", default="bench_", help="scratch database name prefix")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    from tether.store import open_store

    tmp = None
    name = ""
    if args.db == "postgres":
        import psycopg

        name = f"{args.prefix}metrics_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{args.admin_url.rsplit('/', 1)[0]}/{name}"
    else:
        tmp = tempfile.TemporaryDirectory()
        url = f"sqlite:///{tmp.name}/big.db"
    try:
        store = open_store(url)
        await store.open()
        await store.close()
        t = time.perf_counter()
        if args.db == "postgres":
            _pg_fill(url, args.runs, args.steps)
        else:
            _sqlite_fill(url.removeprefix("sqlite:///"), args.runs, args.steps)
        archived = args.runs // 20 * args.steps
        print(f"{args.db}: {args.runs:,} runs, {args.runs * args.steps + archived:,} finished "
              f"steps, built in {time.perf_counter() - t:.0f} s")
        store = open_store(url)
        await store.open()
        try:
            await _time_queries(store, args.repeat)
        finally:
            await store.close()
        await _time_scrapes(url, args.repeat)
        if args.keep:
            print(f"kept: {url}")
    finally:
        if args.db == "postgres" and not args.keep:
            import psycopg

            with psycopg.connect(args.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
