"""A step that kills its worker process (``os._exit(1)``, as a segfault or the OOM
killer would): the run is taken over a bounded number of times, with a back-off, and
then ends ``failed`` with a clear error, while the other runs of the queue complete."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests import forked
from tests.engine.helpers import wait_for
from tests.life.procs import ROOT, Workers
from tests.life.test_processes import cli, registered
from tether import App, RunStatus

pytestmark = [pytest.mark.slow, pytest.mark.faults]


async def test_a_run_that_kills_every_worker_ends_failed_after_the_bound(
        store_url: str, workers: Workers, tmp_path: Path) -> None:
    fast = {"TETHER_TEST_CRASH_BACKOFF": "0.2"}  # 0.2, 0.4, 0.8 s instead of 1, 2, 4 s
    async with App(store_url) as client:
        for _ in range(2):
            workers.start(lease=2.0, env_extra=fast)
        await wait_for(lambda: registered(client, 2), timeout=30, what="two workers up")
        await client.start("poison", run_id="poison")
        others = [await client.start("deploy", 0.05, run_id=f"ok-{i}") for i in range(8)]
        restarts = 0

        async def poison_ended() -> bool:
            nonlocal restarts
            for p in list(workers.procs):  # keep two workers alive, as a supervisor does
                if p.poll() is not None and not getattr(p, "replaced", False):
                    p.replaced = True  # type: ignore[attr-defined]
                    restarts += 1
                    workers.start(lease=2.0, env_extra=fast)
            run = await client.store.run_get("poison")
            return run is not None and run.status == RunStatus.FAILED

        await wait_for(poison_ended, timeout=150, what="poison run failed")
        for h in others:
            assert await h.result(timeout=60) == ["slow done", "quick done"]
        info = await client.get_run("poison")
    deaths = [p for p in workers.procs if p.poll() is not None and p.returncode == 1]
    assert workers.counts()["die"] == 5 and len(deaths) == 5 and restarts == 5
    assert info.error is not None
    assert "worker crashed 5 times running this run at position 1" in str(info.error)
    assert workers.counts()["quick"] >= 1 + 8  # the poison's own first step, and others
    shown = cli("show", "poison", db=store_url, tmp=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "worker crashed 5 times running this run at position 1" in shown.stdout


def test_max_crashes_is_validated() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = forked.run([sys.executable, "-m", "tether", "worker", "tests.life.apps:app",
                          "--max-crashes", "0"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "--max-crashes" in out.stderr
    from tests.life.apps import app
    from tether import ConfigError

    with pytest.raises(ConfigError, match="max_crashes"):
        app.worker(max_crashes=0)
