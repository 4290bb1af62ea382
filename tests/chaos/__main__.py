"""``python -m tests.chaos [smoke|full] [sqlite] [postgres] [SCENARIO ...]``: run the
chaos scenarios of a profile and print their figures as Markdown (for
docs/reliability.md). Scenarios: soak, drain, fencing, storm, proxy, powerloss,
pgrestart, pgrestart-often (restarts every 1-3 s, -m immediate and -m fast in turn, no
worker kills: 10 minutes in the full profile), partition, clock, disk (default: all but
pgrestart-often). pgrestart(-often), partition and disk need root (a private PostgreSQL
cluster, a network namespace, a tmpfs mount); clock needs libfaketime.

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

from tests.chaos import clockjump, diskfull, partition, pgrestart
from tests.chaos.fencing import race
from tests.chaos.harness import DRAIN_PROFILES, PROFILES, ROOT, soak
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


SCENARIOS = ("soak", "drain", "fencing", "storm", "proxy", "powerloss", "pgrestart",
             "pgrestart-often", "partition", "clock", "disk")
#: What runs when no scenario is named: pgrestart-often only when asked for.
DEFAULT_SCENARIOS = tuple(s for s in SCENARIOS if s != "pgrestart-often")


def new_scenarios(profile: str, backends: list[str], chosen: set[str]) -> list[str]:
    """The scenarios added for issue 12's missing items; returns the names of those
    whose must-be-zero figures were not zero."""
    bad: list[str] = []
    if "pgrestart" in chosen and "postgres" in backends:
        with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
            r = asyncio.run(pgrestart.restart_soak(Path(tmp), pgrestart.PROFILES[profile],
                                                   with_proxy=True))
        print(json.dumps(r), flush=True)
        print("\nPostgreSQL restarted with -m immediate (+ resetting proxy)\n\n" + table([r]))
        if any(r[k] for k in pgrestart.MUST_BE_ZERO):
            bad.append("pgrestart")
    if "pgrestart-often" in chosen and "postgres" in backends:
        with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
            r = asyncio.run(pgrestart.restart_soak(
                Path(tmp), pgrestart.OFTEN_PROFILES[profile], every=pgrestart.OFTEN_EVERY,
                modes=("immediate", "fast")))
        print(json.dumps(r), flush=True)
        print("\nPostgreSQL restarted every 1-3 s, -m immediate and -m fast in turn\n\n"
              + table([r]))
        if any(r[k] for k in pgrestart.MUST_BE_ZERO):
            bad.append("pgrestart-often")
    if "partition" in chosen and "postgres" in backends:
        p = partition.PROFILES[profile]
        with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
            f = asyncio.run(partition.partition(Path(tmp), int(p["rounds"]), int(p["runs"]),
                                                float(p["down"])))
        r = {"scenario": "partition", **f.summary()}
        print(json.dumps(r), flush=True)
        print("\nNetwork partition of one worker\n\n" + table([r]))
        if any(r[k] for k in partition.MUST_BE_ZERO) or f.rejoined_rounds != f.rounds \
                or f.moved_while_cut != f.held_at_cut:
            bad.append("partition")
    if "clock" in chosen:
        rows = []
        for backend in backends:
            with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, \
                    store_url(backend, Path(tmp)) as url:
                for jf in asyncio.run(clockjump.clock_jumps(backend, url, Path(tmp),
                                                            clockjump.JUMPS[profile])):
                    rows.append({"backend / jump": f"{backend} {jf.jump}",
                                 **{k: v for k, v in jf.summary().items()
                                    if k not in ("backend", "jump")}})
                    print(json.dumps(rows[-1]), flush=True)
        if rows:
            print("\nClock jumps (libfaketime)\n\n" + table(rows))
            if any(r[k] for r in rows for k in clockjump.MUST_BE_ZERO) \
                    or any(r["completed"] != r["runs"] for r in rows):
                bad.append("clock")
    if "disk" in chosen and "sqlite" in backends:
        with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
            r = asyncio.run(diskfull.disk_fill_soak(Path(tmp), diskfull.PROFILES[profile]))
        examples = r.pop("_examples")
        print(json.dumps(r), json.dumps(examples), flush=True)
        print("\nA disk that fills and empties (SQLite on tmpfs)\n\n" + table([r]))
        if any(r[k] for k in diskfull.MUST_BE_ZERO) or r["integrity_check"] != "ok":
            bad.append("disk")
    return bad


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    profile = argv[0] if argv else "full"
    if profile not in FENCING_ITERATIONS:
        print(f"unknown profile {profile!r}: smoke or full, first\n{__doc__}")
        return 2
    backends = [a for a in argv[1:] if a in ("sqlite", "postgres")] or ["sqlite", "postgres"]
    chosen = {a for a in argv[1:] if a in SCENARIOS} or set(DEFAULT_SCENARIOS)
    unknown = [a for a in argv[1:] if a not in SCENARIOS and a not in ("sqlite", "postgres")]
    if unknown:
        print(f"unknown arguments: {unknown}; scenarios: {', '.join(SCENARIOS)}")
        return 2
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    soaks: list[dict[str, Any]] = []
    drains: list[dict[str, Any]] = []
    fences: list[dict[str, Any]] = []
    storms: list[dict[str, Any]] = []
    for backend in backends:
        for name, profiles, rows in (("soak", PROFILES, soaks),
                                     ("drain", DRAIN_PROFILES, drains)):
            if name not in chosen:
                continue
            with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, \
                    store_url(backend, Path(tmp)) as url:
                figures = asyncio.run(soak(backend, url, Path(tmp),
                                           profiles[(profile, backend)]))
                rows.append(figures.summary())
                print(json.dumps(rows[-1]), flush=True)
        if "fencing" in chosen:
            with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, \
                    store_url(backend, Path(tmp)) as url:
                f = asyncio.run(race(url, Path(tmp), FENCING_ITERATIONS[profile]))
                fences.append({"backend": backend, "iterations": f.iterations,
                               "takeovers": f.takeovers,
                               "stale writes accepted": f.stale_writes_accepted,
                               "frozen while holding SQLite's write lock":
                                   f.frozen_holding_lock,
                               "outcomes committed before a takeover": sum(
                                   1 for e in f.evidence if not e["counted stale"]),
                               "wall time s": round(f.seconds, 1)})
                print(json.dumps(fences[-1]), flush=True)
                for e in f.evidence:
                    print("  frozen process's outcome kept:", json.dumps(e), flush=True)
        if "storm" in chosen:
            with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, \
                    store_url(backend, Path(tmp)) as url:
                st = asyncio.run(storm(backend, url, Path(tmp), STORM_RUNS[profile]))
                storms.append(st.summary())
                print(json.dumps(storms[-1]), flush=True)
    print(f"\nprofile {profile}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit {commit}\n")
    if soaks:
        print("Kill -9 soak\n\n" + table(soaks))
    if drains:
        print("\nSIGTERM soak (graceful drains)\n\n" + table(drains))
    if fences:
        print("\nLease and fencing race\n\n" + table(fences))
    proxied = []
    if "postgres" in backends and "proxy" in chosen:
        with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, \
                store_url("postgres", Path(tmp)) as url:
            proxied.append(asyncio.run(_through_proxy(url, Path(tmp), profile)))
            print(json.dumps(proxied[-1]), flush=True)
    losses = []
    if "sqlite" in backends and "powerloss" in chosen:
        points = int(os.environ.get("CHAOS_POWER_LOSS_POINTS", POWER_LOSS_POINTS[profile]))
        for sync, n in (("full", points), ("normal", max(4, points // 10))):
            with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
                pl = power_loss(Path(tmp), n, sync)
            losses.append({"synchronous": sync, "crash points": pl.crash_points,
                           "acknowledged operations": pl.acknowledged,
                           "acknowledged lost": pl.lost,
                           "integrity failures": pl.integrity_failures})
            print(json.dumps(losses[-1]), flush=True)
    if storms:
        print("\nRecovery storm\n\n" + table(storms))
    if proxied:
        print("\nPostgreSQL behind a connection-resetting proxy\n\n" + table(proxied))
    if losses:
        print("\nPower loss (SQLite, VFS shim)\n\n" + table(losses))
    bad: list[Any] = [s for s in storms if s["lost"] or s["completed"] != s["runs"]]
    bad += [s for s in soaks if any(s[k] for k in (
        "runs lost", "runs not completed after drain", "wrong results",
        "duplicated committed-step effects", "effects missing", "journal gaps"))]
    bad += [s for s in drains if any(s[k] for k in (
        "runs lost", "runs not completed after drain", "wrong results",
        "duplicated committed-step effects", "in-flight re-executions", "effects missing",
        "journal gaps", "drained exits over the limit", "problems in worker logs"))]
    bad += [f for f in fences if f["stale writes accepted"]]
    bad += [p for p in proxied if any(p[k] for k in (
        "runs lost", "runs not completed after drain", "wrong results",
        "duplicated committed-step effects", "effects missing", "journal gaps"))]
    bad += [x for x in losses if x["integrity failures"]
            or (x["synchronous"] == "full" and x["acknowledged lost"])]
    bad += new_scenarios(profile, backends, chosen)
    if bad:
        print(f"\nFAILED: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
