"""Chaos smoke: clock jumps of +1 h, -1 h and +24 h on worker processes (libfaketime).

On PostgreSQL one worker's clock is off: no timer fires early by the store's clock and
no lease is taken from the live worker. On SQLite every process of the machine is off
together (one machine, one clock): the same figures hold on that common clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.clockjump import JUMPS, MUST_BE_ZERO, clock_jumps, missing_faketime

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(600)]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres",
                                                            marks=pytest.mark.postgres)])
async def test_clock_jumps_steal_no_lease_and_fire_no_timer_early(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    reason = missing_faketime()
    if reason:
        pytest.skip(reason)
    url = str(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    results = await clock_jumps(backend, url, tmp_path, JUMPS["smoke"])
    for figures in results:
        print(figures.summary())
    for figures in results:
        summary = figures.summary()
        assert figures.completed == figures.runs, summary
        for key in MUST_BE_ZERO:
            assert summary[key] == 0, (key, summary)
