"""Core engine benchmark: per-step latency, concurrent throughput, recovery time.

    .venv/bin/python bench/core.py [--db sqlite|postgres|URL] [--steps 1000] [--runs 1000]

Reports, on the chosen store with its default durability setting:
- µs per step of one workflow of N trivial sequential steps;
- workflows/s and steps/s for M workflows of 10 trivial steps run concurrently by
  one worker process;
- recovery: from a new worker process's start to a SIGKILLed worker's run continuing
  (its owner provably dead on this host).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tether import App

ROOT = Path(__file__).resolve().parents[1]


def make_app(url: str | None) -> App:
    """An app with the benchmarks' trivial workflows (``None``: the default store)."""
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

    @app.workflow
    async def ten() -> int:
        total = 0
        for i in range(10):
            total += await noop(i)
        return total

    return app


def pg_less_events(sql: str) -> str:
    """A PostgreSQL journal append statement (``queries.sql``) without the CTE that writes
    its op events (``ev``): it then writes the journal rows alone."""
    head, sep, _ = sql.partition(",\nev AS (")
    if not sep:
        raise SystemExit("the append statements changed: update bench/core.py")
    return head + "\nSELECT run_id, position FROM w"


def pg_op_events(store: Any) -> Callable[[bool], None]:
    """switch(on) for a PostgreSQL store of this process: off, its two journal append
    statements are the same without the CTE that writes their op events (migration 0009:
    they write them themselves, the row trigger skips them), for a bench that measures
    the event log by turning it off (disable the ``run_events_journal`` trigger too, for
    the other writers); on, the statements as sent."""
    from tether.store.postgres._raw import Prepared
    from tether.store.postgres._store import _APPEND_ONE_TYPES

    sent = {name: store._q[name] for name in ("journal_append", "journal_append_one")}
    sent_one = store._append_one
    off = {name: pg_less_events(sql) for name, sql in sent.items()}
    off_one = Prepared("tether_append_one_no_events", off["journal_append_one"],
                       _APPEND_ONE_TYPES)

    def switch(on: bool) -> None:
        store._q.update(sent if on else off)
        store._append_one = sent_one if on else off_one

    return switch


def sqlite_committer(path: Path) -> tuple[Callable[[int], float], Callable[[], None]]:
    """The disk's limit on SQLite: (µs per commit of ``n`` one-row commits, close) on a
    WAL file with ``synchronous=FULL`` (what Tether's store does)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    counter = [0]

    def commits(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            counter[0] += 1
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?, ?)", (counter[0], "x"))
            conn.execute("COMMIT")
        return (time.perf_counter() - t0) / n * 1e6

    return commits, conn.close


def pg_committer(url: str) -> tuple[Callable[[int], float], Callable[[], None]]:
    """The limit on PostgreSQL: (µs per commit of ``n`` one-row prepared INSERTs in
    autocommit, one round trip each, close)."""
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    conn.execute("CREATE TABLE bench_bare_commit (k integer PRIMARY KEY, v text)")
    counter = [0]

    def insert() -> None:
        counter[0] += 1
        conn.execute("INSERT INTO bench_bare_commit VALUES (%s, %s)", (counter[0], "x"),
                     prepare=True)

    for _ in range(20):  # the plan prepared
        insert()

    def commits(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            insert()
        return (time.perf_counter() - t0) / n * 1e6

    return commits, conn.close


async def bench_sequential(url: str, steps: int) -> float:
    app = make_app(url)
    wf = app.workflows()["sequential"].fn
    async with app.worker(concurrency=1):
        await (await app.start(wf, 10)).result(timeout=60)  # warm up
        t0 = time.perf_counter()
        await (await app.start(wf, steps)).result(timeout=600)
        elapsed = time.perf_counter() - t0
    await app.close()
    return elapsed / steps * 1e6


async def bench_concurrent(url: str, runs: int) -> tuple[float, float]:
    app = make_app(url)
    wf = app.workflows()["ten"].fn
    handles = [await app.start(wf) for _ in range(runs)]
    async with app.worker(concurrency=runs):
        t0 = time.perf_counter()
        for h in handles:
            await h.result(timeout=600)
        elapsed = time.perf_counter() - t0
    await app.close()
    return runs / elapsed, runs * 10 / elapsed


RECOVERY_APP = '''
import asyncio, os, tether
app = tether.App()
@app.step
async def mark(i: int) -> int:
    with open(os.environ["BENCH_MARK"], "a") as f:
        f.write(f"{i} {__import__('time').time()}\\n")
    if i == 1 and os.environ.get("BENCH_HANG") == "1":
        await asyncio.sleep(3600)   # the first worker is killed here
    return i
@app.workflow
async def victim() -> int:
    await mark(0)
    await mark(1)
    return await mark(2)
'''


async def bench_recovery(url: str, folder: Path, *, stall: bool = False) -> float:
    """Seconds from a new worker's start to the old worker's run continuing. The old
    worker is SIGKILLed (provably dead on this host: taken over at once), or with
    ``stall`` SIGSTOPped (alive but silent: taken over when its lease expires)."""
    (folder / "recovery_app.py").write_text(RECOVERY_APP)
    marks = folder / ("marks-stall.log" if stall else "marks.log")
    env = dict(os.environ, BENCH_MARK=str(marks), PYTHONPATH=str(folder))

    def spawn(hang: bool) -> subprocess.Popen[bytes]:
        # Only the first worker stops in step 1; the second runs it again (its result
        # was never journaled) and goes on, so that it ends at once on SIGTERM.
        return subprocess.Popen(
            [sys.executable, "-m", "tether", "worker", "recovery_app:app", "--db", url],
            cwd=folder, env=dict(env, BENCH_HANG="1" if hang else "0"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    first = spawn(hang=True)
    client = App(url)
    # Started by name: queued until the new worker process serves it (logged as such).
    await client.start("victim", run_id="victim")
    while not marks.exists() or len(marks.read_text().splitlines()) < 2:
        await asyncio.sleep(0.01)
    first.send_signal(signal.SIGSTOP if stall else signal.SIGKILL)
    if not stall:
        first.wait()
    t0 = time.time()
    second = spawn(hang=False)
    try:
        while len(marks.read_text().splitlines()) < 3:
            await asyncio.sleep(0.005)
        continued_at = float(marks.read_text().splitlines()[2].split()[1])
    finally:
        second.terminate()
        second.wait(10)
        if stall:
            first.send_signal(signal.SIGKILL)
            first.wait()
        await client.close()
    return continued_at - t0


_CREATED: list[str] = []


def drop_created() -> None:
    """Drop the PostgreSQL databases this bench created."""
    if not _CREATED:
        return
    import psycopg

    admin = os.environ.get("TETHER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in _CREATED:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def resolve(db: str, folder: Path, name: str) -> str:
    if db == "sqlite":
        return f"sqlite:///{folder}/{name}.db"
    if db == "postgres":
        import psycopg

        admin = os.environ.get("TETHER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
        dbname = f"tether_bench_{name}_{os.getpid()}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{dbname}"')
        _CREATED.append(dbname)
        return admin.rsplit("/", 1)[0] + "/" + dbname
    return db


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite", help="sqlite, postgres or a store URL")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3,
                        help="sequential runs; the median is reported")
    parser.add_argument("--skip-recovery", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    per_step = sorted([await bench_sequential(resolve(args.db, folder, f"seq{i}"), args.steps)
                       for i in range(args.repeat)])[args.repeat // 2]
    wf_s, steps_s = await bench_concurrent(resolve(args.db, folder, "conc"), args.runs)
    recovery = None if args.skip_recovery else await bench_recovery(
        resolve(args.db, folder, "rec"), folder)
    stalled = None if args.skip_recovery else await bench_recovery(
        resolve(args.db, folder, "stall"), folder, stall=True)
    durability = "synchronous=FULL (WAL): survives power loss and process kill" if (
        args.db == "sqlite") else "synchronous_commit=on"
    print(f"command: python bench/core.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"store: {args.db}   durability: {durability}")
    print(f"{'benchmark':58} {'result':>16}")
    print(f"{f'{args.steps} sequential trivial steps, one workflow':58} "
          f"{per_step:>11.0f} µs/step")
    print(f"{f'{args.runs} workflows x 10 steps, one worker, concurrent':58} "
          f"{wf_s:>9.0f} workflows/s")
    print(f"{'':58} {steps_s:>13.0f} steps/s")
    if recovery is not None:
        print(f"{'recovery after SIGKILL (new worker start -> run continues)':58} "
              f"{recovery * 1000:>14.0f} ms")
    if stalled is not None:
        print(f"{'recovery from a SIGSTOPped owner (lease expiry, 5 s)':58} "
              f"{stalled * 1000:>14.0f} ms")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    finally:
        drop_created()
