"""Chaos smoke: the soak on a private PostgreSQL cluster restarted with ``pg_ctl restart
-m immediate`` every 2-4 s (at least twice), the workers also behind the
connection-resetting proxy. Nothing is lost, no journal row is written twice, no
committed step runs again, and every run completes after the drain. The shared server
is never touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.pgcluster import missing_privilege
from tests.chaos.pgrestart import MUST_BE_ZERO, PROFILES, restart_soak

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.postgres,
              pytest.mark.timeout(600)]


async def test_immediate_restarts_during_the_soak_lose_nothing(tmp_path: Path) -> None:
    reason = missing_privilege()
    if reason:
        pytest.skip(f"private PostgreSQL cluster: {reason}")
    figures = await restart_soak(tmp_path, PROFILES["smoke"], with_proxy=True)
    print(figures)
    assert figures["server restarts"] >= 2, figures
    assert figures["runs started"] == PROFILES["smoke"].runs, figures
    for key in MUST_BE_ZERO:
        assert figures[key] == 0, (key, figures)
