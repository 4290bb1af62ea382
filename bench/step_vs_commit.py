"""A sequential step against a bare commit, measured in alternating blocks.

    .venv/bin/python bench/step_vs_commit.py [--db sqlite,postgres] [--pairs 15]
                                             [--block 200] [--json FILE]

Issue 15's first target compares a power-loss-safe sequential step with the disk's
limit: one bare commit (SQLite: a one-row insert into a WAL file with
``synchronous=FULL``; PostgreSQL: a one-row prepared INSERT in autocommit, one round
trip, ``synchronous_commit=on``). On this machine the cost of one commit moves by 2x
and more within seconds (the virtual disk's flush latency): 300 bare commits measured
once, next to 1,000 steps measured a second later, give a ratio that swings from 0.7 to
2.6 between rounds of ``bench/compare``, whatever the code.

So this measures both in the same process and the same store, in alternating blocks:
``--block`` bare commits, then one run of ``--block`` trivial steps (``bench/core.py``'s
``sequential`` workflow, one worker of concurrency 1: the ``seq`` workload of
``bench/compare``), ``--pairs`` times. Each pair's ratio is step ÷ commit from blocks a
few tenths of a second apart; the figure is the median of those ratios, with the medians
of both sides. The bare commits are ``bench/compare``'s limit (``bench/core.py``'s
``sqlite_committer`` and ``pg_committer``), in a table of their own (PostgreSQL: in the
store's database; SQLite: a file beside the store's); the worker is idle between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.core import (  # noqa: E402
    drop_created,
    make_app,
    pg_committer,
    resolve,
    sqlite_committer,
)


async def measure(kind: str, pairs: int, block: int, folder: Path) -> dict[str, Any]:
    url = resolve(kind, folder, f"svc_{uuid.uuid4().hex[:8]}")
    try:
        app = make_app(url)
        wf = app.workflows()["sequential"].fn
        async with app.worker(concurrency=1):
            await (await app.start(wf, 20)).result(timeout=60)  # warm up
            if kind == "sqlite":
                commits, close = sqlite_committer(folder / f"bare-{uuid.uuid4().hex[:8]}.db")
            else:
                commits, close = pg_committer(url)
            try:
                commit_us: list[float] = []
                step_us: list[float] = []
                for _ in range(pairs):
                    commit_us.append(commits(block))
                    t0 = time.perf_counter()
                    await (await app.start(wf, block)).result(timeout=600)
                    step_us.append((time.perf_counter() - t0) / block * 1e6)
            finally:
                close()
        await app.close()
    finally:
        drop_created()
    ratios = [s / c for s, c in zip(step_us, commit_us, strict=True)]
    return {"store": kind, "pairs": pairs, "block": block,
            "commit_us": commit_us, "step_us": step_us, "ratios": ratios,
            "commit_us_median": statistics.median(commit_us),
            "step_us_median": statistics.median(step_us),
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios)}


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres or both")
    p.add_argument("--pairs", type=int, default=15)
    p.add_argument("--block", type=int, default=200, help="commits, then steps, per pair")
    p.add_argument("--json", help="also write every figure to this file")
    a = p.parse_args()
    if a.pairs < 1 or a.block < 1:
        p.error("--pairs and --block must be >= 1")
    kinds = [k.strip() for k in a.db.split(",") if k.strip()]
    if not kinds or any(k not in ("sqlite", "postgres") for k in kinds):
        p.error("--db takes sqlite, postgres or both")
    print(f"$ .venv/bin/python bench/step_vs_commit.py {' '.join(sys.argv[1:])}")
    print(f"{os.cpu_count()} CPUs; Python {sys.version.split()[0]}; "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}; load average {os.getloadavg()[0]:.2f}")
    out = []
    with tempfile.TemporaryDirectory(prefix="tether-svc-") as tmp:
        for kind in kinds:
            r = await measure(kind, a.pairs, a.block, Path(tmp))
            out.append(r)
            print(f"{kind:9} bare commit {r['commit_us_median']:6.0f} µs   step "
                  f"{r['step_us_median']:6.0f} µs   step ÷ commit, median of {a.pairs} "
                  f"pairs: {r['ratio_median']:.2f} ({r['ratio_min']:.2f}-"
                  f"{r['ratio_max']:.2f})", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
