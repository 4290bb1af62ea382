"""The runs list (``Store.run_search``: GET /api/v1/runs, the web UI's runs page) on a
large store: each filter's first page and a later one.

    .venv/bin/python bench/runs_list.py --db postgres [--runs 1100000] [--keep]
    .venv/bin/python bench/runs_list.py --db sqlite   [--runs 1100000] [--keep]
    .venv/bin/python bench/runs_list.py --url URL     # time a store kept before

Builds ``--runs`` runs over 180 days with SQL alone (PostgreSQL ``generate_series``, a
recursive CTE on SQLite) in a scratch database (``--admin-url``; dropped at the end unless
``--keep``) or a temporary SQLite file (``--keep``: a file in the current directory).
Workflows: ``chat`` 70 %, ``ingest`` 25 %, ``report`` 4.9 %, ``audit`` 0.1 % (the rare
one); statuses: 2 % failed, 1 % cancelled, 5,000 waiting, 2,000 queued, 20 running, the
rest completed; 200-byte input and result, run ids of 32 hex digits as Tether makes them.

Then it times, best and median of ``--repeat`` (after one call that warms the cache),
``run_search`` with ``limit=51`` (the API's page of 50 and one more) for each case:
no filter, each workflow alone and with a status, queues (``bulk`` 10 %, ``default``, one
with no run; with a status), ``q`` (a substring of run ids)
— the first page, the next page (the first's last row as cursor) and a page from the
middle of the period. ``--code DIR`` imports Tether from ``DIR/src`` (another checkout:
the code before), so both versions time the same kept store: the newer one migrates it
on open (the time that takes is printed).
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

PAYLOAD = "x" * 200
DAYS = 180
#: (workflow, share of the runs in thousandths): the last is the rare one.
WORKFLOWS = (("chat", 700), ("ingest", 250), ("report", 49), ("audit", 1))


def _workflow_sql(i: str) -> str:
    """The workflow of run number ``i`` (an SQL expression), by WORKFLOWS' shares."""
    cases, upto = [], 0
    for name, share in WORKFLOWS[:-1]:
        upto += share
        cases.append(f"WHEN {i} % 1000 < {upto} THEN '{name}'")
    return f"CASE {' '.join(cases)} ELSE '{WORKFLOWS[-1][0]}' END"


def _status_sql(i: str, runs: int) -> str:
    # The newest runs are the ones still queued or running; waiting ones are spread.
    return (f"CASE WHEN {i} > {runs} - 20 THEN 'running' "
            f"WHEN {i} > {runs} - 2020 THEN 'queued' "
            f"WHEN {i} % 220 = 7 THEN 'waiting' "
            f"WHEN {i} % 50 = 3 THEN 'failed' WHEN {i} % 100 = 11 THEN 'cancelled' "
            f"ELSE 'completed' END")


def _pg_fill(url: str, runs: int, start: float) -> None:
    import psycopg

    step = DAYS * 86400 / runs
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"""
            INSERT INTO tether.runs (run_id, workflow, queue, status, input, result,
                created_at, updated_at, finished_at, generation)
            SELECT md5(i::text), {_workflow_sql('i')},
                   CASE WHEN i % 10 = 0 THEN 'bulk' ELSE 'default' END,
                   {_status_sql('i', runs)}, '{PAYLOAD}', '{PAYLOAD}',
                   {start} + i * {step}, {start} + i * {step} + 5, {start} + i * {step} + 5,
                   0
            FROM generate_series(1, {runs}) AS i""")
        conn.execute("VACUUM ANALYZE tether.runs")


def _sqlite_fill(path: str, runs: int, start: float) -> None:
    import apsw

    step = DAYS * 86400 / runs
    conn = apsw.Connection(path)
    conn.execute("BEGIN")
    conn.execute(f"""
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {runs})
        INSERT INTO tether_runs (run_id, workflow, queue, status, input, result,
            created_at, updated_at, finished_at, generation)
        SELECT lower(hex(randomblob(16))), {_workflow_sql('i')},
               CASE WHEN i % 10 = 0 THEN 'bulk' ELSE 'default' END,
               {_status_sql('i', runs)}, '{PAYLOAD}', '{PAYLOAD}',
               {start} + i * {step}, {start} + i * {step} + 5, {start} + i * {step} + 5, 0
        FROM n""")
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def _cases() -> list[tuple[str, dict[str, Any]]]:
    cases: list[tuple[str, dict[str, Any]]] = [("no filter", {}),
                                               ("status=completed", {"status": "completed"})]
    for wf in ("chat", "audit"):
        cases += [(f"workflow={wf}", {"workflow": wf}),
                  (f"workflow={wf} status=completed", {"workflow": wf, "status": "completed"}),
                  (f"workflow={wf} status=failed", {"workflow": wf, "status": "failed"}),
                  (f"workflow={wf} status=queued", {"workflow": wf, "status": "queued"})]
    cases += [("queue=bulk", {"queue": "bulk"}), ("queue=default", {"queue": "default"}),
              ("queue=absent (no such run)", {"queue": "absent"}),
              ("queue=bulk status=failed (none)", {"queue": "bulk", "status": "failed"}),
              ("queue=default status=completed",
               {"queue": "default", "status": "completed"}),
              ("q=abc", {"text": "abc"}),
              ("q=abcdef (rare)", {"text": "abcdef"})]
    return cases


async def _time(store: Any, kwargs: dict[str, Any], repeat: int) -> tuple[list[Any], str]:
    found = await store.run_search(limit=51, **kwargs)  # (warms the cache)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        found = await store.run_search(limit=51, **kwargs)
        times.append(time.perf_counter() - t)
    return found, (f"{len(found):3} rows  best {min(times) * 1000:8.1f} ms  "
                   f"median {statistics.median(times) * 1000:8.1f} ms")


async def _time_all(store: Any, mid: float, repeat: int, only: list[str]) -> None:
    for label, kwargs in _cases():
        if only and not any(o in label for o in only):
            continue
        first, figures = await _time(store, kwargs, repeat)
        print(f"  {label:<34} first  {figures}", flush=True)
        if first:
            last = first[min(49, len(first) - 1)]
            _, figures = await _time(store, {**kwargs, "before": (last.created_at, last.run_id)},
                                     repeat)
            print(f"  {'':<34} next   {figures}", flush=True)
        _, figures = await _time(store, {**kwargs, "before": (mid, "")}, repeat)
        print(f"  {'':<34} middle {figures}", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--url", help="time this store (kept by an earlier --keep)")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--runs", type=int, default=1_100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--prefix", default="bench_", help="scratch database name prefix")
    parser.add_argument("--keep", action="store_true", help="keep the store")
    parser.add_argument("--only", default="",
                        help="the cases whose label holds one of these (comma-separated)")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="the checkout whose src/ to import Tether from")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve() / "src"))
    from tether.store import open_store

    tmp = None
    name = ""
    url = args.url
    start = time.time() - DAYS * 86400
    if url is None and args.db == "postgres":
        import psycopg

        name = f"{args.prefix}runs_list_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{args.admin_url.rsplit('/', 1)[0]}/{name}"
    elif url is None:
        where = Path.cwd() if args.keep else Path(tmp := tempfile.mkdtemp())
        url = f"sqlite:///{where}/runs-list-{uuid.uuid4().hex[:8]}.db"
    try:
        store = open_store(url)
        t = time.perf_counter()
        await store.open()
        print(f"{url}: opened (migrations) in {time.perf_counter() - t:.1f} s")
        if args.url is None:
            await store.close()
            t = time.perf_counter()
            if args.db == "postgres":
                _pg_fill(url, args.runs, start)
            else:
                _sqlite_fill(url.removeprefix("sqlite:///"), args.runs, start)
            print(f"{args.runs:,} runs built in {time.perf_counter() - t:.0f} s")
            store = open_store(url)
            await store.open()
        try:
            newest = await store.run_search(limit=1)
            mid = newest[0].created_at - DAYS * 86400 / 2 if newest else start
            await _time_all(store, mid, args.repeat, [o for o in args.only.split(",") if o])
        finally:
            await store.close()
        if args.keep:
            print(f"kept: {url}")
    finally:
        if name and not args.keep:
            import psycopg

            with psycopg.connect(args.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
