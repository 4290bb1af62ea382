"""Every recorded history in ``tests/golden/`` replays against the current code of
``tests/golden/workflows.py`` and the current engine. A change that would break runs
in flight (an operation added, removed, renamed or reordered, or a replay rule of the
engine changed) fails here. Re-record on purpose only: ``python -m tests.golden.record``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.golden.workflows import app
from tether.testing import load_history, replay

HERE = Path(__file__).parent
FILES = sorted(HERE.glob("*.json"))


def test_the_golden_set_covers_the_representative_operations() -> None:
    kinds = {e["kind"] for f in FILES for e in load_history(f).journal}
    statuses = {load_history(f).status for f in FILES}
    assert {"step", "now", "random", "uuid", "sleep", "signal", "child_start",
            "child_result", "patch", "cancel"} <= kinds
    names = {e["name"] for f in FILES for e in load_history(f).journal}
    assert any(n.startswith("llm:") for n in names)
    assert {"completed", "failed", "cancelled", "waiting"} <= statuses


#: Runs in flight whose gathered branches wait: the check stops the code at the first
#: operation the journal does not answer (budget_waiting: the first refused call's wait
#: for its raise, position 4), so it replays the entries before it, not those the other
#: branches recorded after it (5 and 7).
FRONTIER = {"budget_waiting": 4}


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
async def test_golden_history_replays(path: Path) -> None:
    [result] = await replay(app, path)
    assert result.compatible, result.message
    assert result.replayed == FRONTIER.get(path.stem, len(load_history(path).journal))


async def test_runs_recorded_before_budgets_were_reservations_replay() -> None:
    """Recorded by 10dd972 (budgets checked against the tally alone, one raise per
    refused call): gathered calls under a budget with the policy ``wait``, one of them
    refused and issued again after a raise, and a run still waiting with three refused.
    Both replay at HEAD, the old branch of ``wait_out_budget`` taken (no patch marker in
    these journals), the waiting one up to its next operation: the refused call's wait."""
    done, waiting = await replay(app, [HERE / "budget_gathered.json",
                                       HERE / "budget_waiting.json"])
    assert done.compatible and done.replayed == 6, done.message
    assert [e["kind"] for e in load_history(HERE / "budget_gathered.json").journal] == [
        "step", "step", "step", "step", "signal", "step"]
    assert waiting.compatible, waiting.message
    assert waiting.message.endswith("then runs signal 'budget' at position 4")
