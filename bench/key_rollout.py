"""Latency of runs while a payload key is rolled out to some workers only.

    .venv/bin/python bench/key_rollout.py [--db sqlite|postgres] [--runs 20] [--src DIR]

Two workers in one process on a fresh store: one with the key (``AesGcm`` key id
``k1``), one with other material under ``k1`` (it cannot decrypt the runs and hands
them back). ``--runs`` runs are started one after another, each awaited to its result;
printed (one JSON line): the median, the largest and the sum of the start-to-result
times. Every run the keyless worker wins costs the time until the worker with the key
looks again. ``--src DIR`` imports Tether from ``DIR`` (``git archive REV src | tar -x
-C DIR``) to compare revisions; run them interleaved on a loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
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
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--src", help="import Tether from this folder (another revision)")
    return p.parse_args()


def _keyed(url: str, key: bytes) -> Any:
    from tether import App
    from tether.encryption import AesGcm

    app = App(url, payload_hook=AesGcm({"k1": key}))

    @app.workflow(name="enc")
    async def enc(i: int) -> int:
        return i

    return app


async def _admin(sql: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(PG, autocommit=True) as c:
        await c.execute(sql)


async def _main(a: argparse.Namespace) -> dict[str, Any]:
    name = f"keyroll_{uuid.uuid4().hex[:10]}"
    if a.db == "postgres":
        await _admin(f"CREATE DATABASE {name}")
        url = PG.rsplit("/", 1)[0] + "/" + name
    else:
        url = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "rollout.db")
    right, wrong = _keyed(url, b"1" * 32), _keyed(url, b"2" * 32)
    times: list[float] = []
    try:
        async with right, wrong, wrong.worker(), right.worker():
            for i in range(a.runs):
                t = time.perf_counter()
                handle = await right.start("enc", i)
                assert await handle.result(timeout=600) == i
                times.append(time.perf_counter() - t)
    finally:
        if a.db == "postgres":
            await _admin(f"DROP DATABASE {name} WITH (FORCE)")
    times.sort()
    return {"db": a.db, "src": a.src or "worktree", "runs": a.runs,
            "median_s": round(times[len(times) // 2], 3), "max_s": round(times[-1], 3),
            "total_s": round(sum(times), 2)}


def main() -> None:
    a = _args()
    if a.src:
        sys.path.insert(0, a.src)
    logging.disable(logging.CRITICAL)  # the keyless worker logs every hand-back
    print(json.dumps(asyncio.run(_main(a))))


if __name__ == "__main__":
    main()
