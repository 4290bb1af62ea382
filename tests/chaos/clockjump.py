"""Clock jumps: workers whose wall clock is off by +1 h, -1 h or +24 h (libfaketime,
``LD_PRELOAD`` + ``FAKETIME`` on the worker processes).

Per jump, two workers serve one store: on PostgreSQL worker A keeps the true clock and
worker B's clock is off; on SQLite (one machine, one clock) both workers and the process
that starts the runs are off together. Runs: ``clock_hold`` (a 4 s step, the lease is
2 s, so its worker's heartbeats must keep it) and ``clock_timer`` (a durable 3 s timer,
then a step). Figures (zero means zero):

- leases stolen: a step executed more than once (the effect ledger) although no worker
  died: another worker took a run whose holder was alive;
- timers fired early: a timer run completed before 3 s had passed since it was started,
  measured by the harness's own clock (on PostgreSQL the store's clock and the
  harness's are the same machine's).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from tests import CHECKOUT_PATH
from tests.chaos import chaos_app
from tests.chaos.harness import ROOT
from tether import App

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
JUMPS = {"smoke": ("+1h", "-1h", "+24h"), "full": ("+1h", "-1h", "+24h", "-24h", "+7d")}
RUNS_PER_KIND = 6  # clock_hold and clock_timer runs, each
TIMER_MS = 3000
LEASE = 2.0


def missing_faketime() -> str | None:
    if not os.path.exists(LIBFAKETIME):
        return f"libfaketime not installed ({LIBFAKETIME}; Debian package faketime)"
    return None


def faked_env(jump: str) -> dict[str, str]:
    return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": jump}


@dataclass
class JumpFigures:
    backend: str
    jump: str
    runs: int = 0
    completed: int = 0
    wrong_results: int = 0
    leases_stolen: int = 0
    timers_fired_early: int = 0
    worker_deaths: int = 0
    left_unclaimed: int = 0
    timer_seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"backend": self.backend, "jump": self.jump, "runs": self.runs,
                "completed": self.completed, "wrong results": self.wrong_results,
                "leases stolen": self.leases_stolen,
                "timers fired early": self.timers_fired_early,
                "worker deaths": self.worker_deaths,
                "runs the jumped worker alone left unclaimed (15 s)": self.left_unclaimed,
                "shortest timer s": round(min(self.timer_seconds), 2)
                if self.timer_seconds else None}


def _start_worker(url: str, ledger: Path, log: Path,
                  env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, CHAOS_LEDGER=str(ledger), PYTHONPATH=CHECKOUT_PATH, CHAOS_CRASH_P="0",
               **env_extra)
    env.pop("TETHER_DATABASE_URL", None)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tether", "worker", "tests.chaos.chaos_app:app", "--db", url,
             "--lease", str(LEASE)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


async def _start_runs(url: str, prefix: str, first: int, last: int) -> None:
    app = App(url)
    try:
        for i in range(first, last):
            await app.start(chaos_app.clock_hold, i, run_id=f"{prefix}h{i}")
            await app.start(chaos_app.clock_timer, i, TIMER_MS, run_id=f"{prefix}t{i}")
    finally:
        await app.close()


async def one_jump(backend: str, url: str, work: Path, jump: str) -> JumpFigures:
    figures = JumpFigures(backend, jump)
    tag = jump.replace("+", "p").replace("-", "m")
    ledger = work / f"ledger-{tag}.db"
    a_env = faked_env(jump) if backend == "sqlite" else {}
    app = App(url)
    prefix = f"{tag}-"
    half = RUNS_PER_KIND // 2
    procs: list[subprocess.Popen[bytes]] = []
    started: dict[str, float] = {}

    async def start(first: int, last: int) -> None:
        t = time.monotonic()
        if backend == "sqlite":
            # The process that starts the runs shares the workers' clock (one machine).
            out = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "tests.chaos.clockjump", "start", url,
                                 prefix, str(first), str(last)], cwd=ROOT,
                capture_output=True, text=True, check=False,
                env=dict(os.environ, PYTHONPATH=CHECKOUT_PATH, **faked_env(jump)))
            if out.returncode != 0:
                raise RuntimeError(f"starting runs failed: {out.stderr}")
        else:
            await _start_runs(url, prefix, first, last)
        for i in range(first, last):
            started[f"{prefix}h{i}"] = started[f"{prefix}t{i}"] = t

    done: dict[str, float] = {}

    async def watch() -> None:  # when each run ended, by the harness's clock
        while True:
            for rid in list(started):
                if rid not in done:
                    run = await app.store.run_get(rid)
                    if run is not None and run.status.is_ended:
                        done[rid] = time.monotonic()
            await asyncio.sleep(0.05)

    watcher: asyncio.Task[None] | None = None
    try:
        await app._open()
        watcher = asyncio.create_task(watch())
        # Phase 1: the jumped worker B alone claims the first half.
        procs.append(_start_worker(url, ledger, work / f"{tag}-b.log", faked_env(jump)))
        await start(0, half)
        first = [f"{prefix}{k}{i}" for i in range(half) for k in "ht"]
        end = time.monotonic() + 15
        while time.monotonic() < end:
            runs = [await app.store.run_get(rid) for rid in first]
            queued = [r for r in runs if r is not None and r.status.value == "queued"]
            if not queued:
                break
            await asyncio.sleep(0.1)
        figures.left_unclaimed = len(queued)
        # Phase 2: worker A joins (true clock on PostgreSQL); the second half is
        # claimed by both.
        procs.append(_start_worker(url, ledger, work / f"{tag}-a.log", a_env))
        await asyncio.sleep(1.0)
        await start(half, RUNS_PER_KIND)
        ids = list(started)
        figures.runs = len(ids)
        deadline = time.monotonic() + 90
        while len(done) < len(ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        watcher.cancel()
        for rid in ids:
            run = await app.store.run_get(rid)
            if run is None or run.status.value != "completed":
                continue
            figures.completed += 1
            result = app.codec.decode(run.result)
            kind, i = rid[len(prefix)], int(rid[len(prefix) + 1:])
            if kind == "t":
                if result != chaos_app.value(i, 0):
                    figures.wrong_results += 1
                took = done[rid] - started[rid]
                figures.timer_seconds.append(took)
                if took < TIMER_MS / 1000:
                    figures.timers_fired_early += 1
            elif result not in [p.pid for p in procs]:
                figures.wrong_results += 1
        figures.worker_deaths = sum(p.poll() is not None for p in procs)
        if ledger.exists():
            conn = apsw.Connection(str(ledger), flags=apsw.SQLITE_OPEN_READONLY)
            conn.setbusytimeout(30_000)
            rows = conn.execute("SELECT key, count(*) FROM effects WHERE key LIKE ? "
                                "GROUP BY key", (prefix + "%",)).fetchall()
            conn.close()
            figures.leases_stolen = sum(n - 1 for _, n in rows)
    finally:
        if watcher is not None:
            watcher.cancel()
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                await asyncio.to_thread(p.wait, 30)
            except subprocess.TimeoutExpired:
                p.kill()
        await app.close()
    return figures


async def clock_jumps(backend: str, url: str, work: Path,
                      jumps: tuple[str, ...]) -> list[JumpFigures]:
    return [await one_jump(backend, url, work, jump) for jump in jumps]


MUST_BE_ZERO = ("wrong results", "leases stolen", "timers fired early", "worker deaths",
                "runs the jumped worker alone left unclaimed (15 s)")


if __name__ == "__main__" and sys.argv[1:2] == ["start"]:
    asyncio.run(_start_runs(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
    print(json.dumps({"started": 2 * (int(sys.argv[5]) - int(sys.argv[4]))}))
