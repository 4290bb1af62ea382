"""Where the agent-shaped overhead goes: a timeline of each run of the workload.

    .venv/bin/python bench/agent_timeline.py [--db sqlite|postgres] [--runs 100]
                                             [--steps 20] [--rounds 5] [--src DIR]

``bench/compare``'s ``agent`` workload (``--runs`` runs of ``--steps`` steps that each
await 50 ms, started with one ``App.start_many`` and awaited with ``RunHandle.result``)
on a fresh store, after the same load with no durability (plain asyncio) in the same
process. Per round, one line (milliseconds; medians over the runs, ``/`` the maximum):

- ``overhead``: durable wall time over plain wall time, minus one (the figure
  ``bench/compare`` reports);
- ``start_many``: the call itself; ``first``: from the call to each run's first step;
- ``gap``: from a step's sleep ending to the next step's start, over all steps (p90 too);
- ``tail``: from a run's last step ending to its ``result()`` returning, and its parts:
  ``to_end`` (the last append and the workflow's return, up to the worker's conclusion),
  ``attempts`` (the run's attempt history flushed: written, or on a store that keeps
  its writes in order, issued), ``end`` (the run's end written), ``to_result`` (from
  there to the caller's ``result()``).

On PostgreSQL a second line splits the gap of every step whose append went through
the group-commit writer (medians, ms): ``queued`` (from the append's submission to its
batch's start: the batch in flight before it), ``batch`` (from there until the append's
caller is woken: its answer read), ``resume`` (from there to the run's next step), with
the batches per wave of steps and their median size; and, per batch, the server's CPU
time and its time waiting for a CPU (``/proc/PID/schedstat`` of the connection's
backend: on a machine the client shares with the server, how much of a batch is the
server's work and how much its turn). Timed by wrapping ``AppendWriter.submit``,
``PostgresStore._flush_appends`` and ``PostgresStore._within``.

The parts are timed by wrapping two private methods of the worker
(``Worker._conclude``, ``Worker._record_end``) and one of the run context
(``RunContext.flush_history``); a revision without them (``--src``) prints the tail
whole. ``--src DIR`` runs the Tether found in ``DIR`` (``git archive REV src | tar -x
-C DIR``), to compare two revisions; alternate them, the machine drifts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

PG = os.environ.get("TETHER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
DELAY = 0.05


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--src", help="import Tether from this folder (another revision)")
    return p.parse_args()


def _med(values: list[float]) -> float:
    return statistics.median(values) * 1e3 if values else float("nan")


def _max(values: list[float]) -> float:
    return max(values) * 1e3 if values else float("nan")


class _Marks:
    """Times recorded by the wrapped methods, by run id."""

    def __init__(self) -> None:
        self.at: dict[str, dict[str, float]] = {}

    def mark(self, what: str, run_id: str) -> None:
        self.at.setdefault(what, {})[run_id] = time.perf_counter()

    def wrap(self, owner: Any, name: str, before: str, after: str | None,
             run_of: Any) -> None:
        real = getattr(owner, name, None)
        if real is None:
            return

        async def wrapped(this: Any, *args: Any) -> Any:
            run_id = run_of(this, args)
            self.mark(before, run_id)
            try:
                return await real(this, *args)
            finally:
                if after is not None:
                    self.mark(after, run_id)

        setattr(owner, name, wrapped)


def _schedstat(pid: int) -> tuple[int, int]:
    """Nanoseconds a process ran and waited for a CPU (``/proc/PID/schedstat``)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            ran, waited = f.read().split()[:2]
        return int(ran), int(waited)
    except (OSError, ValueError):
        return 0, 0


class _Writes:
    """The PostgreSQL store's group commit under the workload: when each run's appends
    were submitted, when their batches started and ended, and each batch's server time
    (see the module's docstring)."""

    def __init__(self) -> None:
        from tether.store.postgres import _group_commit, _store

        self.submitted: dict[str, list[float]] = {}
        self.started: dict[str, list[float]] = {}  # their batches' starts
        self.answered: dict[str, list[float]] = {}  # their callers woken
        self.sizes: list[int] = []
        self.server: list[tuple[float, float]] = []  # (ran, waited) seconds per batch
        submit = _group_commit.AppendWriter.submit
        flush = _store.PostgresStore._flush_appends
        within = _store.PostgresStore._within

        def submit_timed(this: Any, lease: Any, *args: Any, **kw: Any) -> Any:
            self.submitted.setdefault(lease.run_id, []).append(time.perf_counter())
            fut = submit(this, lease, *args, **kw)
            answered = self.answered.setdefault(lease.run_id, [])
            fut.add_done_callback(lambda f: answered.append(time.perf_counter()))
            return fut

        async def flush_timed(this: Any, batch: list[Any]) -> None:
            start = time.perf_counter()
            self.sizes.append(len(batch))
            for item in batch:
                self.started.setdefault(item.lease.run_id, []).append(start)
            await flush(this, batch)

        async def within_timed(this: Any, conn: Any, fn: Any, timeout: float) -> Any:
            if "_flush_appends" not in getattr(fn, "__qualname__", ""):
                return await within(this, conn, fn, timeout)
            pid = conn.info.backend_pid
            ran0, waited0 = _schedstat(pid)
            try:
                return await within(this, conn, fn, timeout)
            finally:
                ran1, waited1 = _schedstat(pid)
                self.server.append(((ran1 - ran0) / 1e9, (waited1 - waited0) / 1e9))

        setattr(_group_commit.AppendWriter, "submit", submit_timed)  # noqa: B010
        setattr(_store.PostgresStore, "_flush_appends", flush_timed)  # noqa: B010
        setattr(_store.PostgresStore, "_within", within_timed)  # noqa: B010

    def clear(self) -> None:
        self.submitted.clear()
        self.started.clear()
        self.answered.clear()
        self.sizes.clear()
        self.server.clear()

    def report(self, keys: dict[str, str], steps_at: dict[str, list[tuple[float, float]]],
               runs: int) -> str:
        queued: list[float] = []
        batch: list[float] = []
        resume: list[float] = []
        for run_id, key in keys.items():
            steps = steps_at[key]
            sub = self.submitted.get(run_id, [])
            start = self.started.get(run_id, [])
            answer = self.answered.get(run_id, [])
            # (steps' appends only: the run's last append and its end come after)
            for i in range(min(len(steps) - 1, len(sub), len(start), len(answer))):
                queued.append(start[i] - sub[i])
                batch.append(answer[i] - start[i])
                resume.append(steps[i + 1][0] - answer[i])
        waves = sum(len(s) for s in steps_at.values()) / max(runs, 1)
        ran = [r for r, _ in self.server]
        waited = [w for _, w in self.server]
        return (f"writer: queued {_med(queued):.2f} + batch {_med(batch):.2f} + resume "
                f"{_med(resume):.2f}  ({len(queued)} steps); {len(self.sizes) / waves:.1f} "
                f"batches per wave of {runs}, median {statistics.median(self.sizes or [0])} "
                f"appends; server per batch: ran {_med(ran):.2f}, waited for a CPU "
                f"{_med(waited):.2f}")


async def _plain(runs: int, steps: int) -> float:
    async def one() -> None:
        for _ in range(steps):
            await asyncio.sleep(DELAY)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    return time.perf_counter() - t0


async def main() -> None:
    a = _args()
    if a.src:
        sys.path.insert(0, a.src)
    from tether import App, _replay
    from tether.worker import _worker

    marks = _Marks()
    marks.wrap(_worker.Worker, "_conclude", "conclude", None,
               lambda this, args: args[0].run_id)
    marks.wrap(_worker.Worker, "_record_end", "end0", "end1",
               lambda this, args: args[0].run_id)
    marks.wrap(_replay.RunContext, "flush_history", "attempts0", "attempts1",
               lambda this, args: this.run_id)

    writes = _Writes() if a.db == "postgres" else None
    db_name = ""
    if a.db == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp(prefix='agent-timeline-')}/a.db"
    else:
        import psycopg

        db_name = f"agent_timeline_{uuid.uuid4().hex[:10]}"
        async with await psycopg.AsyncConnection.connect(PG, autocommit=True) as c:
            await c.execute(f"CREATE DATABASE {db_name}")
        url = PG.rsplit("/", 1)[0] + "/" + db_name
    app = App(url)
    steps_at: dict[str, list[tuple[float, float]]] = {}

    @app.step
    async def think(key: str) -> int:
        start = time.perf_counter()
        await asyncio.sleep(DELAY)  # a model call's latency
        steps_at.setdefault(key, []).append((start, time.perf_counter()))
        return 1

    @app.workflow
    async def agent(key: str, steps: int) -> int:
        total = 0
        for _ in range(steps):
            total += await think(key)
        return total

    try:
        async with app.worker(concurrency=a.runs):
            await (await app.start(agent, "warm-up", 2)).result(timeout=60)
            print(f"{a.db}, {a.runs} runs x {a.steps} steps of {DELAY * 1e3:.0f} ms; "
                  "ms, medians over the runs (/ max)")
            for rnd in range(a.rounds):
                plain = await _plain(a.runs, a.steps)
                steps_at.clear()
                marks.at.clear()
                if writes is not None:
                    writes.clear()
                t0 = time.perf_counter()
                handles = await app.start_many(
                    agent, [(f"{rnd}-{k}", a.steps) for k in range(a.runs)])
                t1 = time.perf_counter()
                done: dict[str, float] = {}

                async def result(h: Any, done: dict[str, float] = done) -> None:
                    await h.result(timeout=120)
                    done[h.run_id] = time.perf_counter()

                await asyncio.gather(*(result(h) for h in handles))
                wall = time.perf_counter() - t0
                keys = {h.run_id: f"{rnd}-{k}" for k, h in enumerate(handles)}
                first = [steps_at[k][0][0] - t0 for k in keys.values()]
                gaps = [b[0] - a_[1] for k in keys.values()
                        for a_, b in zip(steps_at[k], steps_at[k][1:], strict=False)]
                last = {rid: steps_at[k][-1][1] for rid, k in keys.items()}

                def span(start: dict[str, float] | None, end: dict[str, float] | None,
                         keys: dict[str, str] = keys) -> list[float]:
                    if start is None or end is None:
                        return []
                    return [end[r] - start[r] for r in keys if r in start and r in end]

                at = marks.at
                tail = span(last, done)
                parts = (f" = to_end {_med(span(last, at.get('conclude'))):.2f}"
                         f" + attempts {_med(span(at.get('attempts0'), at.get('attempts1'))):.2f}"
                         f" + end {_med(span(at.get('end0'), at.get('end1'))):.2f}"
                         f" + to_result {_med(span(at.get('end1'), done)):.2f}"
                         if "end1" in at else "")
                gaps.sort()
                print(f"overhead {(wall / plain - 1) * 100:5.1f} %"
                      f"  start_many {(t1 - t0) * 1e3:.1f}"
                      f"  first {_med(first):.1f}/{_max(first):.1f}"
                      f"  gap {_med(gaps):.2f} (p90 {gaps[int(len(gaps) * 0.9)] * 1e3:.2f})"
                      f"  tail {_med(tail):.1f}/{_max(tail):.1f}"
                      + parts.replace("nan", "-"), flush=True)
                if writes is not None:
                    print("  " + writes.report(keys, steps_at, a.runs), flush=True)
    finally:
        await app.close()
        if db_name:
            import psycopg

            async with await psycopg.AsyncConnection.connect(PG, autocommit=True) as c:
                await c.execute(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")


if __name__ == "__main__":
    asyncio.run(main())
