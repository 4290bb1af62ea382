"""Which attempts of a run's history an earlier execution cut off (kill -9)."""

from __future__ import annotations

from tether._replay import cut_off_attempts
from tether.store._lifecycle import AttemptRecord


def _row(pos: int, n: int, status: str, at: float, generation: int = 0) -> AttemptRecord:
    return AttemptRecord(f"a{pos}-{n}-{at}", "r", generation, pos, "s", n, "w", status, at)


def test_trailing_running_attempts_are_cut_off() -> None:
    rows = [_row(0, 1, "ok", 1.0), _row(1, 1, "error", 2.0), _row(1, 2, "running", 3.0),
            _row(2, 1, "running", 4.0), _row(2, 2, "running", 5.0)]
    assert cut_off_attempts(rows, 0) == {1: (2, 3.0), 2: (2, 4.0)}


def test_an_attempt_that_ended_after_them_leaves_none() -> None:
    # #1 cut off, #2 failed (the step failed for good, then `tether retry` reset it).
    rows = [_row(0, 1, "running", 1.0), _row(0, 2, "error", 2.0)]
    assert cut_off_attempts(rows, 0) == {}


def test_other_generations_are_left_out() -> None:
    assert cut_off_attempts([_row(0, 1, "running", 1.0, generation=0)], 1) == {}
