"""The bounds each store's ``stats_run_durations`` sorts ended runs by are
``RUN_BUCKETS``, those ``run_end_totals_of`` counts a purged or retried run by: the live
figures and the totals of /metrics' run duration histogram add up bucket by bucket."""

from __future__ import annotations

import re

import pytest

from tether.store._port import RUN_BUCKETS, run_durations_of, run_end_totals_of
from tether.store._sql import load_queries


@pytest.mark.parametrize("package", ["tether.store.sqlite", "tether.store.postgres"])
def test_the_stores_sort_by_run_buckets(package: str) -> None:
    sql = load_queries(package, "serve.sql")["stats_run_durations"]
    whens = [(float(b), int(i)) for b, i in re.findall(r"WHEN d <= ([\d.]+) THEN (\d+)", sql)]
    assert whens == [(b, i) for i, b in enumerate(RUN_BUCKETS)]
    assert f"ELSE {len(RUN_BUCKETS)} END" in sql


def test_live_rows_and_totals_count_a_run_in_the_same_buckets() -> None:
    durations = [0.0, 0.1, 0.3, 7.0, 60.0, 61.0, 86400.0, 90000.0, -2.0]
    rows = []
    for d in durations:
        at = next((i for i, b in enumerate(RUN_BUCKETS) if max(d, 0.0) <= b),
                  len(RUN_BUCKETS))
        rows.append(("w", at, 1, max(d, 0.0)))
    live = run_durations_of(rows)["w"]
    totals = run_end_totals_of([("w", "completed", d) for d in durations])
    purged = [totals.get(k, 0.0) for k in (
        "run.count@w", "run.seconds@w", *(f"run.le.{b:g}@w" for b in RUN_BUCKETS))]
    assert live == purged
    assert live[0] == len(durations) and live[2:] == sorted(live[2:])
    assert totals["run.ended.completed@w"] == len(durations)
    assert run_end_totals_of([("w", "blocked", 3.0)]) == {}
