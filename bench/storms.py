"""Long journals and storms (issue 15, item 4).

    .venv/bin/python bench/storms.py replay [--db sqlite|postgres|URL] [--positions 10000]
    .venv/bin/python bench/storms.py killed [--db sqlite|postgres|URL] [--runs 1000]

replay: a run journals ``--positions`` trivial steps, then waits for a signal (released).
The signal makes it claimable again; the claim loads its journal and the worker replays
every position to reach the wait, then runs the next step. Reported: the time from the
send to that step running (claim + journal load + replay + one step), and the same for
a run of 10 positions, so the difference is the replay of the long journal.
``--samples`` of each (default 3), the median.

killed: one worker process runs ``--runs`` runs; each journals step 0 and hangs in step
1. When all are in step 1 the process is killed (SIGKILL). A new worker process starts;
reported: the time from its spawn to the last of the runs re-running step 1 (each step
1 appends ``time.time()`` to a file), and to the first.

100,000 waiting runs (worker RSS, store bytes per waiting run) are measured by
``bench/waiting.py timers``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "compare"))

from common import mark  # noqa: E402

import tether  # noqa: E402
from tether import App  # noqa: E402

PG_ADMIN = os.environ.get("TETHER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def make_app(url: str | None, marks: str | None = None) -> App:
    app = App(url)

    @app.step
    async def noop(i: int) -> int:
        return i

    @app.step
    async def stamp() -> float:
        return time.time()

    @app.workflow
    async def long_journal(n: int) -> float:
        for i in range(n):
            await noop(i)
        await tether.wait_for_signal("go")
        return await stamp()

    @app.step
    async def hang(i: int) -> int:
        assert marks is not None
        mark(marks, i)
        if os.environ.get("BENCH_HANG") == "1":
            await asyncio.sleep(3600)
        return i

    @app.workflow
    async def victim(i: int) -> int:
        await noop(i)
        return await hang(i)

    return app


def fresh(db: str, folder: Path, name: str) -> str:
    if db == "sqlite":
        return f"sqlite:///{folder}/{name}.db"
    if db != "postgres":
        return db
    import psycopg

    dbname = f"tether_storms_{name}_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{dbname}"')
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + dbname


def drop(url: str) -> None:
    if not url.startswith("postgresql://"):
        return
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


async def replay_once(url: str, positions: int) -> float:
    app = make_app(url)
    wf = app.workflows()["long_journal"].fn
    async with app.worker(concurrency=1):
        h = await app.start(wf, positions)
        while (await app.get_run(h.run_id)).status != "waiting":
            await asyncio.sleep(0.02)
        t0 = time.time()
        await app.signal(h.run_id, "go")
        resumed = float(await h.result(timeout=600))
    await app.close()
    return resumed - t0


async def bench_replay(db: str, positions: int, folder: Path, count: int) -> None:
    rows = []
    for n in (10, positions):
        samples = []
        for i in range(count):
            url = fresh(db, folder, f"replay{n}_{i}")
            try:
                samples.append(await replay_once(url, n))
            finally:
                drop(url)
        rows.append((n, samples))
    print(f"store: {db}")
    print(f"{'journal positions':>18} {'signal -> next step (median, min-max)':>40}")
    for n, s in rows:
        print(f"{n:>18} {statistics.median(s) * 1000:>17.1f} ms "
              f"({min(s) * 1000:.1f}-{max(s) * 1000:.1f})")
    short, long_ = (statistics.median(s) for _, s in rows)
    print(f"replay of {positions} positions: {(long_ - short) * 1000:.1f} ms "
          f"({(long_ - short) / positions * 1e6:.1f} µs per position)")


WORKER = """
import asyncio, sys
sys.path.insert(0, {here!r})
from storms import make_app
app = make_app({url!r}, {marks!r})
async def main():
    async with app.worker(concurrency={runs}):
        await asyncio.sleep(3600)
asyncio.run(main())
"""


async def bench_killed(db: str, runs: int, folder: Path) -> None:
    url = fresh(db, folder, "killed")
    marks = folder / "killed.marks"
    marks.touch()
    code = WORKER.format(here=str(HERE), url=url, marks=str(marks), runs=runs)
    try:
        client = make_app(url)
        await client.start_many(client.workflows()["victim"].fn, [(i,) for i in range(runs)])
        first = subprocess.Popen([sys.executable, "-c", code],
                                 env={**os.environ, "BENCH_HANG": "1"})
        while len(marks.read_text().splitlines()) < runs:
            if first.poll() is not None:
                raise SystemExit("the first worker died")
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        t0 = time.time()
        second = subprocess.Popen([sys.executable, "-c", code])
        try:
            while len(marks.read_text().splitlines()) < 2 * runs:
                await asyncio.sleep(0.02)
        finally:
            second.terminate()
            second.wait(30)
        times = sorted(float(line.split()[1]) for line in marks.read_text().splitlines()[runs:])
        await client.close()
    finally:
        drop(url)
    print(f"store: {db}   {runs} runs killed in step 1 (SIGKILL of their worker process)")
    print(f"new worker spawned -> first run resumed: {(times[0] - t0) * 1000:8.0f} ms")
    print(f"new worker spawned -> all {runs} resumed: {(times[-1] - t0) * 1000:8.0f} ms")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["replay", "killed"])
    p.add_argument("--db", default="sqlite")
    p.add_argument("--positions", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--samples", type=int, default=3, help="replay: samples of each")
    a = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tether-storms-"))
    print(f"command: python bench/storms.py {' '.join(sys.argv[1:])}")
    if a.what == "replay":
        await bench_replay(a.db, a.positions, folder, a.samples)
    else:
        await bench_killed(a.db, a.runs, folder)


if __name__ == "__main__":
    asyncio.run(main())
