"""attempt_record: step attempts (history) written in batches, on every backend."""

from __future__ import annotations

from tether.store import Store
from tether.store._lifecycle import AttemptRecord

from .conftest import T0


def attempt(attempt_id: str, status: str, *, position: int = 0, attempt: int = 1,
            finished_at: float | None = None, error: str | None = None) -> AttemptRecord:
    return AttemptRecord(attempt_id, "r", 0, position, "s", attempt, "w1", status,
                         T0 + position, finished_at, error)


async def test_a_batch_inserts_updates_and_keeps_the_last_state_of_an_id(store: Store) -> None:
    await store.attempt_record(attempts=[attempt("a1", "running")])
    await store.attempt_record(attempts=[
        attempt("a1", "ok", finished_at=T0 + 0.5),  # updates the stored attempt
        attempt("a2", "running", position=1),
        attempt("a2", "error", position=1, finished_at=T0 + 2, error='{"m": "x"}'),
        attempt("a3", "running", position=1, attempt=2),
    ])
    await store.attempt_record(attempts=[])
    got = await store.attempt_list("r")
    assert [(a.attempt_id, a.status, a.finished_at, a.error) for a in got] == [
        ("a1", "ok", T0 + 0.5, None), ("a2", "error", T0 + 2, '{"m": "x"}'),
        ("a3", "running", None, None)]
    assert got[2].attempt == 2 and got[2].worker_id == "w1" and got[2].started_at == T0 + 1
