"""Chaos smoke: the lease/fencing race (SIGSTOP before a write, takeover, SIGCONT) on
both backends; the full profile does 200 iterations (``python -m tests.chaos full``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.fencing import race

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(300)]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres",
                                                            marks=pytest.mark.postgres)])
async def test_fencing_race_smoke(backend: str, request: pytest.FixtureRequest,
                                  tmp_path: Path) -> None:
    url = str(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    figures = await race(url, tmp_path, iterations=4)
    print(figures)
    assert figures.iterations == 4
    # Every frozen run was finished by the other worker, unless the frozen process held
    # SQLite's write lock (then everyone waited for it, and it finished its own run).
    assert figures.takeovers + figures.frozen_holding_lock == 4
    assert figures.stale_writes_accepted == 0
