"""Multi-process benchmark: worker processes sharing one store.

    .venv/bin/python bench/cluster.py [--db postgres,sqlite] [--steps 1000] [--runs 1000]
                                      [--workers 1,2,4] [--step-cpu MS] [--no-round-trips]
                                      [--idle 20]

For each store (``postgres``: a scratch database on 127.0.0.1:5432, dropped at the end;
``sqlite``: a scratch file; or a URL), with its default durability
(``synchronous_commit=on``, ``synchronous=FULL``):

- sequential: µs per step of one workflow of ``--steps`` trivial steps, executed by one
  worker process (from ``start`` to the run's recorded end);
- concurrent: ``--runs`` workflows of 10 trivial steps, queued before the workers start,
  then executed by 1, 2 and 4 worker processes (each with concurrency runs/workers):
  workflows/s and steps/s from the moment the workers are let go to the last run's end,
  and each count's speed-up over the first count given (one process by default);
- ``--step-cpu MS``: the same, with steps that each spend MS milliseconds of CPU in the
  worker (as parsing a model's answer or building a prompt does), so that the workers,
  not the database, are the bottleneck: with trivial steps on a small machine the
  database's server processes share the cores with the workers, and adding workers
  only moves CPU from one to the other;
- round trips per step (PostgreSQL): a separate pass of both workloads with one worker
  whose connections go through a TCP proxy that counts the messages that make the
  client wait (``tests/store/rtproxy.py``: each Sync, Flush or simple Query), so the
  figures above are measured without the proxy;
- ``--idle N``: round trips per second of N idle worker processes over ``--idle-seconds``.

Worker processes are this file run with ``--serve``: a ``tether.Worker`` that opens the
store, says ``ready``, and starts claiming when it reads a line on stdin, so that every
worker starts at the same moment. Prints the command line and one table per store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.core import make_app  # noqa: E402
from tests.store.rtproxy import RoundTripProxy  # noqa: E402

from tether import App  # noqa: E402
from tether.store import Store  # noqa: E402

ADMIN_URL = os.environ.get("TETHER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
app = make_app(None)  # the same trivial workflows as bench/core.py
sequential = app.workflows()["sequential"].fn
ten = app.workflows()["ten"].fn


@app.step
async def busy(i: int, ms: float) -> int:
    """A step that spends ``ms`` milliseconds of this thread's CPU."""
    end = time.thread_time() + ms / 1000
    while time.thread_time() < end:
        pass
    return i


@app.workflow
async def ten_busy(ms: float) -> int:
    total = 0
    for i in range(10):
        total += await busy(i, ms)
    return total


# -- the worker process -----------------------------------------------------------------


async def serve(url: str, concurrency: int) -> None:
    """A worker process: open the store, say ready, start on a line from stdin, stop on
    SIGTERM."""
    app.use_store(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with app:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        async with app.worker(concurrency=concurrency):
            await stop.wait()


# -- the parent -------------------------------------------------------------------------


@dataclass
class Cluster:
    """Worker processes started together; ended by their PID."""

    url: str
    logs: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def spawn(self, n: int, concurrency: int) -> None:
        for _ in range(n):
            with open(self.logs / f"worker-{len(self.procs)}.log", "w") as log:
                self.procs.append(subprocess.Popen(
                    [sys.executable, __file__, "--serve", self.url, "--concurrency",
                     str(concurrency)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                    cwd=ROOT))

    async def ready(self) -> None:
        for p in self.procs:
            assert p.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(p.stdout.readline), 120)
            if line.strip() != "ready":
                raise RuntimeError(f"worker {p.pid} did not start; see {self.logs}")

    def go(self) -> float:
        """Let every worker start claiming; returns the time (time.time())."""
        t = time.time()
        for p in self.procs:
            stdin: IO[str] | None = p.stdin
            assert stdin is not None
            stdin.write("go\n")
            stdin.flush()
        return t

    async def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                await asyncio.to_thread(p.wait, 30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs.clear()


@contextlib.asynccontextmanager
async def cluster(url: str, logs: Path, n: int, concurrency: int) -> AsyncIterator[Cluster]:
    c = Cluster(url, logs)
    try:
        c.spawn(n, concurrency)
        await c.ready()
        yield c
    finally:
        await c.stop()


async def wait_done(store: Store, timeout: float) -> None:
    """Until no run is queued or running (the bench's workflows never wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [await store.run_list(status=s, limit=1) for s in ("queued", "running")]
        if not any(busy):
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"runs still unfinished after {timeout} s")


async def last_finish(store: Store, runs: int) -> float:
    done = await store.run_list(status="completed", limit=runs + 10)
    if len(done) < runs:
        raise RuntimeError(f"only {len(done)} of {runs} runs completed")
    return max(r.finished_at or 0.0 for r in done)


async def bench_sequential(url: str, logs: Path, steps: int,
                           proxy: RoundTripProxy | None = None) -> tuple[float, float | None]:
    """µs per step of one run of ``steps`` steps on one worker process (and round trips
    per step when its connections go through ``proxy``)."""
    client = App(url)
    async with client:
        async with cluster(proxy.url(url) if proxy else url, logs, 1, 1) as c:
            c.go()
            await wait_done(client.store, 60)  # nothing queued; lets the worker settle
            warm = await client.start(sequential, 20)
            await warm.result(timeout=60)
            if proxy:
                proxy.reset()
            t0 = time.time()
            handle = await client.start(sequential, steps)
            await wait_done(client.store, 600)
            run = await client.store.run_get(handle.run_id)
            trips = proxy.round_trips if proxy else None
        assert run is not None and run.status == "completed", run
        assert run.finished_at is not None
    return (run.finished_at - t0) / steps * 1e6, (trips / steps if trips is not None else None)


async def bench_concurrent(url: str, logs: Path, runs: int, workers: int,
                           proxy: RoundTripProxy | None = None,
                           step_ms: float = 0.0) -> tuple[float, float | None]:
    """Seconds for ``workers`` processes to execute ``runs`` queued 10-step runs (and
    round trips per step through ``proxy``); with ``step_ms``, steps that each spend
    that many milliseconds of CPU."""
    client = App(url)
    async with client:
        if step_ms:
            await client.start_many(ten_busy, [(step_ms,)] * runs)
        else:
            await _gather_limited([lambda: client.start(ten) for _ in range(runs)], 20)
        per_worker = -(-runs // workers)
        async with cluster(proxy.url(url) if proxy else url, logs, workers, per_worker) as c:
            if proxy:
                proxy.reset()
            t_go = c.go()
            await wait_done(client.store, 600)
            trips = proxy.round_trips if proxy else None
            end = await last_finish(client.store, runs)
    return end - t_go, (trips / (runs * 10) if trips is not None else None)


async def bench_idle(url: str, logs: Path, workers: int, seconds: float) -> float:
    """Round trips per second of ``workers`` idle worker processes."""
    proxy = await RoundTripProxy().start()
    try:
        async with cluster(proxy.url(url), logs, workers, 10) as c:
            c.go()
            await asyncio.sleep(3)  # past start-up
            proxy.reset()
            t0 = time.monotonic()
            await asyncio.sleep(seconds)
            return proxy.round_trips / (time.monotonic() - t0)
    finally:
        await proxy.close()


async def _gather_limited(makers: list[Callable[[], Awaitable[Any]]], limit: int) -> None:
    sem = asyncio.Semaphore(limit)

    async def one(make: Callable[[], Awaitable[Any]]) -> None:
        async with sem:
            await make()

    await asyncio.gather(*(one(m) for m in makers))


# -- scratch stores ---------------------------------------------------------------------


class Scratch:
    """Fresh stores for one benchmark each: PostgreSQL databases or SQLite files."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.folder = folder
        self.databases: list[str] = []

    def new(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.folder}/bench-{uuid.uuid4().hex[:8]}.db"
        if self.kind != "postgres":
            return self.kind  # a URL given by the user: used as it is
        import psycopg

        name = f"tether_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"

    def drop(self) -> None:
        if not self.databases:
            return
        import psycopg

        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            for name in self.databases:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.databases.clear()


def describe(kind: str) -> str:
    if kind == "sqlite":
        return "SQLite (WAL, synchronous=FULL)"
    import psycopg

    url = ADMIN_URL if kind == "postgres" else kind
    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
    return (f"PostgreSQL {version[0] if version else '?'} on 127.0.0.1 "
            f"(synchronous_commit={sync[0] if sync else '?'})")


def row(label: str, value: str) -> str:
    return f"  {label:<66} {value:>30}"


async def bench_store(kind: str, args: argparse.Namespace, folder: Path) -> None:
    scratch = Scratch(kind, folder)
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    is_pg = kind != "sqlite" and not kind.startswith("sqlite:")
    lines = [f"\n{describe(kind)}"]
    try:
        us, _ = await bench_sequential(scratch.new(), logs, args.steps)
        lines.append(row(f"sequential: 1 run x {args.steps} steps, 1 worker",
                         f"{us:,.0f} µs/step"))
        for step_ms in ([0.0, args.step_cpu] if args.step_cpu else [0.0]):
            what = f" of {step_ms:g} ms CPU" if step_ms else ""
            first: float | None = None
            for n in args.workers:
                elapsed, _ = await bench_concurrent(scratch.new(), logs, args.runs, n,
                                                    step_ms=step_ms)
                rate = args.runs / elapsed
                first = first or rate
                lines.append(row(
                    f"concurrent: {args.runs} runs x 10 steps{what}, {n} worker process"
                    f"{'es' if n > 1 else ''}",
                    f"{rate:,.0f} wf/s {rate * 10:,.0f} steps/s {rate / first:4.2f}x"))
        if is_pg and args.round_trips:
            proxy = await RoundTripProxy().start()
            try:
                _, seq_rt = await bench_sequential(scratch.new(), logs, args.rt_steps, proxy)
                _, con_rt = await bench_concurrent(scratch.new(), logs, args.runs, 1, proxy)
            finally:
                await proxy.close()
            lines.append(row(f"round trips per step, sequential ({args.rt_steps} steps)",
                             f"{seq_rt:.2f}"))
            lines.append(row(f"round trips per step, concurrent ({args.runs} runs, 1 worker)",
                             f"{con_rt:.3f}"))
        if is_pg and args.idle:
            rate = await bench_idle(scratch.new(), logs, args.idle, args.idle_seconds)
            lines.append(row(f"idle: {args.idle} worker processes, round trips",
                             f"{rate:.1f} /s"))
    finally:
        scratch.drop()
    print("\n".join(lines), flush=True)


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,2,4, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default="postgres",
                        help="comma-separated: postgres, sqlite or a store URL "
                             "(default postgres)")
    parser.add_argument("--steps", type=int, default=1000, help="sequential steps (1000)")
    parser.add_argument("--runs", type=int, default=1000, help="concurrent runs (1000)")
    parser.add_argument("--workers", type=_ints, default=[1, 2, 4],
                        help="worker process counts for the scaling curve (1,2,4)")
    parser.add_argument("--step-cpu", type=float, default=0.0, metavar="MS",
                        help="also run the concurrent workload with steps that each spend "
                             "MS milliseconds of CPU (the workers, not the database, "
                             "the bottleneck)")
    parser.add_argument("--no-round-trips", dest="round_trips", action="store_false",
                        help="skip the round-trip counting pass")
    parser.add_argument("--rt-steps", type=int, default=300,
                        help="sequential steps of the round-trip pass (300)")
    parser.add_argument("--idle", type=int, default=0, metavar="N",
                        help="also measure N idle workers' round trips per second")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=50, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        await serve(args.serve, args.concurrency)
        return
    if args.steps < 1 or args.runs < 1:
        parser.error("--steps and --runs must be >= 1")
    if args.step_cpu < 0:
        parser.error("--step-cpu must be >= 0")
    print("$ " + " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv]))
    print(f"{os.cpu_count()} CPUs; Python {sys.version.split()[0]}; started "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
    with tempfile.TemporaryDirectory(prefix="tether-cluster-") as tmp:
        for kind in (k.strip() for k in args.db.split(",") if k.strip()):
            await bench_store(kind, args, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
