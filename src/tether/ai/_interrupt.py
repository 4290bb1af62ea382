"""Interrupting an agent's turn (``Agent(interruptible=True)``).

An interrupt is the signal ``interrupt`` (optionally carrying a message), sent by
``agent.interrupt(app, run_id, text)``, ``tether signal RUN interrupt --data '"..."'``
or the HTTP API. ``App.signal`` also publishes ``{"type": "signal", "name": ...}`` to
the run's live events; the agent watches them during a turn.

How a turn is cut durably: while a turn runs, its model call and tool steps execute
inside a :class:`TurnScope`. When the watcher sees the interrupt (announced in the run's
live events, or found waiting in the run's inbox: one sent before the watcher listened,
or while the run was released mid-turn), it sets the scope's event; every step body of
the turn that is still running (or starts after it) stops its work and fails with
:class:`TurnInterrupted`, a ``NonRetryable`` error. That failure is journaled like any
step outcome, so replay gives the same answers (the recorded results of the calls that
finished, ``interrupted by the user`` for the others) without running anything again.
The next turn starts by taking the pending interrupt signals (journaled signal
operations, as steering messages are) and adds their messages to the conversation as
user messages.

Why the interrupt is carried by the steps' outcomes rather than by one journal entry
for the interrupt itself: a step cut midway must still end with an entry at its own
position, or replay would run it again; recording the cut as its failure keeps one
entry per position and needs nothing new from the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from tether import NonRetryable, StepError

__all__ = ["INTERRUPTED_TEXT", "INTERRUPT_SIGNAL", "TurnInterrupted", "TurnScope",
           "interruptibly", "is_interrupted"]

T = TypeVar("T")

#: The signal that interrupts a running agent's turn.
INTERRUPT_SIGNAL = "interrupt"

#: What the model reads as the result of a tool call the interrupt cut.
INTERRUPTED_TEXT = "interrupted by the user"


class TurnInterrupted(NonRetryable):
    """The agent's turn was interrupted while this step ran (journaled as its failure;
    never retried)."""


class TurnScope:
    """The current turn of an interruptible agent: an event set by its interrupt.

    The watcher (``watch(scope)``, which sets the event) starts with the first step
    body of the turn that executes: a turn answered from the journal watches nothing.
    ``check()``, started with it, says whether an interrupt came before the watcher
    could see it (one waiting in the run's inbox); every step body waits for its answer
    before it starts its work, so a turn resumed after its interrupt came (from an
    approval, on a new worker) runs nothing more.
    """

    def __init__(self, watch: Callable[[TurnScope], Coroutine[Any, Any, None]],
                 check: Callable[[], Coroutine[Any, Any, bool]] | None = None) -> None:
        self.interrupted = asyncio.Event()
        self._watch = watch
        self._check = check
        self._watcher: asyncio.Task[None] | None = None
        self._checked: asyncio.Task[None] | None = None

    async def watching(self) -> None:
        """Start the watcher if it is not running yet; return once the check is done."""
        if self._watcher is None:
            loop = asyncio.get_running_loop()
            self._watcher = loop.create_task(self._watch(self))
            if self._check is not None:
                self._checked = loop.create_task(self._checking(self._check))
        if self._checked is not None:
            await asyncio.shield(self._checked)  # (shared by the turn's step bodies)

    async def _checking(self, check: Callable[[], Coroutine[Any, Any, bool]]) -> None:
        if await check():
            self.interrupted.set()

    def close(self) -> None:
        """The turn is over: stop the watcher."""
        for task in (self._watcher, self._checked):
            if task is not None:
                task.cancel()


_SCOPE: contextvars.ContextVar[TurnScope | None] = contextvars.ContextVar(
    "tether_agent_turn", default=None)


def current_scope() -> TurnScope | None:
    """The turn scope the running code belongs to, if any."""
    return _SCOPE.get()


@contextlib.contextmanager
def entered(scope: TurnScope) -> Any:
    """Run the block (and the tasks it creates) inside ``scope``."""
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


async def interruptibly(work: Awaitable[T]) -> T:
    """Await ``work`` (a step body's work), unless the turn is interrupted first: then
    cancel it and raise ``TurnInterrupted``. Outside a turn scope, just await it."""
    scope = _SCOPE.get()
    if scope is None:
        return await work
    try:
        await scope.watching()
    except BaseException:
        if asyncio.iscoroutine(work):
            work.close()
        raise
    if scope.interrupted.is_set():
        if asyncio.iscoroutine(work):
            work.close()
        raise TurnInterrupted(INTERRUPTED_TEXT)
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(scope.interrupted.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    # wait(), not `await task` under suppress(CancelledError): that swallowed a cancel
    # of this step itself (a worker stopping) that came while the work was ending, and
    # the run went on to its next turn as if the worker were not waiting for it.
    task.add_done_callback(_retrieved)  # (its end is not the step's: a cut)
    try:
        await asyncio.wait({task})
    except asyncio.CancelledError:
        task.cancel()  # (the step's own cancel reaches its work, as `await task` did)
        raise
    raise TurnInterrupted(INTERRUPTED_TEXT)


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def is_interrupted(exc: BaseException) -> bool:
    """True for a step failure that records an interrupted turn (live or replayed)."""
    if isinstance(exc, TurnInterrupted):
        return True
    return isinstance(exc, StepError) and exc.error_type.rsplit(".", 1)[-1] == "TurnInterrupted"
