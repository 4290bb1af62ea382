"""PostgreSQL restarted with ``pg_ctl restart -m immediate`` during the soak.

The soak's workload (3 workers, kills by the harness and at the crash point) runs on a
private cluster (``pgcluster.py``, ``fsync=on``); every few seconds the server is
killed without a checkpoint and recovers from its WAL. Optionally the workers also go
through the connection-resetting proxy. Figures besides the soak's: restarts, the time
each took until the server accepted connections, the recovery time (from the restart
until the next journal entry was finished), and duplicate journal rows (counted by
``(run_id, position)`` and must be 0).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.chaos.harness import Profile, soak
from tests.chaos.pgcluster import PrivateCluster
from tests.chaos.resetproxy import ResettingProxy

PROFILES = {
    "smoke": Profile("smoke", workers=3, duration=10, runs=30),
    "full": Profile("full", workers=3, duration=300, runs=900),
}
#: Seconds between restarts, per profile; at least MIN_RESTARTS happen (past the
#: soak's deadline if need be, before its drain).
RESTART_EVERY = {"smoke": (2.0, 4.0), "full": (3.0, 6.0)}
MIN_RESTARTS = 2

#: The ``pgrestart-often`` scenario: restarts every 1-3 s alternating ``-m immediate``
#: and ``-m fast``, no worker kills nor crash points (every repeated execution is the
#: restarts' doing), no proxy; what found two committed steps run again (2026-12-07).
OFTEN_PROFILES = {
    "smoke": Profile("often-smoke", workers=3, duration=20, runs=60, crash_p=0.0,
                     kill_every=None),
    "full": Profile("often", workers=3, duration=600, runs=1800, crash_p=0.0,
                    kill_every=None),
}
OFTEN_EVERY = (1.0, 3.0)


@dataclass
class RestartFigures:
    restarts: int = 0
    restart_seconds: list[float] = field(default_factory=list)
    recovery_seconds: list[float] = field(default_factory=list)
    duplicate_journal_rows: int = 0


def _finished_entries(url: str) -> int | None:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT count(*) FROM tether.journal WHERE finished_at IS NOT NULL"
            ).fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return None


def _unfinished_runs(url: str) -> int | None:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT count(*) FROM tether.runs "
                "WHERE status NOT IN ('completed', 'failed', 'cancelled')").fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return None


def _duplicate_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM (SELECT run_id, position FROM tether.journal "
            "GROUP BY run_id, position HAVING count(*) > 1) d").fetchone()
        return int(row[0]) if row else 0


def _p(data: list[float], q: float) -> float | None:
    if not data:
        return None
    s = sorted(data)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


async def restart_soak(work: Path, profile: Profile, *, seed: int = 21,
                       with_proxy: bool = False,
                       every: tuple[float, float] | None = None,
                       modes: tuple[str, ...] = ("immediate",)) -> dict[str, Any]:
    """The soak of ``profile`` with the server restarted every ``every`` seconds
    (default ``RESTART_EVERY`` of the profile), with ``pg_ctl restart -m`` each of
    ``modes`` in turn."""
    cluster = PrivateCluster()
    await asyncio.to_thread(cluster.start)
    proxy: ResettingProxy | None = None
    try:
        url = cluster.url()
        figures = RestartFigures()
        rng = random.Random(seed)

        async def restarts(deadline: float) -> None:
            gap = every or RESTART_EVERY.get(profile.name, RESTART_EVERY["full"])
            while time.monotonic() < deadline or figures.restarts < MIN_RESTARTS:
                await asyncio.sleep(rng.uniform(*gap))
                before = await asyncio.to_thread(_finished_entries, url)
                t0 = time.monotonic()
                mode = modes[figures.restarts % len(modes)]
                figures.restart_seconds.append(
                    await asyncio.to_thread(cluster.restart, mode))
                figures.restarts += 1
                # Recovery: the next journal entry finished after the restart (not
                # measured when every run had ended: nothing is left to finish).
                while time.monotonic() - t0 < 60:
                    now = await asyncio.to_thread(_finished_entries, url)
                    if now is not None and before is not None and now > before:
                        figures.recovery_seconds.append(time.monotonic() - t0)
                        break
                    if await asyncio.to_thread(_unfinished_runs, url) == 0:
                        break
                    await asyncio.sleep(0.05)

        worker_url = None
        if with_proxy:
            proxy = await ResettingProxy(url, seed=seed).start()
            worker_url = proxy.url()
        soaked = await soak("postgres", url, work, profile, seed=seed,
                            worker_url=worker_url, disturb=restarts)
        figures.duplicate_journal_rows = await asyncio.to_thread(_duplicate_rows, url)
    finally:
        if proxy is not None:
            await proxy.close()
        await asyncio.to_thread(cluster.stop)
    out = {**soaked.summary(),
           "backend": f"postgres, restarts -m {'/'.join(modes)}"
                      + (" + proxy" if with_proxy else ""),
           "server restarts": figures.restarts,
           "restart until accepting p50 s": _p(figures.restart_seconds, 0.5),
           "restart until accepting max s": _p(figures.restart_seconds, 1.0),
           "recovery (next entry finished) p50 s": _p(figures.recovery_seconds, 0.5),
           "recovery max s": _p(figures.recovery_seconds, 1.0),
           "duplicate journal rows": figures.duplicate_journal_rows}
    if proxy is not None:
        out["connection resets"] = proxy.resets
        out["ambiguous commits"] = proxy.ambiguous_commits
    return out


MUST_BE_ZERO = ("runs lost", "runs not completed after drain", "wrong results",
                "duplicated committed-step effects", "effects missing", "effects unexpected",
                "journal gaps", "duplicate journal rows")
