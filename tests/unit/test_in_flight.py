"""``_show.in_flight``: which attempts of a run's history are operations in flight, read
beside its journal (the attempt history lags the journal by up to 50 ms: an end the
journal records may not be written to the history yet)."""

from __future__ import annotations

from typing import Any

from tether._show import in_flight


def _attempt(position: int, attempt: int, status: str, *, generation: int = 1,
             started_at: float = 100.0, name: str = "s") -> dict[str, Any]:
    return {"generation": generation, "position": position, "name": name,
            "attempt": attempt, "worker_id": "w1", "status": status,
            "started_at": started_at, "finished_at": None, "error": None}


def _entry(position: int, status: str, attempts: int = 1) -> dict[str, Any]:
    return {"position": position, "kind": "step", "name": "s", "status": status,
            "attempts": attempts}


def _doc(journal: list[dict[str, Any]], attempts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"generation": 1, "journal": journal, "attempts": attempts}


def test_a_running_attempt_with_no_entry_is_in_flight() -> None:
    ops = in_flight(_doc([_entry(0, "ok")], [_attempt(0, 1, "ok"), _attempt(1, 1, "running",
                                                                           name="t")]))
    assert ops == [{"position": 1, "kind": "step", "name": "t", "attempt": 1,
                    "worker_id": "w1", "started_at": 100.0}]


def test_an_attempt_whose_end_the_journal_has_and_the_history_not_yet_is_not() -> None:
    # The entry committed (ok, or failed for good, or failed this very attempt and
    # waits to retry) before the attempt's end was written: not in flight.
    for entry in (_entry(0, "ok"), _entry(0, "error"), _entry(0, "pending", attempts=1)):
        assert in_flight(_doc([entry], [_attempt(0, 1, "running")])) == []


def test_the_next_attempt_after_a_failed_one_is_in_flight() -> None:
    ops = in_flight(_doc([_entry(0, "pending", attempts=1)],
                         [_attempt(0, 1, "error"), _attempt(0, 2, "running", started_at=101)]))
    assert [(o["position"], o["attempt"], o["started_at"]) for o in ops] == [(0, 2, 101)]


def test_attempts_cut_off_or_of_an_earlier_generation_are_not() -> None:
    assert in_flight(_doc([], [_attempt(0, 1, "interrupted"),
                               _attempt(1, 1, "running", generation=0)])) == []
    # A number taken again later (a re-run after a cut-off attempt): the newest counts.
    ops = in_flight(_doc([], [_attempt(0, 1, "running", started_at=100),
                              _attempt(0, 1, "running", started_at=105)]))
    assert [o["started_at"] for o in ops] == [105]
