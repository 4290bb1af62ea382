"""What workflow and step code can ask of Tether: journaled clock, randomness, ids."""

from __future__ import annotations

import datetime as dt
import uuid as _uuid
from typing import TYPE_CHECKING

from tether._replay import current_run, current_step, now_value, random_value, uuid_value
from tether.errors import TetherError

if TYPE_CHECKING:
    from tether.store import Store


def now() -> dt.datetime:
    """The current time (UTC). In a workflow it is journaled: replay returns the same."""
    return now_value(current_run.get())


def random() -> float:
    """A random float in [0, 1). In a workflow it is journaled: replay returns the same."""
    return random_value(current_run.get())


def uuid() -> _uuid.UUID:
    """A random UUID. In a workflow it is journaled: replay returns the same."""
    return uuid_value(current_run.get())


def run_id() -> str:
    """The id of the run whose workflow or step is executing."""
    step = current_step.get()
    if step is not None:
        return step.run_id
    ctx = current_run.get()
    if ctx is None:
        raise TetherError("tether.run_id() called outside a workflow or step")
    return ctx.run_id


def step_key() -> str:
    """Inside a step: a stable idempotency key (run id + position) for external APIs.

    It is the same on every attempt and after every crash, so a receiving system can
    de-duplicate a side effect that Tether had to repeat.
    """
    step = current_step.get()
    if step is None:
        raise TetherError("tether.step_key() called outside a step")
    return step.key


def step_attempt() -> int:
    """Inside a step: which attempt this is (1 for the first)."""
    step = current_step.get()
    if step is None:
        raise TetherError("tether.step_attempt() called outside a step")
    return step.attempt


def patched(change_id: str) -> bool:
    """Versioning marker for changing a workflow's code while runs are in flight.

    True for runs that reach this point first in the new code (the marker is
    journaled); False for runs whose journal predates it, which keep the old path::

        if tether.patched("fetch-v2"):
            data = await fetch_v2(url)
        else:
            data = await fetch(url)
    """
    ctx = current_run.get()
    if ctx is None:
        return True
    return ctx.patched(change_id)


def add_metrics(deltas: dict[str, float]) -> None:
    """Add numbers to the running run's metrics (tokens, cost...), persisted with the
    run and shown by ``App.get_run`` and ``tether show``.

    Called from a step, it counts what really happened on this attempt: a crash after
    the work but before the journal commit counts it twice, as it was paid twice.
    """
    ctx = current_run.get()
    if ctx is None:
        raise TetherError("tether add_metrics() called outside a workflow or step")
    ctx.add_metrics(deltas)


def current_store() -> Store:
    """The store of the run executing (inside a workflow or one of its steps)."""
    ctx = current_run.get()
    if ctx is None:
        raise TetherError("no Tether run is executing here")
    return ctx.store
