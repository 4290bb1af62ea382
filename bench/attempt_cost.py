"""What recording every step attempt (issue 11: ``tether_attempts``, written by one
batching ``AttemptWriter`` per worker) costs, measured as an A/B in one process.

    .venv/bin/python bench/attempt_cost.py [--db sqlite|postgres|URL] [--rounds 7]
                                           [--steps 500] [--runs 200]

Each round runs, in alternating order, the same two workloads with attempts recorded
("on") and with ``AttemptWriter.note`` replaced by a no-op ("off"): one run of
``--steps`` sequential trivial steps (µs per step, wall and CPU time of this process)
and ``--runs`` concurrent runs of 10 steps (runs/s). The median of the rounds' on/off
ratios is the cost; alternating in one process keeps a loaded machine's drift out of
the ratio. CPU time counts every thread of the process (the SQLite writer thread
included), not PostgreSQL's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core import drop_created, make_app, resolve

from tether._replay import AttemptWriter

_NOTE = AttemptWriter.note


def _set(recording: bool) -> None:
    AttemptWriter.note = _NOTE if recording else _skip  # type: ignore[method-assign]


def _skip(self: AttemptWriter, attempt_id: str, row: Any) -> None:
    """``AttemptWriter.note`` that records nothing."""


async def sequential(url: str, steps: int) -> tuple[float, float]:
    app = make_app(url)
    wf = app.workflows()["sequential"].fn
    async with app.worker(concurrency=1):
        await (await app.start(wf, 10)).result(timeout=60)  # warm up
        w0, c0 = time.perf_counter(), time.process_time()
        await (await app.start(wf, steps)).result(timeout=600)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    await app.close()
    return wall / steps * 1e6, cpu / steps * 1e6


async def concurrent(url: str, runs: int) -> float:
    app = make_app(url)
    wf = app.workflows()["ten"].fn
    handles = [await app.start(wf) for _ in range(runs)]
    async with app.worker(concurrency=runs):
        t0 = time.perf_counter()
        for h in handles:
            await h.result(timeout=600)
        elapsed = time.perf_counter() - t0
    await app.close()
    return runs / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite", help="sqlite, postgres or a store URL")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    figures: dict[str, dict[str, list[float]]] = {
        m: {"wall": [], "cpu": [], "runs_s": []} for m in ("on", "off")}
    ratios: dict[str, list[float]] = {"wall": [], "cpu": [], "runs_s": []}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for r in range(args.rounds):
                got: dict[str, Any] = {}
                for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
                    _set(mode == "on")
                    url = resolve(args.db, Path(tmp), f"attempts_{mode}_{r}")
                    wall, cpu = await sequential(url, args.steps)
                    runs_s = await concurrent(
                        resolve(args.db, Path(tmp), f"attempts_{mode}_{r}_c"), args.runs)
                    got[mode] = {"wall": wall, "cpu": cpu, "runs_s": runs_s}
                    for k, v in got[mode].items():
                        figures[mode][k].append(v)
                for k in ratios:
                    ratios[k].append(got["on"][k] / got["off"][k])
                print(f"round {r + 1}: on {got['on']}  off {got['off']}", flush=True)
        finally:
            _set(True)
            drop_created()
    med = {m: {k: statistics.median(v) for k, v in f.items()} for m, f in figures.items()}
    print(f"\n{args.db}: {args.rounds} rounds, {args.steps} sequential steps, "
          f"{args.runs} concurrent runs of 10 steps")
    print(f"{'':24} {'attempts on':>12} {'attempts off':>13} {'on/off (median of rounds)':>27}")
    for k, label in (("wall", "sequential µs/step wall"), ("cpu", "sequential µs/step CPU"),
                     ("runs_s", "concurrent runs/s")):
        rs = sorted(ratios[k])
        print(f"{label:24} {med['on'][k]:12.1f} {med['off'][k]:13.1f} "
              f"{statistics.median(rs):10.3f} ({rs[0]:.3f}-{rs[-1]:.3f})")


if __name__ == "__main__":
    asyncio.run(main())
