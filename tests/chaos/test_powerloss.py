"""Chaos smoke: power loss on SQLite through a VFS shim that drops unsynced writes at
random crash points. With the default durability (``synchronous=FULL``) no
acknowledged start, completion or signal is lost and the file is intact; with
``synchronous=NORMAL`` losses are expected and only counted (the shim really drops
writes). The full profile uses 1,000 crash points (``python -m tests.chaos full``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.powerloss import run

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(600)]


def test_power_loss_with_default_durability_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    figures = run(tmp_path, crash_points=8, synchronous="full")
    print(figures)
    assert figures.acknowledged > 0
    assert figures.lost == 0 and figures.integrity_failures == 0, figures


def test_power_loss_with_synchronous_normal_is_measured(tmp_path: Path) -> None:
    figures = run(tmp_path, crash_points=4, synchronous="normal", seed=3)
    print(figures)
    assert figures.integrity_failures == 0, figures
    assert figures.lost > 0, "the shim dropped nothing: it would not see a loss either"
