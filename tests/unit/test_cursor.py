"""The journal cursor on a journal held in memory: positions, the determinism check,
stop reasons. Nothing here touches the store (it is built, never opened)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether import NonDeterminismError
from tether._clock import SystemClock
from tether._codec import Codec
from tether._definitions import WorkflowDef
from tether._replay import Blocked, Lost, Release, RunContext, _Stop
from tether._types import JournalEntry, Lease, OperationKind
from tether.errors import LeaseLost
from tether.store import Wait, open_store


async def _wf() -> None:
    return None


def cursor(tmp_path: Path, journal: list[JournalEntry]) -> RunContext:
    wdef = WorkflowDef(name="wf", fn=_wf, queue="default", return_annotation=None,
                       param_annotations=(), kw_annotations={})
    return RunContext(lease=Lease("r", "w", 1), workflow=wdef, journal=journal,
                      store=open_store(f"sqlite:///{tmp_path}/unused.db"), codec=Codec(),
                      clock=SystemClock(), executor=None, sticky_wait=1.0)


def entry(pos: int, kind: str, name: str, status: str = "ok") -> JournalEntry:
    return JournalEntry(pos, kind, name, status)


async def test_positions_are_taken_in_call_order(tmp_path: Path) -> None:
    ctx = cursor(tmp_path, [])
    assert [ctx.take_position() for _ in range(3)] == [0, 1, 2]


async def test_a_recorded_operation_is_answered_and_another_blocks_the_run(
        tmp_path: Path) -> None:
    """Same kind and name: the entry; anything else: blocked, naming both operations,
    and every later check stops the code too."""
    ctx = cursor(tmp_path, [entry(0, "step", "search"), entry(1, "sleep", "sleep")])
    assert ctx.recorded(0, OperationKind.STEP, "search") is ctx.journal[0]
    assert ctx.recorded(2, OperationKind.STEP, "fetch") is None  # runs for real
    with pytest.raises(_Stop):
        ctx.recorded(1, OperationKind.STEP, "fetch")
    assert isinstance(ctx.stop, Blocked)
    err = ctx.stop.error
    assert isinstance(err, NonDeterminismError)
    assert (err.position, err.recorded, err.requested) == (
        1, ("sleep", "sleep"), ("step", "fetch"))
    with pytest.raises(_Stop):
        ctx.check_running()


async def test_an_entry_the_finished_code_never_asked_for_is_found(tmp_path: Path) -> None:
    """Code that removed an operation leaves a recorded entry unconsumed; a cancel entry
    does not count (it is the engine's, not the code's)."""
    ctx = cursor(tmp_path, [entry(0, "step", "a"), entry(1, "cancel", "cancel"),
                            entry(2, "step", "b")])
    ctx.take_position()
    extra = ctx.unconsumed_entry()
    assert extra is not None and extra.position == 2
    ctx.take_position()
    ctx.take_position()
    assert ctx.unconsumed_entry() is None


async def test_stop_reasons_rank_lost_over_blocked_over_release(tmp_path: Path) -> None:
    """A lost lease outranks a block, which outranks a release; of two releases the
    earlier wake-up wins (so a run is woken for the first thing it waits for)."""
    ctx = cursor(tmp_path, [])
    ctx.halt(Release(Wait(50.0, "timer")))
    ctx.halt(Release(Wait(20.0, "timer")))
    ctx.halt(Release(Wait(None, "signal go", signal="go")))
    assert isinstance(ctx.stop, Release) and ctx.stop.wait.available_at == 20.0
    blocked = Blocked(NonDeterminismError("r", 0, None, ("step", "x")))
    ctx.halt(blocked)
    ctx.halt(Release(Wait(1.0, "timer")))
    assert ctx.stop is blocked
    lost = Lost(LeaseLost("r", 1))
    ctx.halt(lost)
    ctx.halt(blocked)
    assert ctx.stop is lost
