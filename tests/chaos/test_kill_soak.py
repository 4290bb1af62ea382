"""Chaos smoke profile: the kill -9 soak on SQLite (2 workers) and PostgreSQL (3 workers),
with the crash point between a step's effect and its commit. The full profile runs with
``python -m tests.chaos.harness full`` (figures in docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.harness import MUST_BE_ZERO, PROFILES, soak

# Serial: the bound on re-executed steps below counts only kills; a worker starved of CPU
# by other tests for longer than its 2 s lease would lose runs to a takeover too.
pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(600), pytest.mark.serial]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres",
                                                            marks=pytest.mark.postgres)])
async def test_kill_soak_smoke(backend: str, request: pytest.FixtureRequest,
                               tmp_path: Path) -> None:
    url = str(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    figures = await soak(backend, url, tmp_path, PROFILES[("smoke", backend)])
    summary = figures.summary()
    print(summary)
    assert figures.kills >= 5, summary
    assert figures.runs_started == PROFILES[("smoke", backend)].runs
    assert {k: summary[k] for k in MUST_BE_ZERO if summary[k]} == {}, summary
    # Only steps in flight at a crash may run again: at most one per run the killed
    # worker held (sampled at each harness kill), and at most a worker's concurrency
    # (50) per crash point.
    bound = figures.runs_held_at_kills + 50 * figures.crash_point_kills
    assert figures.in_flight_reexecutions <= bound, summary
    if backend == "sqlite":
        assert figures.integrity == "ok"
