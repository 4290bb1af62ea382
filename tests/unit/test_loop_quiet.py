"""``loop_quiet``'s look at the event loop's ready queue, which other threads append
to meanwhile."""

from __future__ import annotations

import asyncio
from typing import Any

from tether.store._inline import loop_quiet


class _Handle:
    """A ready callback of the writer's task (``own``) whose look lets another thread
    append to the loop's ready queue just then, as an executor thread's
    ``call_soon_threadsafe`` may between two steps of the look."""

    def __init__(self, loop: asyncio.AbstractEventLoop, own: Any) -> None:
        self._loop = loop
        self._own = own

    @property
    def _callback(self) -> Any:
        self._loop.call_soon_threadsafe(lambda: None)
        return self._own.some_method


class _Own:
    def some_method(self) -> None: ...


async def test_a_thread_appending_to_the_ready_queue_during_the_look_fails_nothing() -> None:
    """It raised "deque mutated during iteration" out of the PostgreSQL store's journal
    append (the run's step result not written); now the look goes on, on a copy."""
    loop = asyncio.get_running_loop()
    own = _Own()
    ready = loop._ready  # type: ignore[attr-defined]
    saved = list(ready)  # (put back after: the loop's own callbacks)
    ready.clear()
    ready.append(_Handle(loop, own))
    try:
        # Only the writer's own callback was ready as it looked (``within`` far back:
        # no timer counts).
        assert loop_quiet(loop, -1e9, own=own) is True
    finally:
        ready.clear()
        ready.extend(saved)
