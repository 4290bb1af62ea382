"""``python -m tests.chaos [smoke|full] [sqlite] [postgres]``: run the chaos scenarios
of a profile and print their figures as Markdown (for docs/reliability.md).

PostgreSQL is reached at ``TETHER_TEST_PG`` (default postgresql://postgres@127.0.0.1/
postgres); each scenario gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.chaos.fencing import race
from tests.chaos.harness import PROFILES, ROOT, soak
from tests.chaos.powerloss import run as power_loss
from tests.chaos.resetproxy import ResettingProxy
from tests.chaos.storm import storm

FENCING_ITERATIONS = {"smoke": 4, "full": 200}
STORM_RUNS = {"smoke": 400, "full": 5000}
POWER_LOSS_POINTS = {"smoke": 8, "full": 1000}


@contextlib.contextmanager
def store_url(backend: str, work: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{work}/t.db"
        return
    import psycopg

    admin = os.environ.get("TETHER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"tether_chaos_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    out = ["| figure | " + " | ".join(str(r[keys[0]]) for r in rows) + " |",
           "|---|" + "---|" * len(rows)]
    out += [f"| {k} | " + " | ".join(str(r[k]) for r in rows) + " |" for k in keys[1:]]
    return "\n".join(out)


async def _through_proxy(url: str, work: Path, profile: str) -> dict[str, Any]:
    proxy = await ResettingProxy(url).start()
    try:
        figures = await soak("postgres", url, work, PROFILES[(profile, "proxy")],
                             worker_url=proxy.url())
    finally:
        await proxy.close()
    return {**figures.summary(), "backend": "postgres via resetting proxy",
            "connection resets": proxy.resets, "ambiguous commits": proxy.ambiguous_commits}


def main(argv: list[str]) -> int:
    profile = argv[0] if argv else "full"
    backends = argv[1:] or ["sqlite", "postgres"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    soaks, fences, storms = [], [], []
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, \
                store_url(backend, Path(tmp)) as url:
            figures = asyncio.run(soak(backend, url, Path(tmp), PROFILES[(profile, backend)]))
            soaks.append(figures.summary())
            print(json.dumps(soaks[-1]), flush=True)
        with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, \
                store_url(backend, Path(tmp)) as url:
            f = asyncio.run(race(url, Path(tmp), FENCING_ITERATIONS[profile]))
            fences.append({"backend": backend, "iterations": f.iterations,
                           "takeovers": f.takeovers,
                           "stale writes accepted": f.stale_writes_accepted,
                           "frozen while holding SQLite's write lock": f.frozen_holding_lock,
                           "wall time s": round(f.seconds, 1)})
            print(json.dumps(fences[-1]), flush=True)
        with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, \
                store_url(backend, Path(tmp)) as url:
            st = asyncio.run(storm(backend, url, Path(tmp), STORM_RUNS[profile]))
            storms.append(st.summary())
            print(json.dumps(storms[-1]), flush=True)
    print(f"\nprofile {profile}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit {commit}\n")
    print("Kill -9 soak\n\n" + table(soaks))
    print("\nLease and fencing race\n\n" + table(fences))
    proxied = []
    if "postgres" in backends:
        with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, \
                store_url("postgres", Path(tmp)) as url:
            proxied.append(asyncio.run(_through_proxy(url, Path(tmp), profile)))
            print(json.dumps(proxied[-1]), flush=True)
    losses = []
    if "sqlite" in backends:
        points = int(os.environ.get("CHAOS_POWER_LOSS_POINTS", POWER_LOSS_POINTS[profile]))
        for sync, n in (("full", points), ("normal", max(4, points // 10))):
            with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
                pl = power_loss(Path(tmp), n, sync)
            losses.append({"synchronous": sync, "crash points": pl.crash_points,
                           "acknowledged operations": pl.acknowledged,
                           "acknowledged lost": pl.lost,
                           "integrity failures": pl.integrity_failures})
            print(json.dumps(losses[-1]), flush=True)
    print("\nRecovery storm\n\n" + table(storms))
    if proxied:
        print("\nPostgreSQL behind a connection-resetting proxy\n\n" + table(proxied))
    if losses:
        print("\nPower loss (SQLite, VFS shim)\n\n" + table(losses))
    bad = [s for s in storms if s["lost"] or s["completed"] != s["runs"]]
    bad += [s for s in soaks if any(s[k] for k in (
        "runs lost", "runs not completed after drain", "wrong results",
        "duplicated committed-step effects", "effects missing", "journal gaps"))]
    bad += [f for f in fences if f["stale writes accepted"]]
    bad += [p for p in proxied if any(p[k] for k in (
        "runs lost", "runs not completed after drain", "wrong results",
        "duplicated committed-step effects", "effects missing", "journal gaps"))]
    bad += [x for x in losses if x["integrity failures"]
            or (x["synchronous"] == "full" and x["acknowledged lost"])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
