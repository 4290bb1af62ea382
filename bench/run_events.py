"""What storing live events (migration 0004, for ``tether serve``'s SSE) costs per step.

    .venv/bin/python bench/run_events.py [--db sqlite|postgres] [--steps 2000]
                                         [--runs 1000] [--rounds 5]

Migration 0004 adds triggers that write one ``run_events`` row per finished journal
entry and per run status change, in the transaction that made the change. This bench
runs the same code on two fresh stores per round: one as migrated (events on), one
with those triggers dropped (events off, what the store did before 0004), alternating
the order each round, and reports medians of:

- one workflow of ``--steps`` trivial sequential steps (latency: one commit per step);
- ``--runs`` workflows x 10 trivial steps run concurrently by one worker (throughput:
  commits shared by group commit);

each as wall-clock time per step and as **CPU time per step**: this process's (the
engine, and SQLite, which runs in it) plus, on PostgreSQL, the server backends serving
the store (read from ``/proc``; the server must run on this host). CPU time is the
figure to trust on a shared, loaded machine: wall-clock time there moves with other
people's work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from core import drop_created, make_app, pg_op_events, resolve

from tether import App

_TICK = os.sysconf("SC_CLK_TCK")


SQLITE_TRIGGERS = ("tether_run_events_journal_insert", "tether_run_events_journal_update",
                   "tether_run_events_status", "tether_run_events_live")
PG_TRIGGERS = (("run_events_journal", "journal"), ("run_events_run", "runs"))


async def events_off(url: str) -> None:
    """Migrate the store, then drop the triggers that record run events."""
    async with App(url) as app:
        await app.list_runs(limit=1)  # opens (and migrates) the store
    if url.startswith("sqlite"):
        import sqlite3

        lite = sqlite3.connect(url.removeprefix("sqlite:///"))
        with lite:
            for name in SQLITE_TRIGGERS:
                lite.execute(f"DROP TRIGGER {name}")
        lite.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            for name, table in PG_TRIGGERS:
                conn.execute(f"DROP TRIGGER {name} ON tether.{table}")


async def events_counted(url: str) -> int:
    async with App(url) as app:
        runs = await app.store.run_search(limit=1)
        if not runs:
            return 0
        return len(await app.store.run_events_read(run_id=runs[0].run_id, after=None,
                                                   limit=100_000))


async def _migrated(url: str) -> str:
    async with App(url) as app:
        await app.list_runs(limit=1)
    return url


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _backends(url: str) -> dict[int, float]:
    """CPU seconds so far of each server backend connected to the bench database."""
    if url.startswith("sqlite"):
        return {}
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        pids = [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()").fetchall()]
    return {pid: _proc_cpu(pid) for pid in pids}


async def measure(url: str, workload: str, n: int, events: bool = True,
                  ) -> tuple[float, float, float]:
    """(wall s, this process's CPU s, server backends' CPU s) per step. ``events`` off on
    PostgreSQL: the journal appends are sent without the op events they write themselves
    (migration 0009; ``events_off`` dropped the triggers)."""
    app = make_app(url)
    if not events and not url.startswith("sqlite"):
        await app.list_runs(limit=1)  # the store open
        pg_op_events(app.store)(False)
    wfs = app.workflows()
    async with app.worker(concurrency=1):
        await (await app.start(wfs["sequential"].fn, 10)).result(timeout=60)  # warm up
    # Every run is queued before the measured worker starts, so it measures them all.
    if workload == "seq":
        handles = [await app.start(wfs["sequential"].fn, n)]
        steps = n
    else:
        handles = [await app.start(wfs["ten"].fn) for _ in range(n)]
        steps = n * 10
    before = _backends(url)
    cpu0, t0 = time.process_time(), time.perf_counter()
    async with app.worker(concurrency=1 if workload == "seq" else n):
        for h in handles:
            await h.result(timeout=600)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        after = _backends(url)
    await app.close()
    server = sum(c - before.get(pid, 0.0) for pid, c in after.items())
    return wall / steps, cpu / steps, server / steps


TRIGGER_ROWS = 20_000


def _trigger_alone(url: str, repeat: int = 15) -> float:
    """µs per journal row written in one statement (best of ``repeat``): the triggers'
    own cost per operation is this with events on minus this with them off."""
    best = float("inf")
    if url.startswith("sqlite"):
        import apsw

        conn = apsw.Connection(url.removeprefix("sqlite:///"))
        for _ in range(repeat):
            conn.execute("BEGIN")
            t0 = time.process_time()
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                "INSERT INTO tether_journal (run_id, position, kind, name, status, result, "
                "attempts, fencing_token) SELECT 'bench', i, 'step', 'noop', 'ok', '1', 1, 1 "
                "FROM n", (TRIGGER_ROWS - 1,))
            best = min(best, time.process_time() - t0)
            conn.execute("ROLLBACK")
        conn.close()
    else:
        import psycopg

        with psycopg.connect(url) as pg:
            for _ in range(repeat):
                with pg.transaction(force_rollback=True):
                    t0 = time.perf_counter()
                    pg.execute(
                        "INSERT INTO tether.journal (run_id, position, kind, name, status, "
                        "result, attempts, fencing_token) SELECT 'bench', i, 'step', 'noop', "
                        "'ok', '1', 1, 1 FROM generate_series(0, %s) AS i", (TRIGGER_ROWS - 1,))
                    best = min(best, time.perf_counter() - t0)
    return best / TRIGGER_ROWS * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trigger-only", action="store_true",
                        help="measure only the triggers' own cost per journal row")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tether-bench-events-"))
    if args.trigger_only:
        args.rounds = 0
    found: dict[tuple[str, bool], list[tuple[float, float, float]]] = {}
    for r in range(args.rounds):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            for workload, n in (("seq", args.steps), ("conc", args.runs)):
                url = resolve(args.db, folder, f"{workload}_{'on' if on else 'off'}{r}")
                if not on:
                    await events_off(url)
                got = await measure(url, workload, n, on)
                found.setdefault((workload, on), []).append(got)
                if r == 0:
                    # The bench measures what it claims: events are written when on only.
                    count = await events_counted(url)
                    assert count > 0 if on else count == 0, f"{count} run events (on: {on})"
                print(f"round {r + 1}/{args.rounds} {workload:4} events "
                      f"{'on ' if on else 'off'}: wall {got[0] * 1e6:6.0f} µs/step, "
                      f"cpu {got[1] * 1e6:5.0f} + server {got[2] * 1e6:5.0f} µs/step",
                      file=sys.stderr, flush=True)

    url_on, url_off = resolve(args.db, folder, "trig_on"), resolve(args.db, folder, "trig_off")
    await events_off(url_off)
    alone_on = _trigger_alone(await _migrated(url_on))
    alone_off = _trigger_alone(url_off)

    def med(workload: str, on: bool, i: int) -> float:
        return statistics.median(x[i] for x in found[(workload, on)]) * 1e6

    print(f"command: python bench/run_events.py {' '.join(sys.argv[1:])}".rstrip())
    if not args.trigger_only:
        print(f"store: {args.db}; medians of {args.rounds} rounds; µs per step")
        print(f"{'workload':30} {'measure':22} {'events off':>10} {'events on':>10} "
              f"{'cost':>8}")
    for workload, label in () if args.trigger_only else (
            ("seq", f"{args.steps} sequential steps"), ("conc", f"{args.runs} runs x 10 steps")):
        rows = [("wall clock", 0), ("CPU, this process", 1)]
        if args.db == "postgres":
            rows.append(("CPU, server backends", 2))
        for name, i in rows:
            off, with_ = med(workload, False, i), med(workload, True, i)
            cost = f"{(with_ / off - 1) * 100:+7.1f}%" if off else "-"
            print(f"{label:30} {name:22} {off:10.1f} {with_:10.1f} {cost:>8}")
        if args.db == "postgres":
            off = med(workload, False, 1) + med(workload, False, 2)
            with_ = med(workload, True, 1) + med(workload, True, 2)
            print(f"{label:30} {'CPU, total':22} {off:10.1f} {with_:10.1f} "
                  f"{(with_ / off - 1) * 100:+7.1f}%")
    print(f"{args.db}: {TRIGGER_ROWS} journal rows in one statement, µs per row (best of 15): "
          f"{alone_off:.2f} without the triggers, {alone_on:.2f} with them: the triggers "
          f"cost {alone_on - alone_off:.2f} µs per operation")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    finally:
        drop_created()
