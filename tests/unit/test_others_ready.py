"""``RunContext._others_ready``: the main task's look at the event loop's ready queue
(is a branch of its run ready to run?), which other threads append to meanwhile."""

from __future__ import annotations

import asyncio
import itertools
import types
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_cursor import cursor
from tether import _replay
from tether._replay import current_run


async def test_a_thread_appending_to_the_ready_queue_during_the_look_fails_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another thread's ``call_soon_threadsafe`` (an executor thread's step ending, the
    SQLite writer's answer) lands between the making of the queue's reverse iterator
    and its first step: "deque mutated during iteration" went up through the
    workflow's code and failed the run (a kill soak's run, 2026-12-07). The look is
    made again on a copy taken in one call, and still finds the branch."""
    ctx = cursor(tmp_path, [])  # (made in this task: the run's main task)
    loop = asyncio.get_running_loop()
    token = current_run.set(ctx)
    try:  # a branch of the run, ready to run (its first step is in the ready queue)
        branch = asyncio.ensure_future(asyncio.sleep(0))
    finally:
        current_run.reset(token)

    def islice(iterable: Any, *args: Any) -> Any:
        loop.call_soon_threadsafe(lambda: None)  # (as another thread would, just now)
        return itertools.islice(iterable, *args)

    monkeypatch.setattr(_replay, "itertools", types.SimpleNamespace(islice=islice))
    assert ctx._others_ready()
    await branch
