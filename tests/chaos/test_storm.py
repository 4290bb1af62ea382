"""Chaos smoke: a recovery storm (runs pending, the workers holding some killed at
once, three new workers started together); the full profile uses 5,000 runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.storm import storm

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(600)]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres",
                                                            marks=pytest.mark.postgres)])
async def test_recovery_storm_smoke(backend: str, request: pytest.FixtureRequest,
                                    tmp_path: Path) -> None:
    url = str(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    figures = await storm(backend, url, tmp_path, runs=400)
    print(figures.summary())
    assert figures.runs_held_when_killed > 0  # the kill left runs behind to recover
    assert figures.completed == 400 and figures.lost == 0 and figures.wrong_results == 0
    if figures.peak_db_connections is not None:
        # 3 workers, each a bounded pool plus its listener, plus this test's client.
        assert figures.peak_db_connections <= 3 * 12 + 12, figures.summary()
    assert figures.peak_worker_rss_mb < 500, figures.summary()
