"""Waiting benchmarks: wake-up latency of a released run, and many runs on timers.

    .venv/bin/python bench/waiting.py latency [--db sqlite|postgres|URL] [--samples 200]
                                              [--cli-samples 20]
    .venv/bin/python bench/waiting.py timers  [--db sqlite|postgres|URL] [--runs 100000]
                                              [--concurrency 50] [--due-in SECONDS]
                                              [--park-only [--wait due|sleep|signal]]

latency: one idle ``tether worker`` process; a run released on ``wait_for_signal("go")``;
the bench process sends the signal (``App.signal`` on its own store connection, and
the ``tether signal`` CLI for a smaller sample set) and the run's next step records
``time.time()`` when it runs. All processes are on one machine, so their clocks agree.
The latency is from just before the send (the API call; for the CLI, the signal's
``created_at``, taken by the CLI just before its commit) to that step running.

timers: ``--runs`` runs each sleep until one shared due time (``tether.sleep``, the
delay computed from the journaled ``tether.now()``); one worker process parks them all
(released), then they come due together. ``--wait sleep`` (one ``tether.sleep``, nothing
journaled before it) and ``--wait signal`` (``wait_for_signal``) park other kinds of
waiting runs, for their RSS and store bytes only (with ``--park-only``). Reports the
worker's RSS idle, with all runs waiting, and at its peak; the store's size on disk; and
the time from the due time to the last run completed (runs/s).

Each sub-command prints its table and the command that reproduced it. PostgreSQL runs
use a fresh database (``tether_bench_waiting_<pid>``) that is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tether
from tether import App

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PG_ADMIN = os.environ.get("TETHER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

app = App()


@app.step
async def resumed_at() -> float:
    """When the workflow's code ran again after its wait."""
    return time.time()


@app.workflow(queue="bench-wake")
async def wake_me() -> float:
    await tether.wait_for_signal("go")
    return await resumed_at()


@app.workflow(queue="bench-timers")
async def due_at(at: float) -> None:
    """Sleep until the epoch time ``at`` (journaled ``now``, so replay agrees)."""
    await tether.sleep(max(at - tether.now().timestamp(), 0.0))


@app.workflow(queue="bench-timers")
async def sleeps(seconds: float) -> None:
    """``--wait sleep``: one timer, nothing journaled before it."""
    await tether.sleep(seconds)


@app.workflow(queue="bench-timers")
async def on_signal() -> None:
    """``--wait signal``: a run waiting for a person (or a program) to answer."""
    await tether.wait_for_signal("go")


def parked_run(wait: str, due: float, due_in: float) -> tuple[Any, tuple[Any, ...]]:
    """The workflow and arguments of one run for ``--wait``."""
    if wait == "sleep":
        return sleeps, (due_in + 3600.0,)
    if wait == "signal":
        return on_signal, ()
    return due_at, (due,)


# -- processes and stores ------------------------------------------------------------------


def proc_status_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` field in kB (``VmRSS``, ``VmHWM``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


@contextmanager
def worker(url: str, queue: str, concurrency: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A ``tether worker waiting:app`` process, stopped by its PID."""
    args = [sys.executable, "-m", "tether", "worker", "waiting:app", "--db", url,
            "--queue", queue, "--concurrency", str(concurrency)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT / "src")]))
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def store_url(db: str, folder: Path, keep: bool = False) -> Iterator[str]:
    """A fresh store: a SQLite file in ``folder``, or a PostgreSQL database dropped after
    (unless ``keep``)."""
    if db == "sqlite":
        yield f"sqlite:///{folder}/waiting.db"
        return
    if db != "postgres":
        yield db
        return
    import psycopg

    name = f"tether_bench_waiting_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        if keep:
            print(f"kept database {name}", file=sys.stderr)
        else:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def store_size(url: str) -> dict[str, int]:
    """Bytes on disk: the SQLite file and its WAL, or ``pg_database_size``."""
    if url.startswith("sqlite:"):
        path = url.split("sqlite://", 1)[1]
        return {name: os.path.getsize(path + suffix) if os.path.exists(path + suffix) else 0
                for name, suffix in (("db", ""), ("wal", "-wal"))}
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    return {"db": int(row[0])}


def pg_relations(url: str) -> dict[str, int]:
    """Bytes of each table, TOAST table and index of the ``tether`` schema (PostgreSQL),
    every fork (main, free space map, visibility map): what the store leaves on disk."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) - pg_indexes_size(c.oid) "
            "  - coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'tether' AND c.relkind = 'r' "
            "UNION ALL "
            "SELECT c.relname || ' (TOAST)', pg_total_relation_size(c.reltoastrelid) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'tether' AND c.relkind = 'r' AND c.reltoastrelid <> 0 "
            "UNION ALL "
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'tether' AND c.relkind = 'i'").fetchall()
    return {str(name): int(size) for name, size in rows}


def relations(url: str) -> dict[str, int]:
    """Bytes of each table and index: the pages of each B-tree of the SQLite file (as a
    reader sees it, WAL included), or ``pg_relations``."""
    if not url.startswith("sqlite:"):
        return pg_relations(url)
    return {name: pages for name, (pages, _, _) in _dbstat(url).items()}


def sqlite_cells(url: str) -> dict[str, tuple[int, int, int]]:
    """Per B-tree of the SQLite file: payload bytes of its cells, 0 (no dead versions),
    unused bytes of its pages (``dbstat``); the rest of its pages is cell and page
    headers."""
    return {name: (payload, 0, unused) for name, (_, payload, unused) in _dbstat(url).items()}


def _dbstat(url: str) -> dict[str, tuple[int, int, int]]:
    import apsw

    conn = apsw.Connection(url.split("sqlite://", 1)[1], flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows: Any = conn.execute("SELECT name, sum(pgsize), sum(payload), sum(unused) "
                                 "FROM dbstat GROUP BY name").fetchall()
    finally:
        conn.close()
    return {str(n): (int(a), int(b), int(c)) for n, a, b, c in rows}


def pg_tuples(url: str) -> dict[str, tuple[int, int, int]]:
    """Per table and index of the ``tether`` schema that holds anything: live tuples'
    bytes, dead tuples' bytes (row versions no transaction can see any more), free
    space, all in the main fork (``pgstattuple``; an empty dict if the extension is not
    available). Their sum and the page headers and line pointers make up the fork."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        except psycopg.Error:
            return {}
        rows = conn.execute(
            "SELECT c.relname, s.tuple_len, s.dead_tuple_len, s.free_space "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, "
            "LATERAL pgstattuple(c.oid) s "
            "WHERE n.nspname = 'tether' AND c.relkind IN ('r', 'i') "
            "  AND (c.relkind = 'r' OR c.relam = (SELECT oid FROM pg_am WHERE amname = 'btree'))"
            "  AND pg_relation_size(c.oid) > 8192").fetchall()
    return {str(name): (int(a), int(b), int(c)) for name, a, b, c in rows}


async def vacuum_every(url: str, seconds: float) -> None:
    """``VACUUM`` the store's tables every ``seconds``, as autovacuum would on a server
    that has it on (the shared test server here runs with ``autovacuum = off``): the
    space of dead row versions and index entries becomes reusable by later writes."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            await asyncio.sleep(seconds)
            await conn.execute("VACUUM tether.runs, tether.journal, tether.run_events")


def signal_created_at(url: str, run_id: str) -> float:
    """When the sender stamped its signal (read from the store's table: the CLI
    process's own clock, just before it committed)."""
    if url.startswith("sqlite:"):
        import apsw

        conn = apsw.Connection(url.split("sqlite://", 1)[1], flags=apsw.SQLITE_OPEN_READONLY)
        try:
            rows = conn.execute("SELECT created_at FROM tether_signals WHERE run_id = ?",
                                (run_id,)).fetchall()
        finally:
            conn.close()
    else:
        import psycopg

        with psycopg.connect(url) as pg:
            rows = pg.execute("SELECT created_at FROM tether.signals WHERE run_id = %s",
                              (run_id,)).fetchall()
    value: Any = rows[0][0]
    return float(value)


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float,
                interval: float) -> None:
    """Poll an async predicate until true."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def describe(db: str) -> str:
    if db == "sqlite":
        return "SQLite (WAL, synchronous=FULL)"
    if db == "postgres":
        return "PostgreSQL 15 (synchronous_commit=on), loopback"
    return db


def command() -> str:
    return ".venv/bin/python bench/waiting.py " + " ".join(sys.argv[1:])


# -- wake-up latency ------------------------------------------------------------------------


async def one_sample(run_id: str, send: str, url: str) -> tuple[float, float]:
    """Start a run, let it be released and the worker go idle, send ``go``; the seconds
    from the send to the workflow's code running again, and the seconds the sender
    took to commit its signal (API only; 0 for the CLI)."""
    handle = await app.start(wake_me, run_id=run_id)

    async def released() -> bool:
        return (await handle.status()).value == "waiting"

    await until(released, timeout=30, interval=0.002)
    await asyncio.sleep(0.05)  # the worker is idle: nothing claimed, nothing in flight
    if send == "api":
        t0 = time.time()
        await app.signal(run_id, "go")
        sent = time.time() - t0
    else:
        sent = 0.0
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        subprocess.run([sys.executable, "-m", "tether", "signal", run_id, "go", "--db", url],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        t0 = signal_created_at(url, run_id)
    resumed = await handle.result(timeout=30)
    return resumed - t0, sent


def summary(samples: list[float]) -> tuple[float, float, float, float]:
    ordered = sorted(samples)
    p99 = statistics.quantiles(ordered, n=100, method="inclusive")[98] if len(
        ordered) > 1 else ordered[0]
    return statistics.median(ordered), p99, ordered[0], ordered[-1]


async def bench_latency(args: argparse.Namespace, folder: Path) -> None:
    rows: list[tuple[str, int, tuple[float, float, float, float]]] = []
    with store_url(args.db, folder) as url, \
            worker(url, "bench-wake", 50, folder / "latency-worker.log") as proc:
        app.use_store(url)
        try:
            for i in range(5):  # warm-up: imports, prepared statements, caches
                await one_sample(f"warm-{i}", "api", url)
            api = [await one_sample(f"api-{i}", "api", url) for i in range(args.samples)]
            rows.append(("App.signal (bench process)", len(api), summary([a for a, _ in api])))
            rows.append(("  of which App.signal's commit", len(api),
                         summary([s for _, s in api])))
            if args.cli_samples:
                cli = [(await one_sample(f"cli-{i}", "cli", url))[0]
                       for i in range(args.cli_samples)]
                rows.append(("tether signal (CLI process)", len(cli), summary(cli)))
            rss = proc_status_kb(proc.pid, "VmRSS")
        finally:
            await app.close()
    print(f"store: {describe(args.db)}; one idle worker process (RSS {rss / 1024:.1f} MiB)")
    print("wake-up latency: signal sent -> the workflow's next step runs")
    print(f"{'sender':32} {'samples':>8} {'median':>9} {'p99':>9} {'min':>9} {'max':>9}")
    for name, n, (med, p99, lo, hi) in rows:
        print(f"{name:32} {n:>8} {med * 1e3:>7.2f}ms {p99 * 1e3:>7.2f}ms "
              f"{lo * 1e3:>7.2f}ms {hi * 1e3:>7.2f}ms")
    print(f"command: {command()}")


# -- many runs on timers --------------------------------------------------------------------


async def count_not(statuses: tuple[str, ...]) -> bool:
    for status in statuses:
        if await app.list_runs(status=status, limit=1):
            return False
    return True


async def bench_timers(args: argparse.Namespace, folder: Path) -> None:
    n = args.runs
    due_in = args.due_in if args.due_in is not None else (
        (10 + n / 4000) if args.db == "sqlite" else (20 + n / 500))
    with store_url(args.db, folder, args.keep_db) as url, \
            worker(url, "bench-timers", args.concurrency, folder / "timers-worker.log") as proc:
        app.use_store(url)
        try:
            warm = [await app.start(due_at, 0.0, run_id=f"warm-{i}") for i in range(3)]
            for h in warm:
                await h.result(timeout=60)
            await asyncio.sleep(2.0)
            idle_kb = proc_status_kb(proc.pid, "VmRSS")
            empty = store_size(url)
            empty_rels = relations(url)

            t_start = time.time()
            due = t_start + due_in
            vacuum = (asyncio.create_task(vacuum_every(url, args.vacuum_every))
                      if args.vacuum_every and not url.startswith("sqlite:") else None)
            wf, wf_args = parked_run(args.wait, due, due_in)
            started: set[str] = set()
            for lo in range(0, n, 1000):
                handles = await asyncio.gather(*(
                    app.start(wf, *wf_args, run_id=None if args.ids == "tether" else f"t-{i:06d}")
                    for i in range(lo, min(lo + 1000, n))))
                started.update(h.run_id for h in handles)
            started_in = time.time() - t_start
            await until(lambda: count_not(("queued", "running")), timeout=due_in * 2,
                        interval=0.5)
            parked_in = time.time() - t_start
            if vacuum is not None:
                vacuum.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await vacuum
            if time.time() >= due - 3:
                raise SystemExit(f"parking {n} runs took {parked_in:.0f} s, past the due time "
                                 f"({due_in:.0f} s): run again with a larger --due-in")
            await asyncio.sleep(2.0)
            waiting = await app.list_runs(status="waiting", limit=n + 10)
            assert len(waiting) == n, f"{len(waiting)} of {n} runs are waiting"
            waiting_kb = proc_status_kb(proc.pid, "VmRSS")
            parked_peak_kb = proc_status_kb(proc.pid, "VmHWM")
            size = store_size(url)
            rels = relations(url)
            tuples = pg_tuples(url) if not url.startswith("sqlite:") else sqlite_cells(url)
            if args.park_only:
                return report_parked(args, n, due_in, started_in, parked_in, idle_kb,
                                     waiting_kb, parked_peak_kb, size, empty, rels,
                                     empty_rels, tuples)

            await until(lambda: count_not(("waiting", "queued", "running")),
                        timeout=due_in + 3600, interval=0.25)
            done = await app.list_runs(status="completed", limit=n + 10)
            finished = [r.finished_at for r in done if r.run_id in started]
            assert len(finished) == n, f"{len(finished)} of {n} runs completed"
            last = max(f for f in finished if f is not None)
            first = min(f for f in finished if f is not None)
            await asyncio.sleep(2.0)
            after_kb = proc_status_kb(proc.pid, "VmRSS")
            peak_kb = proc_status_kb(proc.pid, "VmHWM")
        finally:
            await app.close()
    report_parked(args, n, due_in, started_in, parked_in, idle_kb, waiting_kb,
                  parked_peak_kb, size, empty, rels, empty_rels, tuples)
    print(f"{'worker RSS after all completed / peak':52} "
          f"{after_kb / 1024:>7.1f} / {peak_kb / 1024:.1f} MiB")
    print(f"{'due -> last completed':52} {last - due:>16.1f} s")
    print(f"{'  first completed at (after due)':52} {first - due:>16.2f} s")
    print(f"{'  completion rate':52} {n / (last - due):>12.0f} runs/s")
    print(f"command: {command()}")


def report_parked(args: argparse.Namespace, n: int, due_in: float, started_in: float,
                  parked_in: float, idle_kb: int, waiting_kb: int, parked_peak_kb: int,
                  size: dict[str, int], empty: dict[str, int], rels: dict[str, int],
                  empty_rels: dict[str, int], tuples: dict[str, tuple[int, int, int]]) -> None:
    """The figures taken with every run waiting; on PostgreSQL, per relation: what it
    grew by (every fork, as left behind: nothing vacuumed it) and, from pgstattuple, its
    live row versions, dead ones and free space now (bytes per waiting run)."""
    total = sum(size.values())
    print(f"store: {describe(args.db)}; one worker process, concurrency {args.concurrency}"
          + (f"; VACUUM every {args.vacuum_every:g} s while parking"
             if args.vacuum_every and args.db != "sqlite" else ""))
    print({"due": f"{n} runs, each `tether.sleep` until one due time {due_in:.0f} s after "
                  "the first start (the delay from a journaled `tether.now()`)",
           "sleep": f"{n} runs, each in `tether.sleep({due_in + 3600:.0f})`",
           "signal": f"{n} runs, each in `tether.wait_for_signal('go')`"}[args.wait]
          + ("; run ids made up by Tether" if args.ids == "tether"
             else "; run ids given in order (t-000000, ...)"))
    print(f"{'measure':52} {'value':>18}")
    print(f"{'start (App.start, gathered 1,000 at a time)':52} {n / started_in:>12.0f} runs/s")
    print(f"{'all released (start -> last one waiting)':52} {parked_in:>16.1f} s")
    print(f"{'worker RSS idle (after warm-up)':52} {idle_kb / 1024:>14.1f} MiB")
    print(f"{f'worker RSS with {n} runs waiting':52} {waiting_kb / 1024:>14.1f} MiB")
    print(f"{'worker peak RSS while parking them (VmHWM)':52} {parked_peak_kb / 1024:>14.1f} MiB")
    sizes = ", ".join(f"{k} {v / 2**20:.1f}" for k, v in size.items())
    print(f"{'store on disk with them waiting (MiB)':52} {sizes:>18}")
    print(f"{'  per waiting run (minus the empty store)':52} "
          f"{(total - sum(empty.values())) / n:>12.0f} bytes")
    grown = sorted(((v - empty_rels.get(k, 0), k) for k, v in rels.items()), reverse=True)
    if grown:  # SQLite: payload, -, unused; PostgreSQL: live, dead, free (see above)
        print(f"{'    per relation (bytes per run): grown':52} {'live':>6} {'dead':>6} "
              f"{'free':>6}")
    for extra, rel in grown:
        if extra > 0:  # where the bytes are (on PostgreSQL dead row versions included)
            live, dead, free = tuples.get(rel, (0, 0, 0))
            print(f"{'    ' + rel:45} {extra / n:>6.0f} {live / n:>6.0f} {dead / n:>6.0f} "
                  f"{free / n:>6.0f}")
    if args.park_only:
        print(f"command: {command()}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    lat = sub.add_parser("latency", help="wake-up latency of a released run")
    lat.add_argument("--samples", type=int, default=200)
    lat.add_argument("--cli-samples", type=int, default=20,
                     help="samples sent with the `tether signal` CLI (0: none)")
    tim = sub.add_parser("timers", help="many runs waiting on timers that come due together")
    tim.add_argument("--runs", type=int, default=100_000)
    tim.add_argument("--concurrency", type=int, default=50)
    tim.add_argument("--due-in", type=float, default=None, metavar="SECONDS",
                     help="due time after the first start (default: from --runs)")
    tim.add_argument("--park-only", action="store_true",
                     help="stop once every run is waiting (RSS and store size only)")
    tim.add_argument("--wait", choices=["due", "sleep", "signal"], default="due",
                     help="how each run waits: until the shared due time, computed from a "
                          "journaled tether.now() (default); one tether.sleep; or "
                          "wait_for_signal (sleep and signal: with --park-only)")
    tim.add_argument("--ids", choices=["tether", "given"], default="tether",
                     help="run ids: made up by Tether, as when a caller gives none (default), "
                          "or given by the bench in order (t-000000, t-000001, ...)")
    tim.add_argument("--vacuum-every", type=float, default=0, metavar="SECONDS",
                     help="PostgreSQL: VACUUM the store's tables this often while parking "
                          "(what autovacuum does where it is on; default: never)")
    tim.add_argument("--keep-db", action="store_true",
                     help="keep the PostgreSQL database (for inspection; drop it yourself)")
    for p in (lat, tim):
        p.add_argument("--db", default="sqlite", help="sqlite, postgres or a store URL")
    args = parser.parse_args()
    if getattr(args, "runs", 1) < 1 or getattr(args, "samples", 1) < 1:
        parser.error("--runs and --samples must be at least 1")
    if getattr(args, "wait", "due") != "due" and not args.park_only:
        parser.error("--wait sleep and --wait signal measure parked runs only: add --park-only")
    folder = Path(tempfile.mkdtemp(prefix="tether-bench-waiting-"))
    if args.bench == "latency":
        await bench_latency(args, folder)
    else:
        await bench_timers(args, folder)


if __name__ == "__main__":
    asyncio.run(main())
