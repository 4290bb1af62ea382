"""Chaos smoke: one worker in its own network namespace loses its link to PostgreSQL
(packets vanish, no RST) for four lease periods, then gets it back. Its runs move to
the other workers meanwhile; afterwards it commits new work without a restart; no
committed step runs again and no stale write is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.partition import MUST_BE_ZERO, PROFILES, missing_netns, partition

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.postgres,
              pytest.mark.timeout(600)]


async def test_partitioned_worker_hands_over_and_rejoins(tmp_path: Path) -> None:
    reason = missing_netns()
    if reason:
        pytest.skip(f"network partition: {reason}")
    p = PROFILES["smoke"]
    figures = await partition(tmp_path, int(p["rounds"]), int(p["runs"]), float(p["down"]))
    summary = figures.summary()
    print(summary)
    assert figures.held_at_cut > 0, summary
    assert figures.moved_while_cut == figures.held_at_cut, summary
    assert figures.rejoined_rounds == figures.rounds, summary
    for key in MUST_BE_ZERO:
        assert summary[key] == 0, (key, summary)
