"""Chaos smoke: PostgreSQL behind a proxy that resets connections, some right after a
COMMIT went out and before its reply came back (ambiguous commits). Nothing is lost,
no committed step is run again, no journal position is written twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.harness import PROFILES, soak
from tests.chaos.resetproxy import ResettingProxy

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.postgres,
              pytest.mark.timeout(600)]


async def test_connection_resets_and_ambiguous_commits_lose_nothing(
    pg_url: str, tmp_path: Path,
) -> None:
    proxy = await ResettingProxy(pg_url).start()
    try:
        figures = await soak("postgres", pg_url, tmp_path, PROFILES[("smoke", "proxy")],
                             worker_url=proxy.url())
    finally:
        await proxy.close()
    summary = {**figures.summary(), "resets": proxy.resets,
               "ambiguous commits": proxy.ambiguous_commits}
    print(summary)
    assert proxy.ambiguous_commits + proxy.resets > 0, summary
    assert figures.runs_lost == 0 and figures.runs_not_completed == 0, summary
    assert figures.wrong_results == 0 and figures.journal_gaps == 0, summary
    assert figures.duplicated_committed_effects == 0, summary
    assert figures.effects_missing == 0 and figures.effects_unexpected == 0, summary
