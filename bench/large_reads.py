"""Reads that grew with the store instead of with their answer: a run page's tree of a
parent with many children, the runs list of a queue with no run, and ``TestEnv``'s poll.

    .venv/bin/python bench/large_reads.py --db postgres [--runs 100000] [--children 10000] [--keep]
    .venv/bin/python bench/large_reads.py --db sqlite   [--runs 100000] [--children 10000] [--keep]
    .venv/bin/python bench/large_reads.py --url URL [--code DIR]   # time a store kept before

Builds, with SQL alone (PostgreSQL ``generate_series``, a recursive CTE on SQLite), in a
scratch database (``--admin-url``; dropped at the end unless ``--keep``) or a SQLite file
(``--keep``: in the current directory): ``--runs`` ended runs over 180 days (2 % failed,
1 % cancelled, the rest completed; queue ``bulk`` 10 %, ``default`` the rest; 200-byte
input and result), 100 runs waiting on ``default`` (half on a timer, half on a signal),
a parent ``parent-big`` with ``--children`` children (2 % failed, 1 % cancelled, 1 %
waiting, the rest completed), each with LLM metrics, and a parent ``parent-wide`` with
100 children (the tree draws them all) of ``--grandchildren`` children each. Then times,
best and median of ``--repeat`` after one warm-up call, in process:

- ``run_view`` (the run page's data, ``/runs/parent-big`` without the HTML) and its tree
  alone (``_ui._tree``), and the same of ``parent-wide``, with the store reads each
  makes (calls of ``run_search``, ``run_children_many``: a
  round trip each on PostgreSQL);
- ``run_search(queue=..., limit=51)``, the runs list's first page, for a queue with no
  run, for ``bulk`` and for ``bulk`` failed;
- ``TestEnv._look`` (each poll of a test environment opened on the store).

``--code DIR`` imports Tether from ``DIR/src`` (another checkout: the code before), so
both versions time the same kept store; a newer version migrates it on open (the time
that takes is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

PAYLOAD = "x" * 200
DAYS = 180


def _metrics_sql(i: str) -> str:
    """A child's LLM metrics, not all the same (one text for all let PostgreSQL parse
    it once, a Memoize keyed by the text, and flattered what parses metrics)."""
    return ("'{\"cost.usd\": 0.002, \"tokens.input\": ' || (100 + " + i + " % 97) || "
            "', \"tokens.output\": 30, \"llm.calls\": 1}'")


PARENT = "parent-big"
WIDE = "parent-wide"
#: The store's reads a run page's tree makes, counted by the bench.
TREE_READS = ("run_search", "run_children_many")


def _status_sql(i: str) -> str:
    return (f"CASE WHEN {i} % 50 = 3 THEN 'failed' WHEN {i} % 100 = 11 THEN 'cancelled' "
            "ELSE 'completed' END")


def _kid_status_sql(i: str) -> str:
    return (f"CASE WHEN {i} % 50 = 3 THEN 'failed' WHEN {i} % 100 = 11 THEN 'cancelled' "
            f"WHEN {i} % 100 = 17 THEN 'waiting' ELSE 'completed' END")


def _fill_sql(series: str, runs: int, children: int, start: float, now: float,
              run_id: str, grandchildren: int = 3) -> list[str]:
    """The INSERTs (``series`` is the SQL of the rows ``i`` 1..N: ``{n}`` is N)."""
    step = DAYS * 86400 / runs
    cols = ("run_id, workflow, queue, status, input, result, created_at, updated_at, "
            "finished_at, generation, parent_run_id, parent_position, metrics, available_at, "
            "waiting_for")
    return [
        f"""INSERT INTO {{runs}} ({cols})
            SELECT {run_id}, 'chat', CASE WHEN i % 10 = 0 THEN 'bulk' ELSE 'default' END,
                   {_status_sql('i')}, '{PAYLOAD}', '{PAYLOAD}', {start} + i * {step},
                   {start} + i * {step} + 5, {start} + i * {step} + 5, 0, NULL, NULL,
                   NULL, NULL, NULL
            FROM {series.format(n=runs)}""",
        f"""INSERT INTO {{runs}} ({cols})
            SELECT 'parked-' || i, 'chat', 'default', 'waiting', '{PAYLOAD}', NULL,
                   {now} - 3600 + i, {now}, NULL, 0, NULL, NULL, NULL,
                   CASE WHEN i % 2 = 0 THEN {now} + 86400 + i END,
                   CASE WHEN i % 2 = 0 THEN 'timer' ELSE 'signal go' END
            FROM {series.format(n=100)}""",
        f"""INSERT INTO {{runs}} ({cols})
            VALUES ('{PARENT}', 'fanout', 'default', 'completed', '[]', '[]', {now} - 7200,
                    {now}, {now}, 0, NULL, NULL, NULL, NULL, NULL)""",
        f"""INSERT INTO {{runs}} ({cols})
            SELECT '{PARENT}.' || i, 'worker', 'default', {_kid_status_sql('i')},
                   '{PAYLOAD}', '{PAYLOAD}', {now} - 7200 + i * 0.5, {now}, {now}, 0,
                   '{PARENT}', i, {_metrics_sql('i')}, NULL,
                   CASE WHEN i % 100 = 17 THEN 'signal go' END
            FROM {series.format(n=children)}""",
        f"""INSERT INTO {{runs}} ({cols})
            VALUES ('{WIDE}', 'fanout', 'default', 'completed', '[]', '[]', {now} - 7200,
                    {now}, {now}, 0, NULL, NULL, NULL, NULL, NULL)""",
        f"""INSERT INTO {{runs}} ({cols})
            SELECT '{WIDE}.' || i, 'fanout', 'default', {_kid_status_sql('i')},
                   '{PAYLOAD}', '{PAYLOAD}', {now} - 7200 + i, {now}, {now}, 0,
                   '{WIDE}', i, {_metrics_sql('i')}, NULL,
                   CASE WHEN i % 100 = 17 THEN 'signal go' END
            FROM {series.format(n=100)}""",
        f"""INSERT INTO {{runs}} ({cols})
            SELECT '{WIDE}.' || ((i - 1) / {max(grandchildren, 1)} + 1) || '.' || i,
                   'worker', 'default', {_kid_status_sql('i')}, '{PAYLOAD}', '{PAYLOAD}',
                   {now} - 7000 + i * 0.5, {now}, {now}, 0,
                   '{WIDE}.' || ((i - 1) / {max(grandchildren, 1)} + 1), i, {_metrics_sql('i')},
                   NULL, CASE WHEN i % 100 = 17 THEN 'signal go' END
            FROM {series.format(n=100 * grandchildren)}""",
    ]


def _pg_fill(url: str, runs: int, children: int, start: float, now: float,
             grandchildren: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for sql in _fill_sql("generate_series(1, {n}) AS i", runs, children, start, now,
                             "md5(i::text)", grandchildren):
            conn.execute(sql.replace("{runs}", "tether.runs"))
        conn.execute("VACUUM ANALYZE tether.runs")


def _sqlite_fill(path: str, runs: int, children: int, start: float, now: float,
                 grandchildren: int) -> None:
    import apsw

    conn = apsw.Connection(path)
    conn.execute("BEGIN")
    series = ("(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
              "WHERE i < {n}) SELECT i FROM n)")
    for sql in _fill_sql(series, runs, children, start, now, "lower(hex(randomblob(16)))",
                         grandchildren):
        conn.execute(sql.replace("{runs}", "tether_runs"))
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


async def _time(label: str, call: Callable[[], Awaitable[Any]], repeat: int,
                show: Callable[[Any], str]) -> None:
    found = await call()  # (warms the cache)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        found = await call()
        times.append(time.perf_counter() - t)
    print(f"  {label:<40} {show(found):<34} best {min(times) * 1000:9.1f} ms  "
          f"median {statistics.median(times) * 1000:9.1f} ms", flush=True)


async def _time_all(url: str, repeat: int, only: list[str]) -> None:
    from tether import App
    from tether.serve import _ui
    from tether.testing import TestEnv

    def wanted(label: str) -> bool:
        return not only or any(o in label for o in only)

    app = App(url)
    await app._open()
    reads = [0]
    for name in TREE_READS:  # (counted on this store alone; absent before the code has it)
        if hasattr(app.store, name):
            def counted(*a: Any, _call: Any = getattr(app.store, name), **kw: Any) -> Any:
                reads[0] += 1
                return _call(*a, **kw)
            setattr(app.store, name, counted)

    def drawn(nodes: list[dict[str, Any]]) -> int:
        return sum(1 + drawn(n["children"]) for n in nodes)

    def fresh(call: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        async def go() -> Any:  # (the reads of this call alone)
            reads[0] = 0
            return await call()
        return go

    def said(tree: tuple[list[dict[str, Any]], dict[str, Any]]) -> str:
        return f"{drawn(tree[0])} drawn, {tree[1]['count']} counted, {reads[0]} reads"

    try:
        for parent in (PARENT, WIDE):
            if wanted("run page"):
                await _time(f"run page data (run_view {parent})",
                            fresh(lambda p=parent: _ui.run_view(app, p)),  # type: ignore[misc]
                            repeat, lambda d: said((d["tree"], d["tree_hidden"])))
                await _time(f"run page tree (_tree {parent})",
                            fresh(lambda p=parent: _ui._tree(app, p)),  # type: ignore[misc]
                            repeat, said)
        for label, kwargs in (("queue=absent (no run)", {"queue": "absent"}),
                              ("queue=bulk", {"queue": "bulk"}),
                              ("queue=bulk status=waiting (none)",
                               {"queue": "bulk", "status": "waiting"}),
                              ("queue=bulk status=completed",
                               {"queue": "bulk", "status": "completed"})):
            if wanted(label):
                await _time(f"runs list {label}",
                            lambda kw=kwargs: app.store.run_search(limit=51, **kw),  # type: ignore[misc]
                            repeat, lambda rows: f"{len(rows)} rows")
    finally:
        await app.close()
    if wanted("TestEnv"):
        user = App()

        @user.workflow
        async def chat() -> None:
            return None

        async with TestEnv(user, store_url=url) as env:
            await _time("TestEnv poll (_look)", env._look, repeat,
                        lambda r: f"idle={r[0]} wake={'yes' if r[1] else 'no'}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--url", help="time this store (kept by an earlier --keep)")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--grandchildren", type=int, default=3,
                        help="children of each of parent-wide's 100 children")
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
    now = time.time()
    if url is None and args.db == "postgres":
        import psycopg

        name = f"{args.prefix}large_reads_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{args.admin_url.rsplit('/', 1)[0]}/{name}"
    elif url is None:
        where = Path.cwd() if args.keep else Path(tmp := tempfile.mkdtemp())
        url = f"sqlite:///{where}/large-reads-{uuid.uuid4().hex[:8]}.db"
    try:
        store = open_store(url)
        t = time.perf_counter()
        await store.open()
        print(f"{url}: opened (migrations) in {time.perf_counter() - t:.1f} s")
        await store.close()
        if args.url is None:
            t = time.perf_counter()
            start = now - DAYS * 86400
            if args.db == "postgres":
                _pg_fill(url, args.runs, args.children, start, now, args.grandchildren)
            else:
                _sqlite_fill(url.removeprefix("sqlite:///"), args.runs, args.children,
                             start, now, args.grandchildren)
            print(f"{args.runs:,} runs, {args.children:,} children and {WIDE}'s 100 of "
                  f"{args.grandchildren} built in {time.perf_counter() - t:.0f} s")
        await _time_all(url, args.repeat, [o for o in args.only.split(",") if o])
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
