"""Runs' ends through ``run_finish`` at once (group commit): µs per end, wall and CPU.

    PYTHONPATH=<a checkout>/src .venv/bin/python bench/run_ends.py postgres|sqlite [--runs N]

Inserts and claims ``--runs`` runs (2,000 by default) on a fresh store (a scratch
database on 127.0.0.1:5432 with the prefix ``bench_ends_``, dropped at the end, or a
SQLite file in a temporary folder), then ends them all as ``completed`` with one
``asyncio.gather`` of ``run_finish`` calls; prints one JSON line: wall and this process's
CPU (user + system) per end, and which ``tether`` was imported. Meant to be run
alternately for two revisions (``PYTHONPATH`` at each one's ``src``), one process per
sample, for a paired before/after ratio of the end path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
import uuid

import psycopg

import tether
from tether._types import RunRecord
from tether.store import open_store

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def record(i: int) -> RunRecord:
    return RunRecord(run_id=f"r{i:05d}", workflow="wf", queue="q", status="queued",
                     input="[[], {}]", created_at=1.0, updated_at=1.0, available_at=1.0)


async def measure(kind: str, n: int) -> dict[str, object]:
    name = f"bench_ends_{uuid.uuid4().hex[:8]}"
    if kind == "postgres":
        with psycopg.connect(ADMIN, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    else:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='bench_ends_')}/ends.db"
    try:
        store = open_store(url)
        await store.open()
        await store.run_insert_many(runs=[record(i) for i in range(n)])
        leases = []
        while len(leases) < n:
            got = await store.run_claim(worker_id="w", queues=["q"], limit=500, now=2.0,
                                        lease_seconds=3600)
            leases += [c.lease for c in got]
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        await asyncio.gather(*(store.run_finish(lease=lease, status="completed", result="1",
                                                error=None, now=3.0) for lease in leases))
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        await store.close()
    finally:
        if kind == "postgres":
            with psycopg.connect(ADMIN, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"wall_us": wall / n * 1e6, "cpu_us": cpu / n * 1e6, "src": tether.__file__}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store", choices=["postgres", "sqlite"])
    p.add_argument("--runs", type=int, default=2000)
    a = p.parse_args()
    print(json.dumps(asyncio.run(measure(a.store, a.runs))))


if __name__ == "__main__":
    main()
