"""One source of truth for states: the enums, what "ended" means, and conversion."""

from __future__ import annotations

import pytest

from tether import RunStatus
from tether._types import ENDED, EntryStatus, JournalEntry, OperationKind, RunRecord


def test_ended_is_completed_failed_cancelled_and_blocked_is_not() -> None:
    """blocked waits for an operator: not ended, but a result waiter stops there."""
    assert {s.value for s in ENDED} == {"completed", "failed", "cancelled"}
    assert [s for s in RunStatus if s.is_ended] == sorted(ENDED, key=list(RunStatus).index)
    assert not RunStatus.BLOCKED.is_ended and RunStatus.BLOCKED.is_settled
    assert {s for s in RunStatus if s.is_settled} == set(ENDED) | {RunStatus.BLOCKED}
    for live in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING):
        assert not live.is_ended and not live.is_settled


def test_records_from_a_store_carry_enums_equal_to_their_plain_values() -> None:
    """Strings read from a row become enums, which compare and serialize as before."""
    entry = JournalEntry(0, "step", "fetch", "pending")
    assert entry.kind is OperationKind.STEP and entry.status is EntryStatus.PENDING
    assert entry.kind == "step" and f"{entry.status}" == "pending"
    run = RunRecord(run_id="r", workflow="w", queue="q", status="waiting", input="[]",
                    created_at=0.0, updated_at=0.0)
    assert run.status is RunStatus.WAITING and run.status == "waiting"


def test_an_unknown_state_is_refused_at_the_boundary() -> None:
    """A row with a status no version of Tether wrote fails loudly, not later."""
    with pytest.raises(ValueError, match="'paused' is not a valid RunStatus"):
        RunRecord(run_id="r", workflow="w", queue="q", status="paused", input="[]",
                  created_at=0.0, updated_at=0.0)
    with pytest.raises(ValueError, match="is not a valid OperationKind"):
        JournalEntry(0, "teleport", "x", "ok")


def test_the_sql_of_both_stores_uses_the_one_ended_set() -> None:
    """SQL cannot import the enum: every status list in the stores' queries that names
    an ended status is exactly the ended set, so a change to ENDED that the SQL does not
    follow fails here (the other lists name live states only)."""
    import re
    from importlib import resources

    ended = {s.value for s in ENDED}
    found = 0
    for backend in ("sqlite", "postgres"):
        sql = resources.files(f"tether.store.{backend}").joinpath("queries.sql").read_text()
        for listed in re.findall(r"status\s+(?:NOT\s+)?IN\s*\(([^)]*)\)", sql):
            names = set(re.findall(r"'(\w+)'", listed))
            assert names <= {s.value for s in RunStatus}, listed
            if names & (ended | {"blocked"}):
                assert names == ended, listed
                found += 1
        for single in re.findall(r"status\s*=\s*'(\w+)'", sql):
            assert single in {s.value for s in RunStatus} or single in {
                s.value for s in EntryStatus}, single
    assert found >= 4
