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


@pytest.mark.parametrize("offset", [3600.0, -3600.0], ids=["clock_after", "clock_behind"])
async def test_a_run_waiting_since_before_reservations_finishes_at_head(offset: float) -> None:
    """``budget_waiting.json``, a run the code before reservations left waiting (three
    gathered calls refused, one raise given: the second call issued again, the first
    and third waiting for a raise each), put in a store as it was (its journal copied,
    as ``tether fork`` does) and continued by HEAD's worker: it replays its recorded
    calls without asking the model again, its two refused calls wait for one raise
    (the third, finding the first waiting, leaves the ``tether.ai.budget-one-raise``
    marker after the old entries), and one ``tether budget`` finishes it.

    HEAD's worker runs it an hour after the journal's times, and an hour before them
    (a worker whose clock is behind the last one's): the results it journals complete
    after the recorded ones all the same (``RunContext.stamp``). Before, behind them,
    the budget signal taken at position 4 was stamped before the recorded refusal at
    3, the first call was issued again at position 6 ahead of the third call's
    marker, and the run was blocked ("non-determinism in run 'old' at position 6: the
    journal recorded patch 'tether.ai.budget-one-raise', the workflow code now asks
    for step 'llm:openai:gpt-4.1-mini'")."""
    from tests.golden import workflows as w
    from tether._app import worker_host
    from tether._codec import SLOT_INPUT
    from tether._types import RunRecord, RunStatus
    from tether.testing import Reply, TestEnv

    history = load_history(HERE / "budget_waiting.json")
    replies = [Reply("Part two.", input_tokens=20, output_tokens=5),
               Reply("Part three.", input_tokens=20, output_tokens=5)]
    async with TestEnv(app, start_time=history.updated_at + offset, llm=replies,
                       llms=[w.llm]) as env:
        source = await env.app.start(w.long_wait, run_id="source")
        await env.settle()
        store = await worker_host(env.app).open()
        codec = env.app.codec.for_run("old")
        now = env.clock.now()
        entries = history.entries(codec)
        await store.run_fork(source_run_id=source.run_id, at=entries[-1].position + 1,
                             entries=entries,
                             run=RunRecord(run_id="old", workflow=history.workflow,
                                           queue=history.queue, status=RunStatus.QUEUED,
                                           input=codec.encode(history.input, "input",
                                                              SLOT_INPUT),
                                           created_at=now, updated_at=now, available_at=now))
        await env.settle()
        waiting = await env.app.get_run("old")
        assert waiting.status == "waiting" and waiting.waiting_for == "signal budget"
        assert len(env.llm.requests) == 0
        await env.app.signal("old", "budget", {"tokens": 1000})
        first, second, third = await env.result(env.app.handle("old"))
        assert second == "Part one."  # (answered before the upgrade: from the journal)
        assert sorted([first, third]) == ["Part three.", "Part two."]
        done = await env.app.get_run("old")
    assert len(env.llm.requests) == 2
    assert [(e["position"], e["kind"], e["name"]) for e in done.journal][4:] == [
        (4, "signal", "budget"), (5, "signal", "budget"),
        (6, "patch", "tether.ai.budget-one-raise"), (7, "step", "llm:openai:gpt-4.1-mini"),
        (8, "step", "llm:openai:gpt-4.1-mini"), (9, "step", "llm:openai:gpt-4.1-mini")]
