"""Chaos smoke profile of the drain soak: workers SIGTERMed under load on SQLite (2
workers) and PostgreSQL (3). A drained worker finishes and journals its steps in flight
and hands its runs back, so, unlike a kill, nothing runs twice; it exits at once and
gives up no write. The full profile: ``python -m tests.chaos full drain``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.harness import DRAIN_PROFILES, MUST_BE_ZERO, soak

# Serial: a worker starved of CPU by other tests for longer than its 2 s lease would
# lose runs to a takeover, and a takeover re-executes the step in flight.
pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(600), pytest.mark.serial]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres",
                                                            marks=pytest.mark.postgres)])
async def test_drain_soak_smoke(backend: str, request: pytest.FixtureRequest,
                                tmp_path: Path) -> None:
    url = str(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    profile = DRAIN_PROFILES[("smoke", backend)]
    figures = await soak(backend, url, tmp_path, profile)
    summary = figures.summary()
    print(summary)
    assert figures.kills >= 5 and len(figures.drain_exits) == figures.kills, summary
    assert figures.runs_started == profile.runs
    assert {k: summary[k] for k in MUST_BE_ZERO if summary[k]} == {}, summary
    assert figures.in_flight_reexecutions == 0, summary  # a drain lets every step end
    assert figures.drains_over_limit == 0, summary
    assert figures.log_problems == [], figures.log_problems
    if backend == "sqlite":
        assert figures.integrity == "ok"
