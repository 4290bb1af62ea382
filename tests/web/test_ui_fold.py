"""Which timeline rows a phone folds (``tether.serve._ui.fold_timeline``; app.css hides
them below 640 px, tests/web/test_browser_phone_timeline.py looks at them): the older
``ok`` entries, in runs of ``FOLD_LEAST`` or more, never the newest ``FOLD_KEEP``, an
entry that is not ``ok``, one in flight, the awaited signal's row (no position) nor
the fork point the page marks."""

from __future__ import annotations

from typing import Any

from tether.serve._ui import FOLD_KEEP, FOLD_LEAST, fold_timeline


def _rows(states: list[str]) -> list[dict[str, Any]]:
    return [{"position": i, "state": s} for i, s in enumerate(states)]


def _folded(rows: list[dict[str, Any]]) -> list[int]:
    return [i for i, r in enumerate(rows) if r["fold"]]


def test_the_older_ok_entries_fold_in_runs_and_the_rest_stay() -> None:
    states = ["ok"] * 5 + ["error"] + ["ok"] * (FOLD_LEAST - 1) + ["retrying"] \
        + ["ok"] * 20 + ["ok"] * FOLD_KEEP
    rows = _rows(states)
    first_run, short_run = list(range(5)), list(range(6, 6 + FOLD_LEAST - 1))
    long_start = 6 + FOLD_LEAST
    long_run = list(range(long_start, long_start + 20))
    assert fold_timeline(rows) == 5 + 20
    assert _folded(rows) == first_run + long_run
    # (a run shorter than FOLD_LEAST stays: a line saying "2 entries folded" saves little)
    assert not any(rows[i]["fold"] for i in short_run)
    # each folded run's first row says how many it holds; the others say nothing
    assert {i: r["fold_gap"] for i, r in enumerate(rows) if r["fold_gap"]} == {
        0: 5, long_start: 20}


def test_a_short_timeline_a_running_entry_and_the_fork_point_stay() -> None:
    rows = _rows(["ok"] * FOLD_KEEP)
    assert fold_timeline(rows) == 0 and not _folded(rows)

    rows = _rows(["ok"] * 30)
    rows[10]["in_flight"] = True  # (a step's pending entry with its attempt running)
    rows[5]["position"] = None  # (no position: the awaited signal's row)
    assert fold_timeline(rows, keep="15") == 5 + 4 + 4 + 4
    assert _folded(rows) == [*range(5), *range(6, 10), *range(11, 15), *range(16, 20)]
