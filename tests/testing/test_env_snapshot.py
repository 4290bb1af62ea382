"""``TestEnv`` reads the runs that may move (queued, running, waiting) in one snapshot
when it tells whether every run that moves only spins (``Store.run_list_unsettled``):
read a status at a time, a run claimed between the ``running`` read and the ``queued``
one was in neither, and the environment looked still but for its spinners while that
run moved: a false ``RunStuck`` on a wait beside it. The claim is made here, by another
worker, right after the environment's first read of the runs, which is where it fell
between two reads; with one read, it can fall in no such gap."""

from __future__ import annotations

from typing import Any

import pytest

from tether import App
from tether._types import ClaimedRun, RunRecord
from tether.testing import TestEnv


def _queued(run_id: str, queue: str, now: float) -> RunRecord:
    """A run due now on ``queue``, of a workflow the environment's worker does not have
    (so that it claims it not: the other worker below does)."""
    return RunRecord(
        run_id=run_id,
        workflow="elsewhere",
        queue=queue,
        status="queued",
        input="[[], {}]",
        created_at=now,
        updated_at=now,
        available_at=now,
    )


@pytest.mark.parametrize("look", ["only_spinners", "moving_beside"])
async def test_a_run_claimed_while_the_environment_reads_the_runs_is_not_missed(
    store_url: str, look: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both looks at the runs that move: "every run that moves is a spinner the last look
    found" (``_only_spinners``, which ends a wait with ``RunStuck``) and "every run that
    moves beside the waits spins" (``_moving_beside``, which tells the first). There is
    no spinner here: a run that moves, queued and then running, makes each untrue."""
    app = App("sqlite:///never-opened.db")
    async with TestEnv(app, store_url=store_url, start_time=1_000.0, stuck_attempts=20) as env:
        store = env.app.store
        queue = env.worker.queues[0]
        claimed: list[ClaimedRun] = []

        def claim_after_the_first_read(name: str) -> None:
            read = getattr(store, name)

            async def hooked(**kwargs: Any) -> list[RunRecord]:
                runs: list[RunRecord] = await read(**kwargs)
                if not claimed:  # (the other worker's claim lands now)
                    claimed.extend(
                        await store.run_claim(
                            worker_id="other",
                            queues=[queue],
                            limit=1,
                            now=env.now(),
                            lease_seconds=30.0,
                        )
                    )
                return runs

            monkeypatch.setattr(store, name, hooked)

        for name in ("run_list", "run_list_unsettled"):
            claim_after_the_first_read(name)
        await store.run_insert(run=_queued("x", queue, env.now()))
        if look == "only_spinners":
            env._spinners = {}  # (the last look found that only spinners move: none)
            assert await env._only_spinners() is None
        else:
            assert await env._moving_beside({}, {}) is None
        assert [c.run.run_id for c in claimed] == ["x"]  # (claimed meanwhile)
        await store.run_finish(
            lease=claimed[0].lease, status="completed", result=None, error=None, now=env.now()
        )
