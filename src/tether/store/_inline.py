"""What both stores' inline journal appends share: when the event loop is quiet enough
for one (``loop_quiet``), and how often the appending task gives the loop a turn.

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

import asyncio
import collections
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


def loop_quiet(loop: asyncio.AbstractEventLoop, within: float,
               own: object | None = None) -> bool:
    """Whether ``loop`` has nothing to run now and no timer due within ``within``
    seconds, so that an append may block it that long without delaying other work.
    ``own``: a task whose wake-ups (at most two) do not count (the PostgreSQL writer's,
    after the previous lone append's answer). Reads asyncio's private ready queue and
    timer heap: False on a loop without them (uvloop), where appends take the ordinary
    path."""
    ready = getattr(loop, "_ready", None)
    if not isinstance(ready, collections.deque):
        return False
    if ready:
        if own is None or len(ready) > 2:
            return False
        # (A copy made in one call: another thread's call_soon_threadsafe, an executor
        # thread's step ending, may append while this looks, and iterating the queue
        # itself then raises "deque mutated during iteration" out of the append.)
        for handle in list(ready):
            if getattr(getattr(handle, "_callback", None), "__self__", None) is not own:
                return False
    timers = getattr(loop, "_scheduled", None)
    if not isinstance(timers, list):
        return False
    return not timers or timers[0].when() >= loop.time() + within
