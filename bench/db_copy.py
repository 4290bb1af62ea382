"""``tether db copy`` (``tether.store._copy.copy_store``) of a large store: SQLite to
PostgreSQL, then that PostgreSQL store back into a new SQLite file.

    .venv/bin/python bench/db_copy.py [--runs 100000] [--waiting 1000] [--steps 10]
                                      [--admin-url postgresql://postgres@127.0.0.1/postgres]

Builds, with SQL alone, a SQLite store (a temporary folder) of ``--runs`` completed runs
of ``--steps`` journal entries each (a step's 100-byte result; the journal's triggers
write each entry's run event, and each run has its two status events) and ``--waiting``
runs waiting for a signal (one entry, a pending signal of another name, a 64-byte
texts' blob and its reference); then times the copy into a scratch database
(``--admin-url``: created, and dropped at the end) and the copy of that back into a new
SQLite file, each with the rows per table and the seconds ``copy_store`` took.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _fill(path: str, runs: int, waiting: int, steps: int) -> None:
    import apsw

    now = time.time() - 86400
    conn = apsw.Connection(path)
    conn.execute("BEGIN")
    conn.execute(f"""
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n
                                WHERE i + 1 < {runs + waiting})
        INSERT INTO tether_runs (run_id, workflow, queue, status, input, result, created_at,
                                 updated_at, finished_at, fencing_token, available_at,
                                 waiting_for, wait_signal)
        SELECT printf('%032x', i), 'agent', 'default',
               CASE WHEN i < {runs} THEN 'completed' ELSE 'waiting' END,
               '{{"args": ["' || hex(randomblob(32)) || '"], "kwargs": {{}}}}',
               CASE WHEN i < {runs} THEN '"' || hex(randomblob(50)) || '"' END,
               {now} + i * 0.01, {now} + i * 0.01 + 1,
               CASE WHEN i < {runs} THEN {now} + i * 0.01 + 1 END, 1,
               NULL, CASE WHEN i >= {runs} THEN 'signal go' END,
               CASE WHEN i >= {runs} THEN 'go' END
        FROM n""")
    conn.execute(f"""
        INSERT INTO tether_journal (run_id, position, kind, name, status, result, attempts,
                                    started_at, finished_at, fencing_token)
        WITH RECURSIVE p(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM p WHERE k + 1 < {steps})
        SELECT r.run_id, p.k, 'step', 'call_model', 'ok', '"' || hex(randomblob(50)) || '"', 1,
               r.created_at + p.k * 0.05, r.created_at + p.k * 0.05 + 0.04, 1
        FROM tether_runs r JOIN p ON r.status = 'completed' OR p.k = 0""")
    for status in ("running", "completed"):
        conn.execute(f"""
            INSERT INTO tether_run_events (run_id, event_id, kind, data)
            SELECT run_id, CAST(created_at * 1000000 AS INTEGER)
                           + {0 if status == 'running' else 1000}, 's', '{status}'
            FROM tether_runs WHERE status = 'completed'""")
    conn.execute("""
        INSERT INTO tether_signals (run_id, name, payload, created_at)
        SELECT run_id, 'other', '{"n": 1}', created_at FROM tether_runs
        WHERE status = 'waiting'""")
    conn.execute("""
        INSERT INTO tether_blob_refs (key, run_id)
        SELECT 'k' || run_id, run_id FROM tether_runs WHERE status = 'waiting'""")
    conn.execute("""
        INSERT INTO tether_blobs (key, value)
        SELECT 'k' || run_id, hex(randomblob(32)) FROM tether_runs WHERE status = 'waiting'""")
    conn.execute("COMMIT")
    conn.close()


def _report(label: str, done: object) -> None:
    counts = getattr(done, "counts")  # noqa: B009 (the result of the code imported)
    rows = sum(counts.values())
    print(f"{label}: {getattr(done, 'seconds'):.1f} s, {rows:,} rows "  # noqa: B009
          f"({', '.join(f'{k} {v:,}' for k, v in counts.items() if v)})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--waiting", type=int, default=1_000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--admin-url", default=os.environ.get(
        "TETHER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--code", metavar="DIR", default=str(ROOT),
                        help="import Tether from DIR/src (default: this checkout)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(args.code) / "src"))
    import psycopg

    from tether.store import open_store
    from tether.store._copy import copy_store

    name = f"{os.environ.get('TETHER_TEST_DB_PREFIX', 'tether_')}bench_copy_{uuid.uuid4().hex[:8]}"
    base, _, _ = args.admin_url.rpartition("/")
    pg = f"{base}/{name}"
    with tempfile.TemporaryDirectory(prefix="tether-copy-") as folder:
        source = f"sqlite:///{folder}/source.db"
        await open_store(source).migrate()  # type: ignore[attr-defined]
        began = time.monotonic()
        _fill(f"{folder}/source.db", args.runs, args.waiting, args.steps)
        print(f"built {args.runs:,} ended runs of {args.steps} entries and {args.waiting:,} "
              f"waiting runs in {time.monotonic() - began:.1f} s "
              f"({os.path.getsize(f'{folder}/source.db') / 1e6:.0f} MB)")
        with psycopg.connect(args.admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            _report("SQLite -> PostgreSQL", await copy_store(source, pg))
            _report("PostgreSQL -> SQLite", await copy_store(pg, f"sqlite:///{folder}/back.db"))
        finally:
            with psycopg.connect(args.admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
