"""The kill soak's recovery figure (``harness.recovery_state``) ends at the takeover,
not at what the run does after it. Found 2026-12-06 (the SQLite soak's p99 of 1.2 s
and 4.0 s, against a p50 of 0.06 s): the worker that takes a run over may hand it back
within milliseconds, with no owner, for a wait its replay reached (a signal, a child's
result) or for a crash back-off; the harness read "no owner" as "still the dead
worker's" and counted the wait or the back-off as recovery time. A run that was taken
over is recovered whatever it does next; the fencing token says it was claimed."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from tests.chaos import chaos_app
from tests.chaos.harness import Held, Profile, _Workers, recovery_state
from tests.engine.helpers import wait_for
from tether import App

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(300)]


def effects(ledger: Path) -> int:
    """Executions of the step so far (rows in the effect ledger)."""
    if not ledger.exists():
        return 0
    conn = apsw.Connection(str(ledger), flags=apsw.SQLITE_OPEN_READONLY)
    conn.setbusytimeout(10_000)
    try:
        return int(conn.execute("SELECT count(*) FROM effects").fetchall()[0][0])
    except apsw.SQLError:  # (the table is not there yet)
        return 0
    finally:
        conn.close()



def _gated_workers(store_url: str, tmp_path: Path) -> tuple[Path, Path, _Workers]:
    """The gate file the chaos app's ``gated_then_waits`` step waits for, the effects
    ledger, and a harness of one worker process at a time with no crash points."""
    gate = tmp_path / "gate"
    ledger = tmp_path / "ledger.db"
    workers = _Workers(store_url, ledger, tmp_path,
                       Profile("test", workers=1, duration=0, runs=1, crash_p=0.0),
                       extra_env={"CHAOS_GATE": str(gate)})
    return gate, ledger, workers

async def test_a_run_taken_over_then_released_for_a_wait_has_recovered(
        store_url: str, tmp_path: Path) -> None:
    gate, ledger, workers = _gated_workers(store_url, tmp_path)
    app = App(store_url)
    try:
        victim = workers.start()
        await app.start(chaos_app.gated_then_waits, 1, run_id="r")
        # The step's effect is written: the run is held while the step waits for the gate.
        await wait_for(lambda: effects(ledger), timeout=60, what="the step begun")
        run = await app.store.run_get("r")
        assert run is not None and run.owner is not None and f":{victim.pid}:" in run.owner
        held = Held("r", run.owner, run.fencing_token)
        assert recovery_state(run, held, {held.owner}) == "held"
        victim.kill()
        victim.wait(30)
        workers.start()
        gate.touch()

        async def released_for_the_signal() -> bool:
            r = await app.store.run_get("r")
            return r is not None and r.status.value == "waiting"

        await wait_for(released_for_the_signal, timeout=60, what="the run waiting")
        run = await app.store.run_get("r")
        assert run is not None
        # Taken over (claimed once since the kill), then handed back for the signal wait:
        # no owner, and recovered.
        assert (run.owner, run.fencing_token) == (None, held.fencing_token + 1), run
        assert run.waiting_for == "signal go", run
        assert recovery_state(run, held, {held.owner}) == "recovered"
        await app.signal("r", "go", 7)
        assert await app.handle("r").result(timeout=60) == 7
    finally:
        workers.stop_all()
        await app.close()


async def test_a_run_the_victim_released_before_its_kill_is_not_a_recovery(
        store_url: str, tmp_path: Path) -> None:
    """Looked at as held, then released by the victim itself before the kill (the
    harness's look and its kill are not one instant): nothing was left to recover, and
    the wait that follows is no recovery time."""
    gate, ledger, workers = _gated_workers(store_url, tmp_path)
    app = App(store_url)
    try:
        victim = workers.start()
        await app.start(chaos_app.gated_then_waits, 2, run_id="r")
        await wait_for(lambda: effects(ledger), timeout=60, what="the step begun")
        run = await app.store.run_get("r")
        assert run is not None and run.owner is not None
        held = Held("r", run.owner, run.fencing_token)
        gate.touch()  # the victim finishes the step and releases the run for the signal

        async def waiting() -> bool:
            r = await app.store.run_get("r")
            return r is not None and r.status.value == "waiting"

        await wait_for(waiting, timeout=60, what="the run waiting")
        victim.kill()
        victim.wait(30)
        run = await app.store.run_get("r")
        assert run is not None and run.owner is None
        assert recovery_state(run, held, {held.owner}) == "let go"
    finally:
        workers.stop_all()
        await app.close()
