"""CPU cost of a sequential step (or of a run under load), measured so that a loaded
machine moves it less than the wall time.

    .venv/bin/python bench/stepcost.py [--db sqlite|postgres] [--steps 2000] [--runs N]
                                        [--agent N] [--gathered N] [--src DIR]
                                        [--gc SETTING] [--profile FILE]

One run of ``--steps`` trivial async steps on a fresh store (after a 20-step warm-up),
with one worker of concurrency 1, like ``bench/compare``'s ``seq`` workload; with
``--runs N``, N runs of 10 steps started at once with ``App.start_many`` and awaited
with ``RunHandle.result`` (``bench/compare``'s ``throughput``), figures per run; with
``--agent N``, N runs of 20 steps that each await 50 ms (``bench/compare``'s ``agent``),
figures per step (``plain_wall_us``: the wall per step with no overhead at all); with
``--gathered N``, N runs at once, each gathering 3 branches of 5 trivial steps (results
delivered in the order they completed: ``RunContext.turn``), figures per step, to set
against ``--runs N --run-steps 15`` (the same 15 steps one after another).
Printed (one JSON line): wall µs, CPU µs of the whole process (all threads: the event
loop and the store's own threads) and of the event-loop thread alone. CPU time counts
only what this process executes; other processes still change it through caches and
frequency, so compare revisions interleaved and look at medians.
On PostgreSQL also ``server_cpu_us``, the CPU time of the backends serving the
benchmark's database (``/proc/PID/schedstat``, nanoseconds: the server's own work
for what the run writes, without the WAL writer and other shared processes, which
``/proc/PID/stat``'s 10 ms ticks resolve too coarsely for one run), and
``batches_per_step``, the group-commit writer's batches.

``--src DIR`` runs the Tether found in ``DIR`` (a ``src`` folder exported from another
revision: ``git archive REV src | tar -x -C /tmp/x``) to compare two revisions.
The CPU time the garbage collector took and its collections by generation are printed
too (``gc_ms``, ``gc_collections``); ``--gc`` tries another setting. ``--profile``
writes a cProfile of the measured run (CPU figures are then inflated).
For system calls per step (fsyncs, WAL writes, writes to the loop's self-pipe, sends),
run it under ``strace -f -c -e trace=fdatasync,pwrite64,sendto,recvfrom,poll,epoll_wait``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
import uuid
from typing import Any

PG = os.environ.get("TETHER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--runs", type=int, default=0,
                   help="throughput instead: this many runs of 10 steps at once "
                        "(App.start_many, starts timed); figures per run")
    p.add_argument("--agent", type=int, default=0, metavar="N",
                   help="agent-shaped instead: N runs of 20 steps that each await 50 ms, "
                        "started at once; figures per step (CPU is what delays a wave "
                        "of runs waking together)")
    p.add_argument("--gathered", type=int, default=0, metavar="N",
                   help="N runs at once of 3 gathered branches x 5 trivial steps; figures "
                        "per step")
    p.add_argument("--run-steps", type=int, default=10,
                   help="steps per run with --runs (default 10)")
    p.add_argument("--src", help="import Tether from this folder (another revision)")
    p.add_argument("--gc", default="",
                   help="garbage collector setting to try: 'off', 'freeze' (gc.freeze() "
                        "after the warm-up), or thresholds 'T0,T1,T2'")
    p.add_argument("--profile", help="write a cProfile of the measured run here")
    p.add_argument("--relaxed", action="store_true",
                   help="synchronous=NORMAL (SQLite) / synchronous_commit=off (PostgreSQL)")
    return p.parse_args()


async def _server_ns(db_name: str) -> dict[int, int]:
    """Nanoseconds on a CPU (``/proc/PID/schedstat``) of the server's backends serving
    ``db_name``, by process id (none for SQLite; a backend that exits between two
    reads is not counted; the WAL writer and other shared processes are not either)."""
    if not db_name:
        return {}
    import psycopg

    async with await psycopg.AsyncConnection.connect(PG, autocommit=True) as c:
        cur = await c.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s",
                              (db_name,))
        pids = [r[0] for r in await cur.fetchall()]
    ns = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                ns[pid] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return ns


async def main() -> dict[str, Any]:
    a = _args()
    if a.src:
        sys.path.insert(0, a.src)
    from tether import App

    tmp = tempfile.mkdtemp(prefix="stepcost-")
    db_name = ""
    if a.db == "sqlite":
        url = f"sqlite:///{tmp}/s.db" + ("?synchronous=NORMAL" if a.relaxed else "")
    else:
        import psycopg

        db_name = f"stepcost_{uuid.uuid4().hex[:10]}"
        async with await psycopg.AsyncConnection.connect(PG, autocommit=True) as c:
            await c.execute(f"CREATE DATABASE {db_name}")
        url = PG.rsplit("/", 1)[0] + "/" + db_name
        if a.relaxed:
            os.environ["PGOPTIONS"] = "-c synchronous_commit=off"
    app = App(url)

    @app.step
    async def noop(i: int) -> int:
        return i

    @app.step
    async def think(i: int) -> int:
        await asyncio.sleep(0.05)  # a model call's latency
        return i

    @app.workflow
    async def agent(n: int) -> int:
        total = 0
        for i in range(n):
            total += await think(i)
        return total

    async def branch(b: int) -> int:
        total = 0
        for i in range(5):
            total += await noop(b * 10 + i)
        return total

    @app.workflow
    async def gathered() -> int:
        return sum(await asyncio.gather(branch(0), branch(1), branch(2)))

    @app.workflow
    async def sequential(n: int) -> int:
        total = 0
        for i in range(n):
            total += await noop(i)
        return total

    out: dict[str, Any] = {"db": a.db, "steps": a.steps, "src": a.src or "worktree"}
    if a.runs:
        out["per"] = "run"
    if a.agent or a.gathered:
        out["per"] = "step"
    try:
        async with app.worker(concurrency=max(1, a.runs, a.agent, a.gathered)):
            await (await app.start(sequential, 20)).result(timeout=120)  # warm up
            prof = None
            if a.profile:
                import cProfile

                prof = cProfile.Profile()
                prof.enable()
            # seconds, started at, collections by generation, seconds by generation
            gc_time: list[float] = [0.0, 0.0, 0, 0, 0, 0.0, 0.0, 0.0]

            def on_gc(phase: str, info: dict[str, int]) -> None:
                if phase == "start":
                    gc_time[1] = time.thread_time()
                else:
                    took = time.thread_time() - gc_time[1]
                    gc_time[0] += took
                    gc_time[2 + info["generation"]] += 1
                    gc_time[5 + info["generation"]] += took

            if a.gc == "off":
                gc.disable()
            elif a.gc == "freeze":
                gc.freeze()
            elif a.gc:
                gc.set_threshold(*(int(x) for x in a.gc.split(",")))
            gc.callbacks.append(on_gc)
            server0 = await _server_ns(db_name)
            writer = getattr(app.store, "_writer", None)
            batches0 = writer.batches if writer is not None else 0
            c0, t0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
            if a.agent:
                handles = await app.start_many(agent, [(20,)] * a.agent)
                await asyncio.gather(*(h.result(timeout=1800) for h in handles))
            elif a.gathered:
                handles = await app.start_many(gathered, [()] * a.gathered)
                await asyncio.gather(*(h.result(timeout=1800) for h in handles))
            elif a.runs:
                if hasattr(app, "start_many"):
                    handles = await app.start_many(sequential, [(a.run_steps,)] * a.runs)
                else:
                    handles = await asyncio.gather(*(app.start(sequential, a.run_steps)
                                                      for _ in range(a.runs)))
                await asyncio.gather(*(h.result(timeout=1800) for h in handles))
            else:
                await (await app.start(sequential, a.steps)).result(timeout=1800)
            c1, t1, w1 = time.process_time(), time.thread_time(), time.perf_counter()
            server1 = await _server_ns(db_name)
            batches1 = writer.batches if writer is not None else 0
            gc.callbacks.remove(on_gc)
            out.update(gc_ms=round(gc_time[0] * 1e3, 1), gc_collections=gc_time[2:5],
                       gc_ms_by_gen=[round(x * 1e3, 1) for x in gc_time[5:]])
            if prof is not None:
                prof.disable()
                prof.dump_stats(a.profile)
        await app.close()
    finally:
        if db_name:
            import psycopg

            async with await psycopg.AsyncConnection.connect(PG, autocommit=True) as c:
                await c.execute(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
    n = (a.agent * 20 if a.agent else a.gathered * 15 if a.gathered
         else a.runs or a.steps)
    if a.agent:
        out.update(runs=a.agent, steps=20, plain_wall_us=round(20 * 0.05 / n * 1e6, 1))
    elif a.gathered:
        out.update(runs=a.gathered, steps=15, runs_per_s=round(a.gathered / (w1 - w0)))
    elif a.runs:
        out.update(runs=a.runs, runs_per_s=round(a.runs / (w1 - w0)), steps=a.run_steps)
    out.update(wall_us=round((w1 - w0) / n * 1e6, 1), cpu_us=round((c1 - c0) / n * 1e6, 1),
               loop_cpu_us=round((t1 - t0) / n * 1e6, 1))
    if db_name:
        ns = sum(t - server0.get(pid, 0) for pid, t in server1.items())
        out.update(server_cpu_us=round(ns / 1e3 / n, 1),
                   batches_per_step=round((batches1 - batches0) / n, 3))
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
