"""Waiting operations a workflow can perform: timers, signals, children, live status."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from tether._replay import RunContext, current_run
from tether.errors import ConfigError, OutsideRun

R = TypeVar("R")


def _ctx(what: str) -> RunContext:
    ctx = current_run.get()
    if ctx is None:
        raise OutsideRun(f"tether.{what}()")
    return ctx


def _seconds(duration: float | dt.timedelta) -> float:
    if isinstance(duration, dt.timedelta):
        return duration.total_seconds()
    if isinstance(duration, bool) or not isinstance(duration, (int, float)):
        raise TypeError(f"expected seconds (int or float) or a timedelta, "
                        f"got {type(duration).__name__}")
    return float(duration)


def sleep(duration: float | dt.timedelta) -> Awaitable[None]:
    """A durable timer. The run is released while it waits (unless the wait is short),
    and wakes when it is due on whichever worker is up; the wake-up time is journaled,
    so it survives every worker being stopped. Outside a workflow: ``asyncio.sleep``."""
    seconds = _seconds(duration)
    ctx = current_run.get()
    if ctx is None:
        return asyncio.sleep(seconds)
    return ctx.sleep(ctx.take_position(), seconds)


def wait_for_signal(name: str, timeout: float | dt.timedelta | None = None) -> Awaitable[Any]:
    """Wait for the next signal ``name`` and return its JSON payload.

    Signals sent before the wait are kept and delivered in order; several waits on one
    name consume successive signals. The run is released while it waits.

    Raises:
        SignalTimeout: ``timeout`` passed first (catchable).
    """
    ctx = _ctx("wait_for_signal")
    t = None if timeout is None else _seconds(timeout)
    return ctx.wait_signal(ctx.take_position(), name, t)


def set_status(info: Any) -> None:
    """Publish a small JSON status for observers (``App.get_run``, ``tether show``)."""
    ctx = current_run.get()
    if ctx is None:
        return
    ctx.set_status(info)


class ChildHandle(Generic[R]):
    """A child run started from a workflow."""

    def __init__(self, run_id: str, annotation: Any = None) -> None:
        self.run_id = run_id
        self._annotation = annotation

    def __repr__(self) -> str:
        return f"ChildHandle(run_id={self.run_id!r})"

    def result(self) -> Awaitable[R]:
        """Wait (released) for the child to end; its outcome is journaled.

        Raises:
            RunFailed: the child failed or was cancelled.
        """
        ctx = _ctx("ChildHandle.result")
        return ctx.child_result(ctx.take_position(), self.run_id, self._annotation)


def _child_target(workflow: Callable[..., Any] | str, queue: str | None) -> tuple[str, str, Any]:
    if isinstance(workflow, str):
        return workflow, queue or "default", None
    wdef = getattr(workflow, "__tether_workflow__", None)
    if wdef is None:
        raise ConfigError(
            f"{getattr(workflow, '__name__', workflow)!r} is not a workflow: decorate it "
            "with @app.workflow"
        )
    return wdef.name, queue or wdef.queue, wdef.return_annotation


async def _start_child(ctx: RunContext, pos: int, workflow: Callable[..., Any] | str,
                       args: tuple[Any, ...], kwargs: dict[str, Any], queue: str | None,
                       run_id: str | None, on_parent_cancel: str) -> ChildHandle[Any]:
    name, q, annotation = _child_target(workflow, queue)
    if isinstance(workflow, str) and queue is None and ctx.journal.get(pos) is None:
        # Named by string: its queue is the one the workers that serve it registered.
        q = (await ctx.store.workflow_list()).get(name, q)
    payload: dict[str, Any] = {"args": list(args)}
    if kwargs:
        payload["kwargs"] = kwargs
    text = ctx.codec.encode(payload, f"input of child workflow {name!r}")
    child_id = await ctx.start_child(pos, name, q, text, run_id, on_parent_cancel)
    return ChildHandle(child_id, annotation)


def start_child(workflow: Callable[..., Awaitable[R]] | str, *args: Any, queue: str | None = None,
                run_id: str | None = None, on_parent_cancel: str = "cancel",
                **kwargs: Any) -> Awaitable[ChildHandle[R]]:
    """Start ``workflow`` as an independent durable child run on its own queue.

    ``queue`` defaults to the workflow's own; ``run_id`` to ``<parent id>.<position>``.
    ``on_parent_cancel`` is ``"cancel"`` (cancelling the parent cancels the child) or
    ``"abandon"``. A workflow may be named by string when its code lives elsewhere.
    """
    if on_parent_cancel not in ("cancel", "abandon"):
        raise ConfigError("on_parent_cancel must be 'cancel' or 'abandon'")
    ctx = _ctx("start_child")
    return _start_child(ctx, ctx.take_position(), workflow, args, kwargs, queue, run_id,
                        on_parent_cancel)


async def call(workflow: Callable[..., Awaitable[R]] | str, *args: Any, queue: str | None = None,
               run_id: str | None = None, **kwargs: Any) -> R:
    """Start a child run and wait for its result (a "durable tool" on its own queue)."""
    handle: ChildHandle[R] = await start_child(workflow, *args, queue=queue, run_id=run_id,
                                               **kwargs)
    return await handle.result()
