"""A storm of lost leases: what each lost run's own read of the store costs.

    .venv/bin/python bench/lost_storm.py [--db sqlite|postgres|URL] [--runs 1000]

One in-process worker executes ``--runs`` runs, each in a step that sleeps; their owner's
leases are then expired in the store and another worker id claims every run (a storm of
takeovers, as after a long pause of the first worker). The first worker learns of the
loss at its next heartbeat and ends each run's execution: each end reads the run once
(``run_get``, to say who holds it now), and the journal too where a step's result is in
doubt (none here: the steps are in flight, not ended). Printed (one JSON line): the time
from the takeover to the last run dropped (the heartbeat's wait included), the reads
made, and, on the same store, what ``--runs`` reads one by one cost (concurrently, as
the ends make them) against one batched ``run_get_many`` of them all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from storms import drop, fresh  # noqa: E402

from tether import App  # noqa: E402


async def bench(url: str, runs: int) -> dict[str, Any]:
    app = App(url)
    entered: list[int] = []

    @app.step
    async def hang(i: int) -> None:
        entered.append(i)
        await asyncio.sleep(3600)

    @app.workflow
    async def victim(i: int) -> None:
        await hang(i)

    await app._open()
    store = app.store
    reads = {"run_get": 0, "run_get_many": 0, "journal_read": 0}
    for name in reads:
        real = getattr(store, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            reads[_name] += 1
            return _real(*args, **kw)

        setattr(store, name, counted)
    await app.start_many(victim, [(i,) for i in range(runs)],
                         run_ids=[f"v-{i}" for i in range(runs)])
    async with app.worker(concurrency=runs, lease_seconds=8.0) as worker:
        while len(entered) < runs:
            await asyncio.sleep(0.05)
        for name in reads:
            reads[name] = 0
        t0 = time.perf_counter()
        await store.lease_expire_owner(worker_id=worker.worker_id, now=app.clock.now())
        taken = 0
        while taken < runs:
            taken += len(await store.run_claim(worker_id="thief", queues=["default"],
                                               limit=runs, now=app.clock.now(),
                                               lease_seconds=600))
        claimed = time.perf_counter()
        first = None
        while (held := sum(worker.holds(f"v-{i}") for i in range(runs))) > 0:
            if first is None and held < runs:
                first = time.perf_counter()
            await asyncio.sleep(0.005)
        dropped = time.perf_counter()
        lost_reads = dict(reads)
    ids = [f"v-{i}" for i in range(runs)]
    samples_one, samples_many = [], []
    for _ in range(3):
        t = time.perf_counter()
        await asyncio.gather(*(store.run_get(i) for i in ids))
        samples_one.append(time.perf_counter() - t)
        t = time.perf_counter()
        await store.run_get_many(ids)
        samples_many.append(time.perf_counter() - t)
    await app.close()
    return {"runs": runs, "claim_s": round(claimed - t0, 3),
            "takeover_to_last_dropped_s": round(dropped - t0, 3),
            "first_to_last_dropped_s": round(dropped - (first or dropped), 3),
            "reads_at_the_ends": lost_reads,
            "run_get_each_concurrent_s": sorted(round(s, 3) for s in samples_one),
            "run_get_many_s": sorted(round(s, 3) for s in samples_many)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite")
    parser.add_argument("--runs", type=int, default=1000)
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = fresh(a.db, Path(folder), "lost")
        try:
            print(json.dumps({"db": a.db, **asyncio.run(bench(url, a.runs))}))
        finally:
            drop(url)


if __name__ == "__main__":
    main()
