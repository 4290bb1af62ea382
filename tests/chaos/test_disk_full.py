"""Chaos smoke: the SQLite store on a small tmpfs that fills up (a filler file) and
empties again while two workers run the soak's workload, and the CLI runs against the
full disk. No acknowledged start or signal is lost, every run completes once space is
back, integrity_check is ok, and the CLI prints one-line errors, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.diskfull import MUST_BE_ZERO, PROFILES, disk_fill_soak, missing_privilege

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(600)]


async def test_disk_that_fills_and_empties_loses_nothing(tmp_path: Path) -> None:
    reason = missing_privilege()
    if reason:
        pytest.skip(f"disk full: {reason}")
    figures = await disk_fill_soak(tmp_path, PROFILES["smoke"])
    examples = figures.pop("_examples")
    print(figures, examples)
    assert figures["disk fills"] >= 2, figures
    assert figures["CLI commands on a full disk"] >= 5, figures
    assert figures["integrity_check"] == "ok", figures
    for key in MUST_BE_ZERO:
        assert figures[key] == 0, (key, figures, examples)
