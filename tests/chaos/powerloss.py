"""Power loss on SQLite through an apsw VFS shim.

``LossyVFS`` passes every read and write to the default VFS but remembers, per file,
what each write since that file's last ``xSync`` overwrote. At a chosen crash point (the
N-th write or sync) it puts back the bytes of every unsynced write, newest first, cuts
each file to its size at its last sync, and ends the process with ``os._exit``: what the
disk holds afterwards is exactly what a power cut would have left.

A child process (``python -m tests.chaos.powerloss CRASH_AT SYNC URL``) drives a
``SqliteStore`` through the shim: it starts runs, completes them and sends signals,
printing ``ack <kind> <id>`` after each call returns. The parent then opens the file
with the ordinary VFS and counts acknowledged operations that are missing, and runs
``PRAGMA integrity_check``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from tests import CHECKOUT_PATH, forked

ROOT = Path(__file__).resolve().parents[2]
OPS = 60  # runs each child starts (and completes / signals)


class LossyVFS(apsw.VFS):
    def __init__(self, name: str, crash_at: int | None) -> None:
        super().__init__(name, "")
        self.crash_at = crash_at
        self.ticks = 0
        self.files: list[LossyFile] = []

    def xOpen(self, name: Any, flags: Any) -> LossyFile:
        f = LossyFile(self, name, flags)
        self.files.append(f)
        return f

    def tick(self) -> None:
        self.ticks += 1
        if self.crash_at is not None and self.ticks >= self.crash_at:
            self.power_loss()

    def power_loss(self) -> None:
        for f in self.files:
            f.drop_unsynced()
        sys.stdout.flush()
        os._exit(0)


class LossyFile(apsw.VFSFile):
    def __init__(self, vfs: LossyVFS, name: Any, flags: Any) -> None:
        super().__init__("", name, flags)
        self.vfs = vfs
        path = name.filename() if hasattr(name, "filename") else name
        self.path: str | None = path if isinstance(path, str) and path else None
        self.undo: list[tuple[int, bytes]] = []
        self.synced_size = os.path.getsize(self.path) if self.path and os.path.exists(
            self.path) else 0

    def xWrite(self, data: bytes, offset: int) -> None:
        self.vfs.tick()
        if self.path is not None:
            with open(self.path, "rb") as f:
                f.seek(offset)
                self.undo.append((offset, f.read(len(data))))
        super().xWrite(data, offset)

    def xTruncate(self, size: int) -> None:
        self.vfs.tick()
        if self.path is not None:
            with open(self.path, "rb") as f:
                f.seek(size)
                self.undo.append((size, f.read()))
        super().xTruncate(size)

    def xSync(self, flags: int) -> None:
        self.vfs.tick()
        super().xSync(flags)
        self.undo.clear()
        if self.path is not None and os.path.exists(self.path):
            self.synced_size = os.path.getsize(self.path)

    def drop_unsynced(self) -> None:
        if self.path is None or not os.path.exists(self.path):
            return
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for offset, old in reversed(self.undo):
                os.pwrite(fd, old, offset)
            os.ftruncate(fd, self.synced_size)
        finally:
            os.close(fd)


async def _drive(url: str, crash_at: int | None, synchronous: str) -> int:
    from tests.store.conftest import run_record
    from tether._types import Lease
    from tether.store.sqlite import SqliteStore

    vfs = LossyVFS("lossy", crash_at)
    store = SqliteStore(url, vfs="lossy", synchronous=synchronous)
    await store.open()
    for i in range(OPS):
        await store.run_insert(run=run_record(f"r{i}"))
        print(f"ack start r{i}", flush=True)
        if i % 2:
            await store.signal_send(run_id=f"r{i}", name="go", payload="1",
                                    idempotency_key=None, now=float(i))
            print(f"ack signal r{i}", flush=True)
        else:
            (claimed,) = await store.run_claim(worker_id="w", queues=["q"], limit=1,
                                               now=1e12, lease_seconds=60)
            lease: Lease = claimed.lease
            await store.run_finish(lease=lease, status="completed", result="1", error=None,
                                   now=float(i))
            print(f"ack complete {lease.run_id}", flush=True)
    await store.close()
    return vfs.ticks


@dataclass
class PowerLossFigures:
    synchronous: str
    crash_points: int = 0
    acknowledged: int = 0
    lost: int = 0
    integrity_failures: int = 0


def _check(path: Path, acks: list[str]) -> tuple[int, bool]:
    conn = apsw.Connection(str(path))
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchall()[0][0] == "ok"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "tether_runs" not in tables:
            return len(acks), ok  # not even the schema survived
        lost = 0
        for ack in acks:
            _, kind, run_id = ack.split()
            if kind == "start":
                found = conn.execute("SELECT 1 FROM tether_runs WHERE run_id = ?",
                                     (run_id,)).fetchall()
            elif kind == "complete":
                found = conn.execute("SELECT 1 FROM tether_runs WHERE run_id = ? AND "
                                     "status = 'completed'", (run_id,)).fetchall()
            else:
                found = conn.execute("SELECT 1 FROM tether_signals WHERE run_id = ?",
                                     (run_id,)).fetchall()
            lost += 0 if found else 1
        return lost, ok
    finally:
        conn.close()


def _child(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=CHECKOUT_PATH)
    return forked.run([sys.executable, "-m", "tests.chaos.powerloss", *args], cwd=cwd,
                      env=env, capture_output=True, text=True, timeout=120)


def run(workdir: Path, crash_points: int, synchronous: str = "full",
        seed: int = 7) -> PowerLossFigures:
    import random

    rng = random.Random(seed)
    figures = PowerLossFigures(synchronous)
    probe = workdir / "probe"
    probe.mkdir()
    done = _child(["-", synchronous, f"sqlite:///{probe}/t.db"], probe)
    assert done.returncode == 0, done.stderr
    total = int(done.stdout.strip().splitlines()[-1].split()[-1])
    for n in range(crash_points):
        folder = workdir / f"p{n}"
        folder.mkdir()
        done = _child([str(rng.randint(1, total)), synchronous, f"sqlite:///{folder}/t.db"],
                      folder)
        acks = [line for line in done.stdout.splitlines() if line.startswith("ack ")]
        db = folder / "t.db"
        figures.crash_points += 1
        figures.acknowledged += len(acks)
        if not db.exists() or db.stat().st_size == 0:
            figures.lost += len(acks)  # nothing survived (acks before the first sync)
            continue
        lost, ok = _check(db, acks)
        figures.lost += lost
        figures.integrity_failures += 0 if ok else 1
    return figures


if __name__ == "__main__":
    crash_arg, sync, url = sys.argv[1:4]
    ticks = asyncio.run(_drive(url, None if crash_arg == "-" else int(crash_arg), sync))
    print(f"ticks {ticks}", flush=True)
