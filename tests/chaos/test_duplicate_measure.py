"""The soak's "duplicated committed-step effects" (``harness.late_executions``): an
execution of a step that began after the step's committed journal entry had finished.

Found by the restart soak (``python -m tests.chaos full postgres pgrestart-often``,
2026-12-07): one step of 1,800 runs counted as run again, though the ledger held one
execution of it. Its worker's clock (``SyncedClock``) had stepped back 4.5 ms at a
resync between the step's start and its end (the entry's ``finished_at`` is before its
own ``started_at``), so its only execution began "after" its entry finished."""

from __future__ import annotations

from tests.chaos.harness import Effect, late_executions

# The entry and the ledger row of that step (run c00939, position 2): attempt 1 began at
# ``at`` (its worker's engine clock); the entry was stamped started_at 1796650727.4551644
# and finished_at 1796650727.450992. (That ledger had no ``wall`` nor ``token``: here
# ``wall`` is a clock 2 us behind and the token is 7, the entry's and the execution's.)
FINISHED = 1796650727.450992
ONLY = Effect(pid=25776, attempt=1, at=1796650727.455472, wall=1796650727.455470, token=7)


def test_the_execution_that_committed_the_entry_is_not_counted() -> None:
    assert late_executions([ONLY], FINISHED, token=7) == []


def test_an_execution_under_a_later_lease_is_counted_whatever_the_clocks_say() -> None:
    # Claimed after the commit (the claim moved the token on, and read the entry): a
    # committed step run again, even by a worker whose clock is behind.
    again = Effect(pid=25775, attempt=1, at=FINISHED - 0.050, wall=FINISHED - 0.050, token=8)
    assert late_executions([ONLY, again], FINISHED, token=7) == [again]


def test_a_stalled_workers_execution_is_judged_on_one_clock() -> None:
    # The committing worker's engine clock is 40 ms ahead of this machine's; a stalled
    # worker (earlier token) whose clock is right began 20 ms before the finish (on the
    # machine's clock): by the engine clocks alone it began 20 ms after it.
    committing = Effect(pid=1, attempt=1, at=100.000, wall=99.960, token=5)
    before = Effect(pid=2, attempt=1, at=100.020, wall=100.020, token=4)
    after = Effect(pid=2, attempt=1, at=100.080, wall=100.080, token=4)
    finished = 100.080  # on the committing worker's clock: 100.040 on the machine's
    assert late_executions([committing, before], finished, token=5) == []
    assert late_executions([committing, before, after], finished, token=5) == [after]


def test_a_second_execution_under_the_committing_lease_after_its_finish_is_counted() -> None:
    first = Effect(pid=1, attempt=1, at=10.0, wall=10.0, token=3)
    again = Effect(pid=1, attempt=1, at=10.5, wall=10.5, token=3)
    assert late_executions([again, first], 10.2, token=3) == [again]


def test_without_tokens_the_engine_clocks_are_compared() -> None:
    old = Effect(pid=1, attempt=1, at=10.0, wall=None, token=None)
    late = Effect(pid=2, attempt=1, at=10.5, wall=None, token=None)
    assert late_executions([old, late], 10.2, token=None) == [late]
