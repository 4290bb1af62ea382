"""Recovery storm: many runs pending, the workers that held some of them killed with
SIGKILL all at once, then several workers started together. Figures: runs completed
and lost, the peak of database connections (PostgreSQL) and of worker RSS, and the
time the new workers took to finish everything."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests import CHECKOUT_PATH, forked
from tests.chaos import chaos_app
from tests.chaos.chaos_app import value
from tether import App

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class StormFigures:
    backend: str
    runs: int = 0
    completed: int = 0
    lost: int = 0
    wrong_results: int = 0
    killed_workers: int = 0
    runs_held_when_killed: int = 0
    peak_db_connections: int | None = None
    peak_worker_rss_mb: float = 0.0
    drain_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _spawn(url: str, ledger: Path, log: Path, concurrency: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, CHAOS_LEDGER=str(ledger), PYTHONPATH=CHECKOUT_PATH, CHAOS_CRASH_P="0")
    env.pop("TETHER_DATABASE_URL", None)
    with open(log, "wb") as out:
        return forked.Popen(
            [sys.executable, "-m", "tether", "worker", "tests.chaos.chaos_app:app", "--db",
             url, "--lease", "2", "--concurrency", str(concurrency)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


async def storm(backend: str, url: str, workdir: Path, runs: int,
                concurrency: int = 50, timeout: float = 600) -> StormFigures:
    figures = StormFigures(backend, runs=runs)
    ledger = workdir / "ledger.db"
    app = App(url)
    procs: list[subprocess.Popen[bytes]] = []
    db_name = url.rsplit("/", 1)[1] if backend == "postgres" else None
    probe = _Probe(url, db_name) if db_name is not None else None
    try:
        for i in range(runs):
            await app.start(chaos_app.storm_one, i, run_id=f"s{i:05d}")
        first = [_spawn(url, ledger, workdir / f"storm-first-{n}.log", concurrency)
                 for n in range(2)]
        procs += first
        # Kill as soon as the first runs complete while others are held: most are still
        # pending or held (on a loaded machine a worker may be between two claims).
        while True:
            held = await app.store.run_list(status="running", limit=1_000_000)
            if held and await app.store.run_list(status="completed", limit=1):
                break
            await asyncio.sleep(0.01)
        figures.runs_held_when_killed = len(held)
        for p in first:
            p.send_signal(signal.SIGKILL)
        for p in first:
            await asyncio.to_thread(p.wait, 30)
        figures.killed_workers = len(first)
        t0 = time.monotonic()
        new = [_spawn(url, ledger, workdir / f"storm-new-{n}.log", concurrency)
               for n in range(3)]
        procs += new
        done = 0
        while time.monotonic() - t0 < timeout:
            for p in new:
                figures.peak_worker_rss_mb = max(figures.peak_worker_rss_mb, _rss_mb(p.pid))
            if probe is not None:
                figures.peak_db_connections = max(figures.peak_db_connections or 0,
                                                  probe.count())
            ended = await app.store.run_list(status="completed", limit=1_000_000)
            done = len(ended)
            if done >= runs:
                break
            await asyncio.sleep(0.5)
        figures.drain_seconds = time.monotonic() - t0
        for i in range(runs):
            run = await app.store.run_get(f"s{i:05d}")
            if run is None:
                figures.lost += 1
            elif run.status.value == "completed":
                figures.completed += 1
                if app.codec.decode(run.result) != value(i, 0):
                    figures.wrong_results += 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        await app.close()
        if probe is not None:
            probe.close()
    figures.peak_worker_rss_mb = round(figures.peak_worker_rss_mb, 1)
    figures.drain_seconds = round(figures.drain_seconds, 1)
    return figures


class _Probe:
    """One connection (to the server's ``postgres`` database, so it is not counted)
    that counts the connections to the store's database: opened once, not per look,
    because the server is shared and its connection slots are few."""

    def __init__(self, url: str, db_name: str) -> None:
        import psycopg

        self.db_name = db_name
        self.conn = psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True)

    def count(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                (self.db_name,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()
