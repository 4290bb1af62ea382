"""What both stores' inline journal appends share: how often the appending task gives
the event loop a turn.

A sequential run's append is written from the run's own task when nothing else is going
on (SQLite: the commit on the loop's thread; PostgreSQL: the statement on the writer's
kept connection, its answer awaited with ``poll``). Yielding to the loop after every
such append (``asyncio.sleep(0)``: one ``epoll_wait`` and one pass of the loop) cost a
step 15-30 µs of the loop's CPU, so the task yields only when it has not done so for
``INLINE_YIELD_EVERY``: a run of steps holds the loop for at most that long (plus one
append) before other tasks' socket events are seen. Ready callbacks and timers due
within an append never wait: they send the next append down the store's ordinary path,
which the task awaits.
"""

from __future__ import annotations

import time

#: Longest a run of inline appends keeps the event loop from polling (seconds).
INLINE_YIELD_EVERY = 0.001


class LoopTurns:
    """When an inline append's task last gave the event loop a turn."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        #: ``time.perf_counter()`` of the last turn given.
        self.last = 0.0

    def due(self) -> bool:
        """Whether the task should yield now (and, if so, the turn is counted as given)."""
        now = time.perf_counter()
        if now - self.last < INLINE_YIELD_EVERY:
            return False
        self.last = now
        return True
