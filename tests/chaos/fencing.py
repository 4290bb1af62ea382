"""Lease and fencing race: the worker executing a step is frozen with SIGSTOP before it
can write the step's outcome; once its lease has expired another worker takes the run
over and completes it; then SIGCONT lets the frozen one try its stale write. Figure:
stale writes accepted (a journal entry or run end of the frozen process kept after
another process executed the step: written after the takeover).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import apsw

from tests import CHECKOUT_PATH, forked
from tests.chaos import chaos_app
from tether import App

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FencingFigures:
    iterations: int = 0
    takeovers: int = 0  # iterations in which another worker finished the frozen run
    stale_writes_accepted: int = 0
    frozen_holding_lock: int = 0  # SQLite: frozen inside a transaction, all waited
    seconds: float = 0.0
    #: Every outcome of a frozen process kept after a takeover (run, executors, token,
    #: lock held, counted stale or not), to judge each one.
    evidence: list[dict[str, object]] = field(default_factory=list)


def _executors(ledger: Path, key: str) -> list[int]:
    """The processes that executed the step ``key``, in order (the ledger's effects)."""
    if not ledger.exists():
        return []
    conn = apsw.Connection(str(ledger), flags=apsw.SQLITE_OPEN_READONLY)
    conn.setbusytimeout(10_000)
    try:
        rows = conn.execute("SELECT pid FROM effects WHERE key = ? ORDER BY at",
                            (key,)).fetchall()
    except apsw.SQLError:
        return []  # the table is not there yet
    finally:
        conn.close()
    return [int(str(r[0])) for r in rows]


def _executor_pid(ledger: Path, key: str) -> int | None:
    pids = _executors(ledger, key)
    return pids[0] if pids else None


async def race(url: str, workdir: Path, iterations: int, lease: float = 1.0) -> FencingFigures:
    figures = FencingFigures()
    ledger = workdir / "ledger.db"
    env = dict(os.environ, CHAOS_LEDGER=str(ledger), PYTHONPATH=CHECKOUT_PATH, CHAOS_CRASH_P="0")
    env.pop("TETHER_DATABASE_URL", None)
    procs: dict[int, subprocess.Popen[bytes]] = {}
    for n in range(2):
        with open(workdir / f"fencing-worker-{n}.log", "wb") as log:
            p = forked.Popen(
                [sys.executable, "-m", "tether", "worker", "tests.chaos.chaos_app:app",
                 "--db", url, "--lease", str(lease)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs[p.pid] = p
    app = App(url)
    t0 = time.monotonic()
    try:
        for i in range(iterations):
            run_id = f"f{i:04d}"
            handle = await app.start(chaos_app.fenced, i, run_id=run_id)
            key = f"{run_id}:0"
            pid = None
            while pid is None:
                await asyncio.sleep(0.01)
                pid = _executor_pid(ledger, key)
            os.kill(pid, signal.SIGSTOP)  # frozen inside the step, before its write
            held_lock = False
            try:
                result = await handle.result(timeout=max(15.0, 10 * lease))
            except TimeoutError:
                # On SQLite the frozen process may hold the file's write lock (its
                # writer thread was inside a transaction): nobody can write until it
                # thaws. Not a fencing failure; counted apart.
                figures.frozen_holding_lock += 1
                held_lock = True
                result = None
            finally:
                os.kill(pid, signal.SIGCONT)
            if result is None:
                result = await handle.result(timeout=60)
            figures.iterations += 1
            if result != pid:
                figures.takeovers += 1
            await asyncio.sleep(0.3)  # the thawed worker's stale write happens now
            entry = (await app.store.journal_read(run_id))[0]
            run = await app.store.run_get(run_id)
            committed_pid = app.codec.decode(entry.result)
            assert run is not None
            # Once the run was taken over (its fencing token moved past the frozen
            # process's first claim), the frozen process's outcome must never be kept.
            taken_over = run.fencing_token > 1
            # ... unless it committed before the takeover: frozen while holding SQLite's
            # write lock with its write's statement already run (its token current),
            # it commits when it thaws, and the next owner replays that entry instead
            # of executing the step (the ledger then shows the frozen process alone).
            # An outcome of the frozen process kept while another process executed the
            # step can only have been written after the takeover.
            executors = _executors(ledger, key)
            others_ran = any(p != pid for p in executors)
            kept = committed_pid == pid or app.codec.decode(run.result) == pid
            if taken_over and kept and others_ran:
                figures.stale_writes_accepted += 1
            if taken_over and kept:
                figures.evidence.append({
                    "run": run_id, "frozen pid": pid, "executors": executors,
                    "run token": run.fencing_token, "held lock": held_lock,
                    "counted stale": others_ran})
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        await app.close()
    figures.seconds = time.monotonic() - t0
    return figures
