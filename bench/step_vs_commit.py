"""A sequential step against a bare commit, measured in alternating blocks.

    .venv/bin/python bench/step_vs_commit.py [--db sqlite,postgres] [--pairs 15]
                                             [--block 200] [--split] [--frames] [--statements]
                                             [--json FILE]

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

``--split`` adds a third block to each pair: the same steps with the run-event log's
per-step row switched off (the journal's op-event triggers: dropped on SQLite, disabled
on PostgreSQL, for that block only, from a connection of the bench's own while the worker
is idle; on PostgreSQL the worker's append statements, which write that row themselves,
are also swapped for the same statements without it), in alternating order with the
normal block. The difference is what the event
log (``tether serve``'s SSE history: one ``run_events`` row and index entry per finished
step) costs a sequential step; the rest over a bare commit is the step's own work.

``--frames`` (SQLite) counts what each commit writes: the WAL frames (one page each,
written as two ``pwrite`` calls: header and page) of ``--block`` sequential steps, by the
B-tree each page belongs to (``dbstat``), read from the WAL file after a truncating
checkpoint, next to the one frame of a bare commit. A step writes more pages than a
bare commit, and each page costs time in the commit's write and fsync.

``--statements`` (PostgreSQL) takes the step's one statement apart: the bare commit and
variants of the journal append, each a prepared statement in autocommit on the bench's
own (blocking) connection, the bare commit's client path, in rotating order, ``--pairs``
rounds of ``--block`` each, into a running run no worker holds. Each variant adds one
part of what ``journal_append_one`` does: an INSERT of the journal row; taking the
fencing token from the run's row (INSERT ... SELECT); locking that row (``FOR NO KEY
UPDATE``, as the append does since migration 0013; ``FOR SHARE`` before); the
``ON CONFLICT`` clause (the statement as Tether sends it, less the op event it writes);
and that op event (the statement as sent; migration 0009). Their ratios to the bare
commit (median of the rounds' ratios) show what each part costs on the server; the
rest of a step's cost is the client's: an asynchronous round trip and the step's work.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.core import (  # noqa: E402
    drop_created,
    make_app,
    pg_committer,
    pg_less_events,
    pg_op_events,
    resolve,
    sqlite_committer,
)


def op_events_switch(kind: str, url: str, app: Any = None,
                     ) -> tuple[Callable[[bool], None], Callable[[], None]]:
    """(switch(on), close): turn the journal's op-event triggers (one ``run_events`` row
    per finished step) off and on again in the store at ``url``, from a connection of
    the bench's own. The worker's statements see the change at their next execution
    (SQLite re-prepares them; PostgreSQL invalidates their plans). On PostgreSQL the
    append statements write their op events themselves (migration 0009): ``app``'s store
    (this process's worker) is given the same statements without that part while off."""
    if kind == "sqlite":
        import apsw

        conn = apsw.Connection(url.split("sqlite://", 1)[1])
        conn.setbusytimeout(10_000)
        saved = [str(r[0]) for r in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' "
            "AND name LIKE 'tether_run_events_journal%'")]
        if not saved:
            raise SystemExit("--split: the store has no op-event triggers")

        state = [True]

        def switch_sqlite(on: bool) -> None:
            if on == state[0]:
                return
            state[0] = on
            with conn:
                if on:
                    for sql in saved:
                        conn.execute(sql)
                else:
                    conn.execute("DROP TRIGGER tether_run_events_journal_insert")
                    conn.execute("DROP TRIGGER tether_run_events_journal_update")

        return switch_sqlite, conn.close
    import psycopg

    pg = psycopg.connect(url, autocommit=True)

    statements = pg_op_events(app.store)

    def switch_pg(on: bool) -> None:
        pg.execute("ALTER TABLE tether.journal "
                   f"{'ENABLE' if on else 'DISABLE'} TRIGGER run_events_journal")
        statements(on)

    return switch_pg, pg.close


async def fill_history(app: Any, runs: int) -> None:
    """Give the store a history: ``runs`` finished runs of 10 steps (``bench/core.py``'s
    ``ten``), started in batches of 1,000, as a store in use has; the worker must be
    running. A new run's rows then go among those runs' rows, where its id puts them."""
    wf = app.workflows()["ten"].fn
    for lo in range(0, runs, 1000):
        handles = await app.start_many(wf, [[] for _ in range(min(1000, runs - lo))])
        for h in handles:
            await h.result(timeout=600)


async def wal_frames(block: int, folder: Path, history: int = 0) -> dict[str, Any]:
    """WAL frames written per sequential step on a fresh SQLite store (with ``history``
    finished runs in it), by B-tree."""
    import apsw

    path = folder / f"frames-{uuid.uuid4().hex[:8]}.db"
    app = make_app(f"sqlite:///{path}")
    wf = app.workflows()["sequential"].fn
    async with app.worker(concurrency=100 if history else 1):
        await fill_history(app, history)
        await (await app.start(wf, 300)).result(timeout=60)  # B-trees past their root
        conn = apsw.Connection(str(path))
        try:
            conn.setbusytimeout(10_000)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            # Under the store's autocheckpoint (1,000 frames), so the WAL keeps them all.
            n = min(block, 250)
            await (await app.start(wf, n)).result(timeout=60)
            owner = {int(page): str(name) for name, page in
                     conn.execute("SELECT name, pageno FROM dbstat")}
            wal = (folder / f"{path.name}-wal").read_bytes()
        finally:
            conn.close()
    await app.close()
    page_size = int.from_bytes(wal[8:12], "big")
    by_tree: dict[str, int] = {}
    frames = commits = 0
    offset = 32  # the WAL header; then frames of a 24-byte header and a page
    while offset + 24 + page_size <= len(wal):
        page = int.from_bytes(wal[offset:offset + 4], "big")
        commits += int.from_bytes(wal[offset + 4:offset + 8], "big") != 0
        name = owner.get(page, "(freed or new page)")
        by_tree[name] = by_tree.get(name, 0) + 1
        frames += 1
        offset += 24 + page_size
    return {"steps": n, "frames": frames, "commits": commits,
            "frames_per_step": frames / n,
            "by_btree_per_step": {k: v / n for k, v in
                                  sorted(by_tree.items(), key=lambda kv: -kv[1])}}


_APPEND_VALUES = ("%(run_id)s, %(position)s::integer, %(kind)s::text, %(name)s::text, "
                  "%(status)s::text, %(result)s::text, %(error)s::text, "
                  "%(attempts)s::integer, %(started_at)s::float8, %(finished_at)s::float8, "
                  "%(next_attempt_at)s::float8, %(args)s::text, %(fencing_token)s::bigint")
_APPEND_INTO = ("INSERT INTO tether.journal AS j (run_id, position, kind, name, status, "
                "result, error, attempts, started_at, finished_at, next_attempt_at, args, "
                "fencing_token) ")
_APPEND_SELECT = (_APPEND_INTO + "SELECT " + _APPEND_VALUES.replace("%(run_id)s", "run_id")
                  .replace("%(fencing_token)s::bigint", "fencing_token")
                  + " FROM tether.runs WHERE run_id = %(run_id)s "
                  "AND fencing_token = %(fencing_token)s AND (status = 'running') IS TRUE")


async def pg_statements(pairs: int, block: int, folder: Path) -> dict[str, Any]:
    """The journal append's parts timed against a bare commit (see ``--statements``)."""
    import psycopg

    from tether.store._sql import load_queries

    url = resolve("postgres", folder, f"svs_{uuid.uuid4().hex[:8]}")
    try:
        app = make_app(url)
        wf = app.workflows()["sequential"].fn
        run_id = (await app.start(wf, 0)).run_id  # no worker: it stays queued
        await app.close()
        full = load_queries("tether.store.postgres")["journal_append_one"]
        full = full.replace("{schema}", "tether")
        variants = {
            "INSERT of the journal row": (_APPEND_INTO + "VALUES (" + _APPEND_VALUES + ")",
                                          False),
            "+ fencing token from the run's row": (_APPEND_SELECT, False),
            "+ the run's row locked FOR NO KEY UPDATE": (_APPEND_SELECT + " FOR NO KEY UPDATE",
                                                          False),
            "+ ON CONFLICT (as sent, less its event)": (pg_less_events(full), False),
            "+ its op event (the statement as sent)": (full, True),
        }
        commits, close = pg_committer(url)
        conn = psycopg.connect(url, autocommit=True)
        try:
            conn.execute("UPDATE tether.runs SET status = 'running', fencing_token = 1, "
                         "queue = 'bench-nobody' WHERE run_id = %s", (run_id,))
            position = [0]

            def appends(sql: str, n: int) -> float:
                t0 = time.perf_counter()
                for _ in range(n):
                    position[0] += 1
                    conn.execute(sql, {
                        "run_id": run_id, "position": position[0], "kind": "step",
                        "name": "noop", "status": "ok", "result": "1", "error": None,
                        "attempts": 1, "started_at": 1.0, "finished_at": 1.0,
                        "next_attempt_at": None, "args": "[1]", "fencing_token": 1,
                    }, prepare=True)
                return (time.perf_counter() - t0) / n * 1e6

            trigger = [True]

            def use(on: bool) -> None:
                if on != trigger[0]:
                    trigger[0] = on
                    conn.execute("ALTER TABLE tether.journal "
                                 f"{'ENABLE' if on else 'DISABLE'} TRIGGER run_events_journal")

            names = list(variants)
            for name in names:  # each plan prepared
                use(variants[name][1])
                appends(variants[name][0], 20)
            times: dict[str, list[float]] = {"bare commit": [], **{n: [] for n in names}}
            for i in range(pairs):
                order = ["bare commit", *names]
                for name in order[i % len(order):] + order[:i % len(order)]:
                    if name == "bare commit":
                        times[name].append(commits(block))
                        continue
                    use(variants[name][1])
                    times[name].append(appends(variants[name][0], block))
            use(True)
        finally:
            conn.close()
            close()
    finally:
        drop_created()
    bare = times["bare commit"]
    return {name: {"us": v, "us_median": statistics.median(v),
                   "ratio_median": statistics.median(
                       x / b for x, b in zip(v, bare, strict=True))}
            for name, v in times.items()}


async def measure(kind: str, pairs: int, block: int, folder: Path,
                  split: bool = False, history: int = 0) -> dict[str, Any]:
    url = resolve(kind, folder, f"svc_{uuid.uuid4().hex[:8]}")
    bare_us: list[float] = []  # steps without op events (--split)
    try:
        app = make_app(url)
        wf = app.workflows()["sequential"].fn

        async def steps() -> float:
            t0 = time.perf_counter()
            await (await app.start(wf, block)).result(timeout=600)
            return (time.perf_counter() - t0) / block * 1e6

        if history:
            async with app.worker(concurrency=100):
                await fill_history(app, history)
        async with app.worker(concurrency=1):
            # Warm up. On SQLite both sides first go past their WAL's first checkpoint
            # (1,000 frames): until then each commit makes the WAL file longer, and an
            # fsync that must also write the file's new size costs about twice one
            # that overwrites frames in place, which is the steady state of a store.
            await (await app.start(wf, 400 if kind == "sqlite" else 20)).result(timeout=60)
            if kind == "sqlite":
                commits, close = sqlite_committer(folder / f"bare-{uuid.uuid4().hex[:8]}.db")
                commits(1100)
            else:
                commits, close = pg_committer(url)
            switch, close_switch = (op_events_switch(kind, url, app) if split
                                     else (None, None))
            try:
                commit_us: list[float] = []
                step_us: list[float] = []
                for i in range(pairs):
                    commit_us.append(commits(block))
                    if switch is None:
                        step_us.append(await steps())
                        continue
                    for events in ((True, False) if i % 2 == 0 else (False, True)):
                        switch(events)
                        (step_us if events else bare_us).append(await steps())
                    switch(True)
            finally:
                close()
                if close_switch is not None:
                    close_switch()
        await app.close()
    finally:
        drop_created()
    ratios = [s / c for s, c in zip(step_us, commit_us, strict=True)]
    out = {"store": kind, "pairs": pairs, "block": block,
           "commit_us": commit_us, "step_us": step_us, "ratios": ratios,
           "commit_us_median": statistics.median(commit_us),
           "step_us_median": statistics.median(step_us),
           "ratio_median": statistics.median(ratios),
           "ratio_min": min(ratios), "ratio_max": max(ratios)}
    if bare_us:
        no_ev = [b / c for b, c in zip(bare_us, commit_us, strict=True)]
        share = [(s - b) / s for s, b in zip(step_us, bare_us, strict=True)]
        out.update(no_events_us=bare_us, no_events_ratios=no_ev,
                   no_events_us_median=statistics.median(bare_us),
                   no_events_ratio_median=statistics.median(no_ev),
                   events_share_median=statistics.median(share),
                   events_share_min=min(share), events_share_max=max(share))
    return out


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default="sqlite,postgres",
                   help="sqlite, postgres, or both: sqlite,postgres (the default) or both")
    p.add_argument("--pairs", type=int, default=15)
    p.add_argument("--block", type=int, default=200, help="commits, then steps, per pair")
    p.add_argument("--split", action="store_true",
                   help="also time each pair's steps without the run-event log's "
                        "per-step row (what the event log costs a step)")
    p.add_argument("--frames", action="store_true",
                   help="SQLite: also count the WAL frames (pages) a step writes, by B-tree")
    p.add_argument("--statements", action="store_true",
                   help="PostgreSQL: also time the parts of the step's statement against "
                        "a bare commit")
    p.add_argument("--history", type=int, default=0, metavar="RUNS",
                   help="first fill the store with RUNS finished runs of 10 steps, as a "
                        "store in use holds (default: a fresh store)")
    p.add_argument("--json", help="also write every figure to this file")
    a = p.parse_args()
    if a.pairs < 1 or a.block < 1 or a.history < 0:
        p.error("--pairs and --block must be >= 1, --history >= 0")
    kinds = ["sqlite", "postgres"] if a.db == "both" else [
        k.strip() for k in a.db.split(",") if k.strip()]
    if not kinds or any(k not in ("sqlite", "postgres") for k in kinds):
        p.error("--db takes sqlite, postgres, sqlite,postgres or both")
    print(f"$ .venv/bin/python bench/step_vs_commit.py {' '.join(sys.argv[1:])}")
    print(f"{os.cpu_count()} CPUs; Python {sys.version.split()[0]}; "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}; load average {os.getloadavg()[0]:.2f}")
    out = []
    with tempfile.TemporaryDirectory(prefix="tether-svc-") as tmp:
        for kind in kinds:
            r = await measure(kind, a.pairs, a.block, Path(tmp), a.split, a.history)
            out.append(r)
            print(f"{kind:9} bare commit {r['commit_us_median']:6.0f} µs   step "
                  f"{r['step_us_median']:6.0f} µs   step ÷ commit, median of {a.pairs} "
                  f"pairs: {r['ratio_median']:.2f} ({r['ratio_min']:.2f}-"
                  f"{r['ratio_max']:.2f})", flush=True)
            if "no_events_us_median" in r:
                print(f"{'':9} without op events {r['no_events_us_median']:6.0f} µs   ÷ "
                      f"commit {r['no_events_ratio_median']:.2f}   event log's share of a "
                      f"step {r['events_share_median']:.0%} ({r['events_share_min']:.0%}"
                      f" to {r['events_share_max']:.0%})", flush=True)
            if a.frames and kind == "sqlite":
                f = await wal_frames(a.block, Path(tmp), a.history)
                r["wal_frames"] = f
                trees = ", ".join(f"{k} {v:.2f}" for k, v in f["by_btree_per_step"].items()
                                  if v >= 0.01)
                print(f"{'':9} WAL frames per step {f['frames_per_step']:.2f} (a bare "
                      f"commit: 1), {f['commits']} commits for {f['steps']} steps: {trees}",
                      flush=True)
            if a.statements and kind == "postgres":
                parts = await pg_statements(a.pairs, a.block, Path(tmp))
                r["statements"] = parts
                print(f"{'':9} the statement's parts, same client as the bare commit "
                      f"(median of {a.pairs} rounds):", flush=True)
                for name, v in parts.items():
                    print(f"{'':11} {name:40} {v['us_median']:6.0f} µs   ÷ commit "
                          f"{v['ratio_median']:.2f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
