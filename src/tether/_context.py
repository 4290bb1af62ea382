"""What workflow and step code can ask of Tether: journaled clock, randomness, ids."""

from __future__ import annotations

import datetime as dt
import uuid as _uuid

from tether._operations import (
    deprecated_patch_marker,
    now_value,
    patch_marker,
    random_value,
    uuid_value,
)
from tether._replay import RunContext, current_run, current_step
from tether.errors import OutsideRun


def _workflow_run() -> RunContext | None:
    """The run whose *workflow code* is calling, or None: inside a step (whose outcome is
    journaled as a whole, and which may run several attempts) values are not journaled,
    or each attempt would take a position of the workflow and get the first one's value."""
    return None if current_step.get() is not None else current_run.get()


def now() -> dt.datetime:
    """The current time (UTC). In a workflow it is journaled: replay returns the same.
    In a step it is the run's clock, read afresh on every attempt."""
    if current_step.get() is not None and (ctx := current_run.get()) is not None:
        return dt.datetime.fromtimestamp(ctx.clock.now(), dt.UTC)
    return now_value(_workflow_run())


def random() -> float:
    """A random float in [0, 1). In a workflow it is journaled: replay returns the same;
    in a step it is fresh on every attempt."""
    return random_value(_workflow_run())


def uuid() -> _uuid.UUID:
    """A random UUID. In a workflow it is journaled: replay returns the same; in a step
    it is fresh on every attempt (use ``tether.step_key()`` for a stable key)."""
    return uuid_value(_workflow_run())


def run_id() -> str:
    """The id of the run whose workflow or step is executing."""
    step = current_step.get()
    if step is not None:
        return step.run_id
    ctx = current_run.get()
    if ctx is None:
        raise OutsideRun("tether.run_id()", "a workflow or step")
    return ctx.run_id


#: Where ``step_key`` and ``step_attempt`` belong. A step called outside a workflow is an
#: ordinary call (docs/concepts.md): "can only be used inside a step", raised from inside
#: the step's own body, read as a bug until 2026-12-06.
_IN_A_STEP = ("a step that a workflow's run executes (called outside a workflow, a step is "
              "an ordinary call, with no attempt or key)")


def step_key() -> str:
    """Inside a step: a stable idempotency key (run id + position) for external APIs.

    It is the same on every attempt and after every crash, so a receiving system can
    de-duplicate a side effect that Tether had to repeat.
    """
    step = current_step.get()
    if step is None:
        raise OutsideRun("tether.step_key()", _IN_A_STEP)
    return step.key


def step_attempt() -> int:
    """Inside a step: which attempt this is (1 for the first)."""
    step = current_step.get()
    if step is None:
        raise OutsideRun("tether.step_attempt()", _IN_A_STEP)
    return step.attempt


def patched(change_id: str) -> bool:
    """Versioning marker for changing a workflow's code while runs are in flight.

    True for runs that reach this point first in the new code (the marker is
    journaled); False for runs whose journal predates it, which keep the old path::

        if tether.patched("fetch-v2"):
            data = await fetch_v2(url)
        else:
            data = await fetch(url)

    Outside a workflow, and in a step (which replay does not run again), it is True and
    journals nothing.
    """
    ctx = _workflow_run()  # (in a step, as outside a workflow: the new code)
    if ctx is None:
        return True
    return patch_marker(ctx, change_id)


def deprecate_patch(change_id: str) -> None:
    """Retire ``tether.patched(change_id)``: the code keeps only the patched path.

    Deploy it once no unfinished run took the old path (``tether replay --check
    --unfinished``)::

        tether.deprecate_patch("fetch-v2")    # was: if tether.patched("fetch-v2"): ...
        data = await fetch_v2(url)

    A run that recorded the ``patch`` marker here replays it (the marker is taken); a
    run without it (one that has not got here yet, or whose journal predates the patch
    and holds nothing here) goes on, and a new run records nothing. The call can then be
    removed once no unfinished run recorded the marker. Outside a workflow, and in a
    step, it does nothing. See docs/operations.md, "Patches".
    """
    ctx = _workflow_run()
    if ctx is None:
        return
    deprecated_patch_marker(ctx, change_id)
