"""Poison runs for tests/faults/test_poison.py: user code that raises ``SystemExit``,
``KeyboardInterrupt`` or another ``BaseException`` subclass, in steps, in the workflow
body and in tasks the workflow starts. Each real execution appends ``<pid> <what>`` to
``TETHER_TEST_SIDE_FILE``.
"""

from __future__ import annotations

import asyncio
import os
import sys

from tether import App, RetryPolicy

app = App()

TWO_FAST = RetryPolicy(initial_interval=0.05, backoff=1.0, max_interval=0.05, max_attempts=2)
FOREVER = RetryPolicy(initial_interval=0.05, backoff=1.0, max_interval=0.05, max_attempts=None)


class Custom(BaseException):
    """A BaseException subclass that is neither SystemExit nor KeyboardInterrupt."""


def side(what: str) -> None:
    with open(os.environ["TETHER_TEST_SIDE_FILE"], "a") as f:
        f.write(f"{os.getpid()} {what}\n")


@app.step(retry=TWO_FAST)
def exits_in_thread() -> None:
    side("exit")
    sys.exit(3)


@app.step(retry=TWO_FAST)
async def interrupts() -> None:
    side("interrupt")
    raise KeyboardInterrupt


@app.step(retry=TWO_FAST)
async def generator_exits() -> None:
    side("generator exit")
    raise GeneratorExit


@app.step(retry=TWO_FAST)
def generator_exits_in_thread() -> None:
    side("generator exit")
    raise GeneratorExit


@app.step(retry=FOREVER)
async def custom_forever() -> None:
    side("custom")
    raise Custom("poison")


@app.step
async def fine(i: int) -> int:
    side(f"fine {i}")
    return i


@app.workflow
async def step_exits() -> None:
    await exits_in_thread()


@app.workflow
async def step_interrupts() -> None:
    await interrupts()


@app.workflow
async def step_generator_exits() -> None:
    await generator_exits()


@app.workflow
async def step_generator_exits_in_thread() -> None:
    await generator_exits_in_thread()


@app.workflow
async def step_poison_forever() -> None:
    await custom_forever()


@app.workflow
async def body_raises_custom() -> None:
    await fine(1)
    raise Custom("in the workflow body")


@app.workflow
async def body_exits() -> None:
    sys.exit("bye")


@app.workflow
async def body_raises_cancelled() -> None:
    """Its code raises CancelledError with nobody cancelling it: it was taken for the
    worker's own stop, and the run, left held, was handed back and executed again every
    few seconds, for ever."""
    await fine(1)
    raise asyncio.CancelledError


async def _helper() -> None:
    await asyncio.sleep(0)
    raise SystemExit(4)


@app.workflow
async def task_exits() -> int:
    try:
        await asyncio.gather(_helper())
    except Exception as exc:  # the contained exit arrives as an ordinary exception
        side(f"caught {type(exc).__name__}")
    return await fine(2)


async def _generator_exits() -> None:
    await asyncio.sleep(0)
    raise GeneratorExit


@app.workflow
async def task_generator_exits() -> int:
    try:
        await asyncio.gather(_generator_exits())
    except Exception as exc:  # the contained exit arrives as an ordinary exception
        side(f"caught {type(exc).__name__}")
    return await fine(2)


@app.workflow
async def healthy(i: int) -> int:
    return await fine(i)


class Unprintable:
    """A result whose ``model_dump`` raises: encoding it crashes the engine's code that
    writes the run's end, on every replay. (An exception whose ``str()`` raises did
    until 2026-12-05; such an error is now recorded with a placeholder message.)"""

    def model_dump(self, **_: object) -> object:
        raise RuntimeError("cannot print me")


@app.workflow
async def unprintable() -> object:
    side("unprintable")
    return Unprintable()
